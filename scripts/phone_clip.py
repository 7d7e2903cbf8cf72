#!/usr/bin/env python3
"""Does a phone recording enroll like the same recording straight? Stores a clip as a phone does and prepares both.

    .venv/bin/python scripts/phone_clip.py ../shared/data/talking_obama_24s.mp4 --out out/phone

The phone copy (`phone.mov`): pictures stored sideways with a 90 deg display matrix, 10-bit HEVC in BT.2020 with the
HLG (or --transfer pq) curve, as an iPhone records "HDR video" by default, and the audio as AAC. Both files go through
enrollment's prepare stage (track, align, crops); PHONE.json gets their times and how far the phone copy's crops,
landmarks and crop transforms are from the original's, and crops.png shows four crops of each, original on top.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.colour import srgb_to_linear  # noqa: E402
from models.hdr_video import TRC_HLG, TRC_PQ, relative_linear_to_signal  # noqa: E402
from models.media import AUDIO_RATE_HZ, encode_audio, iter_video_frames, probe_video, read_audio  # noqa: E402

X265_TRANSFER = {TRC_HLG: "arib-std-b67", TRC_PQ: "smpte2084"}


def write_phone_copy(source: Path, out: Path, transfer: int) -> None:
    import av

    info = probe_video(source)
    audio = read_audio(source)
    with av.open(str(out), "w") as container:
        video = container.add_stream("libx265", rate=round(info.fps))
        video.width, video.height, video.pix_fmt = info.height_px, info.width_px, "yuv420p10le"  # stored sideways
        video.options = {"x265-params": f"colorprim=bt2020:transfer={X265_TRANSFER[transfer]}:colormatrix=bt2020nc:"
                                        "crf=18:preset=fast:log-level=error"}
        video.set_display_rotation(90)
        sound = container.add_stream("aac", rate=AUDIO_RATE_HZ)
        sound.layout = "mono"
        for k, frame in enumerate(iter_video_frames(source)):
            signal = relative_linear_to_signal(srgb_to_linear(frame.image / 255.0), transfer)
            rgb16 = np.ascontiguousarray(np.rot90(np.round(signal * 65535.0).astype(np.uint16), -1))
            picture = av.VideoFrame.from_ndarray(rgb16, format="rgb48le").reformat(format="yuv420p10le",
                                                                                   dst_colorspace="bt2020")
            picture.pts = k
            container.mux(video.encode(picture))
        container.mux(video.encode(None))
        encode_audio(container, sound, np.zeros(0, np.float32) if audio is None else audio, AUDIO_RATE_HZ)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("video", type=Path)
    p.add_argument("--out", type=Path, default=Path("out/phone"))
    p.add_argument("--transfer", choices=("hlg", "pq"), default="hlg")
    p.add_argument("--size", type=int, default=256)
    args = p.parse_args()

    import imageio.v3 as iio

    from models.enroll.prepare import prepare_video

    args.out.mkdir(parents=True, exist_ok=True)
    phone = args.out / "phone.mov"
    t0 = time.perf_counter()
    write_phone_copy(args.video, phone, TRC_HLG if args.transfer == "hlg" else TRC_PQ)
    write_s = round(time.perf_counter() - t0, 1)
    report = {"machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()}, "source": str(args.video),
              "phone_copy": {"path": str(phone), "write_s": write_s, **probe_video(phone).__dict__}}
    prepared = {}
    for name, path in (("original", args.video), ("phone", phone)):
        t0 = time.perf_counter()
        pv = prepare_video(path, args.out / f"work_{name}", size_px=args.size, progress=False)
        prepared[name] = pv
        report[name] = {"prepare_s": round(time.perf_counter() - t0, 1), "frames": pv.frame_count,
                        "track_fps": round(pv.report.track_fps, 1), "crops_fps": round(pv.report.crops_fps, 1)}
    a, b = prepared["original"], prepared["phone"]
    n = min(a.frame_count, b.frame_count)
    every = np.arange(0, n, 10)
    crops_a, crops_b = a.crops(every).astype(np.float64), b.crops(every).astype(np.float64)
    report["phone_vs_original"] = {
        "crops_psnr_db": round(float(10 * np.log10(255.0**2 / np.mean((crops_a - crops_b) ** 2))), 2),
        "crops_mean_abs_codes": round(float(np.abs(crops_a - crops_b).mean()), 2),
        "landmarks_mean_px": round(float(np.abs(a.landmarks_px[:n, :, :2] - b.landmarks_px[:n, :, :2]).mean()), 3),
        "image_to_crop_linear_max": round(
            float(np.abs(a.image_to_crop[:n, :, :2] - b.image_to_crop[:n, :, :2]).max()), 4),
    }
    rows = [np.concatenate(list(c[:4].astype(np.uint8)), axis=1) for c in (crops_a, crops_b)]
    iio.imwrite(args.out / "crops.png", np.concatenate(rows, axis=0))
    (args.out / "PHONE.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
