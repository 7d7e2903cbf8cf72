"""Personal audio-to-expression head: fits lip coefficients that depend on the speech, not ones that do not, and
exports the whole chain as one ONNX net with the bundle's input/output names."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from models.audio.mel import log_mel
from models.audio.window import mel_frame_for_video_frame, mel_window, mel_windows_for_video
from models.enroll import audio_encoder as ae
from models.enroll.a2e import (A2EConfig, PersonalHead, export_a2e_onnx, fit_personal_a2e, opening_direction,
                               spread_gains)
from models.speech.espeak import SynthesisParams, synthesize
from models.speech.script import random_script
from models.speech.visemes import viseme_curves

pytestmark = pytest.mark.skipif(not ae.ASSET_STATE.exists(), reason="no shipped audio encoder")

FPS = 25.0
FAST = A2EConfig(steps=400, n_augmented_copies=1)


def _clip(seed: int, voice: str):
    clip = synthesize(random_script(seed, 14), SynthesisParams(voice, rate_wpm=170))
    n = int(clip.duration_s * FPS)
    return clip, viseme_curves(clip.phonemes, FPS, n)


@pytest.fixture(scope="module")
def enrollment():
    torch.set_num_threads(1)
    clip, visemes = _clip(3, "en-us+m3")
    rng = np.random.default_rng(0)
    mix = rng.normal(0, 1, (4, 12))
    # A person whose lip PCA coefficients are a fixed linear function of articulation, plus tracker noise.
    lips = visemes @ mix + 0.05 * rng.normal(0, 1, (len(visemes), 12))
    return clip, lips.astype(np.float32), ae.load_encoder()


def test_fits_speech_driven_lips_and_reports_on_held_back_frames(enrollment):
    clip, lips, encoder = enrollment
    chain, report = fit_personal_a2e(clip.samples, lips, FPS, encoder, FAST)
    assert report.n_train_frames == round(0.8 * len(lips)) and report.n_val_frames == len(lips) - report.n_train_frames
    assert len(report.per_coeff_r) == 12
    assert report.variance_weighted_r > 0.8 and report.mean_r > 0.7
    assert report.lipsync_offset_pred_ms is not None and report.lipsync_offset_true_ms is not None
    assert abs(report.lipsync_offset_pred_ms - report.lipsync_offset_true_ms) < 60.0
    assert abs(report.lag_pred_vs_true_ms) <= 40.0


def test_lips_unrelated_to_the_audio_are_not_learned(enrollment):
    clip, lips, encoder = enrollment
    # The same lip statistics, but from another utterance: nothing in this audio predicts them.
    _, other_visemes = _clip(99, "en-us+m3")
    n = min(len(lips), len(other_visemes))
    other = (other_visemes[:n] @ np.random.default_rng(0).normal(0, 1, (4, 12))).astype(np.float32)
    _, report = fit_personal_a2e(clip.samples[: int(n / FPS * 16000)], other, FPS, encoder, FAST)
    assert report.variance_weighted_r < 0.35


def test_chain_exports_to_one_onnx_equal_to_torch(enrollment, tmp_path):
    import onnxruntime as ort

    clip, lips, encoder = enrollment
    chain, _ = fit_personal_a2e(clip.samples, lips, FPS, encoder, A2EConfig(steps=50, n_augmented_copies=0))
    path = tmp_path / "audio_to_expression.onnx"
    assert export_a2e_onnx(chain, path) < 1e-4
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert inp.name == "mel_window" and inp.shape[1:] == [80, encoder.config.window_frames]
    assert [o.name for o in sess.get_outputs()] == ["lip_coeffs"]
    mel = log_mel(clip.samples)
    c = encoder.config
    rows = mel_frame_for_video_frame(np.array([0, 50, 200]), FPS)
    for row in rows:
        w = mel_window(mel, int(row), c.past_frames, c.lookahead_frames).T[None].astype(np.float32)
        (got,) = sess.run(["lip_coeffs"], {"mel_window": w})
        with torch.no_grad():
            want = chain(torch.from_numpy(w)).numpy()
        assert got.shape == (1, 12)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_opening_direction_recovers_a_planted_mix():
    rng = np.random.default_rng(0)
    lips = rng.normal(0, 1, (500, 6))
    w_true = np.array([0.0, 2.0, 0.0, -1.0, 0.0, 0.5])
    w = opening_direction(lips, lips @ w_true + 3.0)
    np.testing.assert_allclose(w, w_true, atol=1e-8)


def test_rejects_bad_inputs(enrollment):
    clip, lips, encoder = enrollment
    bad = lips.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_personal_a2e(clip.samples, bad, FPS, encoder, FAST)
    with pytest.raises(ValueError, match="lip_coeffs"):
        fit_personal_a2e(clip.samples, lips[:, 0], FPS, encoder, FAST)


# ------------------------------------------------------------------------------------ output spread calibration


@pytest.fixture(scope="module")
def shrinking(enrollment):
    """Noisy audio (white noise, ~12 dB SNR) and lips with tracker noise as large as the articulation: a ridge fit
    predicts visibly less spread than the measured lips have."""
    clip, _, encoder = enrollment
    _, visemes = _clip(3, "en-us+m3")
    rng = np.random.default_rng(1)
    signal = visemes @ rng.normal(0, 1, (4, 12))
    lips = (signal + signal.std(0) * rng.normal(0, 1, signal.shape)).astype(np.float32)
    audio = clip.samples + 0.25 * clip.samples.std() * rng.normal(0, 1, len(clip.samples)).astype(np.float32)
    return audio.astype(np.float32), lips, encoder


def _onnx_outputs(chain, audio, n_frames, path):
    import onnxruntime as ort

    assert export_a2e_onnx(chain, path) < 1e-4
    c = chain.encoder.config
    windows = mel_windows_for_video(log_mel(audio), FPS, n_frames, c.past_frames, c.lookahead_frames)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(["lip_coeffs"], {"mel_window": np.ascontiguousarray(windows.transpose(0, 2, 1), np.float32)})[0]


def test_spread_calibration_matches_the_training_std_and_is_folded_into_the_export(shrinking, tmp_path):
    audio, lips, encoder = shrinking
    config = A2EConfig(steps=100, n_augmented_copies=1)
    raw_chain, raw_report = fit_personal_a2e(audio, lips, FPS, encoder, replace(config, calibrate_spread=False))
    chain, report = fit_personal_a2e(audio, lips, FPS, encoder, config)
    n = report.n_train_frames
    assert raw_report.spread_gain == [1.0] * 12
    gain = np.array(report.spread_gain)
    assert np.all(gain > 1.2) and np.all(gain < config.spread_gain_range[1])  # shrunk, and not clipped here

    # Through the exported ONNX nets (what the bundle runs), on the training span's audio windows:
    raw = _onnx_outputs(raw_chain, audio, len(lips), tmp_path / "raw.onnx")[:n]
    cal = _onnx_outputs(chain, audio, len(lips), tmp_path / "calibrated.onnx")[:n]
    target_std = lips[:n].std(0)
    assert np.median(raw.std(0) / target_std) < 0.8  # the ridge head visibly shrinks
    np.testing.assert_allclose(cal.std(0) / target_std, 1.0, atol=0.1)
    # Folded as centre + gain * (raw - centre) per coefficient: cal - gain * raw is a constant per coefficient,
    # with the centre at the raw prediction's training mean (the average pose is kept).
    offset = cal - gain * raw
    assert np.all(offset.std(0) < 1e-3 * target_std)
    np.testing.assert_allclose(offset.mean(0) / (1.0 - gain), raw.mean(0), atol=0.02 * target_std.max())

    # Held-out: correlations unchanged, spread restored toward the measured one.
    np.testing.assert_allclose(report.per_coeff_r, raw_report.per_coeff_r, atol=1e-4)
    np.testing.assert_allclose(report.val_std_ratio_uncalibrated, raw_report.val_std_ratio, atol=1e-5)
    assert np.median(report.val_std_ratio) > np.median(raw_report.val_std_ratio) + 0.2
    assert abs(np.median(report.val_std_ratio) - 1.0) < 0.25


def test_spread_gain_never_sees_the_held_out_frames(shrinking):
    audio, lips, encoder = shrinking
    config = A2EConfig(steps=50, n_augmented_copies=0, try_mlp=False)
    n = round(config.train_fraction * len(lips))
    wider = lips.copy()
    wider[n:] = lips[n:].mean(0) + 3.0 * (lips[n:] - lips[n:].mean(0))  # the held-out part moves 3x as much
    _, report = fit_personal_a2e(audio, lips, FPS, encoder, config)
    _, report_wider = fit_personal_a2e(audio, wider, FPS, encoder, config)
    # The held-out part really differs (its std ratio drops ~3x) ...
    np.testing.assert_allclose(np.array(report_wider.val_std_ratio) * 3.0, report.val_std_ratio, rtol=0.02)
    # ... and the gains do not move.
    np.testing.assert_allclose(report_wider.spread_gain, report.spread_gain, rtol=1e-6)
    assert min(report.spread_gain) > 1.2


def test_fold_output_gain_scales_linear_and_mlp_about_the_centre():
    torch.manual_seed(0)
    head = PersonalHead(10, 3, hidden=8, dropout=0.0, use_mlp=True).eval()
    with torch.no_grad():
        head.coeff_std.copy_(torch.tensor([2.0, 0.5, 1.0]))
        head.coeff_mean.copy_(torch.tensor([1.0, -1.0, 0.0]))
    x = torch.randn(64, 10)
    with torch.no_grad():
        before = head.standardised(x).numpy()
        gain, centre = np.array([1.0, 2.5, 4.0]), np.array([0.3, -0.2, 0.0])
        head.fold_output_gain(gain, centre)
        after = head.standardised(x).numpy()
        out = head(x).numpy()
    np.testing.assert_allclose(after, centre + gain * (before - centre), atol=1e-5)
    np.testing.assert_allclose(out, after * [2.0, 0.5, 1.0] + [1.0, -1.0, 0.0], atol=1e-5)


def test_spread_gains_clip_to_the_range():
    rng = np.random.default_rng(0)
    target = rng.normal(0, 1, (500, 3))
    pred = target * [0.5, 0.01, 2.0]  # shrunk 2x, nearly flat (would be 100x), wider than the target
    np.testing.assert_allclose(spread_gains(pred, target, (1.0, 4.0)), [2.0, 4.0, 1.0])
    with pytest.raises(ValueError, match="spread_gain_range"):
        A2EConfig(spread_gain_range=(2.0, 1.0))
