"""An avatar enrolled on a real talking-head video, measured against that video's held-out part (issue #4, real video).

    OMP_NUM_THREADS=1 python scripts/eval_real_clip.py --video /work/shared/data/talking_obama_24s.mp4 \
        --speech /work/shared/data/speech/english_60s.wav --out-dir out/real_clip

1. Enrollment: `relitcam enroll` on the video into `<out-dir>/work` (bundle `<out-dir>/avatars/<name>`); reused when
   finished (the stage records say what produced them). Training uses the first `train_fraction` (0.8) of the frames.
2. Held-out reconstruction (ReliTalk's protocol, every `--every`-th of the last 20 % of the frames). Per frame t:
   its tracked crop (pose, crop transform, person matte from prepare) goes through the avatar's decomposition; the
   folded layers rendered under the learned original lighting give the non-mouth part; the mouth box is regenerated
   by the mouth net from the lips the avatar's audio-to-expression net predicts from the held-out audio (frame t's
   own mesh with its lip region replaced: `expression.lip_vertices`), blended with its learned blend; the relit crop
   is pasted back into the real 1280x720 frame with the inverse crop transform (bilinear), weighted by the person
   matte. Scored against the real frame, 8-bit sRGB: full-frame PSNR / SSIM (SSIM: skimage 7x7, whole frame), and
   PSNR / SSIM in a 120x120 box of the full frame centred on the tracked mouth (outer lip contour mean). The frame
   is letterboxed and the avatar covers ~410x410 px of it, so full-frame figures are dominated by untouched pixels;
   `crop_psnr` (PSNR over the bounding box of the crop's footprint in the frame) says more.
   Reference rows, all pasted the same way: `copy_real_crop` (the real crop itself: the resampling ceiling),
   `decomposition_folded` (folded layers, real mouth: what the idle loop stores), `decomposition_net_albedo` (the
   net's own albedo, real mouth: the decomposition's own fit), `avatar_own_lips` (mouth net driven by the frame's
   tracked lips: the mouth net's error without the audio's), `avatar_audio` (the figure asked for),
   `avatar_audio_opening_gain` (the same with the predicted mouth-opening component scaled by the gain measured on
   the training span, see below).
3. Lip sync: the bundle driven by `--speech` through the live renderer (`relitcam run --offline --mp4`, 30 fps),
   measured with `relitcam eval --sync`; the same meter on the real video for comparison. Also through a variant
   of the renderer (models/enroll/holdout.py) whose predicted lip coefficients' opening component is scaled by
   `opening_gain`: std of the measured over std of the predicted opening on the training span (a ridge audio head
   shrinks its predictions toward the mean).
4. A contact sheet of the avatar under 6 lighting presets at frames with the mouth closed and open (driven by the
   speech), a real frame for reference, and each cell's face-embedding distance to that real frame (dlib's
   face-recognition ResNet; same person below 0.6; the learned-lighting row is the baseline, as its cells show
   other frames than the real one); example reconstructed frames and mouth boxes.

Writes `<out-dir>/eval_real_clip.json` (every figure, the protocol, enrollment time per stage, the machine) and
PNGs next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.colour import linear_to_srgb  # noqa: E402
from models.enroll.holdout import (  # noqa: E402
    crop_footprint_bbox, full_frame_ssim, heldout_mel_windows, mouth_box_in_frame, paste_crop, summary)
from models.face.identity import DlibFaceResNet  # noqa: E402
from models.metrics.identity import embedding_distances, face_embeddings  # noqa: E402
from models.metrics.image import psnr_db, ssim  # noqa: E402

MOUTH_BOX_PX = 120
SHEET_LIGHTS = ("soft_front", "studio_key", "left_side", "right_side", "warm_sunset", "low_key_dramatic")
VARIANTS = ("copy_real_crop", "decomposition_folded", "decomposition_net_albedo", "avatar_own_lips", "avatar_audio",
            "avatar_audio_opening_gain")
RELITCAM = [sys.executable, "-m", "stream.cli"]
FRAME_SCORES = ("psnr", "ssim", "crop_psnr", "mouth_psnr", "mouth_ssim", "mouth_detail")  # frame_scores' keys
BORDER_BAND_PX = 12  # box_border_psnr: the mouth box's outer band, where the generated mouth fades into the idle frame


def to8(linear: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(linear_to_srgb(np.clip(linear, 0.0, None)) * 255.0), 0, 255).astype(np.uint8)


def relit_learned(decomposition, albedo, normals, spec_weight) -> np.ndarray:
    """(n, S, S, 3) linear RGB of channels-last layers under the decomposition's learned lighting."""
    from models.enroll.mouth import learned_lighting, relight

    t = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32).transpose(0, 3, 1, 2)))  # noqa
    with torch.no_grad():
        out = relight(t(albedo), t(normals), t(np.asarray(spec_weight)[..., None]), learned_lighting(decomposition),
                      decomposition.shading_net, decomposition.shininess)
    return out.permute(0, 2, 3, 1).numpy()


