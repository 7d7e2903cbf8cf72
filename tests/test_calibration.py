"""INT8 calibration on the CPU: batching and the calibration cache, the entropy calibrator against a small fake of
TensorRT's base class, the 40 dB acceptance rule, and calibration data built from an enrollment-like source through
the ONNX Runtime chain of a fixture bundle."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from calibration.acceptance import INT8_MIN_PSNR_DB, choose_precision, psnr_db
from calibration.calibrator import CalibrationBatcher, CalibrationCache, make_entropy_calibrator
from calibration.data import calibration_from_enrollment, mel_windows_at_times, split_frames
from test_bundle_renderer import build_fixture_bundle


def _samples(n, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.random((1, 2, 3), dtype=np.float32), "y": rng.random((1, 4), dtype=np.float32)} for _ in range(n)]


def test_batcher_gives_full_batches_in_order_and_drops_the_rest():
    samples = _samples(7)
    b = CalibrationBatcher(samples, 3, ["x", "y"])
    assert b.n_batches == 2 and b.dropped_samples == 1
    first = b.next_batch()
    assert first["x"].shape == (3, 2, 3) and first["x"].flags.c_contiguous
    np.testing.assert_array_equal(first["x"][1], samples[1]["x"][0])
    assert b.next_batch()["y"].shape == (3, 4) and b.next_batch() is None
    b.reset()
    np.testing.assert_array_equal(b.next_batch()["x"], first["x"])
    assert b.data_digest() == CalibrationBatcher(_samples(7), 3, ["x", "y"]).data_digest()
    assert b.data_digest() != CalibrationBatcher(_samples(7, seed=1), 3, ["x", "y"]).data_digest()
    with pytest.raises(ValueError, match="cannot fill one batch"):
        CalibrationBatcher(samples[:2], 3, ["x"])
    with pytest.raises(ValueError, match="lacks inputs"):
        CalibrationBatcher(samples, 3, ["z"])
    with pytest.raises(ValueError, match="batch axis of 1"):
        CalibrationBatcher([{"x": np.zeros((2, 3))}] * 3, 3, ["x"])


class FakeCalibratorBase:
    """Stands in for trt.IInt8EntropyCalibrator2: a pybind11 class whose __init__ must be called."""

    def __init__(self):
        self.base_initialised = True


def test_entropy_calibrator_feeds_batches_and_caches(tmp_path):
    samples = _samples(6)
    cache = CalibrationCache(tmp_path / "sub" / "mouth.calib")
    uploads = []

    def upload(a):
        uploads.append(a)
        return a

    cal = make_entropy_calibrator(FakeCalibratorBase, CalibrationBatcher(samples, 2, ["x", "y"]), cache, upload,
                                  lambda a: a.ctypes.data)
    assert isinstance(cal, FakeCalibratorBase) and cal.base_initialised
    assert cal.get_batch_size() == 2
    assert cal.read_calibration_cache() is None
    ptrs = cal.get_batch(["y", "x"])  # TensorRT's order of names, not ours
    assert ptrs == [uploads[0].ctypes.data, uploads[1].ctypes.data] and uploads[0].shape == (2, 4)
    assert cal.get_batch(["x", "y"]) and cal.get_batch(["x", "y"]) and cal.get_batch(["x", "y"]) is None
    cal.write_calibration_cache(memoryview(b"TRT-8601-EntropyCalibration2\nx: 3c010a14\n"))
    assert cache.read().startswith(b"TRT-8601") and cal.read_calibration_cache() == cache.read()
    cal.batcher.reset()
    with pytest.raises(KeyError, match="calibration inputs"):
        cal.get_batch(["x", "other"])


def test_psnr_and_the_acceptance_rule():
    ref = np.linspace(0, 1, 1000, dtype=np.float32)
    assert psnr_db(ref, ref, 1.0) == math.inf
    assert psnr_db(ref, ref + 0.01, 1.0) == pytest.approx(40.0, abs=1e-3)
    assert psnr_db(ref, np.full_like(ref, np.nan), 1.0) == -math.inf
    with pytest.raises(ValueError, match="different shapes"):
        psnr_db(ref, ref[:10], 1.0)

    fp16 = [{"albedo": ref.reshape(10, 100) * (k + 1) / 4, "blend": ref.reshape(10, 100)} for k in range(4)]
    # Peak is the FP16 outputs' range over the set (albedo: 0..1): an error of 0.005 is 46 dB -> INT8 kept.
    close = [{k: v + 0.005 for k, v in f.items()} for f in fp16]
    d = choose_precision("mouth", fp16, close)
    assert d.precision == "int8" and d.worst_psnr_db == pytest.approx(46.02, abs=0.01) and d.frames == 4
    # One frame with one bad output decides: 0.02 error on `blend` in frame 2 is 34 dB -> FP16.
    one_bad = [dict(f) for f in close]
    one_bad[2] = {**one_bad[2], "blend": fp16[2]["blend"] + 0.02}
    d = choose_precision("mouth", fp16, one_bad)
    assert d.precision == "fp16" and d.worst_output == "blend" and d.worst_psnr_db < INT8_MIN_PSNR_DB
    assert "INT8 rejected" in d.describe()
    with pytest.raises(ValueError, match="no held-out frames"):
        choose_precision("mouth", [], [])
    with pytest.raises(ValueError, match="INT8 frames"):
        choose_precision("mouth", fp16, close[:2])


def test_split_frames_holds_out_every_kth():
    calib, held = split_frames(100, 50, 5)
    assert len(calib) == 40 and len(held) == 10 and not set(calib) & set(held)
    assert calib.min() == 0 and max(held.max(), calib.max()) == 99
    with pytest.raises(ValueError, match="no prepared frames"):
        split_frames(0, 10, 5)
    with pytest.raises(ValueError, match="held_out_every"):
        split_frames(10, 10, 1)


def test_mel_windows_follow_the_live_layout():
    from models.audio.mel import MelSpec, log_mel

    rng = np.random.default_rng(0)
    audio = rng.normal(scale=0.1, size=16000).astype(np.float32)
    w = mel_windows_at_times(audio, 16000, np.array([0.0, 0.5]), 6, 2)
    assert w.shape == (2, 80, 9) and w.dtype == np.float32
    mel = log_mel(audio)
    centre = int(round(0.5 * MelSpec().frame_rate_hz))
    np.testing.assert_allclose(w[1].T, mel[centre - 6 : centre + 3])
    np.testing.assert_allclose(w[0][:, :6], MelSpec().silence_value)  # before the clip: silence
    with pytest.raises(ValueError, match="16000 Hz"):
        mel_windows_at_times(audio, 48000, np.array([0.0]), 6, 2)


@dataclass
class FakePrepared:
    """The parts of PreparedVideo calibration reads, for a 2 s clip of 64 px crops."""

    t_s: np.ndarray
    audio: np.ndarray
    audio_rate_hz: int = 16000
    root: Path = Path("/nonexistent/workdir")

    @property
    def frame_count(self):
        return len(self.t_s)

    def crops(self, i):
        return np.full((64, 64, 3), 100 + i, np.uint8)

    def coarse_normals(self, i):
        n = np.zeros((64, 64, 3), np.float32)
        n[..., 2] = 1
        return n


def test_calibration_data_from_enrollment_runs_the_live_chain(tmp_path):
    fixture = build_fixture_bundle(tmp_path / "avatar")
    rng = np.random.default_rng(1)
    prepared = FakePrepared(t_s=np.arange(20) / 10.0, audio=rng.normal(scale=0.1, size=32000).astype(np.float32))
    data = calibration_from_enrollment(fixture.path, prepared, max_frames=20, held_out_every=4,
                                       nets=["audio_to_expression", "mouth", "shading", "decomposition"])
    a2e, mouth, shading = data.nets["audio_to_expression"], data.nets["mouth"], data.nets["shading"]
    assert len(a2e.calibration) == 15 and len(a2e.held_out) == 5
    assert a2e.calibration[0]["mel_window"].shape == (1, 80, 9)
    assert set(mouth.calibration[0]) == {"coarse_normals", "idle_albedo", "idle_normals", "mouth_mask"}
    assert mouth.calibration[0]["coarse_normals"].shape == (1, 3, 32, 32)
    # The mouth inputs are what the live renderer would feed for the same audio: the chain really ran.
    from stream.bundle_renderer import BundleRenderer

    r = BundleRenderer(fixture.path, use_shading_net=False)
    coeffs = r.lip_coeffs(a2e.calibration[3]["mel_window"][0].T)
    calib_frames, _ = split_frames(20, 20, 4)
    i = r.loop_frame(int(calib_frames[3]))
    want = r.mouth_inputs(i, coeffs, r.decode_layers(i))
    for k, v in want.items():
        np.testing.assert_allclose(mouth.calibration[3][k], v, atol=1e-6)
    assert shading.calibration[0]["normals"].shape == (1, 3, 64, 64)
    assert data.nets["decomposition"].held_out[0]["image"].shape == (1, 3, 64, 64)
