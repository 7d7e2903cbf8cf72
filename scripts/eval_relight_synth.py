"""Relighting quality of the enrollment decomposition (+ mouth net) on a `relitcam synth` clip with exact ground truth.

    python scripts/eval_relight_synth.py --synth /tmp/synth60 --workdir /tmp/enr_synth60 --out /tmp/relight60.json

1. prepare the clip's own-lighting video (models/enroll/prepare; reused when done);
2. train the decomposition and the mouth net on the first `--train-frac` of the frames (resumed when checkpointed);
3. on every `--every`-th held-out frame: run the decomposition net on the frame (its own mesh's coarse normals, its own
   image: pose and upper face come from the reference frames live too), relight the layers under each of the synth
   set's other lightings and compare with that lighting's video, cut to the same crop. Face-oval PSNR / SSIM on
   8-bit sRGB. Variants: `folded` (albedo with the frame's residual folded in, what the idle loop stores), `net`
   (the net's own albedo), `folded+mouth` (folded, then the mouth net regenerates the mouth box from the frame's
   own mesh, as live with the frame as idle frame and its own lips as the driven ones). Two reference rows from the
   ground truth, not the avatar: `reference_gt_layers` (the true albedo / normals / C_spec through the same crop
   and scoring: the evaluation's ceiling) and `reference_true_light_coarse_normals` (albedo folded from the frame
   under the clip's true lighting and C_spec, on the coarse normals from prepare: what the normals allow when
   lighting and specular are estimated exactly); and its two halves, `reference_true_light_learned_specular`
   (the clip's lighting, our C_spec) and `reference_learned_sh_true_specular` (our SH, the clip's specular key
   and C_spec), which split what the lighting estimate costs between its diffuse and specular parts. Every variant
   also gets PSNRs by coarse-normal error (face pixels binned by the angle between the coarse and the true normal,
   MSE pooled over frames and lightings): where the normals are right, what remains is the lighting estimate.
   Every variant also gets an identity distance: the face embedding (dlib's face-recognition ResNet,
   models.face.identity) of each relit frame, the prediction inside the face mask over the ground truth around it,
   against the ground truth's (dlib's same-person threshold is 0.6); `identity.truth_relit_vs_recorded` says how
   far the lighting change alone moves the ground truth from the frame as recorded.
   One per-channel gain over the whole evaluation (all frames, all lightings) absorbs the albedo / light scale
   ambiguity, fitted by least squares in linear light on the face pixels whose ground truth is not clipped (the
   presets blow out highlights); it is reported.
4. normals: mean angular error (degrees) in the face oval of the refined normals and of the coarse mesh normals
   against the ground-truth normals.
5. `soft_edges`: the band around the person's outline composited over a flat new background, `folded` and
   `folded_edges_decontaminated` (what the bundle stores, models/enroll/matte_edges.py) against the true layers and
   against the true layers with their own soft edge continued the same way (`reference_gt_layers_clean_edges`),
   split by what the truth has there (person, background, soft).

`--true-mesh` prepares from the clip's own mesh (landmarks.npz) instead of the tracker's, in a work folder of its own:
what the enrollment reaches with a perfect tracker.

`--param NAME=VALUE` overrides a DecomposeParams field (the decomposition retrains when its params differ; the
prepared frames in --workdir are reused); `--no-mouth` skips the mouth net for quick decomposition experiments. The
report also has the learned specular key against the clip's and the mean C_spec on the face (diagnostics only: the
ground truth is never used in training).

Writes the JSON report and a contact sheet (rows: lightings; columns: ground truth / folded / net for a few frames).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.colour import linear_to_srgb, srgb_to_linear  # noqa: E402
from models.enroll.decompose import (  # noqa: E402
    DecomposeParams, decompose_prepared, load_model, load_pool, pool_indices, train_decomposition)
from models.enroll.matte_edges import decontaminate_edges  # noqa: E402
from models.enroll.mouth import (  # noqa: E402
    MouthParams, TorchLighting, build_samples, load_mouth, mouth_box, paste_mouth, relight, train_mouth)
from models.enroll.overrides import parse_overrides  # noqa: E402
from models.enroll.prepare import PrepareParams, crop_rect, prepare_video, track_stage_identity  # noqa: E402
from models.enroll.workdir import WorkDir, atomic_save_npy, atomic_save_npz  # noqa: E402
from models.face.crop import sample_crop  # noqa: E402
from models.face.identity import DlibFaceResNet  # noqa: E402
from models.face.resources import load_topology  # noqa: E402
from models.lighting.files import load_lighting  # noqa: E402
from models.lighting.lighting import Lighting  # noqa: E402
from models.media import AUDIO_RATE_HZ, read_audio  # noqa: E402
from models.metrics.identity import embedding_distances, face_embeddings  # noqa: E402
from models.metrics.image import psnr_db, ssim  # noqa: E402
from models.render import DEFAULT_SHININESS  # noqa: E402
from models.synth.gt_store import decode_map, frame_codes  # noqa: E402


CLIPPED_LINEAR = 0.98  # ground-truth pixels at or above this (any channel) are left out of the gain fit
NORMAL_ERROR_BINS_DEG = ((0.0, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 180.0))
EDGE_BACKGROUND_LINEAR = 0.2  # the new background the soft-edge score composites over (flat mid grey)
EDGE_BAND_GROW_PX = 2
TRUE_MESH_MARKER = "TRUE_MESH"  # in a --true-mesh work folder: its track stage is the clip's mesh, not the tracker's


def angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel angle (degrees) between two normal maps (..., 3), not necessarily unit."""
    cos = (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-9)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def squared_error_by_bin(pred8: np.ndarray, gt8: np.ndarray, mask: np.ndarray, error_deg: np.ndarray,
                         bins=NORMAL_ERROR_BINS_DEG) -> tuple[np.ndarray, np.ndarray]:
    """Sum of squared error (8-bit images scaled to [0, 1], mean over channels) and pixel count of the masked pixels
    in each [lo, hi) bin of `error_deg`; pooled over frames they give one PSNR per bin."""
    se = (((pred8.astype(np.float64) - gt8.astype(np.float64)) / 255.0) ** 2).mean(-1)
    sums, counts = np.zeros(len(bins)), np.zeros(len(bins))
    for j, (lo, hi) in enumerate(bins):
        m = mask & (error_deg >= lo) & (error_deg < hi)
        sums[j], counts[j] = se[m].sum(), m.sum()
    return sums, counts


