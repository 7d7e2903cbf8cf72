"""Speech for relitcam: espeak-ng synthesis with phoneme timings, random scripts, and phoneme -> viseme curves.

libespeak-ng is loaded on first synthesis, so importing this package works on machines without it.
"""

from models.speech.clip import PhonemeEvent, SpeechClip
from models.speech.espeak import SynthesisParams, VoiceInfo, english_voices, list_variants, list_voices, synthesize
from models.speech.script import random_script
from models.speech.visemes import VISEME_PARAMS, VisemeTarget, viseme_curves, viseme_entry

__all__ = [
    "PhonemeEvent",
    "SpeechClip",
    "SynthesisParams",
    "VISEME_PARAMS",
    "VisemeTarget",
    "VoiceInfo",
    "english_voices",
    "list_variants",
    "list_voices",
    "random_script",
    "synthesize",
    "viseme_curves",
    "viseme_entry",
]
