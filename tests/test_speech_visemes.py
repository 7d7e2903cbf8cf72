import numpy as np
import pytest

from models.speech.clip import PhonemeEvent
from models.speech.script import ALL_WORDS
from models.speech.visemes import REST, viseme_curves, viseme_entry

JAW, ROUND, SPREAD, PRESS = range(4)


def _ev(spec: list[tuple[str, float]]) -> list[PhonemeEvent]:
    out, t = [], 0.0
    for ph, dur in spec:
        out.append(PhonemeEvent(t, t + dur, ph))
        t += dur
    return out


# espeak-ng en-us timings for "papa bob mama." (closures attributed to the stops), so this test runs without espeak.
PAPA_BOB_MAMA = _ev([
    ("p", 0.082), ("A:", 0.121), ("p", 0.072), ("@", 0.055), ("b", 0.073), ("0", 0.139), ("b", 0.076),
    ("m", 0.089), ("A:", 0.128), ("m", 0.070), ("a#", 0.052), ("_:", 0.3),
])


def _frame_at(t_s: float, fps: float) -> int:
    return int(round(t_s * fps))


@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_bilabials_close_lips_and_open_vowels_open_jaw(fps):
    ph = PAPA_BOB_MAMA
    n = int(ph[-1].end_s * fps) + 1
    curves = viseme_curves(ph, fps, n)
    assert curves.shape == (n, 4) and curves.dtype == np.float32
    assert curves.min() >= 0.0 and curves.max() <= 1.0
    for ev in ph:
        if ev.phoneme in ("p", "b", "m"):
            # The frame sampling the bilabial: one whose time falls inside it (there is one at 25 and 30 fps).
            inside = [j for j in range(n) if ev.start_s <= j / fps < ev.end_s]
            assert inside, ev
            best = max(curves[j, PRESS] for j in inside)
            assert best > 0.85, (ev, best)
            assert min(curves[j, JAW] for j in inside) < 0.3, ev
        if ev.phoneme in ("A:", "0"):
            j = _frame_at(0.5 * (ev.start_s + ev.end_s), fps)
            assert curves[j, JAW] > 0.55, (ev, curves[j])
            assert curves[j, PRESS] < 0.2, (ev, curves[j])


def test_curves_are_continuous():
    ph = PAPA_BOB_MAMA + [
        PhonemeEvent(PAPA_BOB_MAMA[-1].end_s + a, PAPA_BOB_MAMA[-1].end_s + b, p)
        for p, a, b in (("w", 0.0, 0.08), ("u:", 0.08, 0.23), ("s", 0.23, 0.33), ("i:", 0.33, 0.45))
    ]
    fine = viseme_curves(ph, 1000.0, int(ph[-1].end_s * 1000))
    # No parameter moves more than 0.04 per ms: a full close-open swing takes >= 25 ms, like real lips.
    steps = np.abs(np.diff(fine, axis=0))
    assert steps.max() < 0.04
    # Jaw and lip shape move slower than the lip seal.
    assert steps[:, :3].max() < 0.02


def test_step_targets_would_fail_the_continuity_bound():
    # Guard for the test above: without co-articulation the jump at a p->A: boundary is far above 0.03 per ms.
    _, (p_target,) = viseme_entry("p")
    _, (a_target,) = viseme_entry("A:")
    assert np.abs(p_target.as_array() - a_target.as_array()).max() > 0.5


def test_silence_relaxes_to_rest():
    ph = _ev([("_:", 0.4), ("h", 0.06), ("A:", 0.2), ("_:", 0.6)])
    fps = 30.0
    curves = viseme_curves(ph, fps, int(1.26 * fps) + 15)  # 0.5 s beyond the last event too
    rest = REST.as_array()
    assert np.abs(curves[_frame_at(0.2, fps)] - rest).max() < 0.05
    assert np.abs(curves[_frame_at(1.0, fps)] - rest).max() < 0.05
    assert np.abs(curves[-1] - rest).max() < 0.05
    assert curves[_frame_at(0.56, fps), JAW] > 0.6


def test_short_word_gap_does_not_close_mouth():
    ph = _ev([("A:", 0.2), ("_", 0.012), ("A:", 0.2)])
    curves = viseme_curves(ph, 1000.0, 412)
    assert curves[200:213, JAW].min() > 0.6


def test_rounding_spreads_to_neighbouring_consonants():
    ph = _ev([("s", 0.1), ("t", 0.06), ("u:", 0.18)])
    curves = viseme_curves(ph, 1000.0, 340)
    alone = viseme_curves(_ev([("s", 0.1), ("t", 0.06), ("i:", 0.18)]), 1000.0, 340)
    assert curves[130, ROUND] > alone[130, ROUND] + 0.2


def test_bilabial_between_frames_still_closes():
    # A 30 ms /b/ (espeak at 300 wpm) that no 25 fps sample instant falls into (frames at 0.40 and 0.44 s).
    ph = _ev([("A:", 0.405), ("b", 0.03), ("A:", 0.2)])
    curves = viseme_curves(ph, 25.0, 16)
    assert curves[:, PRESS].max() > 0.8


def test_allophones_and_pauses_map():
    assert viseme_entry("@5") == viseme_entry("@")
    assert viseme_entry("_!")[0] == "pause"
    assert len(viseme_entry("aI")[1]) == 2
    with pytest.raises(ValueError, match="no viseme"):
        viseme_entry("Qx")
    with pytest.raises(ValueError, match="fps"):
        viseme_curves(PAPA_BOB_MAMA, 0.0, 10)
    with pytest.raises(ValueError, match="time order"):
        viseme_curves(list(reversed(PAPA_BOB_MAMA)), 25.0, 10)


def test_every_espeak_english_phoneme_has_a_viseme():
    espeak = pytest.importorskip("models.speech.espeak")
    try:
        espeak.native_sample_rate_hz()
    except RuntimeError as e:
        pytest.skip(f"libespeak-ng unavailable: {e}")
    text = " ".join(ALL_WORDS) + ". Cookie outside, the ocean."
    seen = set()
    for voice in ("en-us", "en", "en-gb-scotland", "en-029"):
        clip = espeak.synthesize(text, espeak.SynthesisParams(voice=voice), sample_rate_hz=None)
        seen |= {p.phoneme for p in clip.phonemes}
    for ph in seen:
        viseme_entry(ph)  # raises ValueError if unmapped
    assert len(seen) > 50


def test_espeak_papa_bob_mama_end_to_end():
    espeak = pytest.importorskip("models.speech.espeak")
    try:
        clip = espeak.synthesize("papa bob mama.")
    except RuntimeError as e:
        pytest.skip(f"libespeak-ng unavailable: {e}")
    fps = 30.0
    curves = viseme_curves(clip.phonemes, fps, int(clip.duration_s * fps) + 1)
    bilabials = [p for p in clip.phonemes if p.phoneme in ("p", "b", "m")]
    assert len(bilabials) == 6
    for ev in bilabials:
        j = _frame_at(0.5 * (ev.start_s + ev.end_s), fps)
        assert curves[j, PRESS] > 0.85 and curves[j, JAW] < 0.3, (ev, curves[j])