def decode_frames(video: Path, wanted: set[int]):
    """Yield (index, uint8 RGB) for the wanted frame numbers, in order, streaming."""
    from models.media import iter_video_frames

    last = max(wanted)
    for i, f in enumerate(iter_video_frames(video, max_frames=last + 1)):  # upright, as enrollment saw them
        if i in wanted:
            yield i, f.image


def frame_scores(pred: np.ndarray, real: np.ndarray, bbox, mouth_xy) -> dict[str, float]:
    x, y = mouth_xy
    box = (slice(y, y + MOUTH_BOX_PX), slice(x, x + MOUTH_BOX_PX))
    x0, y0, x1, y1 = bbox
    return {"psnr": psnr_db(pred, real), "ssim": full_frame_ssim(pred, real, bbox),
            "crop_psnr": psnr_db(pred[y0:y1, x0:x1], real[y0:y1, x0:x1]),
            "mouth_psnr": psnr_db(pred[box], real[box]), "mouth_ssim": ssim(pred[box], real[box]),
            "mouth_detail": detail_ratio(pred[box], real[box])}


def box_border_psnr(pred: np.ndarray, real: np.ndarray, box_xy, mouth_px: int, matte: np.ndarray) -> float:
    """PSNR (uint8 crops) over the mouth box's outer BORDER_BAND_PX band where the person matte is > 0.5: a seam
    where the mouth net's picture meets the idle frame shows here, in a band the mouth itself does not reach."""
    x, y = box_xy
    band = np.zeros((mouth_px, mouth_px), bool)
    band[:BORDER_BAND_PX], band[-BORDER_BAND_PX:], band[:, :BORDER_BAND_PX], band[:, -BORDER_BAND_PX:] = (True,) * 4
    band &= matte[y:y + mouth_px, x:x + mouth_px] > 0.5
    box = (slice(y, y + mouth_px), slice(x, x + mouth_px))
    return psnr_db(pred[box][band], real[box][band])


def detail_ratio(pred: np.ndarray, real: np.ndarray) -> float:
    """Mean luminance gradient magnitude of `pred` over that of `real` (uint8 RGB, same box): 1 = as much fine
    detail as the real frame, below 1 = softer. Blind to where the detail is; PSNR / SSIM say that."""
    def energy(img: np.ndarray) -> float:
        y = img.astype(np.float64) @ np.array([0.2126, 0.7152, 0.0722])
        return float(np.hypot(np.diff(y, axis=1)[:-1], np.diff(y, axis=0)[:, :-1]).mean())
    return energy(pred) / max(energy(real), 1e-9)


# ------------------------------------------------------------------------------------------------- enrollment


