"""Enrollment end to end: one talking-head video -> an avatar bundle, as resumable stages in a work folder.

    prepare -> expression -> a2e -> decompose -> mouth -> export

Each stage is a function of the `EnrollRun` (options, work folder, the values earlier stages produced) that records
its result in the work folder (models/enroll/workdir.py), so a rerun skips finished stages and a killed run resumes
at the stage it was in. Training stages also checkpoint while they run; `resume=True` continues from those
checkpoints, otherwise a half-trained stage starts over.

Everything that can fail without training is checked first (output folder writable, device present, video readable
with audio): a typo in --out must not cost hours of training. Input problems surface as ValueError with one clear
message (prepare's: no face, several people, no audio, too short, corrupt).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models.enroll.workdir import WorkDir, atomic_path, atomic_write_json

SIZES_PX = (256, 512)
DEVICES = ("cpu", "cuda")
DEFAULT_AVATARS_DIR = Path(os.environ.get("XDG_DATA_HOME", "~/.local/share")) / "relitcam" / "avatars"


def check_avatar_name(name: str) -> str:
    """An avatar's name is the folder its bundle is written to: a plain folder name, nothing to climb out with."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"avatar name must be a plain folder name, got {name!r}")
    return name


def enrolled_avatars(avatars_dir: Path | None = None) -> dict[str, Path]:
    """Avatars `relitcam enroll` has written, by name: the folders of avatars_dir (default: where enroll writes)
    that hold a bundle manifest. A folder without one (an enrollment still running) is left out."""
    folder = Path(avatars_dir if avatars_dir is not None else DEFAULT_AVATARS_DIR).expanduser()
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if (p / "manifest.json").is_file()}


