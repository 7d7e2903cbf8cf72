import numpy as np
import pytest
import torch

from models.audio import MelRingBuffer, MelSpec, log_mel, mel_filterbank
from models.audio.mel import _mel_to_hz
from models.audio.mel_torch import log_mel_torch


def _test_signal(seconds: float = 2.0, sr: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (t > 0.5) + 0.05 * rng.standard_normal(len(t)) * (t > 1.2)
    return x.astype(np.float32)


def test_frame_count_and_centring():
    spec = MelSpec()
    assert spec.n_frames(199) == 0
    assert spec.n_frames(200) == 1
    assert spec.n_frames(16000) == 1 + (16000 + 200 - 400) // 160
    assert log_mel(np.zeros(16000, np.float32)).shape == (spec.n_frames(16000), 80)
    # Frame i is centred at i * 10 ms: a click at 0.5 s lights up frame 50 most.
    x = np.zeros(16000, np.float32)
    x[8000] = 1.0
    energy = log_mel(x).sum(axis=1)
    assert int(np.argmax(energy)) == 50


def test_silence_hits_floor_and_empty_input():
    mel = log_mel(np.zeros(1600, np.float32))
    assert np.allclose(mel, np.log(1e-6))
    assert log_mel(np.zeros(10, np.float32)).shape == (0, 80)


def test_tone_peaks_in_matching_mel_bin():
    sr = 16000
    t = np.arange(sr) / sr
    mel = log_mel((0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32))
    spec = MelSpec()
    edges = _mel_to_hz(np.linspace(0, 2595 * np.log10(1 + 8000 / 700), spec.n_mels + 2))
    expected_bin = int(np.argmin(np.abs(edges[1:-1] - 1000.0)))
    assert abs(int(np.argmax(mel[50])) - expected_bin) <= 1


def test_filterbank_shape_and_coverage():
    fb = mel_filterbank(MelSpec())
    assert fb.shape == (80, 257)
    assert np.all(fb.max(axis=1) > 0.25)
    centres = np.argmax(fb, axis=1)
    assert np.all(np.diff(centres) >= 0)


def test_numpy_and_torch_agree():
    x = _test_signal()
    a = log_mel(x)
    b = log_mel_torch(torch.from_numpy(x))
    assert b.dtype == torch.float32 and b.shape == a.shape
    assert np.abs(a - b.numpy()).max() < 1e-4
    batch = torch.stack([torch.from_numpy(x), torch.from_numpy(x[::-1].copy())])
    bb = log_mel_torch(batch)
    assert bb.shape == (2, *a.shape)
    assert np.abs(bb[1].numpy() - log_mel(x[::-1].copy())).max() < 1e-4


def test_ring_buffer_matches_offline_for_any_chunking():
    x = _test_signal(seconds=1.3)
    offline = log_mel(x)
    rng = np.random.default_rng(1)
    for sizes in ([1] * 500 + [len(x)], [0, 7, 160, 399, 400, 401, 1000, 3], list(rng.integers(0, 900, 60))):
        ring = MelRingBuffer(history_frames=50)
        got, pos = [], 0
        for n in sizes:
            got.append(ring.push(x[pos : pos + n]))
            pos += n
        got.append(ring.push(x[pos:]))
        streamed = np.concatenate(got)
        assert streamed.shape == offline.shape
        assert np.abs(streamed - offline).max() < 1e-5
        assert ring.frames_emitted == len(offline)
        assert np.array_equal(ring.recent(50), streamed[-50:])


def test_ring_recent_before_history_fills_is_silence():
    ring = MelRingBuffer(history_frames=20)
    frames = ring.push(_test_signal(seconds=0.05))
    recent = ring.recent(20)
    assert np.array_equal(recent[-len(frames) :], frames)
    assert np.allclose(recent[: 20 - len(frames)], MelSpec().silence_value)


def test_bad_input_raises():
    with pytest.raises(ValueError, match="1-D"):
        log_mel(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="float"):
        log_mel(np.zeros(1000, np.int16))
    with pytest.raises(ValueError, match="win_length"):
        MelSpec(win_length=600)
    with pytest.raises(ValueError, match="f_max_hz"):
        MelSpec(f_max_hz=9000.0)
    with pytest.raises(ValueError, match="cover no FFT bin"):
        mel_filterbank(MelSpec(n_mels=300))
    with pytest.raises(ValueError, match="history_frames"):
        MelRingBuffer(history_frames=0)
    with pytest.raises(ValueError, match="torch.Tensor"):
        log_mel_torch(np.zeros(1000, np.float32))