def ensure_enrolled(video: Path, name: str, workdir: Path, bundle_parent: Path, out_dir: Path) -> dict:
    """Enroll unless the bundle exists; returns the enrollment timing facts (this call's stage times when it ran,
    else those saved by the run that made the bundle, and always the work folder's stage records)."""
    from models.enroll.enroll import EnrollOptions, enroll
    from models.enroll.workdir import WorkDir

    saved = out_dir / "enroll_timing.json"
    bundle = bundle_parent / name
    if not (bundle / "manifest.json").is_file():
        t0 = time.perf_counter()
        result = enroll(EnrollOptions(video, name, out_dir=bundle_parent, work_dir=workdir, progress=False))
        saved.write_text(json.dumps({"stage_wall_s": result.stage_seconds, "total_wall_s": result.total_s,
                                     "measured_by": "models.enroll.enroll.enroll (this script)",
                                     "torch_threads": torch.get_num_threads(),
                                     "wall_s_incl_checks": round(time.perf_counter() - t0, 1)}, indent=1))
    timing = json.loads(saved.read_text()) if saved.is_file() else {}
    wd = WorkDir(workdir)
    records = {}
    for stage in ("track", "align", "crops", "expression", "a2e", "decompose", "mouth"):
        rec = wd.record(stage)
        if rec is not None:
            records[stage] = {"elapsed_s": round(rec.elapsed_s, 1), "finished_utc": rec.finished_utc}
    timing["stage_records"] = records
    return timing


def retrain_mouth(workdir: Path, new_workdir: Path, bundle_parent: Path, name: str, train_fraction: float,
                  video: Path, overrides: dict | None = None) -> dict:
    """Train the mouth net with the current MouthParams into `new_workdir` (which links everything else to
    `workdir`: prepare, expression, a2e, decomposition are reused as they are) and export a bundle from it; the
    enroll command's mouth + export stages, without touching the first work folder or its bundle."""
    from models.enroll.a2e import export_a2e_onnx
    from models.enroll.decompose import load_model, pool_indices
    from models.enroll.expression import ExpressionSpace, IdleLoop
    from models.enroll.export import AudioToExpressionNet, export_bundle
    from models.enroll.mouth import MouthParams, train_mouth, train_samples_from_model
    from models.enroll.prepare import load_prepared
    from models.enroll.workdir import WorkDir
    from models.face.resources import load_topology

    new_workdir.mkdir(parents=True, exist_ok=True)
    for item in Path(workdir).iterdir():
        if item.name in ("mouth", "checkpoints"):
            continue
        link = new_workdir / item.name
        if not link.exists():
            link.symlink_to(item.resolve())
    t0 = time.perf_counter()
    prepared = load_prepared(workdir)
    decomposition, _ = load_model(WorkDir(workdir))
    params = MouthParams(**(overrides or {}))
    n_train = max(1, int(round(train_fraction * prepared.frame_count)))
    idx = pool_indices(0, n_train, 400)
    samples = train_samples_from_model(decomposition, prepared.crops(idx), prepared.coarse_normals(idx),
                                       prepared.person_matte(idx), prepared.landmarks_px[idx],
                                       load_topology().triangles, params)
    samples_s = time.perf_counter() - t0
    wd = WorkDir(new_workdir)
    result = train_mouth(wd, samples, decomposition, params, resume=True, progress=False)
    train_s = time.perf_counter() - t0 - samples_s
    chain = torch.load(Path(workdir) / "a2e" / "chain.pt", weights_only=False)
    a2e_path = new_workdir / "audio_to_expression.onnx"
    export_a2e_onnx(chain, a2e_path)
    cfg = chain.encoder.config
    raw = json.loads((Path(workdir) / "idle_loop.json").read_text())
    loop = IdleLoop(**{**raw, "frame_indices": np.asarray(raw["frame_indices"], np.int64)})
    report = export_bundle(wd, bundle_parent / name, name,
                           a2e=AudioToExpressionNet(a2e_path, mel_past_frames=cfg.past_frames,
                                                    mel_lookahead_frames=cfg.lookahead_frames),
                           expression=ExpressionSpace.load(Path(workdir) / "expression.npz"), idle_loop=loop,
                           max_bundle_mb=28.0, facts={"video": str(video), "size_px": prepared.size_px})
    return {"params": params.to_json(), "samples_s": round(samples_s, 1), "train_s": round(train_s, 1),
            "steps": result.steps_done, "final_losses": result.loss_history[-1] if result.loss_history else {},
            "bundle_mb": round(report.bytes_total / 2**20, 1), "torch_threads": torch.get_num_threads()}


