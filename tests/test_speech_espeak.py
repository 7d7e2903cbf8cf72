import numpy as np
import pytest

from models.speech.script import random_script

espeak = pytest.importorskip("models.speech.espeak")
try:
    espeak.native_sample_rate_hz()
except RuntimeError as e:  # library or data missing on this machine
    pytest.skip(f"libespeak-ng unavailable: {e}", allow_module_level=True)

from models.speech.espeak import SynthesisParams, english_voices, list_variants, list_voices, synthesize  # noqa: E402


def _f0_hz(x: np.ndarray, sr: int) -> float:
    """Median autocorrelation pitch over voiced 40 ms frames."""
    frame, estimates = int(0.04 * sr), []
    lo, hi = int(sr / 400), int(sr / 60)
    for a in range(0, len(x) - frame, frame // 2):
        f = x[a : a + frame] - x[a : a + frame].mean()
        if np.sqrt(np.mean(f**2)) < 0.02:
            continue
        ac = np.correlate(f, f, "full")[frame - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            estimates.append(sr / lag)
    return float(np.median(estimates))


def test_phonemes_are_monotonic_contiguous_and_cover_clip():
    clip = synthesize(random_script(3, n_sentences=2))
    ph = clip.phonemes
    assert clip.sample_rate_hz == 16000 and clip.samples.dtype == np.float32
    assert len(ph) > 20
    assert ph[0].start_s == 0.0
    for a, b in zip(ph, ph[1:]):
        assert a.start_s < a.end_s == b.start_s
    assert abs(ph[-1].end_s - clip.duration_s) < 0.1
    assert sum(not p.is_pause for p in ph) > 15


def test_pause_intervals_are_silent_and_vowels_are_loud():
    clip = synthesize("Hello there. Open the window, please.", SynthesisParams(voice="en-us"), sample_rate_hz=None)
    x, sr = clip.samples, clip.sample_rate_hz
    long_pauses = [p for p in clip.phonemes if p.is_pause and p.duration_s > 0.1]
    assert long_pauses, "sentence punctuation should give a long pause"
    for p in long_pauses:
        inner = x[int((p.start_s + 0.01) * sr) : int((p.end_s - 0.01) * sr)]
        assert np.abs(inner).max() < 1e-3, p
    vowels = [p for p in clip.phonemes if p.phoneme in ("oU", "E", "i@", "i:", "I", "@", "eI")]
    assert vowels
    for p in vowels:
        seg = x[int(p.start_s * sr) : int(p.end_s * sr)]
        assert np.sqrt(np.mean(seg**2)) > 0.01, p


def test_voiceless_stop_owns_its_closure():
    # espeak puts the /p/ event at the burst; the silent closure before it belongs to /p/, not the vowel.
    clip = synthesize("papa", sample_rate_hz=None)
    x, sr = clip.samples, clip.sample_rate_hz
    second_p = [p for p in clip.phonemes if p.phoneme == "p"][1]
    closure = x[int(second_p.start_s * sr) : int((second_p.start_s + 0.02) * sr)]
    assert np.all(closure == 0.0)
    vowel_before = x[int((second_p.start_s - 0.02) * sr) : int(second_p.start_s * sr)]
    assert np.abs(vowel_before).max() > 0.01


def test_same_seed_same_script_and_samples():
    assert random_script(7) == random_script(7)
    assert random_script(7) != random_script(8)
    a = synthesize(random_script(7, 1), SynthesisParams(voice="en-us+f3", rate_wpm=190))
    b = synthesize(random_script(7, 1), SynthesisParams(voice="en-us+f3", rate_wpm=190))
    assert np.array_equal(a.samples, b.samples)
    assert a.phonemes == b.phonemes


def test_in_process_synthesis_matches_up_to_a_few_samples():
    text = "Bring the yellow umbrella."
    fresh = synthesize(text, sample_rate_hz=None)
    here = synthesize(text, sample_rate_hz=None, fresh_process=False)
    # Same phonemes; timing differs only by the pitch-flutter phase carried over inside libespeak.
    assert [p.phoneme for p in here.phonemes] == [p.phoneme for p in fresh.phonemes]
    assert abs(len(here.samples) - len(fresh.samples)) < 0.01 * 22050
    starts_ms = np.array([p.start_s for p in here.phonemes]) - np.array([p.start_s for p in fresh.phonemes])
    assert np.abs(starts_ms).max() < 0.01


def test_parameters_reset_between_calls():
    text = "The quick brown fox jumps over the lazy dog."
    slow = synthesize(text, SynthesisParams(rate_wpm=120))
    fast = synthesize(text, SynthesisParams(rate_wpm=300))
    normal = synthesize(text)
    assert fast.duration_s < normal.duration_s < slow.duration_s
    high = synthesize(text, SynthesisParams(pitch=90))
    again = synthesize(text)
    assert np.array_equal(again.samples, normal.samples)
    assert _f0_hz(high.samples, 16000) > 1.2 * _f0_hz(normal.samples, 16000)


def test_voices_differ_in_pitch():
    text = "Please bring the yellow umbrella to the market on Monday."
    female = synthesize(text, SynthesisParams(voice="en-us+f3"))
    male = synthesize(text, SynthesisParams(voice="en-us+m3"))
    f_hz, m_hz = _f0_hz(female.samples, 16000), _f0_hz(male.samples, 16000)
    assert 70 < m_hz < 160 and 150 < f_hz < 300
    assert f_hz > 1.5 * m_hz
    assert female.voice == "en-us+f3"


def test_resampling_preserves_duration():
    text = "Measure the vision of the garage."
    native = synthesize(text, sample_rate_hz=None)
    assert native.sample_rate_hz == 22050
    at16 = synthesize(text)
    assert abs(native.duration_s - at16.duration_s) < 1e-3
    assert native.phonemes == at16.phonemes


def test_voice_listing():
    voices = english_voices()
    assert "en-us" in voices and len(voices) >= 5
    assert any("+f" in v for v in voices) and any("+m" in v for v in voices)
    assert {"f3", "m3"} <= set(list_variants())
    assert any("en-us" in v.languages for v in list_voices("en"))


def test_bad_input_raises():
    with pytest.raises(ValueError, match="non-empty text"):
        synthesize("   ")
    with pytest.raises(ValueError, match="unknown espeak-ng voice 'xx-nope'"):
        synthesize("hi", SynthesisParams(voice="xx-nope"))
    with pytest.raises(ValueError, match="variant"):
        synthesize("hi", SynthesisParams(voice="en-us+nope"))
    with pytest.raises(ValueError, match="rate_wpm"):
        SynthesisParams(rate_wpm=20)
    with pytest.raises(ValueError, match="pitch"):
        SynthesisParams(pitch=101)
    with pytest.raises(ValueError, match="seed"):
        random_script("3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_sentences"):
        random_script(1, 0)
