"""The fused GPU frame: its NumPy reference (checked here against BundleRenderer + Compositor, the CPU path), the
BT.601 limited-range RGB -> I420 / NV12 conversion, and the CuPy kernel against the reference (gpu-marked)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.lighting.lighting import Lighting
from stream.backgrounds import Background, BackgroundSet
from stream.compose import Compositor
from stream.gpu_compose import (IdleFrameU8, MouthPatch, compose_reference, i420_to_nv12, rgb_to_i420)
from test_bundle_renderer import build_fixture_bundle

ROOT = Path(__file__).resolve().parents[1]


def test_bt601_limited_range_known_colours():
    colours = {(255, 255, 255): (235, 128, 128), (0, 0, 0): (16, 128, 128), (255, 0, 0): (81, 90, 240),
               (0, 255, 0): (145, 54, 34), (0, 0, 255): (41, 240, 110)}
    for rgb, (y, u, v) in colours.items():
        f = rgb_to_i420(np.broadcast_to(np.array(rgb, np.uint8), (2, 2, 3)).copy())
        assert (int(f.y[0, 0]), int(f.u[0, 0]), int(f.v[0, 0])) == (y, u, v), rgb


def test_i420_chroma_is_the_block_mean_and_nv12_interleaves():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    f = rgb_to_i420(rgb)
    assert f.layout == "i420" and f.y.shape == (4, 6) and f.u.shape == (2, 3)
    mean = rgb[2:4, 4:6].reshape(-1, 3).astype(np.float64).mean(0)
    u = 128 + (-37.797 * mean[0] - 74.203 * mean[1] + 112.0 * mean[2]) / 255
    assert int(f.u[1, 2]) == int(np.floor(u + 0.5))
    nv = i420_to_nv12(f)
    assert nv.layout == "nv12" and nv.uv.shape == (2, 6)
    np.testing.assert_array_equal(nv.uv[:, 0::2], f.u)
    np.testing.assert_array_equal(nv.uv[:, 1::2], f.v)
    with pytest.raises(ValueError, match="even H and W"):
        rgb_to_i420(rgb[:3])


@pytest.fixture(scope="module")
def frame_case(tmp_path_factory):
    """A fixture bundle's frame 1 with its mouth net outputs, a lighting with two lights, and a canvas."""
    from stream.bundle_renderer import BundleRenderer

    fx = build_fixture_bundle(tmp_path_factory.mktemp("gpu_compose") / "avatar", shading_net=False)
    r = BundleRenderer(fx.path, use_shading_net=False)
    rng = np.random.default_rng(3)
    mel = rng.normal(-5, 2, (r.mel_past_frames + 1 + r.mel_lookahead_frames, 80)).astype(np.float32)
    sh = np.random.default_rng(1).normal(0.0, 0.15, (9, 3))
    sh[0] += 0.9  # mostly ambient, with some direction: every SH term matters
    lighting = Lighting(sh_coeffs=sh,
                        light_dirs=[[0.5, 0.3, 1.0], [-0.7, 0.1, 0.4]], light_colours=[[2.0, 1.8, 1.5], [0.5, 0.6, 1.0]])
    i = r.loop_frame(1)
    coeffs = r.lip_coeffs(mel)
    out = r.backend.run("mouth", r.mouth_inputs(i, coeffs, r.decode_layers(i)))
    a = r.bundle.arrays
    idle = IdleFrameU8(a["idle_albedo"][i], a["idle_normals"][i], a["idle_spec_weight"][i], r.idle_matte[i])
    bx, by = (int(v) for v in a["idle_mouth_box"][i])
    mouth = MouthPatch(out["albedo"][0], out["normals"][0], out["spec_weight"][0, 0], out["blend"][0, 0], bx, by)
    srgb = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    bg = Background("noise", srgb)
    return r, mel, lighting, idle, mouth, bg


def test_reference_equals_the_cpu_renderer_and_compositor(frame_case):
    r, mel, lighting, idle, mouth, bg = frame_case
    rendered = r.render(mel, lighting, 1)
    for canvas_px in ((80, 48), (200, 128)):  # the 64 px crop shrinks to 48 px, or grows to 128 px
        comp = Compositor(canvas_px, r.frame_size)
        bg_case = bg if canvas_px == (80, 48) else BackgroundSet(["charcoal"], canvas_px).current
        want = comp.process(rendered, bg_case)
        got = compose_reference(idle, mouth, lighting, r.shininess, bg_case.srgb, comp.placement)
        # Pillow's 8-bit fixed-point resampling (growing) against the float definition.
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 2, canvas_px


@pytest.mark.gpu
def test_fused_kernel_equals_the_reference(frame_case):
    import cupy as cp

    from stream.gpu_compose import FusedComposer

    r, mel, lighting, idle, mouth, bg = frame_case
    comp = Compositor((80, 48), r.frame_size)
    want_rgb = compose_reference(idle, mouth, lighting, r.shininess, bg.srgb, comp.placement)
    want = rgb_to_i420(want_rgb)
    fused = FusedComposer(r.size_px, (80, 48), comp.placement)
    yuv, rgb = fused.process(idle, mouth, lighting, r.shininess, bg.srgb, want_rgb=True)
    assert np.abs(cp.asnumpy(rgb).astype(int) - want_rgb.astype(int)).max() <= 1
    for plane in ("y", "u", "v"):
        assert np.abs(cp.asnumpy(getattr(yuv, plane)).astype(int) - getattr(want, plane).astype(int)).max() <= 1
    nv, _ = fused.process(idle, mouth, lighting, r.shininess, bg.srgb, layout="nv12")
    np.testing.assert_array_equal(cp.asnumpy(nv.uv[:, 0::2]), cp.asnumpy(yuv.u))


def test_bench_gpu_exits_clearly_without_a_gpu(tmp_path):
    from models.xp import cupy_available

    if cupy_available():
        pytest.skip("this machine has a GPU; the no-GPU message is not reachable")
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert "no CUDA GPU" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.skipif(__import__("shutil").which("nvcc") is None, reason="needs nvcc (CUDA toolkit) to compile")
def test_fused_kernel_source_compiles(tmp_path):
    """No GPU needed: the CUDA source the CuPy RawKernel compiles at run time is valid CUDA C++."""
    from stream.gpu_compose import _KERNEL

    src = tmp_path / "relit_frame.cu"
    src.write_text(_KERNEL)
    done = subprocess.run(["nvcc", "-arch=sm_80", "-c", str(src), "-o", str(tmp_path / "relit_frame.o")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
