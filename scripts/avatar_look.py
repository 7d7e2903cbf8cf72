#!/usr/bin/env python3
"""How bright and what colour an avatar bundle comes out under its own learned lighting and under presets, as JSON,
with a picture (rows: idle frames; columns: lightings), as the live renderer draws it.

    .venv/bin/python scripts/avatar_look.py                         # the default avatar
    .venv/bin/python scripts/avatar_look.py --bundle PATH --out out/look/LOOK.json

The learned lighting renders the idle frames as they were recorded, so its column is the person as the video shows
them; a preset is exposed so a face it lights frontally has diffuse shading ~1. For each lighting: the mean linear
RGB over the person (matte > 0.5), its ratio to the learned lighting's (brightness), and the r/g and b/g ratios
(colour). Writes --out and the picture next to it (.png).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.colour import linear_to_srgb  # noqa: E402
from models.lighting.sources import preset  # noqa: E402
from stream.bundle_renderer import DEFAULT_BUNDLE, BundleRenderer  # noqa: E402

PRESETS = ("soft_front", "studio_key", "left_side", "warm_sunset")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE)
    ap.add_argument("--frames", type=int, default=2, help="idle frames, spread over the loop")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "avatar_look" / "LOOK.json")
    args = ap.parse_args(argv)

    renderer = BundleRenderer(args.bundle)
    lightings = [renderer.bundle.learned_lighting()] + [preset(name) for name in PRESETS]
    frames = np.linspace(0, renderer.n_idle_frames - 1, args.frames).round().astype(int)
    means = {lit.name: [] for lit in lightings}
    rows = []
    for i in frames:
        row = []
        for lit in lightings:
            layers = renderer.decode_layers(int(i))
            rgb = renderer.relight(layers, lit)
            means[lit.name].append(rgb[layers.matte > 0.5].mean(axis=0))
            row.append(np.clip(np.rint(linear_to_srgb(np.clip(rgb, 0.0, 1.0)) * 255), 0, 255).astype(np.uint8))
        rows.append(np.concatenate(row, axis=1))
    base = float(np.mean(means["learned"]))
    report = {"bundle": str(args.bundle), "idle_frames": frames.tolist(), "shading_net": renderer.use_shading_net,
              "lightings": {}}
    for name, values in means.items():
        mu = np.mean(values, axis=0)
        report["lightings"][name] = {"mean_rgb_linear": [round(float(v), 4) for v in mu],
                                     "brightness_vs_learned": round(float(mu.mean()) / base, 3),
                                     "r_over_g": round(float(mu[0] / mu[1]), 3), "b_over_g": round(float(mu[2] / mu[1]), 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    from PIL import Image

    Image.fromarray(np.concatenate(rows, axis=0)).save(args.out.with_suffix(".png"))
    print(json.dumps(report["lightings"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