def training_opening_gain(workdir: Path, bundle: Path, train_fraction: float) -> dict:
    """The opening gain (models.enroll.holdout.opening_gain) of the bundle's audio head on the training span of
    the enrollment video: predicted (ONNX, from the whole track) vs measured lip coefficients."""
    from models.audio.mel import log_mel
    from models.audio.window import mel_windows_for_video
    from models.enroll.enroll import lip_coeffs_on_grid
    from models.enroll.expression import ExpressionSpace
    from models.enroll.holdout import opening_axis, opening_gain
    from models.enroll.prepare import load_prepared
    from stream.bundle_renderer import BundleRenderer

    prepared = load_prepared(workdir)
    measured = lip_coeffs_on_grid(prepared, ExpressionSpace.load(Path(workdir) / "expression.npz"))
    r = BundleRenderer(bundle, threads=1)
    windows = mel_windows_for_video(log_mel(np.asarray(prepared.audio)), prepared.fps, len(measured),
                                    r.mel_past_frames, r.mel_lookahead_frames)
    pred = np.stack([r.lip_coeffs(w) for w in windows])
    axis = opening_axis(r.bundle.arrays["expression_basis"], r.bundle.arrays["expression_vertices"])
    n = max(1, int(round(train_fraction * len(measured))))
    corr = lambda a, b: round(float(np.corrcoef(a @ axis, b @ axis)[0, 1]), 3)  # noqa: E731
    return {"gain": round(opening_gain(pred[:n], measured[:n], axis), 3), "train_frames": n,
            "opening_r_train": corr(pred[:n], measured[:n]), "opening_r_heldout": corr(pred[n:], measured[n:]),
            "heldout_gain_for_reference": round(opening_gain(pred[n:], measured[n:], axis, 100.0), 3)}


# ------------------------------------------------------------------------------------------- held-out frames


