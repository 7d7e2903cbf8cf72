"""The one seam between the live pipeline and whatever draws the face.

The pipeline hands a renderer the log-mel context of one video frame and the lighting to use; it gets back the
avatar crop, lit, in linear RGB with a matte. Everything in between (audio-to-expression, geometry, nets on ONNX
Runtime / CUDA / TensorRT) is the renderer's business, so a bundle-backed renderer plugs in here without the
pipeline knowing which backend it runs on. The canvas, background and sRGB encoding are the compositor's job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from models.lighting.lighting import Lighting


@dataclass(frozen=True)
class RenderedFrame:
    """The avatar crop of one frame."""

    rgb_linear: np.ndarray  # float32 (h, w, 3) linear RGB, premultiplied by nothing (matte applied at composite)
    matte: np.ndarray  # float32 (h, w) in [0, 1]: 1 where the avatar covers the background


@runtime_checkable
class AvatarRenderer(Protocol):
    frame_size: tuple[int, int]  # (width, height) px of the crop `render` returns
    fps: float  # the video rate the renderer's motion was trained at
    lookahead_ms: float  # how much audio after a frame's pts the renderer needs before it can draw that frame
    mel_past_frames: int  # mel frames before the frame's own in the window
    mel_lookahead_frames: int  # mel frames after it

    def render(self, mel_window: np.ndarray, lighting: Lighting, frame_index: int) -> RenderedFrame:
        """mel_window: float32 (mel_past_frames + 1 + mel_lookahead_frames, n_mels) log-mel, oldest first.

        frame_index counts frames at the renderer's own `fps` from the start of the stream (the pipeline converts
        from the stream's rate); renderers use it for idle motion (blinks, sway).
        Called from one worker thread at a time, never concurrently.
        """
        ...


_REQUIRED = ("frame_size", "fps", "lookahead_ms", "mel_past_frames", "mel_lookahead_frames", "render")


def check_renderer(renderer: object) -> None:
    """ValueError naming what is wrong when `renderer` does not meet the AvatarRenderer protocol."""
    name = type(renderer).__name__
    missing = [a for a in _REQUIRED if not hasattr(renderer, a)]
    if missing:
        raise ValueError(f"avatar renderer {name} lacks {', '.join(missing)}")
    w, h = renderer.frame_size
    if not (int(w) > 0 and int(h) > 0):
        raise ValueError(f"avatar renderer {name}: frame_size must be positive (width, height), got {renderer.frame_size}")
    if not renderer.fps > 0:
        raise ValueError(f"avatar renderer {name}: fps must be positive, got {renderer.fps}")
    if renderer.lookahead_ms < 0 or renderer.mel_past_frames < 0 or renderer.mel_lookahead_frames < 0:
        raise ValueError(f"avatar renderer {name}: lookahead and mel frame counts must be >= 0")


def check_rendered(frame: RenderedFrame, frame_size: tuple[int, int]) -> None:
    """Catch a renderer returning the wrong shape or dtype at the boundary, not deep inside compositing."""
    w, h = frame_size
    if frame.rgb_linear.shape != (h, w, 3) or frame.rgb_linear.dtype != np.float32:
        raise ValueError(f"renderer returned rgb_linear {frame.rgb_linear.dtype} {frame.rgb_linear.shape}; "
                         f"expected float32 ({h}, {w}, 3)")
    if frame.matte.shape != (h, w) or frame.matte.dtype != np.float32:
        raise ValueError(f"renderer returned matte {frame.matte.dtype} {frame.matte.shape}; expected float32 ({h}, {w})")


def load_renderer(spec: str) -> AvatarRenderer:
    """A renderer from `module.path:factory` (the factory is called with no arguments).

    This is the plug-in point: a bundle-backed renderer (nets on ONNX Runtime / CUDA / TensorRT) is named the same
    way, so the pipeline never imports a backend itself.
    """
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"--avatar must be 'module.path:factory' (a callable returning an AvatarRenderer), got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"--avatar {spec!r}: cannot import {module_name!r} ({e})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"--avatar {spec!r}: {module_name} has no callable {attr!r}")
    renderer = factory()
    check_renderer(renderer)
    return renderer
