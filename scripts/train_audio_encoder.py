"""Build the espeak corpus, train the speaker-independent audio encoder, measure it and ship it to models/assets.

    .venv/bin/python scripts/train_audio_encoder.py corpus            # out/audio_corpus/*.npz (parallel, resumable)
    nohup .venv/bin/python scripts/train_audio_encoder.py train [--resume] > out/audio_encoder/train.log 2>&1 &
    .venv/bin/python scripts/train_audio_encoder.py evaluate          # held-out voices, real speech, real video
    .venv/bin/python scripts/train_audio_encoder.py export            # models/assets/audio_encoder.{pt,onnx}
    .venv/bin/python scripts/train_audio_encoder.py personal          # personal head: fit time and quality

Real recordings under ../shared/data are used for measurement only and are never copied into the project.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from models.enroll import audio_encoder as ae  # noqa: E402
from models.enroll.audio_corpus import CorpusConfig, build_corpus, load_split  # noqa: E402

CORPUS_DIR = ROOT / "out" / "audio_corpus"
RUN_DIR = ROOT / "out" / "audio_encoder"
SHARED = ROOT.parent / "shared" / "data"
SPEECH_WAVS = sorted((SHARED / "speech").glob("*.wav"))
TALKING_VIDEO = SHARED / "talking_obama_24s.mp4"


def cmd_corpus(args) -> None:
    config = CorpusConfig(n_train_recordings=args.train_recordings, n_heldout_recordings=args.heldout_recordings,
                          n_workers=args.workers)
    t0 = time.monotonic()
    summary = build_corpus(CORPUS_DIR, config, progress=lambda name, s: print(f"{name}: {s:.0f} s of audio", flush=True))
    summary["wall_s"] = time.monotonic() - t0
    (CORPUS_DIR / "corpus.json").write_text(json.dumps(summary, indent=1))
    print(f"train {summary['train_hours']:.2f} h, held-out {summary['heldout_hours']:.2f} h, {summary['wall_s']:.0f} s")


def cmd_train(args) -> None:
    torch.set_num_threads(args.threads)
    train, heldout = load_split(CORPUS_DIR, "train"), load_split(CORPUS_DIR, "heldout")
    print(f"train {train.hours:.2f} h ({len(train.mel)} frames), held-out {heldout.hours:.2f} h", flush=True)
    config = ae.EncoderConfig(width=args.width, lookahead_frames=args.lookahead_frames, past_frames=args.past_frames)
    tc = ae.TrainConfig(steps=args.steps, batch=args.batch)
    t0 = time.monotonic()
    ae.train_encoder(train, heldout, RUN_DIR, config, tc, resume=args.resume, log=lambda s: print(s, flush=True))
    session_s = time.monotonic() - t0
    # Accumulated over resumed sessions, for the report.
    wall_file = RUN_DIR / "train_wall_s.txt"
    before = float(wall_file.read_text()) if args.resume and wall_file.exists() else 0.0
    wall_file.write_text(f"{before + session_s:.1f}")
    print(f"training took {session_s:.0f} s this session, {before + session_s:.0f} s in all", flush=True)


def _tracked_mouth(video: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame mouth opening, frame times and lip landmarks (T, K, 2; centred, in inter-ocular units; NaN where
    the face was lost) of a real video from the face tracker's raw landmarks (cached in out/, it takes a while)."""
    cache = RUN_DIR / f"{video.stem}_mouth.npz"
    if cache.exists():
        with np.load(cache) as z:
            if "lips_roll_free" in z:
                return z["opening"], z["pts_s"], z["lips"]
    from models.face.measures import LEFT_EYE_OUTER, RIGHT_EYE_OUTER, inter_ocular_px, mouth_opening
    from models.face.tracker import FaceTracker
    from models.media import iter_video_frames
    from models.face.resources import load_topology

    tracker = FaceTracker()
    topology = load_topology()
    lip_idx = np.unique(np.concatenate([topology.lips_outer, topology.lips_inner]))
    opening, pts, lips = [], [], []
    for frame in iter_video_frames(video):
        tracked = tracker.process(frame.image, timestamp_s=frame.pts_s)
        pts.append(frame.pts_s)
        if not tracked.found:
            opening.append(np.nan)
            lips.append(np.full((len(lip_idx), 2), np.nan))
            continue
        marks = tracked.raw_landmarks  # unsmoothed: smoothing would delay the lips
        opening.append(mouth_opening(marks))
        xy = np.asarray(marks.xy_px, np.float64)
        # Undo head roll (eye line to horizontal) so the PCA sees lip shape rather than head tilt.
        eye = xy[LEFT_EYE_OUTER] - xy[RIGHT_EYE_OUTER]
        c, s_ = np.cos(-np.arctan2(eye[1], eye[0])), np.sin(-np.arctan2(eye[1], eye[0]))
        lip = (xy[lip_idx] - xy[lip_idx].mean(0)) @ np.array([[c, s_], [-s_, c]])
        lips.append(lip / inter_ocular_px(marks))
    out = np.array(opening), np.array(pts), np.array(lips)
    np.savez(cache, opening=out[0], pts_s=out[1], lips=out[2], lips_roll_free=True)
    return out


