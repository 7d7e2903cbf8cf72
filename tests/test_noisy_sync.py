"""scripts/noisy_sync.py's noise: pink noise has a 1/f spectrum, babble is several voices, and mixes come out at the
asked signal-to-noise ratio of the speech's voiced part."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_SPEC = importlib.util.spec_from_file_location("noisy_sync",
                                               Path(__file__).resolve().parents[1] / "scripts" / "noisy_sync.py")
noisy_sync = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(noisy_sync)


def test_pink_noise_power_falls_3_db_per_octave():
    x = noisy_sync.pink_noise(2**16, np.random.default_rng(0))
    assert np.sqrt(np.mean(x**2)) == pytest.approx(1.0, rel=1e-4)
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size)
    bands = [power[(f >= lo) & (f < 2 * lo)].mean() for lo in (0.005, 0.01, 0.02, 0.04, 0.08)]
    slopes_db = 10 * np.log10(np.array(bands[1:]) / np.array(bands[:-1]))
    np.testing.assert_allclose(slopes_db, -3.0, atol=0.5)


def test_mix_has_the_asked_snr_over_the_voiced_part():
    rng = np.random.default_rng(1)
    t = np.arange(32000) / 16000
    speech = (0.3 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)).astype(np.float32)  # with pauses
    noise = noisy_sync.pink_noise(speech.size, rng)
    for snr_db in (20.0, 5.0):
        mix = noisy_sync.mix_at_snr(speech, noise, snr_db)
        added = mix - speech
        measured = 20 * np.log10(noisy_sync.speech_rms(speech) / np.sqrt(np.mean(added**2)))
        assert measured == pytest.approx(snr_db, abs=0.05)
    assert noisy_sync.speech_rms(speech) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)  # pauses do not count


def test_babble_is_several_voices_at_unit_level():
    x = noisy_sync.babble(16000 * 2, seed=3)
    assert x.size == 32000 and np.sqrt(np.mean(x**2)) == pytest.approx(1.0, rel=1e-4)
    # Four talkers at once leave few quiet 20 ms frames, unlike one voice with its pauses.
    frames = np.sqrt(np.mean(x[:32000].reshape(-1, 320) ** 2, axis=1))
    assert np.mean(frames < 0.1) < 0.1
