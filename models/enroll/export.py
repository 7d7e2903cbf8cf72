"""Enrollment's last stage: the avatar bundle (docs/bundle.md) from a work folder's trained nets and prepared frames.

Nets are exported to ONNX (opset 17, dynamic batch; `shading` also dynamic in H, W) and each is checked against
torch under ONNX Runtime on real frames (max abs difference <= ONNX_TOLERANCE) before anything is written. The idle
loop's layers are the decomposition of its frames with the reconstruction residual folded into the albedo (see
models/enroll/decompose.py), encoded as the contract says (uint8 per channel).

Bundle size: an idle frame holds 8 bytes per pixel (albedo 3, normals 3, C_spec 1, matte 1), 512 KiB at 256 px; the
bundle stores the layers as frame-to-frame differences, deflated (models/bundle.py), 3-5x smaller. The loop gets the
frames asked for (the enrollment's chosen idle loop, else `idle_loop_s`) or, when their stored size does not fit
`max_bundle_mb` after the nets and fixed arrays, the best loop of a length shorter in proportion, measured again.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.bundle import NetSpec, stored_bytes, write_bundle
from models.colour import linear_to_srgb
from models.enroll.decompose import DecompositionModelTorch, LayerStack, decompose_prepared, load_model
from models.enroll.expression import ExpressionSpace, IdleLoop, select_idle_loop
from models.enroll.matte_edges import decontaminate_edges
from models.enroll.mouth import MouthNet, load_mouth, mouth_box
from models.enroll.nets import ShadingCorrection
from models.enroll.workdir import WorkDir
from models.face.resources import load_topology

OPSET = 17
ONNX_TOLERANCE = 1e-3
MEL_FRAME_MS = 10.0
MIB = 1 << 20
SIZE_SAMPLE_FRAMES = 48  # consecutive idle frames whose stored size estimates the loop's


@dataclass(frozen=True)
class AudioToExpressionNet:
    """The audio_to_expression ONNX made by models/enroll/a2e.py and the mel window it expects."""

    onnx_path: Path
    mel_past_frames: int
    mel_lookahead_frames: int

    @property
    def lookahead_ms(self) -> float:
        return self.mel_lookahead_frames * MEL_FRAME_MS


@dataclass(frozen=True)
class ExportReport:
    path: Path
    bytes_total: int
    idle_frames: int
    idle_loop_mode: str  # bundle "loop": "pingpong" or "forward"
    onnx_max_abs_diff: dict[str, float]
    elapsed_s: float


# ------------------------------------------------------------------------------------------------------- encoding


def _to8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def encode_albedo(albedo: np.ndarray) -> np.ndarray:
    """Linear albedo -> the bundle's sRGB-coded uint8."""
    return _to8(linear_to_srgb(albedo) * 255.0)


def encode_layers(layers: LayerStack) -> dict[str, np.ndarray]:
    """Idle layers -> the bundle's uint8 arrays (docs/bundle.md)."""
    return {
        "idle_albedo": encode_albedo(layers.albedo),
        "idle_normals": _to8(layers.normals * 127.5 + 127.5),
        "idle_spec_weight": _to8(layers.spec_weight * 255.0),
        "idle_matte": _to8(layers.matte * 255.0),
    }


def pose_matrices(prepared, frames: np.ndarray) -> np.ndarray:
    """(n, 4, 4) crop-space similarity of the canonical mesh: [[scale * R, t], [0, 0, 0, 1]]."""
    out = np.zeros((frames.size, 4, 4), np.float32)
    out[:, :3, :3] = prepared.pose_rotation[frames] * prepared.pose_scale_px[frames][:, None, None]
    out[:, :3, 3] = prepared.pose_translation_px[frames]
    out[:, 3, 3] = 1.0
    return out


def _idle_arrays(prepared, decomposition, mouth_state: dict, frames: np.ndarray, s: int, m: int) -> dict:
    layers = decompose_prepared(decomposition, prepared, frames, fold_residual=True)
    # Composited over new backgrounds live: the soft edge carries the person's colour, not the recorded wall's.
    layers = dataclasses.replace(layers, albedo=decontaminate_edges(layers.albedo, layers.matte))
    arrays = encode_layers(layers)
    arrays["idle_landmarks"] = prepared.landmarks_px[frames].astype(np.float32)
    arrays["idle_pose"] = pose_matrices(prepared, frames)
    arrays["idle_mouth_box"] = np.stack([mouth_box(prepared.landmarks_px[i], s, m,
                                                   mouth_state["params"]["box_center_down_frac"])
                                         for i in frames]).astype(np.int32)
    return arrays


# ------------------------------------------------------------------------------------------------------------ ONNX