def cmd_evaluate(args) -> None:
    from models.audio.wav import read_wav
    from models.media import read_audio

    torch.set_num_threads(args.threads)
    encoder = ae.load_encoder(Path(args.weights))
    metrics: dict = {"config": dataclasses.asdict(encoder.config),
                     "n_parameters": sum(p.numel() for p in encoder.parameters())}
    corpus = json.loads((CORPUS_DIR / "corpus.json").read_text())
    metrics["corpus"] = {k: corpus[k] for k in ("train_hours", "heldout_hours", "config") if k in corpus}
    metrics["corpus"]["n_train_voices"] = len(corpus["train_voices"])
    ckpt = RUN_DIR / "checkpoint.pt"
    if ckpt.exists():
        blob = torch.load(ckpt, map_location="cpu", weights_only=False)
        metrics["train_config"] = blob["train_config"]
        metrics["train_history_last"] = blob["history"][-1] if blob["history"] else None
    if (RUN_DIR / "train_wall_s.txt").exists():
        metrics["train_wall_s"] = float((RUN_DIR / "train_wall_s.txt").read_text())
    metrics["heldout_voices"] = ae.heldout_metrics(encoder, load_split(CORPUS_DIR, "heldout"))
    print(json.dumps(metrics["heldout_voices"]["pearson_r"]), metrics["heldout_voices"]["jaw_open_lag_ms"], flush=True)
    real = {}
    for wav in SPEECH_WAVS:
        real[wav.name] = ae.jaw_vs_audio_envelope(encoder, read_wav(wav, 16000).samples)
        print(wav.name, real[wav.name], flush=True)
    metrics["real_speech_jaw_vs_envelope"] = real
    if TALKING_VIDEO.exists():
        from models.metrics.lipsync import mouth_audio_offset

        audio = read_audio(TALKING_VIDEO, 16000)
        opening, pts, _ = _tracked_mouth(TALKING_VIDEO)
        video = ae.jaw_vs_tracked_mouth(encoder, audio, opening, pts)
        video["jaw_vs_envelope"] = ae.jaw_vs_audio_envelope(encoder, audio)
        # The footage's own audio/mouth offset by the same meter: what "in sync" reads as on this clip.
        real_sync = mouth_audio_offset(opening, pts, audio, 16000, max_lag_ms=300.0)
        video["tracked_mouth_vs_envelope"] = {"offset_ms": real_sync.offset_ms,
                                              "peak_correlation": real_sync.peak_correlation}
        metrics["talking_video_jaw_vs_tracked_mouth"] = video
        print(TALKING_VIDEO.name, video, flush=True)
    out = Path(args.metrics)
    out.write_text(json.dumps(metrics, indent=1))
    print(f"wrote {out}")


def _lip_pca(lips: np.ndarray, n_train: int, n_lip: int) -> np.ndarray:
    """(T, K, 2) lip landmarks -> (T, n_lip) PCA coefficients fitted on the first n_train frames (a stand-in for the
    enrollment's expression coefficients, which come from models/enroll/expression.py in the product)."""
    flat = lips.reshape(len(lips), -1)
    known = np.isfinite(flat).all(axis=1)
    for j in range(flat.shape[1]):  # bridge frames without a face
        flat[~known, j] = np.interp(np.flatnonzero(~known), np.flatnonzero(known), flat[known, j])
    mean = flat[:n_train].mean(0)
    _, _, vt = np.linalg.svd(flat[:n_train] - mean, full_matrices=False)
    return ((flat - mean) @ vt[:n_lip].T).astype(np.float32)


