"""Synthetic talking-head clips with exact ground truth (`relitcam synth`).

A portrait becomes a textured 3D head (face mesh + smooth proxy for hair/neck/shoulders + mouth interior + backdrop),
animated by espeak-ng speech visemes, head motion and blinks, rasterised once per frame and shaded under many
lightings. Layout of the output directory: docs/synth.md.
"""