def evaluate_heldout(workdir: Path, bundle: Path, video: Path, out_dir: Path, every: int, train_fraction: float,
                     gain: float = 1.0, chunk: int = 12, examples: int = 4) -> dict:
    from models.enroll.decompose import decompose_prepared, load_model
    from models.enroll.expression import ExpressionSpace, lip_vertices
    from models.enroll.holdout import amplify_opening, opening_axis
    from models.enroll.mouth import MouthParams, load_mouth, mouth_box, paste_mouth
    from models.enroll.prepare import load_prepared
    from models.face.resources import load_topology
    from stream.bundle_renderer import BundleRenderer

    from models.enroll.workdir import WorkDir

    prepared = load_prepared(workdir)
    decomposition, _ = load_model(WorkDir(workdir))
    mouth_net, mouth_state = load_mouth(WorkDir(workdir))
    mparams = MouthParams.from_json(mouth_state["params"])
    space = ExpressionSpace.load(Path(workdir) / "expression.npz")
    renderer = BundleRenderer(bundle, threads=1)  # its audio_to_expression ONNX: the net the live avatar runs
    tri = load_topology().triangles
    s, n = prepared.size_px, prepared.frame_count
    n_train = max(1, int(round(train_fraction * n)))
    held = np.arange(n_train, n)
    src = prepared.source_frame_index[held].astype(int)
    fps = prepared.fps

    # Lip coefficients for the held-out frames from the held-out audio only, through the bundle's a2e net.
    t_start = src[0] / fps
    grid_frames = int(src[-1] - src[0] + 1)
    windows = heldout_mel_windows(np.asarray(prepared.audio), t_start, grid_frames, fps, renderer.mel_past_frames,
                                  renderer.mel_lookahead_frames)
    coeffs_grid = np.stack([renderer.lip_coeffs(w) for w in windows])
    eval_pos = held[::every]
    coeffs = coeffs_grid[prepared.source_frame_index[eval_pos].astype(int) - src[0]]
    arrays = renderer.bundle.arrays
    coeffs_gain = amplify_opening(coeffs, opening_axis(arrays["expression_basis"], arrays["expression_vertices"]),
                                  gain)

    m = mouth_state["mouth_px"]
    grow, margin = mparams.mask_grow_frac * s, mparams.mask_margin_px
    per_variant = {v: {k: [] for k in (*FRAME_SCORES, "box_border_psnr")} for v in VARIANTS}
    per_frame = []
    example_at = set(eval_pos[np.linspace(0, len(eval_pos) - 1, min(examples, len(eval_pos))).round().astype(int)])
    example_images = []
    t0 = time.perf_counter()
    frames = decode_frames(video, set(int(i) for i in prepared.source_frame_index[eval_pos]))
    for c0 in range(0, len(eval_pos), chunk):
        pos = eval_pos[c0:c0 + chunk]
        lms = prepared.landmarks_px[pos]
        layers = decompose_prepared(decomposition, prepared, pos, fold_residual=True)
        boxes = np.stack([mouth_box(lm, s, m, mparams.box_center_down_frac) for lm in lms])
        driven = np.stack([lip_vertices(space, coeffs[c0 + k], lms[k], prepared.pose(int(p)))
                           for k, p in enumerate(pos)])
        driven_gain = np.stack([lip_vertices(space, coeffs_gain[c0 + k], lms[k], prepared.pose(int(p)))
                                for k, p in enumerate(pos)])
        own = paste_mouth(mouth_net, layers, lms, lms, tri, boxes, m, grow, margin)
        audio = paste_mouth(mouth_net, layers, lms, driven, tri, boxes, m, grow, margin)
        audio_gain = paste_mouth(mouth_net, layers, lms, driven_gain, tri, boxes, m, grow, margin)
        crops = {
            "copy_real_crop": prepared.crops(pos),
            "decomposition_folded": to8(relit_learned(decomposition, layers.albedo, layers.normals,
                                                      layers.spec_weight)),
            "decomposition_net_albedo": to8(relit_learned(decomposition, layers.albedo_net, layers.normals,
                                                          layers.spec_weight)),
            "avatar_own_lips": to8(relit_learned(decomposition, own.albedo, own.normals, own.spec_weight)),
            "avatar_audio": to8(relit_learned(decomposition, audio.albedo, audio.normals, audio.spec_weight)),
            "avatar_audio_opening_gain": to8(relit_learned(decomposition, audio_gain.albedo, audio_gain.normals,
                                                           audio_gain.spec_weight)),
        }
        for k, p in enumerate(pos):
            idx, real = next(frames)
            assert idx == int(prepared.source_frame_index[p])
            a = prepared.image_to_crop[p]
            bbox = crop_footprint_bbox(a, s, real.shape[:2])
            mxy = mouth_box_in_frame(lms[k], a, real.shape[:2], MOUTH_BOX_PX)
            row = {"frame": idx}
            pasted = {}
            for v in VARIANTS:
                pasted[v] = paste_crop(real, crops[v][k], layers.matte[k], a)
                sc = frame_scores(pasted[v], real, bbox, mxy)
                for key, val in sc.items():
                    per_variant[v][key].append(val)
                sc["box_border_psnr"] = box_border_psnr(crops[v][k], crops["copy_real_crop"][k], boxes[k], m,
                                                        layers.matte[k])
                per_variant[v]["box_border_psnr"].append(sc["box_border_psnr"])
                row[v] = {key: round(val, 3) for key, val in sc.items()}
            per_frame.append(row)
            if p in example_at:
                example_images.append((idx, real, pasted, mxy, crops["avatar_audio"][k], crops["copy_real_crop"][k]))
        print(f"  held-out frames {c0 + len(pos)}/{len(eval_pos)}  avatar_audio mouth PSNR so far "
              f"{np.mean(per_variant['avatar_audio']['mouth_psnr']):.2f} dB", flush=True)
    _example_sheets(out_dir, example_images)
    return {
        "frames_total": int(n), "train_frames": int(n_train), "heldout_frames": int(held.size),
        "evaluated_frames": int(eval_pos.size), "every": every,
        "heldout_source_frames": [int(src[0]), int(src[-1])], "heldout_start_s": round(float(t_start), 3),
        "variants": {v: {k: summary(vals) for k, vals in d.items()} for v, d in per_variant.items()},
        "per_frame": per_frame, "eval_s": round(time.perf_counter() - t0, 1),
        "mouth_px_crop": int(m), "crop_px": int(s), "opening_gain": gain,
    }


