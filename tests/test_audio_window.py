import numpy as np
import pytest

from models.audio import MelSpec, mel_frame_for_video_frame, mel_window, mel_windows_for_video


def test_video_to_mel_frame_mapping():
    assert mel_frame_for_video_frame(10, 25.0) == 40
    assert list(mel_frame_for_video_frame(np.arange(4), 30.0)) == [0, 3, 7, 10]
    with pytest.raises(ValueError, match="fps"):
        mel_frame_for_video_frame(1, 0.0)


def test_mel_window_pads_with_silence_outside_clip():
    mel = np.arange(10 * 3, dtype=np.float32).reshape(10, 3)
    w = mel_window(mel, center_frame_idx=1, past_frames=3, lookahead_frames=2)
    assert w.shape == (6, 3)
    assert np.allclose(w[:2], MelSpec().silence_value)
    assert np.array_equal(w[2:], mel[0:4])
    tail = mel_window(mel, center_frame_idx=9, past_frames=0, lookahead_frames=2)
    assert np.array_equal(tail[0], mel[9]) and np.allclose(tail[1:], MelSpec().silence_value)
    with pytest.raises(ValueError, match=">= 0"):
        mel_window(mel, 0, -1, 2)


def test_batched_windows_equal_single_windows():
    rng = np.random.default_rng(0)
    mel = rng.standard_normal((120, 80)).astype(np.float32)
    batch = mel_windows_for_video(mel, fps=30.0, n_video_frames=40, past_frames=8, lookahead_frames=4)
    assert batch.shape == (40, 13, 80)
    for j in (0, 1, 17, 39):
        c = mel_frame_for_video_frame(j, 30.0)
        assert np.array_equal(batch[j], mel_window(mel, c, 8, 4))
