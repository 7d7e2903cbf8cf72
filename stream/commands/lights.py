"""`relitcam lights`: list the presets and turn an HDR map, a background photo or a reference portrait into L.json."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

from models.colour import srgb_to_linear
from models.lighting.envmap import PHOTO_LIGHT_SATURATION
from models.lighting.estimate import estimate_lighting
from models.lighting.files import (environment_map_lighting, photo_file_lighting, read_image, read_normal_map,
                                   save_lighting)
from models.lighting.sh import Y00_CONST, axis_angle_matrix
from models.lighting.sources import preset_description, preset_names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relitcam lights", description=__doc__)
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="print the preset names and what each looks like")

    def add_common(p: argparse.ArgumentParser, lights: bool = True) -> None:
        p.add_argument("-o", "--output", required=True, help="L.json to write")
        if lights:
            p.add_argument("--lights", type=int, default=4, help="specular lights sampled from the map (default 4)")
        p.add_argument("--yaw", type=float, default=0.0, help="turn the lighting about +y (up) by DEG degrees")
        p.add_argument("--gain", type=float, default=1.0, help="multiply all radiance (exposure), default 1")

    hdr = sub.add_parser("from-hdr", help="equirectangular .hdr/.exr environment map -> L.json, exposed for the face "
                         "as the live h key and upload expose it")
    hdr.add_argument("file")
    hdr.add_argument("--as-recorded", action="store_true", help="keep the map's own level instead of exposing for the face")
    add_common(hdr)
    img = sub.add_parser("from-image", help="ordinary background photo (sRGB) -> L.json, the light `relitcam run "
                         "--light background` gives over that picture")
    img.add_argument("file")
    img.add_argument("--saturation", type=float, default=PHOTO_LIGHT_SATURATION,
                     help=f"colour saturation kept from the picture (default {PHOTO_LIGHT_SATURATION:g}; 1 = all)")
    img.add_argument("--as-recorded", action="store_true",
                     help="keep the picture's own level (a face as bright as its surfaces) instead of exposing for the face")
    add_common(img)
    por = sub.add_parser("from-portrait", help="portrait photo + its normal map -> least-squares SH L.json")
    por.add_argument("file")
    por.add_argument("--normal", required=True, help="normal map PNG (rgb = n*0.5+0.5, camera space)")
    por.add_argument("--mask", help="face mask PNG (white = face); default: the normal map's valid pixels")
    por.add_argument("--albedo", help="albedo PNG (sRGB); default: constant --grey")
    por.add_argument("--grey", type=float, default=0.5, help="constant linear albedo guess (default 0.5)")
    add_common(por, lights=False)
    return parser


def _finish(lighting, args) -> int:
    if not math.isfinite(args.yaw):
        raise ValueError(f"--yaw must be finite, got {args.yaw}")
    if args.yaw:
        lighting = lighting.rotated(axis_angle_matrix((0.0, 1.0, 0.0), math.radians(args.yaw)))
    lighting = lighting.scaled(args.gain)
    save_lighting(args.output, lighting)
    print(f"wrote {args.output}: {lighting.num_lights} specular lights, "
          f"ambient level {float(np.mean(lighting.sh_coeffs[0])) * Y00_CONST:.3f}")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.action == "list":
        width = max(len(n) for n in preset_names())
        for name in preset_names():
            print(f"{name:<{width}}  {preset_description(name)}")
        return 0
    if getattr(args, "lights", 0) < 0:
        raise ValueError(f"--lights must be >= 0, got {args.lights}")
    name = Path(args.file).stem
    if args.action == "from-hdr":
        return _finish(environment_map_lighting(args.file, name, args.lights, not args.as_recorded), args)
    if args.action == "from-image":
        return _finish(photo_file_lighting(args.file, args.lights, args.saturation, not args.as_recorded), args)
    # from-portrait
    photo, _ = read_image(args.file, "portrait")
    normals, mask = read_normal_map(args.normal)
    if normals.shape != photo.shape:
        raise ValueError(f"normal map is {normals.shape[1]}x{normals.shape[0]} but the portrait is "
                         f"{photo.shape[1]}x{photo.shape[0]}")
    if args.mask:
        mask_rgb, _ = read_image(args.mask, "mask")
        mask = mask_rgb[..., 0]
    if args.albedo:
        albedo_encoded, _ = read_image(args.albedo, "albedo")
        albedo = srgb_to_linear(albedo_encoded)
    else:
        if not (math.isfinite(args.grey) and args.grey > 0):
            raise ValueError(f"--grey must be a number > 0, got {args.grey}")
        albedo = args.grey
    lighting = estimate_lighting(srgb_to_linear(photo), normals, mask, albedo, name=name)
    return _finish(lighting, args)
