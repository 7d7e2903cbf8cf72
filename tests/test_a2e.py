"""Personal audio-to-expression head: fits lip coefficients that depend on the speech, not ones that do not, and
exports the whole chain as one ONNX net with the bundle's input/output names."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.audio.mel import log_mel
from models.audio.window import mel_frame_for_video_frame, mel_window
from models.enroll import audio_encoder as ae
from models.enroll.a2e import A2EConfig, export_a2e_onnx, fit_personal_a2e, opening_direction
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
