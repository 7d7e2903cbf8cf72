"""BundleRenderer against a TEST FIXTURE bundle: random-init nets (models/enroll/nets.py) exported with the contract's
names and shapes, and synthetic idle layers. Nothing here is trained; it exists only to exercise the live path.

`build_fixture_bundle` is also used by tests/test_backend.py and scripts/bench_renderer.py (timings only)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import BundleError, NetSpec, write_bundle
from models.colour import srgb_to_linear
from models.enroll.expression import lip_region, lip_vertices
from models.enroll.nets import AudioToExpression, MouthNet, ShadingCorrection
from models.face.pose import HeadPose
from models.face.resources import load_canonical_face, load_topology
from models.lighting.lighting import Lighting
from models.lighting.sh import axis_angle_matrix
from models.render import render, shading
from stream.bundle_renderer import BundleRenderer, loop_position, sh_shading

Y_DOWN = np.array([1.0, -1.0, 1.0])


@dataclass
class Fixture:
    path: Path
    nets: dict  # name -> the torch module exported there (eval mode)


def _export(net, args, in_names, out_names, path: Path, dynamic_hw: bool = False) -> NetSpec:
    net.eval()
    axes = {n: {0: "batch"} for n in in_names + out_names}
    if dynamic_hw:
        axes = {n: {0: "batch", 2: "height", 3: "width"} for n in in_names + out_names}
    torch.onnx.export(net, args, str(path), input_names=in_names, output_names=out_names, dynamic_axes=axes,
                      dynamo=False, opset_version=17)
    with torch.no_grad():
        outs = net(*args)
    outs = outs if isinstance(outs, tuple) else (outs,)

    def shape(t, dyn):
        s = list(t.shape)
        s[0] = -1
        if dyn:
            s[2] = s[3] = -1
        return s

    return NetSpec(file="", inputs={n: shape(a, dynamic_hw) for n, a in zip(in_names, args)},
                   outputs={n: shape(o, dynamic_hw) for n, o in zip(out_names, outs)})


def build_fixture_bundle(out: Path, size_px: int = 64, mouth_px: int = 32, n_frames: int = 4, loop: str = "pingpong",
                         seed: int = 0, blend_bias: float | None = None, mouth_widths=(8, 16),
                         shading_net: bool = True, coeff_gain: float = 1.5, n_lip: int = 6) -> Fixture:
    """A complete, valid bundle of random-init nets and synthetic layers (a test fixture, never an avatar).

    blend_bias: force the mouth net's blend output to sigmoid(bias) everywhere (-1e4: exactly 0).
    coeff_gain: scales the random a2e head so driven lips move by pixels, not fractions of one.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    s, m, n = size_px, mouth_px, n_frames
    past, look = 6, 2
    tmp = out.parent / f".{out.name}-onnx"
    tmp.mkdir(parents=True, exist_ok=True)

    a2e = AudioToExpression(n_mels=80, n_coeffs=n_lip, width=32, heads=2, layers=1, window_frames=past + 1 + look,
                            lookahead_frames=look)
    with torch.no_grad():
        a2e.head.weight.mul_(coeff_gain)
    mouth = MouthNet(widths=mouth_widths)
    if blend_bias is not None:
        with torch.no_grad():
            head = mouth.unet.head
            head.weight[7].zero_()
            head.bias[7] = blend_bias
    shade = ShadingCorrection(hidden=8)
    nets = {"audio_to_expression": a2e, "mouth": mouth}
    onnx_files = {
        "audio_to_expression": (tmp / "a2e.onnx", _export(a2e, (torch.randn(1, 80, past + 1 + look),), ["mel_window"],
                                                          ["lip_coeffs"], tmp / "a2e.onnx")),
        "mouth": (tmp / "mouth.onnx", _export(
            mouth, (torch.randn(1, 3, m, m), torch.rand(1, 3, m, m), torch.randn(1, 3, m, m), torch.rand(1, 1, m, m)),
            ["coarse_normals", "idle_albedo", "idle_normals", "mouth_mask"],
            ["albedo", "normals", "spec_weight", "blend"], tmp / "mouth.onnx")),
    }
    if shading_net:
        nets["shading"] = shade
        onnx_files["shading"] = (tmp / "shading.onnx", _export(
            shade, (torch.randn(1, 3, 8, 8), torch.rand(1, 3, 8, 8)), ["normals", "sh_shading"], ["shading"],
            tmp / "shading.onnx", dynamic_hw=True))

    # Idle loop: the canonical face posed into the crop with a slow yaw sway.
    canonical = load_canonical_face().vertices.astype(np.float64)
    scale = 0.45 * s / 1.49
    landmarks, poses, boxes = [], [], []
    region = lip_region()
    mouth_ids = region.indices[region.weights >= 0.5]
    for i in range(n):
        rot = axis_angle_matrix([0, 1, 0], 0.05 * np.sin(i))
        t = np.array([s / 2 + i * 0.3, -0.48 * s, 0.0])
        lm = (scale * canonical @ rot.T + t) * Y_DOWN
        pose = np.eye(4)
        pose[:3, :3], pose[:3, 3] = scale * rot, t
        centre = lm[mouth_ids, :2].mean(0)
        landmarks.append(lm)
        poses.append(pose)
        boxes.append(np.clip(np.round(centre - m / 2), 0, s - m))
    yy, xx = (np.mgrid[0:s, 0:s] + 0.5) / s * 2 - 1
    r2 = xx**2 + (yy * 0.8) ** 2
    sphere = np.stack([xx, -yy, np.sqrt(np.clip(1 - np.minimum(r2, 1), 0, 1))], -1)
    sphere /= np.linalg.norm(sphere, axis=-1, keepdims=True)
    matte = np.clip((1.0 - np.sqrt(r2)) * s / 4, 0, 1)
    # Smooth displacement fields (jaw drop, widening, ...) like a real lip PCA's, not per-vertex noise.
    q = canonical[region.indices] - canonical[region.indices].mean(0)
    polys = [np.ones(len(q)), q[:, 1], q[:, 0], q[:, 0] * q[:, 1], q[:, 0] ** 2, q[:, 1] ** 2]
    fields = np.zeros((n_lip, len(q), 3))
    for j in range(n_lip):
        fields[j, :, (1, 0, 2)[j % 3]] = polys[j % len(polys)]
    basis = np.linalg.qr(fields.reshape(n_lip, -1).T)[0].T.reshape(n_lip, -1, 3)
    arrays = {
        "idle_albedo": rng.integers(60, 230, (n, s, s, 3), dtype=np.uint8),
        "idle_normals": np.round(np.broadcast_to(sphere, (n, s, s, 3)) * 127.5 + 127.5).astype(np.uint8),
        "idle_spec_weight": rng.integers(0, 256, (n, s, s), dtype=np.uint8),
        "idle_matte": np.round(np.broadcast_to(matte, (n, s, s)) * 255).astype(np.uint8),
        "idle_landmarks": np.asarray(landmarks, np.float32),
        "idle_pose": np.asarray(poses, np.float32),
        "idle_mouth_box": np.asarray(boxes, np.int32),
        "expression_mean": canonical[region.indices].astype(np.float32),
        "expression_basis": basis.astype(np.float32),
        "expression_vertices": region.indices.astype(np.int32),
        "triangles": load_topology().triangles.astype(np.int32),
    }
    info = {"mouth_px": m, "mouth_mask_grow_px": 1.5, "mouth_mask_margin_px": 2, "n_lip": n_lip, "shininess": 24.0,
            "loop": loop, "mel_past_frames": past, "mel_lookahead_frames": look,
            "fixture": "random-init nets; a test fixture, not a trained avatar"}
    sh = np.zeros((9, 3), np.float32)
    sh[0] = 1.0
    write_bundle(out, name="fixture", size_px=s, fps=30.0, lookahead_ms=look * 10 + 12.5, sh_coeffs=sh,
                 onnx_files=onnx_files, arrays=arrays, info=info)
    return Fixture(out, nets)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory) -> Fixture:
    return build_fixture_bundle(tmp_path_factory.mktemp("bundles") / "avatar")