def cmd_personal(args) -> None:
    """Personal head: a 2-minute synthetic enrollment (fit time, recovery of planted lip coefficients) and the real
    talking video (lip landmark PCA as the coefficients); results merged into the metrics JSON."""
    from models.enroll.a2e import A2EConfig, export_a2e_onnx, fit_personal_a2e
    from models.media import read_audio
    from models.speech.espeak import SynthesisParams, synthesize
    from models.speech.script import random_script
    from models.speech.visemes import viseme_curves

    torch.set_num_threads(args.threads)
    encoder = ae.load_encoder(Path(args.weights))
    results: dict = {}
    fps = 25.0
    clip = synthesize(random_script(2024, 48), SynthesisParams("en-gb-x-gbcwmd+caleb", rate_wpm=165))
    n = int(clip.duration_s * fps)
    rng = np.random.default_rng(0)
    lips = (viseme_curves(clip.phonemes, fps, n) @ rng.normal(0, 1, (4, args.n_lip))
            + 0.05 * rng.normal(0, 1, (n, args.n_lip))).astype(np.float32)
    t0 = time.monotonic()
    chain, report = fit_personal_a2e(clip.samples, lips, fps, encoder, A2EConfig())
    fit_s = time.monotonic() - t0
    err = export_a2e_onnx(chain, RUN_DIR / "a2e_synthetic.onnx")
    results["synthetic_enrollment"] = {"video_s": clip.duration_s, "fps": fps, "voice": clip.voice,
                                       "fit_wall_s": fit_s, "onnx_max_abs_err": err,
                                       "onnx_bytes": (RUN_DIR / "a2e_synthetic.onnx").stat().st_size,
                                       "report": dataclasses.asdict(report)}
    print(json.dumps(results["synthetic_enrollment"], indent=1), flush=True)
    if TALKING_VIDEO.exists():
        opening, pts, lip_marks = _tracked_mouth(TALKING_VIDEO)
        audio = read_audio(TALKING_VIDEO, 16000)
        fps_video = 1.0 / float(np.median(np.diff(pts)))
        coeffs = _lip_pca(lip_marks, int(round(0.8 * len(pts))), args.n_lip)
        t0 = time.monotonic()
        _, report = fit_personal_a2e(audio, coeffs, fps_video, encoder, A2EConfig())
        results["talking_video"] = {"video": TALKING_VIDEO.name, "fps": fps_video, "n_lip": args.n_lip,
                                    "coefficients": "PCA of tracked lip landmarks (inter-ocular units)",
                                    "fit_wall_s": time.monotonic() - t0, "report": dataclasses.asdict(report)}
        print(json.dumps(results["talking_video"], indent=1), flush=True)
    out = Path(args.metrics)
    metrics = json.loads(out.read_text()) if out.exists() else {}
    metrics["personal_head"] = results
    out.write_text(json.dumps(metrics, indent=1))
    print(f"wrote {out}")


def cmd_export(args) -> None:
    encoder = ae.load_encoder(RUN_DIR / "encoder.pt")
    ae.ASSET_DIR.mkdir(parents=True, exist_ok=True)
    # Half-size storage would save 0.6 MB but change the outputs by ~1e-3; float32 keeps ONNX == torch exact.
    ae.save_encoder(encoder, ae.ASSET_STATE)
    err = ae.export_onnx(encoder, ae.ASSET_ONNX)
    print(f"ONNX max |ORT - torch| = {err:.2e}; {ae.ASSET_ONNX.stat().st_size / 1e6:.2f} MB, "
          f"{ae.ASSET_STATE.stat().st_size / 1e6:.2f} MB")
    if err > 1e-4:
        raise SystemExit("ONNX export differs from torch by more than 1e-4")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("corpus")
    p.add_argument("--train-recordings", type=int, default=CorpusConfig.n_train_recordings)
    p.add_argument("--heldout-recordings", type=int, default=CorpusConfig.n_heldout_recordings)
    p.add_argument("--workers", type=int, default=2)
    p.set_defaults(func=cmd_corpus)
    p = sub.add_parser("train")
    p.add_argument("--resume", action="store_true", help="continue from out/audio_encoder/checkpoint.pt")
    p.add_argument("--steps", type=int, default=ae.TrainConfig.steps)
    p.add_argument("--batch", type=int, default=ae.TrainConfig.batch)
    p.add_argument("--width", type=int, default=ae.EncoderConfig.width)
    p.add_argument("--past-frames", type=int, default=ae.EncoderConfig.past_frames)
    p.add_argument("--lookahead-frames", type=int, default=ae.EncoderConfig.lookahead_frames)
    p.add_argument("--threads", type=int, default=1, help="1: on a shared 2-core box OpenMP spin-waits made 2 threads 6x slower")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("evaluate")
    p.add_argument("--weights", default=str(RUN_DIR / "encoder.pt"))
    p.add_argument("--metrics", default=str(ae.ASSET_METRICS))
    p.add_argument("--threads", type=int, default=1, help="1: on a shared 2-core box OpenMP spin-waits made 2 threads 6x slower")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("personal")
    p.add_argument("--weights", default=str(ae.ASSET_STATE))
    p.add_argument("--metrics", default=str(ae.ASSET_METRICS))
    p.add_argument("--n-lip", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_personal)
    p = sub.add_parser("export")
    p.set_defaults(func=cmd_export)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
