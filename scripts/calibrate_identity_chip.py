"""Measure where dlib's face-chip aligner puts five face-mesh vertices in its 150 x 150 chip (`CHIP_TEMPLATE` in
models/face/identity.py), so the identity embedding can be fed from our 468-point mesh without dlib at run time.

    python scripts/calibrate_identity_chip.py [VIDEO_OR_IMAGE ...] [--frames 20]

Needs `dlib-bin` (dev only). On each image: dlib's HOG face detector + its 5-point shape predictor (from
face_recognition_models, CC0) -> dlib's chip (get_face_chip_details, padding 0.25, as compute_face_descriptor
uses); our detector + mesh -> the 468 vertices; the vertices mapped into dlib's chip. Prints the median chip
position of each template vertex over all images, and how far a similarity fit of our template lands from dlib's
chip (px), which is what the constants are good to.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.face.identity import CHIP_PX, TEMPLATE_VERTICES, fit_similarity, model_path  # noqa: E402
from models.synth.head import fit_landmarks  # noqa: E402

PADDING = 0.25  # dlib's compute_face_descriptor default


def _images(paths: list[str], frames: int):
    from skimage import data
    yield "skimage.astronaut", data.astronaut()
    for p in paths:
        if p.lower().endswith((".png", ".jpg", ".jpeg")):
            from PIL import Image
            yield p, np.asarray(Image.open(p).convert("RGB"))
            continue
        with av.open(p) as c:
            total = c.streams.video[0].frames or 300
            step = max(1, total // frames)
            for i, f in enumerate(c.decode(video=0)):
                if i % step == 0:
                    yield f"{p}#{i}", f.to_ndarray(format="rgb24")


def dlib_chip_matrix(chip) -> np.ndarray:
    """2x3 affine: image point (dlib: pixel centres at integers) -> chip point, from dlib's chip_details."""
    r = chip.rect
    cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
    scale = chip.cols / (r.right() - r.left())
    c, s = math.cos(chip.angle), math.sin(chip.angle)
    # The chip's x axis runs along (cos angle, sin angle) in the image (y down); checked against dlib's own chip
    # pixels in main().
    rot = np.array([[c, s], [-s, c]]) * scale
    return np.c_[rot, np.array([(chip.cols - 1) / 2, (chip.rows - 1) / 2]) - rot @ np.array([cx, cy])]


def measure(images) -> tuple[list[np.ndarray], list[float]]:
    """For each (name, uint8 RGB image) with a face: the template vertices in dlib's chip (px, centres at +0.5), and
    how far our resampling through the derived matrix is from dlib's own chip (mean abs grey levels)."""
    import dlib

    hog = dlib.get_frontal_face_detector()
    shape5 = dlib.shape_predictor(str(model_path().parent / "shape_predictor_5_face_landmarks.dat"))
    positions, mismatches = [], []
    for name, img in images:
        dets = hog(img, 1)
        try:
            # Our detector + the two-pass mesh, exactly one face (as the synthetic heads are built).
            pts = fit_landmarks(img, name).points_px[:, :2].astype(np.float64)
        except ValueError as e:
            print(f"{name}: skipped ({e})")
            continue
        if not len(dets):
            print(f"{name}: skipped (dlib found no face)")
            continue
        # dlib's HOG detector sometimes adds a small false face (the astronaut's badge): take the largest.
        det = max(dets, key=lambda d: d.width() * d.height())
        chip = dlib.get_face_chip_details(shape5(img, det), CHIP_PX, PADDING)
        m = dlib_chip_matrix(chip)
        # Ours: pixel centres at +0.5; dlib's at integers.
        positions.append((pts[TEMPLATE_VERTICES] - 0.5) @ m[:, :2].T + m[:, 2] + 0.5)
        # Check the matrix against dlib's own chip: our resampling of the image through it must match.
        ref = np.asarray(dlib.extract_image_chip(img, chip), np.float64)
        inv = np.linalg.inv(np.r_[m, [[0, 0, 1]]])[:2]
        rr, cc = np.mgrid[0:CHIP_PX, 0:CHIP_PX]
        src = np.stack([cc.ravel(), rr.ravel()], 1) @ inv[:, :2].T + inv[:, 2]
        xi = np.clip(np.round(src[:, 0]).astype(int), 0, img.shape[1] - 1)
        yi = np.clip(np.round(src[:, 1]).astype(int), 0, img.shape[0] - 1)
        mismatches.append(float(np.abs(img[yi, xi].astype(np.float64) - ref.reshape(-1, 3)).mean()))
        print(f"{name}: chip angle {math.degrees(chip.angle):+.1f} deg, our resampling vs dlib's chip "
              f"{mismatches[-1]:.1f} grey levels mean abs")
    return positions, mismatches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="*")
    ap.add_argument("--frames", type=int, default=20)
    args = ap.parse_args(argv)
    positions, _ = measure(_images(args.inputs, args.frames))
    if not positions:
        print("no usable image")
        return 1
    template = np.median(np.array(positions), axis=0)
    residuals = []
    for p in positions:
        a = fit_similarity(p, template)
        residuals.append(np.linalg.norm(p @ a[:, :2].T + a[:, 2] - template, axis=1).mean())
    print(f"{len(positions)} images; template (chip px, pixel centres at +0.5):")
    print("CHIP_TEMPLATE = np.array([" + ", ".join(f"({x:.2f}, {y:.2f})" for x, y in template) + "])")
    print(f"each image's points after a similarity fit to the template: mean {np.mean(residuals):.2f} px off "
          f"(max {np.max(residuals):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