@pytest.fixture(scope="module")
def no_blend(tmp_path_factory) -> Fixture:
    return build_fixture_bundle(tmp_path_factory.mktemp("bundles") / "avatar", blend_bias=-1e4, loop="forward")


def _mel(seed: int, renderer: BundleRenderer) -> np.ndarray:
    t = renderer.mel_past_frames + 1 + renderer.mel_lookahead_frames
    return np.random.default_rng(seed).normal(-4.0, 2.0, (t, 80)).astype(np.float32)


KEY_LIGHT = Lighting(np.eye(9, 3, dtype=np.float32) * 0.8 + 0.1, [[0.5, 0.4, 0.77]], [[2.0, 1.8, 1.6]])
SIDE_LIGHT = Lighting(KEY_LIGHT.sh_coeffs * 0.5, [[-0.9, 0.1, 0.42]], [[0.3, 0.5, 2.5]])


def test_renderer_meets_protocol_and_output_ranges(fixture):
    r = BundleRenderer(fixture.path)
    assert r.frame_size == (64, 64) and r.fps == 30.0 and (r.mel_past_frames, r.mel_lookahead_frames) == (6, 2)
    assert r.use_shading_net
    frame = r.render(_mel(0, r), KEY_LIGHT, 3)
    assert frame.rgb_linear.shape == (64, 64, 3) and frame.rgb_linear.dtype == np.float32
    assert frame.matte.shape == (64, 64) and frame.matte.dtype == np.float32
    assert np.isfinite(frame.rgb_linear).all() and frame.rgb_linear.min() >= 0 and frame.rgb_linear.max() > 0.05
    assert 0 <= frame.matte.min() and frame.matte.max() <= 1
    off = frame.matte == 0
    assert off.any() and not frame.rgb_linear[off].any()  # off the person the compositor shows the background


