"""Speaker-independent audio encoder: corpus determinism and splits, exact window receptive field, exact resume, and
the shipped weights (ONNX == torch, size, quality on a voice the net never heard)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from models.audio.mel import log_mel
from models.audio.window import mel_window
from models.enroll import audio_encoder as ae
from models.enroll.audio_corpus import (
    AugmentParams,
    CorpusArrays,
    RecordingSpec,
    augment_audio,
    draw_spec,
    heldout_voices,
    make_recording,
    train_voices,
)
from models.speech.espeak import SynthesisParams, synthesize
from models.speech.script import random_script
from models.speech.visemes import viseme_curves


def test_voice_split_is_disjoint_and_recordings_are_deterministic():
    assert not set(train_voices()) & set(heldout_voices())
    spec = draw_spec(7, heldout_voices())
    a, b = make_recording(spec), make_recording(spec)
    assert np.array_equal(a.samples, b.samples) and np.array_equal(a.visemes, b.visemes)
    assert a.mel.shape == (len(a.visemes), 80) and a.visemes.shape[1] == 4
    assert 0.0 <= a.visemes.min() and a.visemes.max() <= 1.0
    # Pauses were inserted around utterances: the labels relax to the closed rest face at the start.
    assert a.visemes[:5, 0].max() < 0.05


def test_speed_change_moves_labels_with_audio():
    slow = RecordingSpec(3, "en-us", 170, 50, 50, 1, None)
    fast_aug = AugmentParams(1.08, None, 0.0, None, None, 0.0, "white", 60.0, -3.0)
    fast = make_recording(dataclasses.replace(slow, augment=fast_aug))
    ref = make_recording(slow)
    # The silence gaps keep their length; the speech, and so the frames with an open jaw, shrink by the speed.
    ratio = np.sum(ref.visemes[:, 0] > 0.1) / np.sum(fast.visemes[:, 0] > 0.1)
    assert ratio == pytest.approx(1.08, abs=0.03)
    assert len(fast.visemes) == len(fast.mel) < len(ref.mel)


def test_augment_reaches_requested_snr():
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    a = AugmentParams(1.0, None, 0.0, None, None, 0.0, "pink", 15.0, -6.0)
    y = augment_audio(tone, a, rng)
    assert np.abs(y).max() == pytest.approx(10 ** (-6 / 20), rel=1e-4)
    gain = np.dot(y, tone) / np.dot(tone, tone)  # the noise is independent of the tone
    residual = y - gain * tone
    snr_db = 10 * np.log10(np.sum((gain * tone) ** 2) / np.sum(residual**2))
    assert snr_db == pytest.approx(15.0, abs=1.0)


@pytest.mark.parametrize("lookahead", [0, 3, 8])
def test_receptive_field_is_exactly_the_window(lookahead):
    torch.manual_seed(0)
    cfg = ae.EncoderConfig(n_mels=12, width=16, past_frames=10, lookahead_frames=lookahead)
    enc = ae.SpeakerIndependentEncoder(cfg).eval()
    mel = np.random.default_rng(0).normal(-5, 2, (60, 12)).astype(np.float32)
    feats, vis = ae.encode_mel(enc, mel, chunk_frames=17)
    anchor = 30
    window = mel_window(mel, anchor, cfg.past_frames, lookahead)
    with torch.no_grad():
        v, f = ae.EncoderWindow(enc)(torch.from_numpy(window.T[None].copy()))
    np.testing.assert_allclose(v[0].numpy(), vis[anchor], atol=1e-5)
    np.testing.assert_allclose(f[0].numpy(), feats[anchor], atol=1e-4)
    # The window's first and last frames matter; the frames just outside do not.
    for k, should_change in ((anchor - cfg.past_frames, True), (anchor + lookahead, True),
                             (anchor - cfg.past_frames - 1, False), (anchor + lookahead + 1, False)):
        poked = mel.copy()
        poked[k] += 5.0
        changed = not np.allclose(ae.encode_mel(enc, poked)[0][anchor], feats[anchor], atol=1e-6)
        assert changed == should_change, k


def _tiny_corpus() -> CorpusArrays:
    rng = np.random.default_rng(1)
    n = 3000
    mel = rng.normal(-5, 2, (n, 16)).astype(np.float16)
    vis = (1 / (1 + np.exp(-mel[:, :4].astype(np.float32)))).astype(np.float16)
    return CorpusArrays(mel, vis, np.array([0, n]), ["x"])


def test_resume_continues_exactly(tmp_path):
    torch.set_num_threads(1)
    data = _tiny_corpus()
    cfg = ae.EncoderConfig(n_mels=16, width=8, past_frames=6, lookahead_frames=2)
    tc = ae.TrainConfig(steps=6, batch=2, crop_out_frames=16, warmup_steps=2, checkpoint_every_s=0.0)
    whole = ae.train_encoder(data, None, tmp_path / "a", cfg, tc, log=lambda s: None)
    ae.train_encoder(data, None, tmp_path / "b", cfg, tc, log=lambda s: None, stop_after_steps=3)
    resumed = ae.train_encoder(data, None, tmp_path / "b", cfg, tc, resume=True, log=lambda s: None)
    for (name, p), q in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name


shipped = pytest.mark.skipif(not ae.ASSET_STATE.exists(), reason="no shipped audio encoder")


@shipped
def test_shipped_onnx_matches_torch_and_is_small():
    import onnxruntime as ort

    assert ae.ASSET_ONNX.stat().st_size + ae.ASSET_STATE.stat().st_size < 5e6
    enc = ae.load_encoder()
    clip = synthesize(random_script(5, 1), SynthesisParams("en-gb-x-gbcwmd+f4"))
    mel = log_mel(clip.samples)
    c = enc.config
    windows = np.stack([mel_window(mel, i, c.past_frames, c.lookahead_frames).T for i in (0, 40, 120)])
    sess = ort.InferenceSession(str(ae.ASSET_ONNX), providers=["CPUExecutionProvider"])
    got_v, got_f = sess.run(["visemes", "features"], {"mel_window": windows.astype(np.float32)})
    with torch.no_grad():
        want_v, want_f = ae.EncoderWindow(enc)(torch.from_numpy(windows))
    np.testing.assert_allclose(got_v, want_v.numpy(), atol=1e-4)
    np.testing.assert_allclose(got_f, want_f.numpy(), atol=1e-4)


@shipped
def test_shipped_encoder_follows_a_voice_it_never_heard():
    enc = ae.load_encoder()
    clip = synthesize(random_script(12345, 4), SynthesisParams("en-gb-x-gbcwmd+m5", rate_wpm=190, pitch=35))
    _, vis = ae.encode_audio(enc, clip.samples)
    labels = viseme_curves(clip.phonemes, 100.0, len(vis))
    assert ae.pearson(vis[:, 0], labels[:, 0]) > 0.75  # jaw_open
    assert ae.pearson(vis[:, 3], labels[:, 3]) > 0.5  # lip_press (closures for p/b/m)
    lag_ms, _ = ae.lag_of_peak_ms(labels[:, 0], vis[:, 0], 100.0)
    assert abs(lag_ms) <= 20.0
    # Time-reversed audio is speech-like noise with the wrong phonetics: correlation must collapse.
    _, rev = ae.encode_audio(enc, clip.samples[::-1].copy())
    assert ae.pearson(rev[::-1, 3], labels[:, 3]) < ae.pearson(vis[:, 3], labels[:, 3]) - 0.2