class _ShadingExport(torch.nn.Module):
    def __init__(self, net: ShadingCorrection):
        super().__init__()
        self.net = net

    def forward(self, normals, sh_shading):
        return self.net(normals, sh_shading)


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str],
            dynamic_hw: bool) -> None:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    module.eval()
    torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, opset_version=OPSET,
                      dynamic_axes={n: axes for n in inputs + outputs}, dynamo=False)


def _check_onnx(module: torch.nn.Module, args: tuple, path: Path, inputs: list[str]) -> float:
    import onnxruntime as ort

    with torch.no_grad():
        expected = module(*args)
    expected = expected if isinstance(expected, tuple) else (expected,)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {n: a.numpy() for n, a in zip(inputs, args)})
    diff = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
    if not diff <= ONNX_TOLERANCE:
        raise ValueError(f"ONNX export of {path.name} differs from torch by {diff:.2e} (> {ONNX_TOLERANCE})")
    return diff


def _spec(inputs: dict[str, list[int]], outputs: dict[str, list[int]]) -> NetSpec:
    return NetSpec(file="", inputs=inputs, outputs=outputs)


def export_nets(out: Path, decomposition: DecompositionModelTorch, mouth: MouthNet, size_px: int, mouth_px: int,
                sample: dict[str, np.ndarray]) -> tuple[dict[str, tuple[Path, NetSpec]], dict[str, float]]:
    """Write decomposition.onnx, mouth.onnx, shading.onnx into `out`; check each under ONNX Runtime on `sample`
    (crops (n, S, S, 3) linear, coarse normals, and mouth inputs cut from them)."""
    s, m = size_px, mouth_px
    chw = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32).transpose(0, 3, 1, 2)))  # noqa
    files: dict[str, tuple[Path, NetSpec]] = {}
    diffs: dict[str, float] = {}

    net = decomposition.full_resolution_net()
    args = (chw(sample["image"]), chw(sample["coarse_normals"]))
    names_in, names_out = ["image", "coarse_normals"], ["normals", "residual", "albedo", "spec_weight"]
    _export(net, args, out / "decomposition.onnx", names_in, names_out, dynamic_hw=False)
    diffs["decomposition"] = _check_onnx(net, args, out / "decomposition.onnx", names_in)
    files["decomposition"] = (out / "decomposition.onnx", _spec(
        {"image": [-1, 3, s, s], "coarse_normals": [-1, 3, s, s]},
        {"normals": [-1, 3, s, s], "residual": [-1, 3, s, s], "albedo": [-1, 3, s, s], "spec_weight": [-1, 1, s, s]}))

    args = tuple(chw(sample[k]) for k in ("mouth_coarse_normals", "mouth_idle_albedo", "mouth_idle_normals",
                                          "mouth_mask"))
    names_in, names_out = ["coarse_normals", "idle_albedo", "idle_normals", "mouth_mask"], \
        ["albedo", "normals", "spec_weight", "blend"]
    _export(mouth, args, out / "mouth.onnx", names_in, names_out, dynamic_hw=False)
    diffs["mouth"] = _check_onnx(mouth, args, out / "mouth.onnx", names_in)
    files["mouth"] = (out / "mouth.onnx", _spec(
        {"coarse_normals": [-1, 3, m, m], "idle_albedo": [-1, 3, m, m], "idle_normals": [-1, 3, m, m],
         "mouth_mask": [-1, 1, m, m]},
        {"albedo": [-1, 3, m, m], "normals": [-1, 3, m, m], "spec_weight": [-1, 1, m, m], "blend": [-1, 1, m, m]}))

    shade = _ShadingExport(decomposition.shading_net)
    normals = chw(sample["normals"])
    args = (normals, torch.rand(normals.shape, generator=torch.Generator().manual_seed(0)))
    _export(shade, args, out / "shading.onnx", ["normals", "sh_shading"], ["shading"], dynamic_hw=True)
    diffs["shading"] = _check_onnx(shade, args, out / "shading.onnx", ["normals", "sh_shading"])
    files["shading"] = (out / "shading.onnx", _spec({"normals": [-1, 3, -1, -1], "sh_shading": [-1, 3, -1, -1]},
                                                    {"shading": [-1, 3, -1, -1]}))
    return files, diffs


def _onnx_io(path: Path) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = lambda v: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]  # noqa
    return {v.name: dims(v) for v in model.graph.input}, {v.name: dims(v) for v in model.graph.output}


# ---------------------------------------------------------------------------------------------------------- driver