@dataclass(frozen=True)
class EnrollOptions:
    video: Path
    name: str
    out_dir: Path = DEFAULT_AVATARS_DIR  # the bundle is written to out_dir / name
    size_px: int = 256
    device: str = "cpu"
    resume: bool = False
    train_fraction: float = 0.8  # first part of the video trains, the rest measures quality
    work_dir: Path | None = None  # default: WorkDir.for_name(name)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.size_px not in SIZES_PX:
            raise ValueError(f"size must be one of {SIZES_PX} px, got {self.size_px}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if not 0.5 <= self.train_fraction < 1.0:
            raise ValueError(f"train fraction must be in [0.5, 1): the rest of the video measures quality; "
                             f"got {self.train_fraction}")
        check_avatar_name(self.name)

    @property
    def bundle_path(self) -> Path:
        return Path(self.out_dir).expanduser() / self.name


@dataclass
class EnrollRun:
    """What the stages share: options, work folder, and the values earlier stages produced."""

    options: EnrollOptions
    workdir: WorkDir
    say: Callable[[str], None]
    values: dict[str, Any] = field(default_factory=dict)  # "prepared", "space", "loop", "a2e_chain", ...
    figures: dict[str, dict] = field(default_factory=dict)  # stage -> quality / speed figures for the report


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    run: Callable[[EnrollRun], None]


@dataclass(frozen=True)
class EnrollResult:
    bundle_path: Path
    workdir: Path
    stage_seconds: dict[str, float]  # wall time of each stage in this call (a skipped stage takes ~0)
    figures: dict[str, dict]
    total_s: float


# ------------------------------------------------------------------------------------------------ early checks


def check_writable(folder: Path, what: str) -> None:
    """Create `folder` if needed and prove a file can be written there (os.access lies for root and on some
    network mounts, so this writes and removes a probe file)."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".relitcam-write-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"{what} {folder} is not writable ({e.strerror or e}); choose another folder") from None


def check_device(device: str) -> None:
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ValueError(f"--device cuda: no CUDA GPU is usable here (torch {torch.__version__}, {build}); "
                             "use --device cpu")


def check_inputs(options: EnrollOptions) -> None:
    """Everything that can be checked in seconds, before any training."""
    video = Path(options.video).expanduser()
    if not video.is_file():
        raise FileNotFoundError(f"enrollment video {video} does not exist")
    check_device(options.device)
    check_writable(options.bundle_path.parent, "output folder")
    if options.bundle_path.exists() and not (options.bundle_path / "manifest.json").is_file():
        raise ValueError(f"{options.bundle_path} exists and is not an avatar bundle; refusing to replace it")


# ------------------------------------------------------------------------------------------------------ stages


# Crops enlarged more than this from the video look visibly soft at the crop size.
SOFT_CROP_UPSAMPLING = 1.5


def soft_crop_note(upsampling: float, size_px: int) -> str:
    return (f"note: the face is small in this video: its {size_px} px crops are enlarged {upsampling:.1f}x from the "
            f"picture, so the avatar will look softer than it could; a closer or higher-resolution recording gives "
            f"a sharper one")


def _prepare(run: EnrollRun) -> None:
    from models.enroll.prepare import crop_upsampling, prepare_video

    pv = prepare_video(run.options.video, run.workdir, size_px=run.options.size_px, progress=run.options.progress)
    r = pv.report
    run.values["prepared"] = pv
    upsampling = crop_upsampling(pv.image_to_crop)
    run.figures["prepare"] = {"usable_frames": r.usable_frames, "total_frames": r.total_frames,
                              "usable_s": round(r.usable_s, 1), "fps": r.fps,
                              "longest_gap_s": round(r.longest_gap_s, 2), "crop_upsampling": round(upsampling, 2)}
    if upsampling > SOFT_CROP_UPSAMPLING:
        run.say(soft_crop_note(upsampling, run.options.size_px))


def _expression(run: EnrollRun) -> None:
    from models.enroll.expression import build_expression

    space, loop, _ = build_expression(run.workdir, run.values["prepared"])
    run.values["space"], run.values["loop"] = space, loop
    run.figures["expression"] = {"n_lip": space.n_lip,
                                 "explained_variance": round(float(space.explained_variance_ratio.sum()), 4),
                                 "idle_loop": loop.mode, "idle_loop_s": round(loop.duration_s, 1),
                                 "idle_seam_cost": round(loop.seam_cost, 2)}


def lip_coeffs_on_grid(prepared, space) -> np.ndarray:
    """(T, n_lip) lip coefficients for every frame of the constant-rate grid from 0 to the last usable frame:
    skipped frames (no face, turned away) are interpolated from their neighbours, so the audio lines up frame by
    frame (a2e fits against audio sample 0 = grid frame 0)."""
    from models.enroll.expression import lip_coeffs

    measured = np.stack([lip_coeffs(space, prepared.landmarks_px[i], prepared.pose(i))
                         for i in range(prepared.frame_count)])
    grid = np.arange(int(prepared.source_frame_index[-1]) + 1)
    return np.stack([np.interp(grid, prepared.source_frame_index, measured[:, j]) for j in range(space.n_lip)],
                    axis=1).astype(np.float32)


def _a2e(run: EnrollRun) -> None:
    import torch

    from models.enroll.a2e import A2EConfig, fit_personal_a2e

    config = A2EConfig(train_fraction=run.options.train_fraction)
    prepared, wd = run.values["prepared"], run.workdir
    expression_key = wd.record("expression").key

    def work():
        coeffs = lip_coeffs_on_grid(prepared, run.values["space"])
        chain, report = fit_personal_a2e(np.asarray(prepared.audio), coeffs, prepared.fps, config=config)
        with atomic_path(wd.path("a2e", "chain.pt")) as tmp:
            torch.save(chain, tmp)
        atomic_write_json(wd.path("a2e", "report.json"), asdict(report))
        return ["a2e/chain.pt", "a2e/report.json"], {"variance_weighted_r": report.variance_weighted_r}

    wd.run_stage("a2e", {"expression": expression_key}, asdict(config), work)
    run.values["a2e_chain"] = torch.load(wd.path("a2e", "chain.pt"), weights_only=False)
    report = json.loads(wd.path("a2e", "report.json").read_text())
    run.values["a2e_report"] = report
    run.figures["a2e"] = {k: report[k] for k in ("variance_weighted_r", "mean_r", "val_rmse", "lipsync_offset_pred_ms",
                                                  "lipsync_offset_true_ms", "lag_pred_vs_true_ms")}


def _decompose(run: EnrollRun) -> None:
    from models.enroll.decompose import (MODEL_FILE, DecomposeParams, load_model, load_pool, pool_indices,
                                         train_decomposition)

    params = DecomposeParams()
    prepared, wd = run.values["prepared"], run.workdir
    n_train = max(1, int(round(run.options.train_fraction * prepared.frame_count)))

    def work():
        pool = load_pool(prepared, pool_indices(0, n_train, params.max_pool_frames), params.work_scale)
        result = train_decomposition(wd, pool, params, resume=run.options.resume, progress=run.options.progress)
        if result.steps_done < params.steps:
            raise RuntimeError(f"decomposition stopped at step {result.steps_done} of {params.steps}")
        final = result.loss_history[-1] if result.loss_history else {}
        return [MODEL_FILE], {"steps": result.steps_done, "train_s": round(result.elapsed_s, 1),
                              "final_losses": {k: round(v, 5) for k, v in final.items()}}

    rec, _ = wd.run_stage("decompose", {"crops": wd.record("crops").key},
                          {**params.to_json(), "train_frames": n_train}, work)
    run.values["decomposition"], _ = load_model(wd)
    run.figures["decompose"] = {"train_s": rec.extra.get("train_s"), "final_recon_l1":
                                rec.extra.get("final_losses", {}).get("recon")}


def _mouth(run: EnrollRun) -> None:
    from models.enroll.decompose import pool_indices
    from models.enroll.mouth import MODEL_FILE, MouthParams, load_mouth, train_mouth, train_samples_from_model
    from models.face.resources import load_topology

    params = MouthParams()
    prepared, wd = run.values["prepared"], run.workdir
    n_train = max(1, int(round(run.options.train_fraction * prepared.frame_count)))

    def work():
        idx = pool_indices(0, n_train, 400)
        coarse = prepared.coarse_normals(idx)
        samples = train_samples_from_model(run.values["decomposition"], prepared.crops(idx), coarse,
                                           prepared.person_matte(idx), prepared.landmarks_px[idx],
                                           load_topology().triangles, params)
        result = train_mouth(wd, samples, run.values["decomposition"], params, resume=run.options.resume,
                             progress=run.options.progress)
        if result.steps_done < params.steps:
            raise RuntimeError(f"mouth training stopped at step {result.steps_done} of {params.steps}")
        final = result.loss_history[-1] if result.loss_history else {}
        return [MODEL_FILE], {"steps": result.steps_done, "train_s": round(result.elapsed_s, 1),
                    "final_losses": {k: round(float(v), 5) for k, v in final.items()}}

    rec, _ = wd.run_stage("mouth", {"decompose": wd.record("decompose").key},
                          {**params.to_json(), "train_frames": n_train}, work)
    load_mouth(wd)  # fails clearly here, not at export, if the checkpoint is unusable
    run.figures["mouth"] = {"train_s": rec.extra.get("train_s"),
                            "final_relit_l1": rec.extra.get("final_losses", {}).get("relit")}


def _export(run: EnrollRun) -> None:
    from models.enroll.a2e import export_a2e_onnx
    from models.enroll.export import AudioToExpressionNet, bundle_summary, export_bundle

    wd, chain = run.workdir, run.values["a2e_chain"]
    a2e_path = wd.path("a2e", "audio_to_expression.onnx")
    a2e_path.parent.mkdir(parents=True, exist_ok=True)
    export_a2e_onnx(chain, a2e_path)
    config = chain.encoder.config
    a2e = AudioToExpressionNet(a2e_path, mel_past_frames=config.past_frames,
                               mel_lookahead_frames=config.lookahead_frames)
    report = export_bundle(wd, run.options.bundle_path, run.options.name, a2e=a2e, expression=run.values["space"],
                           idle_loop=run.values["loop"], metrics={k: v for k, v in run.figures.items()},
                           # 28 MiB = 29.4 MB: under the 30 MB a bundle may take in the repository, either unit.
                           max_bundle_mb=28.0,
                           facts={"video": str(run.options.video), "size_px": run.options.size_px})
    run.say(bundle_summary(report))
    run.figures["export"] = {"bundle_mb": round(report.bytes_total / 2**20, 1), "idle_frames": report.idle_frames}


STAGES: tuple[Stage, ...] = (
    Stage("prepare", "decode, track the face, crop, masks, coarse normals", _prepare),
    Stage("expression", "lip expression space and idle loop", _expression),
    Stage("a2e", "personal audio-to-expression head", _a2e),
    Stage("decompose", "albedo / normals / specular decomposition and lighting", _decompose),
    Stage("mouth", "mouth renderer and blend", _mouth),
    Stage("export", "ONNX nets + idle layers -> avatar bundle", _export),
)


# ------------------------------------------------------------------------------------------------ orchestration


def enroll(options: EnrollOptions, stages: tuple[Stage, ...] = STAGES,
           say: Callable[[str], None] = print) -> EnrollResult:
    """Run every stage (skipping finished ones) and return where the bundle is and the measured figures."""
    check_inputs(options)
    workdir = WorkDir(options.work_dir) if options.work_dir else WorkDir.for_name(options.name)
    check_writable(workdir.root, "work folder")
    run = EnrollRun(options, workdir, say)
    run.values["bundle_path"] = options.bundle_path
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    say(f"enrolling {options.name!r} from {options.video} at {options.size_px} px on {options.device}; "
        f"work folder {workdir.root}")
    for k, stage in enumerate(stages, 1):
        say(f"[{k}/{len(stages)}] {stage.name}: {stage.title}")
        t0 = time.perf_counter()
        stage.run(run)
        seconds[stage.name] = round(time.perf_counter() - t0, 2)
        shown = ", ".join(f"{key} {value}" for key, value in run.figures.get(stage.name, {}).items())
        say(f"      {stage.name} done in {_duration(seconds[stage.name])}" + (f": {shown}" if shown else ""))
    total = time.perf_counter() - start
    return EnrollResult(options.bundle_path, workdir.root, seconds, run.figures, round(total, 2))


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    return f"{minutes} min {s:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
