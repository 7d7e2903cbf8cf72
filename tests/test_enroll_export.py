"""Miniature enrollment end to end: synth clip -> prepare (S = 64) -> decomposition -> mouth -> bundle -> load_bundle
-> every net under ONNX Runtime. The audio_to_expression net here is an untrained stand-in of the right interface
(models/enroll/a2e.py makes the real one); everything else is the real path with tiny sizes and few steps."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from models.bundle import load_bundle
from models.colour import srgb_to_linear
from models.enroll.decompose import DecomposeParams, load_pool, pool_indices, train_decomposition
from models.enroll.export import MIB, AudioToExpressionNet, export_bundle
from models.enroll.expression import fit_expression_space
from models.enroll.mouth import MouthParams, train_mouth, train_samples_from_model
from models.enroll.nets import AudioToExpression
from models.enroll.prepare import prepare_video
from models.enroll.workdir import WorkDir
from models.face.resources import load_topology
from models.synth.clip import SynthConfig, synth_clip

S = 64
N_LIP = 4


@pytest.fixture(scope="module")
def enrolled(tmp_path_factory):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("enroll")
    synth_clip(SynthConfig(out_dir=root / "clip", seconds=2.0, size_px=128, fps=25, seed=3, lightings=1, workers=1),
               log=lambda *_: None)
    wd = WorkDir(root / "work")
    prepared = prepare_video(root / "clip" / "video.mp4", wd, size_px=S, progress=False, min_usable_s=1.0)
    dparams = DecomposeParams(widths=(8, 16), steps=4, batch=2, max_pool_frames=12)
    pool = load_pool(prepared, pool_indices(0, prepared.frame_count, dparams.max_pool_frames), dparams.work_scale)
    decomposition = train_decomposition(wd, pool, dparams, progress=False).model
    idx = pool.indices
    normals = np.stack([prepared._read("normals", int(i)) for i in idx]).astype(np.float32)
    mparams = MouthParams(widths=(8, 16), steps=3, batch=2)
    samples = train_samples_from_model(decomposition, prepared.crops(idx), normals, prepared.person_matte(idx),
                                       prepared.landmarks_px[idx], load_topology().triangles, mparams)
    train_mouth(wd, samples, decomposition, mparams, progress=False)
    space = fit_expression_space(prepared.landmarks_px, n_lip=N_LIP)
    a2e = AudioToExpression(n_mels=80, n_coeffs=N_LIP, width=16, heads=2, layers=1, window_frames=12,
                            lookahead_frames=3).eval()
    a2e_path = root / "a2e.onnx"
    torch.onnx.export(a2e, (torch.randn(1, 80, 12),), str(a2e_path), input_names=["mel_window"],
                      output_names=["lip_coeffs"], opset_version=17, dynamo=False)
    yield wd, prepared, space, AudioToExpressionNet(a2e_path, mel_past_frames=8, mel_lookahead_frames=3), root
    torch.set_num_threads(before)


def test_bundle_round_trip_and_onnx_runtime(enrolled):
    wd, prepared, space, a2e, root = enrolled
    report = export_bundle(wd, root / "bundle", "tiny", a2e=a2e, expression=space, idle_loop_s=0.6)
    bundle = load_bundle(report.path)
    n = report.idle_frames
    assert 2 <= n <= 15 and report.idle_loop_mode in ("pingpong", "forward")
    assert 0 < report.elapsed_s < 300  # seconds this export took
    assert set(bundle.nets) == {"decomposition", "mouth", "shading", "audio_to_expression"}
    a = bundle.arrays
    assert a["idle_albedo"].shape == (n, S, S, 3) and a["idle_albedo"].dtype == np.uint8
    assert a["idle_normals"].shape == (n, S, S, 3) and a["idle_spec_weight"].shape == (n, S, S)
    assert a["idle_landmarks"].shape == (n, 468, 3) and a["idle_pose"].shape == (n, 4, 4)
    assert a["expression_basis"].shape[0] == N_LIP and a["triangles"].dtype == np.int32
    info = bundle.info
    m = info["mouth_px"]
    assert info["n_lip"] == N_LIP and info["loop"] == report.idle_loop_mode and bundle.lookahead_ms == 30.0
    assert np.all(a["idle_mouth_box"] >= 0) and np.all(a["idle_mouth_box"] <= S - m)
    # Decoded normals of the person are unit vectors (up to 8-bit rounding).
    nrm = a["idle_normals"].astype(np.float32) / 127.5 - 1.0
    person = a["idle_matte"] > 200
    assert np.abs(np.linalg.norm(nrm[person], axis=-1) - 1.0).max() < 0.03
    assert max(report.onnx_max_abs_diff.values()) <= 1e-3
    # The stored albedo is the frame's folded albedo with the soft edge decontaminated (and only there).
    from models.enroll.decompose import decompose_prepared, load_model
    from models.enroll.export import encode_albedo
    from models.enroll.matte_edges import SOLID_MATTE, decontaminate_edges

    first = info["idle_frames"][0]
    layers = decompose_prepared(load_model(wd)[0], prepared, [first], fold_residual=True)
    want = encode_albedo(decontaminate_edges(layers.albedo, layers.matte))[0]
    assert np.abs(a["idle_albedo"][0].astype(int) - want).max() <= 1
    soft = (layers.matte[0] > 0) & (layers.matte[0] < SOLID_MATTE)
    assert soft.any() and (encode_albedo(layers.albedo)[0][soft] != want[soft]).any()

    run = lambda net, feeds: ort.InferenceSession(str(bundle.net_path(net)), providers=["CPUExecutionProvider"]).run(
        None, feeds)  # noqa: E731
    image = srgb_to_linear(prepared.crops(0) / 255.0).transpose(2, 0, 1)[None].astype(np.float32)
    coarse = prepared._read("normals", 0).astype(np.float32).transpose(2, 0, 1)[None]
    normals, residual, albedo, spec = run("decomposition", {"image": image, "coarse_normals": coarse})
    assert albedo.shape == (1, 3, S, S) and 0 <= albedo.min() and albedo.max() <= 1
    assert np.abs(residual).max() <= 0.5
    rng = np.random.default_rng(0)
    mouth_in = {"coarse_normals": rng.normal(size=(2, 3, m, m)).astype(np.float32),
                "idle_albedo": rng.random((2, 3, m, m), np.float32), "idle_normals": rng.random((2, 3, m, m), np.float32),
                "mouth_mask": (rng.random((2, 1, m, m)) > 0.5).astype(np.float32)}
    outs = run("mouth", mouth_in)
    assert [o.shape for o in outs] == [(2, 3, m, m), (2, 3, m, m), (2, 1, m, m), (2, 1, m, m)]
    (shade,) = run("shading", {"normals": normals[:, :, :20, :30], "sh_shading": np.full((1, 3, 20, 30), 0.5,
                                                                                           np.float32)})
    assert shade.shape == (1, 3, 20, 30) and np.all(shade > 0.5 * np.exp(-0.71))
    (lips,) = run("audio_to_expression", {"mel_window": rng.normal(size=(1, 80, 12)).astype(np.float32)})
    assert lips.shape == (1, N_LIP)


def test_bundle_size_budget_limits_the_idle_loop(enrolled):
    wd, _, space, a2e, root = enrolled
    small = export_bundle(wd, root / "small", "tiny", a2e=a2e, expression=space, idle_loop_s=10.0, max_bundle_mb=0.6)
    assert small.bytes_total <= 0.6 * MIB
    assert 2 <= small.idle_frames < 25
    with pytest.raises(ValueError, match="leaves room"):
        export_bundle(wd, root / "none", "tiny", a2e=a2e, expression=space, max_bundle_mb=0.05)


def test_a_given_loop_too_long_for_the_budget_is_replaced_by_a_shorter_one(enrolled):
    from models.enroll.expression import IdleLoop

    wd, prepared, space, a2e, root = enrolled
    n = prepared.frame_count
    whole = IdleLoop(frame_indices=np.arange(n), start=0, end=n, mode="cut", seam_cost=1.0, mouth_opening_mean=0.0,
                     fps=prepared.fps)
    roomy = export_bundle(wd, root / "roomy", "tiny", a2e=a2e, expression=space, idle_loop=whole, max_bundle_mb=30)
    assert roomy.idle_frames == n and roomy.idle_loop_mode == "forward"  # fits: kept as given
    tight = export_bundle(wd, root / "tight", "tiny", a2e=a2e, expression=space, idle_loop=whole, max_bundle_mb=0.6)
    assert 2 <= tight.idle_frames < n and tight.bytes_total <= 0.6 * MIB
    info = load_bundle(tight.path).info
    assert info["idle_frames"][1] - info["idle_frames"][0] == tight.idle_frames