def choose_idle_frames(prepared, loop: IdleLoop | None, max_frames: int, requested_s: float) -> tuple[np.ndarray, str]:
    """The stored idle frames (positions, playback order for 'forward', the forward half for 'pingpong') and the
    bundle's loop mode. A given loop that fits is kept; one longer than the budget is replaced by the best loop of
    the budget's length (its seam chosen for that length, so it may still play forward); without a loop, one of
    `requested_s` (at most the budget) is chosen."""
    fps = prepared.fps
    if loop is not None and loop.end - loop.start <= max_frames:
        return np.arange(loop.start, loop.end), "pingpong" if loop.mode == "pingpong" else "forward"
    want = max(2, max_frames if loop is not None else min(max_frames, int(round(requested_s * fps))))
    slack = min(int(round(0.5 * fps)), max(want // 4, 0))
    thumbs = np.stack([prepared._read("thumbs", i) for i in range(prepared.frame_count)])
    loop = select_idle_loop(prepared.landmarks_px, fps, length_s=(want - slack) / fps,
                            source_frame_index=prepared.source_frame_index, thumbnails=thumbs,
                            end_slack_s=slack / fps)
    frames = np.arange(loop.start, loop.end)
    if frames.size > max_frames:
        return frames[:max_frames], "pingpong"
    return frames, "pingpong" if loop.mode == "pingpong" else "forward"


def export_bundle(
    workdir: WorkDir | str | Path,
    out_dir: str | Path,
    name: str,
    *,
    a2e: AudioToExpressionNet,
    expression: ExpressionSpace,
    idle_loop: IdleLoop | None = None,
    idle_loop_s: float = 4.0,
    max_bundle_mb: float = 30.0,
    metrics: dict | None = None,
    facts: dict | None = None,
) -> ExportReport:
    """Write the avatar bundle for the enrollment in `workdir` (prepared frames, trained decomposition and mouth
    net) to `out_dir`; return what was written.

    a2e: the audio_to_expression ONNX (models/enroll/a2e.py) and its mel window; expression: the lip expression
    space its coefficients live in. idle_loop: the loop to store (default: select_idle_loop on the prepared frames,
    idle_loop_s long or as long as max_bundle_mb allows). metrics / facts go into the manifest's info.
    """
    from models.enroll.prepare import load_prepared

    start = time.perf_counter()
    wd = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    prepared = load_prepared(wd)
    decomposition, dec_state = load_model(wd)
    mouth, mouth_state = load_mouth(wd)
    s, m = prepared.size_px, int(mouth_state["mouth_px"])
    a2e_path = Path(a2e.onnx_path)
    if not a2e_path.is_file():
        raise ValueError(f"audio_to_expression ONNX not found at {a2e_path}; run models/enroll/a2e.py first")
    a2e_in, a2e_out = _onnx_io(a2e_path)
    n_lip = next(iter(a2e_out.values()))[-1]
    if n_lip != expression.n_lip:
        raise ValueError(f"audio_to_expression predicts {n_lip} lip coefficients, the expression space has "
                         f"{expression.n_lip}; they must come from the same enrollment")
    topo = load_topology()

    fixed = {
        "expression_mean": expression.mean.astype(np.float32),
        "expression_basis": expression.basis.astype(np.float32),
        "expression_vertices": expression.indices.astype(np.int32),
        "expression_weights": expression.weights.astype(np.float32),
        "triangles": np.asarray(topo.triangles, np.int32),
    }

    with tempfile.TemporaryDirectory(prefix="relitcam-export-") as tmp_name:
        tmp = Path(tmp_name)
        # The nets first: their size decides how many idle frames fit.
        probe = _sample_inputs(prepared, decomposition, mouth_state, np.array([0, prepared.frame_count - 1]))
        onnx_files, diffs = export_nets(tmp, decomposition, mouth, s, m, probe)
        fixed_bytes = sum(p.stat().st_size for p, _ in onnx_files.values()) + a2e_path.stat().st_size
        fixed_bytes += sum(a.nbytes for a in fixed.values()) + 64 * 1024  # manifest + headers
        budget = max_bundle_mb * MIB - fixed_bytes
        # How well the layers compress depends on the clip's motion: estimate it on a run of the frames wanted (the
        # whole loop would cost a decomposition of every frame just to measure), then check the loop chosen and
        # shorten it in proportion while it does not fit.
        wanted = (idle_loop.end - idle_loop.start if idle_loop is not None
                  else min(int(round(idle_loop_s * prepared.fps)), prepared.frame_count))
        first = idle_loop.start if idle_loop is not None else 0
        sample = np.arange(first, first + min(wanted, SIZE_SAMPLE_FRAMES))
        sample_bytes = sum(stored_bytes(a) for a in _idle_arrays(prepared, decomposition, mouth_state, sample, s,
                                                                    m).values())
        max_frames = max(2, min(wanted, int(budget / (sample_bytes / sample.size) * 0.97)))
        while True:
            frames, loop_mode = choose_idle_frames(prepared, idle_loop, max_frames, idle_loop_s)
            idle = _idle_arrays(prepared, decomposition, mouth_state, frames, s, m)
            idle_bytes = sum(stored_bytes(a) for a in idle.values())
            if idle_bytes <= budget:
                break
            fewer = int(frames.size * budget / idle_bytes * 0.97)
            if fewer < 2:
                raise ValueError(f"max_bundle_mb={max_bundle_mb} leaves room for fewer than 2 idle frames at {s} px")
            max_frames = min(fewer, frames.size - 1)
        arrays = {**idle, **fixed}
        spec_dirs, spec_rgb = decomposition.specular_lights()
        info = {
            "mouth_px": m,
            "n_lip": int(n_lip),
            "shininess": float(decomposition.shininess),
            "loop": loop_mode,
            "mel_past_frames": int(a2e.mel_past_frames),
            "mel_lookahead_frames": int(a2e.mel_lookahead_frames),
            "mouth_mask_grow_px": float(mouth_state["params"]["mask_grow_frac"] * s),
            "mouth_mask_margin_px": int(mouth_state["params"].get("mask_margin_px", 0)),
            "learned_specular_lights": {"dirs": spec_dirs.tolist(), "colours": spec_rgb.tolist()},
            "idle_albedo": "decomposition albedo with the frame's reconstruction residual folded in; where the matte "
                           "is soft, the solid person's albedo continued outward (models/enroll/matte_edges.py)",
            "idle_frames": [int(frames[0]), int(frames[-1]) + 1],
            "training": {
                "video": prepared.report.video,
                "frames": prepared.frame_count,
                "fps": prepared.fps,
                "decomposition": {"steps": int(dec_state["steps"]), "elapsed_s": float(dec_state["elapsed_s"]),
                                  "final_losses": dec_state["final_losses"]},
                "mouth": {"steps": int(mouth_state["steps"]), "elapsed_s": float(mouth_state["elapsed_s"]),
                          "final_losses": mouth_state["final_losses"]},
                **(facts or {}),
            },
            "onnx_max_abs_diff": diffs,
            "metrics": metrics or {},
        }
        onnx_files["audio_to_expression"] = (a2e_path, NetSpec(file="", inputs=a2e_in, outputs=a2e_out))
        path = write_bundle(out_dir, name=name, size_px=s, fps=prepared.fps, lookahead_ms=a2e.lookahead_ms,
                            sh_coeffs=decomposition.sh_coeffs(), onnx_files=onnx_files, arrays=arrays, info=info)
    total = sum(f.stat().st_size for f in Path(path).iterdir())
    return ExportReport(Path(path), total, int(frames.size), loop_mode, diffs, time.perf_counter() - start)


def _sample_inputs(prepared, decomposition: DecompositionModelTorch, mouth_state: dict,
                   frames: np.ndarray) -> dict[str, np.ndarray]:
    """Real inputs for the ONNX checks: frames' crops and coarse normals, and their mouth boxes' net inputs."""
    from models.enroll.decompose import SRGB_TO_LINEAR_LUT
    from models.enroll.mouth import cut_box, mouth_coarse_normals, mouth_region_mask

    s, m = prepared.size_px, int(mouth_state["mouth_px"])
    p = mouth_state["params"]
    layers = decompose_prepared(decomposition, prepared, frames, fold_residual=True)
    lms = prepared.landmarks_px[frames]
    boxes = np.stack([mouth_box(lm, s, m, p["box_center_down_frac"]) for lm in lms])
    masks = np.stack([mouth_region_mask([lm], b, m, p["mask_grow_frac"] * s, int(p.get("mask_margin_px", 0)))
                      for lm, b in zip(lms, boxes)])
    keep = ~masks[..., None]
    tri = load_topology().triangles
    return {
        "image": SRGB_TO_LINEAR_LUT[prepared.crops(frames)],
        "coarse_normals": np.stack([prepared._read("normals", int(i)) for i in frames]).astype(np.float32),
        "normals": layers.normals,
        "mouth_coarse_normals": np.stack([mouth_coarse_normals(lm, tri, b, m) for lm, b in zip(lms, boxes)]),
        "mouth_idle_albedo": cut_box(layers.albedo, boxes, m) * keep,
        "mouth_idle_normals": cut_box(layers.normals, boxes, m) * keep,
        "mouth_mask": masks[..., None].astype(np.float32),
    }


def bundle_summary(report: ExportReport) -> str:
    return json.dumps({"path": str(report.path), "mb": round(report.bytes_total / MIB, 2),
                       "idle_frames": report.idle_frames, "loop": report.idle_loop_mode,
                       "onnx_max_abs_diff": report.onnx_max_abs_diff, "elapsed_s": round(report.elapsed_s, 1)})