class DeviceArray:
    """Stands in for a CuPy array: NumPy refuses to convert it implicitly (as it refuses CuPy's); `.get()` copies it
    to the host."""

    __module__ = "cupy._standin"

    def __init__(self, host: np.ndarray) -> None:
        self._host = host

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")

    def get(self) -> np.ndarray:
        return self._host.copy()


class DeviceBackend:
    """A CUDA backend's answers (device arrays) from the CPU backend's numbers."""

    device = "cuda"

    def __init__(self, inner) -> None:
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def run(self, net, inputs):
        return {k: DeviceArray(v) for k, v in self.inner.run(net, inputs).items()}


def test_a_cuda_backends_device_arrays_render_the_same_frame(fixture):
    cpu = BundleRenderer(fixture.path)
    cuda = BundleRenderer(fixture.path)
    cuda.backend = DeviceBackend(cuda.backend)
    for k in range(3):
        want, got = cpu.render(_mel(k, cpu), KEY_LIGHT, k), cuda.render(_mel(k, cuda), KEY_LIGHT, k)
        np.testing.assert_array_equal(got.rgb_linear, want.rgb_linear)
        np.testing.assert_array_equal(got.matte, want.matte)


def test_with_zero_blend_the_frame_is_the_relit_idle_frame(no_blend):
    r = BundleRenderer(no_blend.path, use_shading_net=False)
    for k, lighting in ((1, KEY_LIGHT), (2, SIDE_LIGHT)):
        frame = r.render(_mel(k, r), lighting, k)
        layers = r.decode_layers(k)
        want = render(layers.albedo, layers.normals, layers.spec_weight, lighting, r.shininess)
        on = layers.matte > 0
        np.testing.assert_allclose(frame.rgb_linear[on], want[on], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(frame.matte, layers.matte)
    a, b = (r.render(_mel(0, r), lt, 0).rgb_linear for lt in (KEY_LIGHT, SIDE_LIGHT))
    assert np.abs(a - b).mean() > 0.02  # the lighting is really applied


def test_decoded_layers_follow_the_bundle_encoding(no_blend):
    r = BundleRenderer(no_blend.path)
    layers, raw = r.decode_layers(2), r.bundle.arrays
    np.testing.assert_allclose(layers.albedo, srgb_to_linear(raw["idle_albedo"][2] / 255.0), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(layers.normals, axis=2), 1.0, atol=1e-5)
    n = (raw["idle_normals"][2].astype(np.float32) - 127.5) / 127.5
    np.testing.assert_allclose(layers.normals, n / np.linalg.norm(n, axis=2, keepdims=True), atol=1e-6)
    # The matte as stored, faded toward the crop's left, right and top edges (fade_crop_edges).
    from stream.bundle_renderer import fade_crop_edges

    np.testing.assert_allclose(layers.matte, fade_crop_edges(raw["idle_matte"][2:3])[0] / 255.0, atol=1e-6)


def test_mouth_follows_audio_and_nothing_else_moves(fixture):
    r = BundleRenderer(fixture.path)
    frames = [r.render(_mel(seed, r), KEY_LIGHT, 5) for seed in (1, 2)]
    i = r.loop_frame(5)
    bx, by = r.bundle.arrays["idle_mouth_box"][i]
    inside = np.zeros((64, 64), bool)
    inside[by : by + r.mouth_px, bx : bx + r.mouth_px] = True
    diff = np.abs(frames[0].rgb_linear - frames[1].rgb_linear).max(axis=2)
    assert diff[inside].max() > 1e-3
    np.testing.assert_array_equal(frames[0].rgb_linear[~inside], frames[1].rgb_linear[~inside])
    c1, c2 = r.lip_coeffs(_mel(1, r)), r.lip_coeffs(_mel(2, r))
    in1, in2 = r.mouth_inputs(i, c1, r.decode_layers(i)), r.mouth_inputs(i, c2, r.decode_layers(i))
    assert np.abs(in1["coarse_normals"] - in2["coarse_normals"]).max() > 0.05  # the driven mesh reaches the net
    mask = in1["mouth_mask"][0, 0] > 0
    assert 0.05 < mask.mean() < 0.95
    assert not in1["idle_albedo"][0][:, mask].any()  # idle inputs are zeroed where the mouth is generated


def test_mouth_inputs_are_built_as_in_training(fixture):
    """The live renderer feeds the mouth net what models/enroll/mouth.py trained it on: zero normals where no
    triangle covers (the open mouth is a hole) and the mask grown by mouth_mask_grow_px, kept
    mouth_mask_margin_px inside the box."""
    from models.enroll.mouth import mouth_coarse_normals, mouth_region_mask

    r = BundleRenderer(fixture.path)
    a = r.bundle.arrays
    i = r.loop_frame(3)
    coeffs = r.lip_coeffs(_mel(4, r))
    idle = a["idle_landmarks"][i].astype(np.float64)
    driven = idle.copy()
    driven[r.geometry.vertices] = r.driven_vertices(i, coeffs)
    box = a["idle_mouth_box"][i]
    got = r.mouth_inputs(i, coeffs, r.decode_layers(i))
    want_normals = mouth_coarse_normals(driven, a["triangles"].astype(np.int64), box, r.mouth_px)
    np.testing.assert_allclose(got["coarse_normals"][0].transpose(1, 2, 0), want_normals, atol=1e-4)
    assert (np.linalg.norm(want_normals, axis=-1) == 0).any()  # something is uncovered, and stays zero
    info = r.bundle.info
    want_mask = mouth_region_mask([idle, driven], box, r.mouth_px, info["mouth_mask_grow_px"],
                                  info["mouth_mask_margin_px"])
    assert 0.05 < want_mask.mean() < 0.95
    np.testing.assert_array_equal(got["mouth_mask"][0, 0] > 0, want_mask)
    unclipped = mouth_region_mask([idle, driven], box, r.mouth_px, info["mouth_mask_grow_px"])
    assert unclipped[:2].any() or unclipped[-2:].any() or unclipped[:, :2].any() or unclipped[:, -2:].any(), \
        "the fixture's hull should reach the border, else the margin is not tested"


def test_driven_vertices_equal_expression_lip_vertices(fixture):
    r = BundleRenderer(fixture.path)
    a = r.bundle.arrays
    coeffs = r.lip_coeffs(_mel(3, r))
    i = 2
    pose = HeadPose(rotation=a["idle_pose"][i, :3, :3] / np.cbrt(np.linalg.det(a["idle_pose"][i, :3, :3])),
                    scale_px=float(np.cbrt(np.linalg.det(a["idle_pose"][i, :3, :3]))),
                    translation_px=a["idle_pose"][i, :3, 3].astype(np.float64), rms_error_px=0.0)
    from models.enroll.expression import ExpressionSpace

    region = lip_region()
    space = ExpressionSpace(region.indices, region.weights, a["expression_mean"], a["expression_basis"],
                            np.ones(6, np.float32), np.ones(6, np.float32) / 6)
    want = lip_vertices(space, coeffs, a["idle_landmarks"][i], pose)[r.geometry.vertices]
    np.testing.assert_allclose(r.driven_vertices(i, coeffs), want, atol=2e-3)
    assert np.abs(want - a["idle_landmarks"][i][r.geometry.vertices]).max() > 1.0  # coefficients move lips by px


def test_shading_net_replaces_analytic_shading(fixture):
    r = BundleRenderer(fixture.path)
    layers = r.decode_layers(0)
    on = layers.matte > 0
    n = torch.from_numpy(layers.normals[on].T[None, :, None].copy())
    sh = torch.from_numpy(shading(layers.normals[on], KEY_LIGHT.sh_coeffs).T[None, :, None].copy())
    with torch.no_grad():
        learned = fixture.nets["shading"](n, sh)[0, :, 0].T.numpy()
    from models.render import specular

    want = layers.albedo[on] * (learned + layers.spec_weight[on][:, None] * specular(
        layers.normals[on], KEY_LIGHT.light_dirs, KEY_LIGHT.light_colours, r.shininess))
    np.testing.assert_allclose(r.relight(layers, KEY_LIGHT)[on], want, rtol=1e-4, atol=1e-5)


def test_blas_free_shading_equals_models_render():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(500, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    np.testing.assert_allclose(sh_shading(n, KEY_LIGHT.sh_coeffs), shading(n, KEY_LIGHT.sh_coeffs), atol=1e-6)


def test_idle_loop_order():
    assert [loop_position(k, 4, "pingpong") for k in range(9)] == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert [loop_position(k, 4, "forward") for k in range(6)] == [0, 1, 2, 3, 0, 1]
    assert [loop_position(k, 1, "pingpong") for k in range(3)] == [0, 0, 0]


def _edit_manifest(path: Path, edit) -> None:
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_bad_bundles_fail_with_the_reason(fixture, tmp_path):
    import shutil

    def copy(name):
        dst = tmp_path / name
        shutil.copytree(fixture.path, dst)
        return dst

    with pytest.raises(BundleError, match="does not exist"):
        BundleRenderer(tmp_path / "nowhere")
    b = copy("no_mouth")
    _edit_manifest(b, lambda m: m["nets"].pop("mouth"))
    with pytest.raises(BundleError, match=r"lacks net\(s\) \['mouth'\]"):
        BundleRenderer(b)
    b = copy("no_box")
    _edit_manifest(b, lambda m: m["arrays"].pop("idle_mouth_box"))
    with pytest.raises(BundleError, match="idle_mouth_box"):
        BundleRenderer(b)
    b = copy("big_mouth")
    _edit_manifest(b, lambda m: m["info"].update(mouth_px=60))
    with pytest.raises(BundleError, match="outside the 64 px crop"):
        BundleRenderer(b)
    b = copy("bad_loop")
    _edit_manifest(b, lambda m: m["info"].update(loop="shuffle"))
    with pytest.raises(BundleError, match="info.loop"):
        BundleRenderer(b)
    b = copy("damaged")
    (b / "mouth.onnx").write_bytes(b"not a net")
    with pytest.raises(BundleError, match="damaged"):
        BundleRenderer(b)
    b = copy("flipped_pose")  # a pose in image (y down) convention instead of HeadPose's
    pose = np.load(b / "idle_pose.npy")
    pose[:, 1] *= -1
    pose[:, :, 1] *= -1
    np.save(b / "idle_pose.npy", pose)
    digest = hashlib.sha256((b / "idle_pose.npy").read_bytes()).hexdigest()
    _edit_manifest(b, lambda m: m["sha256"].update({"idle_pose.npy": digest}))
    with pytest.raises(BundleError, match="does not map the canonical face"):
        BundleRenderer(b)
    r = BundleRenderer(fixture.path)
    with pytest.raises(ValueError, match=r"mel_window must be \(9, 80\)"):
        r.render(np.zeros((5, 80), np.float32), KEY_LIGHT, 0)


def test_bundle_folder_plugs_into_relitcam_run(fixture, tmp_path):
    from models.audio import write_wav
    from models.media import probe_video
    from stream.commands import run

    t = np.arange(16000, dtype=np.float32) / 16000
    write_wav(tmp_path / "voice.wav", (0.3 * np.sin(2 * np.pi * 220 * t) * (t > 0.4)).astype(np.float32), 16000)
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    code = run.main(["--avatar", str(fixture.path), "--source", "file", "--audio", str(tmp_path / "voice.wav"),
                     "--offline", "--fps", "30", "--canvas", "160x120", "--mp4", str(out), "--stats", str(stats),
                     "--no-hotkeys", "--background", "charcoal"])
    assert code == 0
    info = probe_video(out)
    assert (info.width_px, info.height_px, info.has_audio) == (160, 120, True)
    report = json.loads(stats.read_text())
    assert report["frames_out"] == 30 and report["dropped_total"] == 0


def test_crop_edges_fade_except_the_bottom():
    from stream.bundle_renderer import fade_crop_edges

    faded = fade_crop_edges(np.full((2, 100, 100), 255, np.uint8), frac=0.1)
    assert faded.shape == (2, 100, 100) and faded.dtype == np.uint8
    assert faded[0, 50, 50] == 255 and faded[0, -1, 50] == 255  # middle and bottom edge kept
    assert faded[0, 0, 50] < 20 and faded[0, 50, 0] < 20 and faded[0, 50, -1] < 20  # top, left, right faded
    assert (np.diff(faded[0, 50, :10].astype(int)) > 0).all()  # a ramp, not a step
