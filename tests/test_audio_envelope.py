import numpy as np
import pytest

from models.audio import audio_envelope, envelope_onsets
from models.audio.envelope import FLOOR_DB


def _silence_then_tone(onset_s: float, sr: int = 16000, total_s: float = 2.0, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(total_s * sr)) / sr
    return (amp * np.sin(2 * np.pi * 300 * t) * (t >= onset_s)).astype(np.float32)


@pytest.mark.parametrize("fps,onset_s,expected_frame", [(25.0, 1.0, 25), (30.0, 1.0, 30), (25.0, 1.013, 25), (30.0, 0.51, 15)])
def test_onset_detected_on_right_frame(fps, onset_s, expected_frame):
    env = audio_envelope(_silence_then_tone(onset_s), 16000, fps)
    assert len(env) == round(2.0 * fps)
    onsets = envelope_onsets(env, threshold_db=float(env.max()) - 20.0)
    assert list(onsets) == [expected_frame]


def test_levels_in_dbfs():
    env = audio_envelope(_silence_then_tone(1.0), 16000, 25.0)
    assert np.all(env[:24] == FLOOR_DB)
    # A sine of amplitude 0.5 has RMS 0.354 -> -9.0 dBFS.
    assert abs(float(np.median(env[30:])) - (-9.03)) < 0.2


def test_release_bridges_short_gap_without_moving_onset():
    sr, fps = 16000, 25.0
    x = _silence_then_tone(0.4)
    x[int(1.0 * sr) : int(1.08 * sr)] = 0.0  # 80 ms closure inside the sound
    smooth = audio_envelope(x, sr, fps, release_ms=60.0)
    raw = audio_envelope(x, sr, fps, release_ms=0.0)
    assert raw.min() == FLOOR_DB and raw[26] == FLOOR_DB
    assert smooth[26] > -20.0
    assert envelope_onsets(smooth, -30.0)[0] == envelope_onsets(raw, -30.0)[0] == 10


def test_bad_input_raises():
    with pytest.raises(ValueError, match="1-D"):
        audio_envelope(np.zeros((2, 10)), 16000, 25.0)
    with pytest.raises(ValueError, match="positive"):
        audio_envelope(np.zeros(10), 16000, 0.0)
