"""scripts/mic_sync.py's pieces that need no PulseAudio: the test speech it plays."""

import importlib.util
from pathlib import Path

import numpy as np

_SPEC = importlib.util.spec_from_file_location("mic_sync", Path(__file__).resolve().parents[1] / "scripts" / "mic_sync.py")
mic_sync = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(mic_sync)


def test_espeak_speech_fills_the_asked_length_with_speech_and_pauses():
    speech = mic_sync.espeak_speech(4.0, seed=5)
    assert speech.dtype == np.float32 and speech.size == 4 * mic_sync.RATE_HZ
    frames = speech[: speech.size // 320 * 320].reshape(-1, 320)
    loud = np.sqrt((frames**2).mean(axis=1)) > 0.01
    assert 0.3 < loud.mean() < 0.98  # mostly speech, with the pauses between sentences
    np.testing.assert_array_equal(speech, mic_sync.espeak_speech(4.0, seed=5))  # seeded: the same every run
