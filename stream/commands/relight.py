"""`relitcam relight`: render an albedo + normal map under a preset or L.json, or a contact sheet of every preset on
a sphere and an analytic face.

Albedo PNGs are read as sRGB and converted to linear; normal and specular maps are data (read as stored). All
shading and compositing is in linear light; the output PNG is sRGB.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from models.colour import linear_to_srgb, srgb_to_linear
from models.lighting.files import read_image, read_normal_map, resolve_lighting, write_png
from models.lighting.probes import Probe, face_probe, sphere_probe
from models.lighting.sources import preset, preset_names
from models.render import DEFAULT_SHININESS, composite, render

SHEET_BACKGROUND_LINEAR = (0.03, 0.03, 0.035)
SHEET_LABEL_PX = 18


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="relitcam relight", description=__doc__)
    p.add_argument("--albedo", help="albedo PNG (sRGB); its alpha, if any, is the foreground mask")
    p.add_argument("--normal", help="normal map PNG (rgb = n*0.5+0.5, camera space x right, y up, z to viewer)")
    p.add_argument("--light", help="preset name (see `relitcam lights list`), L.json, an .hdr/.exr environment map "
                                    "or a photo (the light of the place it shows)")
    p.add_argument("--spec", default="0.04", help="specular weight: a number or a grey PNG (default 0.04)")
    p.add_argument("--shininess", type=float, default=DEFAULT_SHININESS, help="Blinn-Phong exponent (default 32)")
    p.add_argument("--background", help="composite over this image (sRGB, same size) instead of writing alpha")
    p.add_argument("--contact-sheet", action="store_true", help="render every preset on a sphere and a face")
    p.add_argument("--size", type=int, default=160, help="contact sheet tile size in pixels (default 160)")
    p.add_argument("-o", "--output", required=True, help="output PNG")
    return p


def _spec_weight(spec: str, shape: tuple[int, int]):
    try:
        value = float(spec)
    except ValueError:
        grey, _ = read_image(spec, "specular map")
        if grey.shape[:2] != shape:
            raise ValueError(f"specular map is {grey.shape[1]}x{grey.shape[0]}, expected {shape[1]}x{shape[0]}")
        return grey[..., 0]
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"--spec must be a number >= 0 or a PNG, got {spec!r}")
    return value


def _relight_files(args) -> int:
    missing = [flag for flag, v in (("--albedo", args.albedo), ("--normal", args.normal), ("--light", args.light))
               if not v]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (or use --contact-sheet)")
    albedo_srgb, albedo_alpha = read_image(args.albedo, "albedo")
    normals, normal_mask = read_normal_map(args.normal)
    if normals.shape != albedo_srgb.shape:
        raise ValueError(f"normal map is {normals.shape[1]}x{normals.shape[0]} but the albedo is "
                         f"{albedo_srgb.shape[1]}x{albedo_srgb.shape[0]}")
    lighting = resolve_lighting(args.light)
    spec = _spec_weight(args.spec, albedo_srgb.shape[:2])
    alpha = normal_mask if albedo_alpha is None else normal_mask * albedo_alpha
    relit = render(srgb_to_linear(albedo_srgb), normals, spec, lighting, args.shininess)
    if args.background:
        bg_srgb, _ = read_image(args.background, "background")
        if bg_srgb.shape != albedo_srgb.shape:
            raise ValueError(f"background is {bg_srgb.shape[1]}x{bg_srgb.shape[0]} but the albedo is "
                             f"{albedo_srgb.shape[1]}x{albedo_srgb.shape[0]}")
        write_png(args.output, linear_to_srgb(composite(relit, alpha, srgb_to_linear(bg_srgb))))
    elif np.all(alpha >= 1.0):
        write_png(args.output, linear_to_srgb(relit))
    else:  # straight alpha: colour is the relit face, alpha says where it is
        write_png(args.output, np.concatenate([linear_to_srgb(relit), alpha[..., None]], axis=-1))
    print(f"wrote {args.output} ({albedo_srgb.shape[1]}x{albedo_srgb.shape[0]}, light {lighting.name or args.light})")
    return 0


def _tile(probe: Probe, lighting, shininess: float) -> np.ndarray:
    relit = render(probe.albedo_linear, probe.normals, probe.spec_weight, lighting, shininess)
    return composite(relit, probe.mask, SHEET_BACKGROUND_LINEAR)


def contact_sheet(size: int = 160, shininess: float = DEFAULT_SHININESS, columns: int = 5) -> np.ndarray:
    """sRGB float (H, W, 3) sheet: per preset a sphere and a face side by side, the preset name underneath."""
    if size < 16:
        raise ValueError(f"--size must be at least 16 pixels, got {size}")
    sphere, face = sphere_probe(size), face_probe(size)
    names = preset_names()
    rows = math.ceil(len(names) / columns)
    cell_h, cell_w = size + SHEET_LABEL_PX, 2 * size
    sheet = np.empty((rows * cell_h, columns * cell_w, 3), np.float32)
    sheet[:] = SHEET_BACKGROUND_LINEAR
    for i, name in enumerate(names):
        r, c = divmod(i, columns)
        y, x = r * cell_h, c * cell_w
        lighting = preset(name)
        sheet[y : y + size, x : x + size] = _tile(sphere, lighting, shininess)
        sheet[y : y + size, x + size : x + cell_w] = _tile(face, lighting, shininess)
    srgb = linear_to_srgb(sheet)
    return _draw_labels(srgb, names, columns, cell_h, cell_w, size)


def _draw_labels(srgb: np.ndarray, names, columns: int, cell_h: int, cell_w: int, size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.round(srgb * 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for i, name in enumerate(names):
        r, c = divmod(i, columns)
        draw.text((c * cell_w + 4, r * cell_h + size + 2), name, fill=(230, 230, 230))
    return np.asarray(image, dtype=np.float32) / 255.0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if not (math.isfinite(args.shininess) and args.shininess > 0):
        raise ValueError(f"--shininess must be a number > 0, got {args.shininess}")
    if args.contact_sheet:
        write_png(args.output, contact_sheet(args.size, args.shininess))
        print(f"wrote {args.output} ({len(preset_names())} presets)")
        return 0
    return _relight_files(args)
