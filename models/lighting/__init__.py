"""relitcam lighting: order-2 spherical-harmonic lightings and where they come from.

sh.py basis, irradiance and exact rotation; lighting.py the `Lighting` value and its JSON; sources.py directional
lights and named presets; envmap.py equirectangular maps and background photos; estimate.py SH from a portrait;
interpolate.py smooth changes; probes.py analytic sphere/face normal maps; files.py all file I/O. Conventions and
formulas: docs/lighting.md.
"""
