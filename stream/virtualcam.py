"""Virtual camera sink: canvas frames to pyvirtualcam (v4l2loopback on Linux, OBS on macOS/Windows).

pyvirtualcam picks a backend from its registry (`pyvirtualcam.register_backend`); naming one selects it, which is
how tests plug in a recording backend and how a user forces OBS where both exist.
"""

from __future__ import annotations

import platform

from stream.sink import SinkUnavailable
from stream.types import Frame

_HOW_TO = {
    "Linux": "load v4l2loopback: sudo apt install v4l2loopback-dkms && "
    "sudo modprobe v4l2loopback devices=1 exclusive_caps=1 card_label=relitcam",
    "Darwin": "install OBS Studio (28+) and start its virtual camera once",
    "Windows": "install OBS Studio (26+) or Unity Capture",
}


class VirtualCameraSink:
    name = "virtualcam"
    blocking = True  # device writes and RGB->YUV conversion happen inside send

    def __init__(self, size_px: tuple[int, int], fps: float, device: str | None = None, backend: str | None = None):
        import pyvirtualcam

        if backend is not None and backend not in pyvirtualcam.camera.BACKENDS:
            known = ", ".join(pyvirtualcam.camera.BACKENDS) or "none"
            raise ValueError(f"unknown virtual camera backend {backend!r}; registered backends: {known}")
        self.size_px = tuple(size_px)
        width, height = self.size_px
        try:
            self._camera = pyvirtualcam.Camera(
                width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB, device=device, backend=backend
            )
        except RuntimeError as e:
            hint = _HOW_TO.get(platform.system(), "install a virtual camera driver pyvirtualcam supports")
            detail = str(e).strip().replace("\n", "; ") or "no backend available"
            raise SinkUnavailable(f"no virtual camera ({detail}); to get one, {hint}") from None
        self.device = self._camera.device
        self.backend = self._camera.backend
        self.frames_sent = 0

    def send(self, frame: Frame) -> None:
        if frame.size_px != self.size_px:
            raise ValueError(f"frame is {frame.size_px[0]}x{frame.size_px[1]} px; camera was opened at "
                             f"{self.size_px[0]}x{self.size_px[1]}")
        self._camera.send(frame.rgb)
        self.frames_sent += 1

    def close(self) -> None:
        self._camera.close()
