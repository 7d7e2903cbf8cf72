"""The clip's soundtrack: seeded sentences spoken by espeak-ng with varying voice, rate and pitch, joined by pauses."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from models.speech.clip import PhonemeEvent
from models.speech.espeak import SynthesisParams, english_voices, synthesize
from models.speech.script import random_script

AUDIO_RATE_HZ = 16000
RATE_RANGE_WPM = (140, 200)
PITCH_RANGE = (30, 70)
PAUSE_RANGE_S = (0.25, 0.6)


@dataclass(frozen=True)
class SpeechSegment:
    start_s: float
    text: str
    voice: str
    rate_wpm: int
    pitch: int


@dataclass(frozen=True)
class SpeechTrack:
    samples: np.ndarray  # float32 mono at AUDIO_RATE_HZ, exactly the clip's length
    phonemes: list[PhonemeEvent]  # back to back on the clip clock; gaps between segments are '_' pauses
    segments: list[SpeechSegment]


def speech_track(seed: int, seconds: float) -> SpeechTrack:
    """`seconds` of speech: 1-2 sentence segments, each with its own voice/rate/pitch, until the clip is full."""
    if seconds <= 0:
        raise ValueError(f"clip length must be positive, got {seconds} s")
    rng = random.Random(seed)
    voices = english_voices()
    if not voices:
        raise ValueError("espeak-ng has no English voice installed (apt-get install espeak-ng)")
    n_total = int(round(seconds * AUDIO_RATE_HZ))
    pieces: list[np.ndarray] = []
    phonemes: list[PhonemeEvent] = []
    segments: list[SpeechSegment] = []
    cursor = 0  # samples
    k = 0
    while cursor < n_total:
        pause = int(rng.uniform(*PAUSE_RANGE_S) * AUDIO_RATE_HZ) if k else int(0.15 * AUDIO_RATE_HZ)
        if pause:
            pieces.append(np.zeros(pause, np.float32))
            phonemes.append(PhonemeEvent(cursor / AUDIO_RATE_HZ, (cursor + pause) / AUDIO_RATE_HZ, "_"))
            cursor += pause
        params = SynthesisParams(
            voice=rng.choice(voices), rate_wpm=rng.randint(*RATE_RANGE_WPM), pitch=rng.randint(*PITCH_RANGE)
        )
        text = random_script(seed * 1000 + k, n_sentences=rng.randint(1, 2))
        clip = synthesize(text, params, AUDIO_RATE_HZ)
        start_s = cursor / AUDIO_RATE_HZ
        segments.append(SpeechSegment(start_s, text, params.voice, params.rate_wpm, params.pitch))
        offset = start_s
        for ev in clip.phonemes:
            phonemes.append(PhonemeEvent(ev.start_s + offset, ev.end_s + offset, ev.phoneme))
        pieces.append(clip.samples)
        # espeak's phoneme timeline covers its whole clip, so the cursor and the last phoneme end agree.
        cursor += len(clip.samples)
        k += 1
    samples = np.concatenate(pieces)[:n_total].astype(np.float32)
    end_s = n_total / AUDIO_RATE_HZ
    kept = []
    for ev in phonemes:
        if ev.start_s >= end_s:
            break
        kept.append(PhonemeEvent(ev.start_s, min(ev.end_s, end_s), ev.phoneme) if ev.end_s > end_s else ev)
    return SpeechTrack(samples, kept, segments)