def _frames_of(path: Path, wanted: set[int],
               to_array=lambda f: f.to_ndarray(format="rgb24")) -> dict[int, np.ndarray]:
    """Decode only the wanted frame numbers of a video (default uint8 RGB; `to_array` converts a frame), streaming."""
    out = {}
    last = max(wanted)
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i in wanted:
                out[i] = to_array(f)
            if i >= last:
                break
    return out


def _crop(image: np.ndarray, affine: np.ndarray, s: int) -> np.ndarray:
    return sample_crop(image, crop_rect(affine, s), s, s)


def _to8(linear: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(linear_to_srgb(linear) * 255.0), 0, 255).astype(np.uint8)


def _relit(layers_albedo, layers_normals, layers_spec, lighting, shading_net, shininess) -> np.ndarray:
    t = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a, np.float32)[None].transpose(0, 3, 1, 2)))  # noqa
    tl = TorchLighting(torch.from_numpy(lighting.sh_coeffs), torch.from_numpy(lighting.light_dirs),
                       torch.from_numpy(lighting.light_colours))
    with torch.no_grad():
        out = relight(t(layers_albedo), t(layers_normals), t(layers_spec[..., None]), tl, shading_net, shininess)
    return out[0].permute(1, 2, 0).numpy()


def _model_key(dec_state: dict) -> str:
    return json.dumps([dec_state["params"], dec_state["steps"], dec_state["elapsed_s"]], sort_keys=True)


def _tag_mouth(wd: WorkDir, dec_state: dict) -> None:
    """Record which decomposition the mouth net was trained on (in its model file)."""
    from models.enroll.mouth import MODEL_FILE as MOUTH_FILE

    path = wd.path(MOUTH_FILE)
    state = torch.load(path, map_location="cpu", weights_only=False)
    state["decompose_key"] = _model_key(dec_state)
    torch.save(state, path)