def _example_sheets(out_dir: Path, examples) -> None:
    """Per example frame: the full frame (real | avatar_audio) and a strip of 120x120 mouth boxes x3 (real, copy
    crop, folded, own lips, audio)."""
    from PIL import Image, ImageDraw

    for idx, real, pasted, (x, y), _, _ in examples:
        full = np.concatenate([real, pasted["avatar_audio"]], axis=1)
        Image.fromarray(full).resize((full.shape[1] // 2, full.shape[0] // 2)).save(out_dir / f"frame_{idx:04d}.png")
    z = 3
    cols = [("real", None)] + [(v, v) for v in ("copy_real_crop", "decomposition_folded", "avatar_own_lips",
                                                "avatar_audio", "avatar_audio_opening_gain")]
    b = MOUTH_BOX_PX * z
    sheet = Image.new("RGB", (len(cols) * b, len(examples) * b + 16), "white")
    draw = ImageDraw.Draw(sheet)
    for c, (label, _) in enumerate(cols):
        draw.text((c * b + 4, 2), label, fill="black")
    for r, (idx, real, pasted, (x, y), _, _) in enumerate(examples):
        for c, (_, v) in enumerate(cols):
            img = real if v is None else pasted[v]
            tile = Image.fromarray(img[y:y + MOUTH_BOX_PX, x:x + MOUTH_BOX_PX]).resize((b, b), Image.NEAREST)
            sheet.paste(tile, (c * b, 16 + r * b))
    sheet.save(out_dir / "heldout_mouths.png")


# --------------------------------------------------------------------------------------------------- lip sync


def run_cmd(cmd: list[str], log: Path, extra_env: dict | None = None) -> dict:
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **(extra_env or {})}
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({proc.returncode}); see {log}")
    shown = " ".join(f"{k}={shlex.quote(v)}" for k, v in (extra_env or {}).items())
    return {"command": (shown + " " if shown else "") + shlex.join(cmd), "wall_s": round(time.perf_counter() - t0, 1)}


def lip_sync(bundle: Path, speech: Path, video: Path, out_dir: Path, gain: float) -> dict:
    """Drive the bundle with the speech through `relitcam run --offline` (30 fps MP4) and measure it with
    `relitcam eval --sync`: the live renderer (stream/bundle_renderer.py, whose mouth-net inputs are built as in
    training), the same with the opening gain, and the real video."""
    out = {}
    renderers = {"live_renderer": (str(bundle), {}),
                 "live_renderer_opening_gain": ("models.enroll.holdout:opening_gain_renderer",
                                                {"RELITCAM_EVAL_BUNDLE": str(bundle),
                                                 "RELITCAM_EVAL_OPENING_GAIN": f"{gain:.3f}"})}
    for key, (avatar, env) in renderers.items():
        mp4 = out_dir / f"driven_{speech.stem}_{key}.mp4"
        done = out_dir / f"sync_{key}.json"
        if done.is_file() and mp4.is_file() and (out_dir / f"render_{key}.json").is_file():  # reuse a finished run
            out[key] = {"render": json.loads((out_dir / f"render_{key}.json").read_text()), "mp4": str(mp4),
                        **json.loads(done.read_text()), "reused": True}
            continue
        render = run_cmd(RELITCAM + ["run", "--avatar", avatar, "--source", "file", "--audio", str(speech),
                                     "--offline", "--fps", "30", "--mp4", str(mp4), "--no-hotkeys", "--no-settings",
                                     "--stats", str(out_dir / f"run_stats_{key}.json")], out_dir / f"run_{key}.log",
                         env)
        (out_dir / f"render_{key}.json").write_text(json.dumps(render))
        out[key] = {"render": render, "mp4": str(mp4), **_sync(mp4, out_dir / f"sync_{key}")}
    real = out_dir / "sync_real_video.json"
    out["real_video"] = json.loads(real.read_text()) if real.is_file() else _sync(video, out_dir / "sync_real_video")
    return out


def _sync(path: Path, stem: Path) -> dict:
    report_path = stem.with_suffix(".json")
    cmd = run_cmd(RELITCAM + ["eval", "--sync", str(path), "-o", str(report_path)], stem.with_suffix(".log"))
    report = {**json.loads(report_path.read_text()), "sync_command": cmd}
    report_path.write_text(json.dumps(report, indent=1))
    return report


# ------------------------------------------------------------------------------------------------ contact sheet


def contact_sheet(renderer, workdir: Path, speech: Path, path: Path, n_open: int = 2, n_closed: int = 2) -> dict:
    """Rows: 6 lighting presets (+ the learned original lighting); columns: frames driven by the speech with the
    mouth closed / open (by the driven inner-lip gap), and a real crop from the video."""
    from PIL import Image, ImageDraw

    from models.audio.mel import log_mel
    from models.audio.window import mel_windows_for_video
    from models.enroll.prepare import load_prepared
    from models.lighting.sources import preset
    from models.media import read_audio
    from models.render import composite

    r = renderer
    audio = read_audio(speech)
    fps = 30.0
    n = int(len(audio) / 16000 * fps)
    windows = mel_windows_for_video(log_mel(audio), fps, n, r.mel_past_frames, r.mel_lookahead_frames)
    frames = np.arange(0, n, 3)
    upper, lower = 13, 14  # inner-lip midpoints of the 468-point mesh
    g = r.geometry
    rows = {int(v): k for k, v in enumerate(g.vertices)}
    gap = []
    for f in frames:
        v = r.driven_vertices(r.loop_frame(int(f)), r.lip_coeffs(windows[f]))
        gap.append(v[rows[lower], 1] - v[rows[upper], 1])
    order = np.argsort(gap)
    picks = list(frames[order[:n_closed]]) + list(frames[order[::-1][:n_open]])
    labels = [f"closed f{f}" for f in picks[:n_closed]] + [f"open f{f}" for f in picks[n_closed:]]
    lights = [("learned (original)", r.bundle.learned_lighting())] + [(name, preset(name)) for name in SHEET_LIGHTS]
    s = r.size_px
    prepared = load_prepared(workdir)
    real = prepared.crops(int(prepared.frame_count * 0.9))
    sheet = Image.new("RGB", ((len(picks) + 1) * s + 110, len(lights) * s + 16), "white")
    draw = ImageDraw.Draw(sheet)
    bg = np.full((s, s, 3), 0.18, np.float32)
    for c, label in enumerate(labels + ["real frame"]):
        draw.text((110 + c * s + 4, 2), label, fill="black")
    # Identity: each cell's face embedding against the real frame's (dlib's same-person threshold is 0.6). The
    # cells show other frames (pose, expression) than the real one, so the learned-lighting row is the baseline
    # that relighting adds to.
    identity_net = DlibFaceResNet.load()
    real_index = int(prepared.frame_count * 0.9)
    real_embedding = face_embeddings(real[None], prepared.landmarks_px[real_index][None], identity_net)
    cell_landmarks = np.stack([r.bundle.arrays["idle_landmarks"][r.loop_frame(int(f))] for f in picks])
    identity = {}
    for row, (name, lighting) in enumerate(lights):
        draw.text((4, 16 + row * s + s // 2), name, fill="black")
        cells = []
        for c, f in enumerate(picks):
            out = r.render(windows[f], lighting, int(f))
            rgb = composite(out.rgb_linear, out.matte, bg)  # straight alpha, as the live compositor does
            cells.append(to8(rgb))
            sheet.paste(Image.fromarray(cells[-1]), (110 + c * s, 16 + row * s))
        identity[name] = [round(float(d), 3) for d in embedding_distances(
            face_embeddings(np.stack(cells), cell_landmarks, identity_net), real_embedding)]
        if row == 0:
            sheet.paste(Image.fromarray(real), (110 + len(picks) * s, 16))
    sheet.save(path)
    return {"path": str(path), "frames": [int(f) for f in picks], "labels": labels,
            "identity_distance_to_real_frame": identity,
            "lightings": [name for name, _ in lights], "inner_lip_gap_px": {
                "closed": [round(float(gap[k]), 2) for k in order[:n_closed]],
                "open": [round(float(gap[k]), 2) for k in order[::-1][:n_open]]}}


# ------------------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--video", type=Path, default=Path("/work/shared/data/talking_obama_24s.mp4"))
    ap.add_argument("--speech", type=Path, default=Path("/work/shared/data/speech/english_60s.wav"))
    ap.add_argument("--out-dir", type=Path, default=ROOT / "out" / "real_clip")
    ap.add_argument("--name", default="obama")
    ap.add_argument("--work-dir", type=Path, help="enrollment work folder (default <out-dir>/work)")
    ap.add_argument("--bundle-dir", type=Path, help="folder holding the bundle <name> (default <out-dir>/avatars)")
    ap.add_argument("--train-fraction", type=float, default=0.8)
    ap.add_argument("--every", type=int, default=1, help="evaluate every n-th held-out frame")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--retrain-mouth", metavar="TAG", help="train the mouth net with the current MouthParams into "
                    "<out-dir>/work_TAG (the rest linked to the work folder), export <out-dir>/avatars_TAG/<name> and "
                    "evaluate that; the report goes to eval_real_clip_TAG.json")
    ap.add_argument("--mouth-param", action="append", default=[], metavar="NAME=VALUE",
                    help="with --retrain-mouth: override a MouthParams field (repeatable)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["heldout", "sync", "sheet"])
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    workdir = args.work_dir or out / "work"
    bundle_parent = args.bundle_dir or out / "avatars"
    bundle = bundle_parent / args.name
    report_path = out / ("eval_real_clip.json" if not args.retrain_mouth else f"eval_real_clip_{args.retrain_mouth}.json")
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report.update({
        "command": shlex.join([sys.executable, *sys.argv]), "video": str(args.video), "speech": str(args.speech),
        "bundle": str(bundle), "work_dir": str(workdir),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "platform": platform.platform(),
                    "processor": platform.processor(), "load_avg_at_start": list(os.getloadavg())},
        "protocol": __doc__.split("\n\n", 2)[2].split("\n\nWrites")[0],
    })
    report["enrollment"] = ensure_enrolled(args.video, args.name, workdir, bundle_parent, out)
    if args.retrain_mouth:
        new_workdir, bundle_parent = out / f"work_{args.retrain_mouth}", out / f"avatars_{args.retrain_mouth}"
        bundle = bundle_parent / args.name
        if "retrained_mouth" not in report:
            from models.enroll.mouth import MouthParams
            from models.enroll.overrides import parse_overrides

            try:
                overrides = parse_overrides(MouthParams, args.mouth_param)
            except ValueError as e:
                raise SystemExit(f"error: --mouth-param {e}")
            report["retrained_mouth"] = retrain_mouth(workdir, new_workdir, bundle_parent, args.name,
                                                      args.train_fraction, args.video, overrides)
            report_path.write_text(json.dumps(report, indent=1))
        workdir = new_workdir
        report.update({"bundle": str(bundle), "work_dir": str(workdir)})
        out = out / args.retrain_mouth
        out.mkdir(parents=True, exist_ok=True)
    report["opening_gain"] = training_opening_gain(workdir, bundle, args.train_fraction)
    gain = report["opening_gain"]["gain"]
    if "heldout" not in args.skip:
        report["heldout"] = evaluate_heldout(workdir, bundle, args.video, out, args.every, args.train_fraction, gain)
        report_path.write_text(json.dumps(report, indent=1))
        print(json.dumps({v: {k: r["mean"] for k, r in d.items()} for v, d in report["heldout"]["variants"].items()},
                         indent=1), flush=True)
    if "sheet" not in args.skip or "contact_sheet" not in report:
        from models.enroll.holdout import opening_gain_renderer
        from stream.bundle_renderer import BundleRenderer

        report["contact_sheet"] = {
            "live_renderer": contact_sheet(BundleRenderer(bundle, threads=1), workdir, args.speech,
                                           out / "contact_sheet.png"),
            "live_renderer_opening_gain": contact_sheet(opening_gain_renderer(bundle, gain, threads=1), workdir,
                                                        args.speech, out / "contact_sheet_opening_gain.png")}
        report_path.write_text(json.dumps(report, indent=1))
    if "sync" not in args.skip:
        report["lip_sync"] = lip_sync(bundle, args.speech, args.video, out, gain)
        report_path.write_text(json.dumps(report, indent=1))
        print(json.dumps({k: v.get("lip_sync") for k, v in report["lip_sync"].items()}), flush=True)
    report["machine"]["load_avg_at_end"] = list(os.getloadavg())
    report_path.write_text(json.dumps(report, indent=1))
    print(f"wrote {report_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
