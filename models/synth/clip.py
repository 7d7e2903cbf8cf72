"""Render a whole synth clip: speech + motion -> per-frame G-buffers -> every lighting's video + ground truth.

Work split: worker processes (fork, sharing the read-only head model) turn frame indices into G-buffers and shade
them under every lighting; the parent only encodes, in frame order, so each output is one sequential stream.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from models.colour import linear_to_srgb
from models.lighting.files import save_lighting
from models.lighting.lighting import Lighting
from models.media import write_mp4
from models.speech.visemes import VISEME_PARAMS, viseme_curves
from models.synth.frame import FramePose, render_gbuffer
from models.synth.gt_store import ENCODINGS, SHADING_RANGE, LosslessVideoWriter, encode_map
from models.synth.head import HeadModel, build_head
from models.synth.lightings import other_lightings
from models.synth.motion import HeadMotion, head_motion
from models.synth.portrait import load_portrait
from models.synth.shade import backdrop_image, shade
from models.synth.speech_track import AUDIO_RATE_HZ, speech_track

MANIFEST_FORMAT = "relitcam-synth"
MANIFEST_VERSION = 1
MIN_SIZE_PX, MAX_SIZE_PX = 64, 2048
ALLOWED_FPS = (25, 30)


@dataclass(frozen=True)
class SynthConfig:
    out_dir: Path
    portrait: Path | None = None  # None: skimage.data.astronaut()
    seconds: float = 10.0
    size_px: int = 512
    fps: int = 25
    seed: int = 0
    lightings: int = 10  # besides the clip's own
    workers: int = 0  # 0: one per CPU core

    def __post_init__(self) -> None:
        if not (self.seconds > 0 and self.seconds <= 3600):
            raise ValueError(f"--seconds must be in (0, 3600], got {self.seconds}")
        if not MIN_SIZE_PX <= self.size_px <= MAX_SIZE_PX:
            raise ValueError(f"--size must be in [{MIN_SIZE_PX}, {MAX_SIZE_PX}] px, got {self.size_px}")
        if self.size_px % 2:
            raise ValueError(f"--size must be even (H.264 4:2:0 video), got {self.size_px}")
        if self.fps not in ALLOWED_FPS:
            raise ValueError(f"--fps must be one of {ALLOWED_FPS}, got {self.fps}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")

    @property
    def n_frames(self) -> int:
        return max(1, int(round(self.seconds * self.fps)))


@dataclass(frozen=True)
class SynthResult:
    out_dir: Path
    n_frames: int
    seconds_elapsed: float
    lighting_names: list[str]


# Read-only state for forked workers (set before the pool starts, inherited copy-on-write).
_STATE: dict = {}


# sRGB encoding as a table over 16-bit linear codes: 8-bit output error < 0.1 code, ~4x faster than the curve.
_SRGB8_TABLE = np.round(linear_to_srgb(np.arange(65536, dtype=np.float32) / 65535.0) * 255.0).astype(np.uint8)


def to_srgb8(linear: np.ndarray) -> np.ndarray:
    """Linear RGB -> uint8 sRGB (clipped to [0, 1])."""
    return _SRGB8_TABLE[(np.clip(linear, 0.0, 1.0) * 65535.0 + 0.5).astype(np.uint16)]


def _pose(motion: HeadMotion, visemes: np.ndarray, i: int) -> FramePose:
    return FramePose(motion.rotation_matrix(i), motion.translation_px[i], visemes[i], float(motion.blink[i]))


def _render_frame(i: int):
    model: HeadModel = _STATE["model"]
    g = render_gbuffer(model, _pose(_STATE["motion"], _STATE["visemes"], i))
    images = []
    clip_layers = None
    for lighting, bg in zip(_STATE["lightings"], _STATE["backdrops"]):
        layers = shade(g.albedo, g.normals, g.spec_weight, g.matte, bg, lighting)
        if clip_layers is None:
            clip_layers = layers
        images.append(to_srgb8(layers.image))
    masks = np.stack([g.matte, g.mouth_mask.astype(np.float32), g.spec_weight], -1)
    maps = {"albedo": g.albedo, "normals": g.normals, "shading": clip_layers.shading,
            "specular": clip_layers.specular, "masks": masks}
    codes = {name: encode_map(name, maps[name]) for name in ENCODINGS}
    return i, images, codes, g.landmarks_px, int(g.mouth_mask.sum())


class _Mp4Sink:
    """write_mp4 pulls frames from an iterable; run it on a thread fed by a bounded queue."""

    def __init__(self, path: Path, fps: int, audio: np.ndarray) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(path, fps, audio), daemon=True)
        self._thread.start()

    def _frames(self):
        while (frame := self._queue.get()) is not None:
            yield frame

    def _run(self, path, fps, audio) -> None:
        try:
            write_mp4(path, self._frames(), fps, audio, AUDIO_RATE_HZ)
        except BaseException as e:  # re-raised in the parent thread by close()
            self._error = e
            while self._queue.get() is not None:  # drain so the producer never blocks
                pass

    def put(self, frame: np.ndarray) -> None:
        self._queue.put(frame)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


def _check_writable(out_dir: Path) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"output directory {out_dir} is not writable ({e.strerror or e})") from None


def synth_clip(cfg: SynthConfig, log=print) -> SynthResult:
    t0 = time.perf_counter()
    out = Path(cfg.out_dir)
    _check_writable(out)
    portrait, portrait_name = load_portrait(cfg.portrait, cfg.size_px)
    model = build_head(portrait, cfg.seed, what=portrait_name)
    lightings: list[Lighting] = [model.clip_lighting, *other_lightings(cfg.lightings)]
    names = ["clip"] + [lt.name for lt in lightings[1:]]

    n = cfg.n_frames
    speech = speech_track(cfg.seed, n / cfg.fps)
    visemes = viseme_curves(speech.phonemes, cfg.fps, n)
    motion = head_motion(cfg.seed, n, cfg.fps, cfg.size_px)
    log(f"head model and {speech.segments.__len__()} speech segments ready ({time.perf_counter() - t0:.1f} s)")

    for sub in ("relit", "gt", "lightings"):
        (out / sub).mkdir(exist_ok=True)
    for name, lighting in zip(names, lightings):
        save_lighting(out / "lightings" / f"{name}.json", lighting)
    video_paths = [out / "video.mp4"] + [out / "relit" / f"{nm}.mp4" for nm in names[1:]]

    _STATE.update(model=model, motion=motion, visemes=visemes, lightings=lightings,
                  backdrops=[backdrop_image(model.backdrop_albedo, lt) for lt in lightings])
    workers = cfg.workers or os.cpu_count() or 1
    sinks = [_Mp4Sink(p, cfg.fps, speech.samples) for p in video_paths]
    gt_writers = {m: LosslessVideoWriter(out / "gt" / f"{m}.mkv", cfg.size_px, cfg.size_px, cfg.fps) for m in ENCODINGS}
    landmarks = np.zeros((n, 468, 3), np.float32)
    mouth_area = np.zeros(n, np.int64)
    sheet_frame = int(np.argmax(visemes[:, 0])) if n else 0
    sheet_images: list[np.ndarray] = []
    strip_start = max(0, min(sheet_frame - 6, n - 12))
    strip: list[np.ndarray] = []
    try:
        frames = _frame_results(workers, n)
        for i, images, codes, lm, area in frames:
            for sink, image in zip(sinks, images):
                sink.put(image)
            for m, writer in gt_writers.items():
                writer.write(codes[m])
            landmarks[i], mouth_area[i] = lm, area
            if i == sheet_frame:
                sheet_images = images
            if strip_start <= i < strip_start + 12:
                strip.append(images[0])
            if i % max(1, n // 10) == 0:
                log(f"frame {i + 1}/{n} ({time.perf_counter() - t0:.0f} s)")
    finally:
        _STATE.clear()
        for sink in sinks:
            sink.close()
        for writer in gt_writers.values():
            writer.close()

    _write_side_files(out, cfg, model, speech, visemes, motion, landmarks, mouth_area, names)
    _write_contact_sheets(out, sheet_images, strip, model)
    elapsed = time.perf_counter() - t0
    _write_manifest(out, cfg, names, portrait_name, speech, sheet_frame, strip_start, elapsed)
    return SynthResult(out, n, elapsed, names)


def _frame_results(workers: int, n: int):
    if workers <= 1:
        yield from map(_render_frame, range(n))
        return
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_render_frame, range(n), chunksize=2)


def _write_side_files(out, cfg, model, speech, visemes, motion, landmarks, mouth_area, names) -> None:
    np.savez_compressed(
        out / "landmarks.npz",
        points_px=landmarks,
        visemes=visemes.astype(np.float32),
        viseme_names=np.array(VISEME_PARAMS),
        head_rotation_deg=motion.rotation_deg,
        head_translation_px=motion.translation_px,
        blink=motion.blink,
        mouth_area_px=mouth_area,
        backdrop_albedo=model.backdrop_albedo,
    )
    phonemes = [{"start_s": e.start_s, "end_s": e.end_s, "phoneme": e.phoneme} for e in speech.phonemes]
    (out / "phonemes.json").write_text(json.dumps(phonemes) + "\n")


def _write_contact_sheets(out: Path, sheet_images: list[np.ndarray], strip: list[np.ndarray], model: HeadModel) -> None:
    import imageio.v3 as iio

    if sheet_images:
        cols = int(np.ceil(np.sqrt(len(sheet_images))))
        rows = int(np.ceil(len(sheet_images) / cols))
        h, w = sheet_images[0].shape[:2]
        sheet = np.zeros((rows * h, cols * w, 3), np.uint8)
        for k, img in enumerate(sheet_images):
            r, c = divmod(k, cols)
            sheet[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
        iio.imwrite(out / "contact_sheet.png", sheet)
    if strip:
        # Crop around the mouth so consecutive frames show the articulation.
        lm = model.neutral_landmarks_px
        cx, cy = lm[:, 0].mean(), lm[:, 1].mean()
        half = int(0.5 * (lm[:, 0].max() - lm[:, 0].min()) * 1.2)
        size = strip[0].shape[0]
        r0 = int(np.clip(cy - half, 0, size - 2 * half))
        c0 = int(np.clip(cx - half, 0, size - 2 * half))
        iio.imwrite(out / "speech_strip.png", np.hstack([f[r0 : r0 + 2 * half, c0 : c0 + 2 * half] for f in strip]))


def _write_manifest(out, cfg, names, portrait_name, speech, sheet_frame, strip_start, elapsed) -> None:
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "portrait": portrait_name,
        "seed": cfg.seed,
        "fps": cfg.fps,
        "size_px": cfg.size_px,
        "n_frames": cfg.n_frames,
        "seconds": cfg.n_frames / cfg.fps,
        "audio": {"in": "every mp4 (AAC mono)", "sample_rate_hz": AUDIO_RATE_HZ},
        "image_formation": "frame = composite(A * (S_shad + C_spec * S_spec), matte, backdrop_albedo * S_shad((0,0,1))); "
        "linear RGB, sRGB-encoded in the videos",
        "videos": {"clip": "video.mp4", **{nm: f"relit/{nm}.mp4" for nm in names[1:]}},
        "lightings": {nm: f"lightings/{nm}.json" for nm in names},
        "ground_truth": {
            "files": {m: f"gt/{m}.mkv" for m in ENCODINGS},
            "container": "lossless H.264, yuv444p10le, one map channel per plane, code v in [0, 1023]; "
            "read with models.synth.gt_store.load_ground_truth",
            "encodings (v = code / 1023)": ENCODINGS,
            "shading_range": SHADING_RANGE,
            "layers": "where matte > 0 the maps describe the person (face mesh, body proxy, mouth interior); "
            "where matte == 0 the backdrop (albedo landmarks.npz:backdrop_albedo, normal (0,0,1), C_spec 0)",
            "lighting_of_shading_and_specular": "clip",
        },
        "landmarks": "landmarks.npz: points_px (T, 468, 3) projected face-mesh vertices (x, y image px, y down; "
        "z toward viewer, px), visemes (T, 4), head_rotation_deg (T, 3) yaw/pitch/roll, head_translation_px (T, 2), "
        "blink (T,), mouth_area_px (T,)",
        "phonemes": "phonemes.json: [{start_s, end_s, phoneme}] (espeak-ng mnemonics, '_' = pause)",
        "speech_segments": [asdict(s) for s in speech.segments],
        "contact_sheet": {"file": "contact_sheet.png", "frame": sheet_frame, "order": names},
        "speech_strip": {"file": "speech_strip.png", "first_frame": strip_start, "frames": 12, "lighting": "clip"},
        "render_seconds": round(elapsed, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