def write_true_mesh_track(synth: Path, wd: WorkDir, params: PrepareParams) -> None:
    """`--true-mesh`: the work folder's track stage written from the clip's own projected mesh (landmarks.npz)
    instead of the tracker's, keyed exactly as prepare keys a tracked one, so align, crops and everything after run
    unchanged on it. What the enrollment reaches with a perfect tracker; never mix such a folder with a tracked one
    (the marker file says which it is)."""
    marker = wd.path(TRUE_MESH_MARKER)
    if wd.record("track") is not None and not marker.exists():
        raise SystemExit(f"error: {wd.root} holds a tracked run; --true-mesh needs its own --workdir")
    video = synth / "video.mp4"
    stage, inputs, track_params = track_stage_identity(video, params)
    if wd.is_done(stage, inputs, track_params):
        return
    with np.load(synth / "landmarks.npz") as z:
        points = z["points_px"].astype(np.float32)
    # The synth sits its mesh on the body proxy (z offset ~70 px); the tracker's z is centred on the head. Every
    # later use of z is relative (similarity fits, rasterised normals), so centring per frame is enough.
    points[..., 2] -= points[..., 2].mean(axis=1, keepdims=True)
    fps = float(track_params["fps"])
    n = len(points)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("track stage written from landmarks.npz by scripts/eval_relight_synth.py --true-mesh\n")
    atomic_save_npz(wd.path("track.npz"), t_s=np.arange(n) / fps, found=np.ones(n, bool),
                    presence=np.ones(n, np.float32), landmarks_raw=points)
    atomic_save_npy(wd.path("audio.npy"), read_audio(video, AUDIO_RATE_HZ).astype(np.float32))
    wd.write_record(stage, inputs, track_params, ["track.npz", "audio.npy"], 0.0,
                    {"frames": n, "found": n, "detector_runs": 0, "faces_checks": 0, "multi_face_checks": 0,
                     "fps": fps, "elapsed_s": 0.0, "frames_per_s": 0.0, "landmarks": "the clip's true mesh"})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synth", type=Path, required=True)
    ap.add_argument("--workdir", type=Path, required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--train-frac", type=float, default=0.8)
    ap.add_argument("--every", type=int, default=10, help="evaluate every n-th held-out frame")
    ap.add_argument("--decompose-steps", type=int, default=DecomposeParams.steps)
    ap.add_argument("--mouth-steps", type=int, default=MouthParams.steps)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-mouth", action="store_true", help="skip the mouth net (and its variant): decomposition only")
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a DecomposeParams field (repeatable), e.g. --param steps=1600")
    ap.add_argument("--out", type=Path, required=True, help="JSON report; the contact sheet goes next to it (.png)")
    ap.add_argument("--true-mesh", action="store_true",
                    help="diagnostic: prepare from the clip's own mesh (landmarks.npz) instead of the tracker's, "
                    "in a work folder of its own: what the enrollment reaches with a perfect tracker")
    ap.add_argument("--dump", type=Path, help="also save the scored 8-bit crops of every variant, the ground truth and "
                    "the face masks to this .npz (error maps, per-region analysis)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    wd = WorkDir(args.workdir)
    if args.true_mesh:
        write_true_mesh_track(args.synth, wd, PrepareParams(size_px=args.size))
    elif wd.path(TRUE_MESH_MARKER).exists():
        raise SystemExit(f"error: {wd.root} was prepared from the clip's true mesh; add --true-mesh or use another "
                         "--workdir")
    prepared = prepare_video(args.synth / "video.mp4", wd, size_px=args.size, progress=True)
    s, n = prepared.size_px, prepared.frame_count
    n_train = int(args.train_frac * n)
    timings = {"prepare_s": time.perf_counter() - t0}

    try:
        overrides = parse_overrides(DecomposeParams, args.param)
    except ValueError as e:
        raise SystemExit(f"error: --param {e}")
    dparams = DecomposeParams(**{"steps": args.decompose_steps, **overrides})
    t = time.perf_counter()
    pool = load_pool(prepared, pool_indices(0, n_train, dparams.max_pool_frames), dparams.work_scale)
    timings["pool_s"] = time.perf_counter() - t
    try:
        decomposition, dec_state = load_model(wd)
        if dec_state["params"] != dparams.to_json():
            raise ValueError("other params")
    except ValueError:
        train_decomposition(wd, pool, dparams)
        decomposition, dec_state = load_model(wd)
    timings["decompose_train_s"] = float(dec_state["elapsed_s"])

    if not args.no_mouth:
        mparams = MouthParams(steps=args.mouth_steps)
        topo = load_topology()
        t = time.perf_counter()
        train_idx = pool.indices
        train_layers = decompose_prepared(decomposition, prepared, train_idx, fold_residual=True)
        samples = build_samples(train_layers, prepared.landmarks_px[train_idx], topo.triangles, s, mparams)
        del train_layers
        timings["mouth_samples_s"] = time.perf_counter() - t
        try:
            mouth, mouth_state = load_mouth(wd)
            # The mouth net is trained on the decomposition's layers: a retrained decomposition needs a new one.
            if mouth_state["params"] != mparams.to_json() or mouth_state.get("decompose_key") != _model_key(dec_state):
                raise ValueError("other params")
        except ValueError:
            train_mouth(wd, samples, decomposition, mparams, resume=False)
            mouth, mouth_state = load_mouth(wd)
            _tag_mouth(wd, dec_state)
        timings["mouth_train_s"] = float(mouth_state["elapsed_s"])

    # ---------------------------------------------------------------------------------------- evaluation frames
    eval_pos = np.arange(n_train, n, args.every)
    src = prepared.source_frame_index[eval_pos]
    t = time.perf_counter()
    folded = decompose_prepared(decomposition, prepared, eval_pos, fold_residual=True)
    net_albedo = folded.albedo_net
    if not args.no_mouth:
        lms = prepared.landmarks_px[eval_pos]
        m = samples.mouth_px
        boxes = np.stack([mouth_box(lm, s, m, mparams.box_center_down_frac) for lm in lms])
        with_mouth = paste_mouth(mouth, folded, lms, lms, topo.triangles, boxes, m, samples.grow_px,
                                 samples.margin_px)
    timings["eval_layers_s"] = time.perf_counter() - t
    face = prepared.masks(eval_pos)["face"]
    coarse = np.stack([prepared._read("normals", int(i)) for i in eval_pos]).astype(np.float32)

    manifest = json.loads((args.synth / "manifest.json").read_text())
    names = [k for k in manifest["videos"] if k != "clip"]
    wanted = set(int(i) for i in src)
    gt_crops: dict[str, np.ndarray] = {}
    for name in names:
        frames = _frames_of(args.synth / manifest["videos"][name], wanted)
        gt_crops[name] = np.stack([
            np.clip(np.rint(_crop(frames[int(i)], prepared.image_to_crop[p], s)), 0, 255).astype(np.uint8)
            for p, i in zip(eval_pos, src)])

    # Ground-truth layers, cut like the crops; normals turned into the crop frame (the crop may be rolled).
    gt_maps = {name: _frames_of(args.synth / "gt" / f"{name}.mkv", wanted,
                                lambda f, name=name: decode_map(name, frame_codes(f)))
               for name in ("normals", "albedo", "masks")}
    gt_normals, gt_albedo, gt_spec, gt_matte = [], [], [], []
    for p, i in zip(eval_pos, src):
        nrm = _crop(gt_maps["normals"][int(i)], prepared.image_to_crop[p], s)
        a = crop_rect(prepared.image_to_crop[p], s).angle_rad
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        nrm[..., :2] = nrm[..., :2] @ rot.T
        gt_normals.append(nrm / np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-6))
        gt_albedo.append(_crop(gt_maps["albedo"][int(i)], prepared.image_to_crop[p], s))
        masks = _crop(gt_maps["masks"][int(i)], prepared.image_to_crop[p], s)
        gt_spec.append(masks[..., 2])
        gt_matte.append(np.clip(masks[..., 0], 0.0, 1.0))
    del gt_maps
    gt_matte = np.stack(gt_matte)
    gt_normals, gt_albedo, gt_spec = np.stack(gt_normals), np.stack(gt_albedo), np.stack(gt_spec)

    # ------------------------------------------------------------------------------------------------- relight
    lightings = {name: load_lighting(args.synth / manifest["lightings"][name]) for name in names}
    sc = decomposition.shading_net
    variants = {
        "folded": (folded.albedo, folded.normals, folded.spec_weight, sc),
        "net": (net_albedo, folded.normals, folded.spec_weight, sc),
        "folded_no_shading_net": (folded.albedo, folded.normals, folded.spec_weight, None),
        # What the bundle stores: the soft edge's colour continued from the solid person (models/enroll/matte_edges).
        "folded_edges_decontaminated": (decontaminate_edges(folded.albedo, folded.matte), folded.normals,
                                        folded.spec_weight, sc),
    }
    if not args.no_mouth:
        variants["folded+mouth"] = (with_mouth.albedo, with_mouth.normals, with_mouth.spec_weight, sc)
    # References from the ground truth (not the avatar): the evaluation's own ceiling, and what our coarse normals
    # allow when the lighting and the specular weight are exactly right (albedo folded from the frame like ours).
    clip = load_lighting(args.synth / manifest["lightings"]["clip"])
    coarse_unit = coarse / np.maximum(np.linalg.norm(coarse, axis=-1, keepdims=True), 1e-6)
    clip_frames = _frames_of(args.synth / manifest["videos"]["clip"], wanted)
    clip_lin = np.stack([srgb_to_linear(np.clip(_crop(clip_frames[int(i)], prepared.image_to_crop[p], s), 0, 255)
                                        / 255.0) for p, i in zip(eval_pos, src)])
    learned_sh = np.asarray(decomposition.sh_coeffs(), np.float32)
    ours_spec = folded.spec_weight

    def folded_from_frame(light: Lighting, spec: np.ndarray) -> np.ndarray:
        unit = np.stack([_relit(np.ones_like(gt_albedo[k]), coarse_unit[k], spec[k], light, None, DEFAULT_SHININESS)
                         for k in range(eval_pos.size)])
        return np.clip(clip_lin / np.maximum(unit, 1e-3), 0.0, 1.0)

    true_light_albedo = folded_from_frame(clip, gt_spec)
    # The last two split the true-light reference in halves: the clip's lighting with our specular weight, and our
    # diffuse SH with the clip's specular key and weight; they say which part of the estimate costs what.
    references = {
        "reference_gt_layers": (gt_albedo, gt_normals, gt_spec, None, DEFAULT_SHININESS),
        # The true layers with the soft edge's albedo continued from the solid person: the synth cut its albedo from
        # a photo, so its own soft edge carries that photo's background; this is the truth a clean edge would give.
        "reference_gt_layers_clean_edges": (decontaminate_edges(gt_albedo, gt_matte), gt_normals, gt_spec, None,
                                            DEFAULT_SHININESS),
        "reference_true_light_coarse_normals": (true_light_albedo, coarse_unit, gt_spec, None, DEFAULT_SHININESS),
        "reference_true_light_learned_specular": (folded_from_frame(clip, ours_spec), coarse_unit, ours_spec, None,
                                                  DEFAULT_SHININESS),
        "reference_learned_sh_true_specular": (
            folded_from_frame(Lighting(learned_sh, clip.light_dirs, clip.light_colours), gt_spec), coarse_unit,
            gt_spec, None, DEFAULT_SHININESS),
    }
    variants = {v: (*layers, decomposition.shininess) for v, layers in variants.items()} | references
    preds = {v: {name: np.stack([_relit(a[k], nn[k], c[k], lightings[name], net, shininess)
                                 for k in range(eval_pos.size)]) for name in names}
             for v, (a, nn, c, net, shininess) in variants.items()}

    coarse_error_deg = angle_deg(coarse_unit, gt_normals)
    # Identity: face embeddings of each relit frame (the prediction inside the face mask over the ground truth
    # around it, so only the face differs) against the ground truth's; and how far the lighting change alone moves
    # the truth from the frame as recorded.
    identity_net = DlibFaceResNet.load()
    eval_landmarks = prepared.landmarks_px[eval_pos]
    gt_embed = {name: face_embeddings(gt_crops[name], eval_landmarks, identity_net) for name in names}
    clip8 = np.stack([_to8(c) for c in clip_lin])
    clip_embed = face_embeddings(clip8, eval_landmarks, identity_net)
    report_identity = {"truth_relit_vs_recorded": float(np.mean([
        embedding_distances(gt_embed[name], clip_embed).mean() for name in names]))}
    report = {"synth": str(args.synth), "frames": n, "train_frames": n_train, "eval_frames": int(eval_pos.size),
              "size_px": s, "landmarks": "true mesh" if args.true_mesh else "tracked", "lightings": names,
              "timings_s": timings, "variants": {}}
    dumped: dict[str, list[np.ndarray]] = {}
    for v, per_light in preds.items():
        # One per-channel gain over everything (scale ambiguity of albedo x lighting).
        num = np.zeros(3)
        den = np.zeros(3)
        for name in names:
            gt_lin = srgb_to_linear(gt_crops[name] / 255.0)
            # Clipped pixels say nothing about scale: the presets' highlights blow out parts of the face, and a
            # prediction of 3.0 against a stored 1.0 would drag the gain down for every other pixel.
            fit = face & (gt_lin.max(-1) < CLIPPED_LINEAR)
            num += (per_light[name] * gt_lin)[fit].sum(0)
            den += (per_light[name] ** 2)[fit].sum(0)
        gain = num / np.maximum(den, 1e-9)
        rows = {}
        identity_d = []
        bin_se = np.zeros(len(NORMAL_ERROR_BINS_DEG))
        bin_n = np.zeros(len(NORMAL_ERROR_BINS_DEG))
        for name in names:
            ps, ss, pred8s = [], [], []
            for k in range(eval_pos.size):
                pred8 = _to8(per_light[name][k] * gain)
                if args.dump:
                    dumped.setdefault(f"{v}/{name}", []).append(pred8)
                ps.append(psnr_db(pred8, gt_crops[name][k], face[k]))
                se, n_px = squared_error_by_bin(pred8, gt_crops[name][k], face[k], coarse_error_deg[k])
                bin_se += se
                bin_n += n_px
                ss.append(ssim(pred8, gt_crops[name][k], face[k]))
                pred8s.append(np.where(face[k][..., None], pred8, gt_crops[name][k]))
            d = embedding_distances(face_embeddings(np.stack(pred8s), eval_landmarks, identity_net), gt_embed[name])
            identity_d.append(d)
            rows[name] = {"psnr_db": float(np.mean(ps)), "ssim": float(np.mean(ss)),
                          "identity_distance": float(d.mean())}
        report["variants"][v] = {
            "gain_rgb": gain.tolist(),
            "psnr_db": float(np.mean([r["psnr_db"] for r in rows.values()])),
            "ssim": float(np.mean([r["ssim"] for r in rows.values()])),
            "per_lighting": rows,
            # Face-embedding distance to the truth relit the same way (dlib's same-person threshold is 0.6).
            "identity_distance": float(np.mean(identity_d)),
            "identity_distance_max": float(np.max(identity_d)),
            # PSNR of the MSE pooled over every frame and lighting, face pixels split by how far the coarse normal
            # is from the true one: where the normals are right, what is left is the lighting and specular estimate.
            "psnr_db_by_coarse_normal_error": {
                f"{lo:g}-{hi:g} deg": float(10 * np.log10(1.0 / max(e / max(c, 1), 1e-10)))
                for (lo, hi), e, c in zip(NORMAL_ERROR_BINS_DEG, bin_se, bin_n)},
        }
    report["identity"] = report_identity
    report["soft_edges"] = soft_edge_scores(preds, report, names, folded.matte, gt_matte,
                                            ("folded", "folded_edges_decontaminated"))
    report["coarse_normal_error_bins_face_share"] = {
        f"{lo:g}-{hi:g} deg": float(((coarse_error_deg >= lo) & (coarse_error_deg < hi))[face].mean())
        for lo, hi in NORMAL_ERROR_BINS_DEG}
    report["normals_deg"] = {
        "refined": float(np.mean([angle_deg(folded.normals[k], gt_normals[k])[face[k]].mean()
                                  for k in range(len(face))])),
        "coarse_mesh": float(np.mean([coarse_error_deg[k][face[k]].mean() for k in range(len(face))])),
    }
    report["learned_sh"] = decomposition.sh_coeffs().tolist()
    report["clip_sh"] = clip.sh_coeffs.tolist()
    # The specular key against the clip's (reported only; never used in training).
    key_dirs, key_rgb = decomposition.specular_lights()
    report["learned_key"] = {"dir": key_dirs[0].tolist(), "rgb": key_rgb[0].tolist(),
                             "deg_from_clip_key": float(np.degrees(np.arccos(np.clip(
                                 key_dirs[0] @ clip.light_dirs[0], -1.0, 1.0)))) if clip.num_lights else None,
                             "clip_rgb": clip.light_colours[0].tolist() if clip.num_lights else None}
    report["spec_weight_face_mean"] = float(folded.spec_weight[face].mean())
    report["decompose_params"] = dparams.to_json()
    report["folded_fraction"] = folded.folded_fraction
    report["timings_s"]["total_s"] = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    if args.dump:
        np.savez_compressed(args.dump, face=face, gt_normals=gt_normals.astype(np.float16),
                            normals=folded.normals.astype(np.float16), coarse=coarse.astype(np.float16),
                            **{f"gt/{name}": gt_crops[name] for name in names},
                            **{key: np.stack(frames) for key, frames in dumped.items()})
    _sheet(args.out.with_suffix(".png"), names, gt_crops, preds, report)
    print(json.dumps({v: {k: r[k] for k in ("psnr_db", "ssim", "identity_distance", "gain_rgb")}
                      for v, r in report["variants"].items()},
                     indent=1))
    print("normals_deg", report["normals_deg"], "timings", {k: round(v, 1) for k, v in timings.items()})
    print("key", report["learned_key"], "spec_weight_face_mean", round(report["spec_weight_face_mean"], 3))
    print("per_lighting (folded)", {k: (round(r["psnr_db"], 2), round(r["ssim"], 3))
                                    for k, r in report["variants"]["folded"]["per_lighting"].items()})
    return 0


def soft_edge_scores(preds: dict, report: dict, names: list[str], matte: np.ndarray, gt_matte: np.ndarray,
                     variants: tuple[str, ...], background: float = EDGE_BACKGROUND_LINEAR) -> dict:
    """PSNR (8-bit sRGB) in the band around the person's outline (either matte fractional, grown by EDGE_BAND_GROW_PX)
    of each variant composited with the avatar's matte over a new, flat background, against the true layers
    composited with the true matte over the same background, under every held-out lighting (the variant's gain
    applied). What a user sees at the hair and ears over a virtual background."""
    from scipy.ndimage import binary_dilation

    soft = lambda a: (a > 0.02) & (a < 0.98)  # noqa: E731
    band = np.stack([binary_dilation(soft(a) | soft(g), iterations=EDGE_BAND_GROW_PX)
                     for a, g in zip(matte, gt_matte)])
    truths = {kind: {name: _to8(gt_matte[..., None] * preds[ref][name] + (1 - gt_matte[..., None]) * background)
                     for name in names}
              for kind, ref in (("truth", "reference_gt_layers"), ("truth_clean_edges", "reference_gt_layers_clean_edges"))}
    # Split by what the truth has there: the person, the background, or a soft mix.
    parts = {"all": band, "true_person": band & (gt_matte >= 0.98), "true_background": band & (gt_matte <= 0.02),
             "true_soft": band & soft(gt_matte)}
    out = {"band_px_per_frame": float(band.sum() / len(band)), "background_linear": background,
           "share": {key: float(part.sum() / max(band.sum(), 1)) for key, part in parts.items()}}
    for kind, truth in truths.items():
        out[kind] = {}
        for v in variants:
            gain = np.asarray(report["variants"][v]["gain_rgb"])
            se = {key: 0.0 for key in parts}
            for name in names:
                for k in range(len(matte)):
                    pred = _to8(matte[k, ..., None] * preds[v][name][k] * gain
                                + (1 - matte[k, ..., None]) * background)
                    err = ((pred.astype(np.float64) - truth[name][k]) ** 2).mean(-1)
                    for key, part in parts.items():
                        se[key] += err[part[k]].sum()
            n = len(names)
            # PSNR of the MSE pooled over frames and lightings, per part of the band.
            out[kind][v] = {key: float(10 * np.log10(255.0**2 / max(se[key] / max(n * parts[key].sum(), 1), 1e-10)))
                            for key in parts}
    return out


def _sheet(path: Path, names: list[str], gt: dict, preds: dict, report: dict, frames: int = 3) -> None:
    """Rows: lightings; per frame three columns: ground truth, folded (+mouth), net albedo."""
    from PIL import Image, ImageDraw

    n_eval = next(iter(gt.values())).shape[0]
    pick = np.linspace(0, n_eval - 1, min(frames, n_eval)).round().astype(int)
    s = next(iter(gt.values())).shape[1]
    cols = [("GT", None), ("folded+mouth", "folded+mouth" if "folded+mouth" in preds else "folded"), ("net albedo", "net")]
    sheet = Image.new("RGB", (len(pick) * len(cols) * s, len(names) * s + 20), "white")
    draw = ImageDraw.Draw(sheet)
    for j, k in enumerate(pick):
        for c, (label, variant) in enumerate(cols):
            x = (j * len(cols) + c) * s
            draw.text((x + 4, 4), label, fill="black")
            for r, name in enumerate(names):
                if variant is None:
                    img = gt[name][k]
                else:
                    img = _to8(preds[variant][name][k] * np.asarray(report["variants"][variant]["gain_rgb"]))
                sheet.paste(Image.fromarray(img), (x, 20 + r * s))
    sheet.save(path)


if __name__ == "__main__":
    raise SystemExit(main())
