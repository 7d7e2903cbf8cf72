"""Which avatar is on, and switching to another live: the shipped default and every avatar `relitcam enroll` made.

A switch loads the bundle off the event loop (a second or two of ONNX sessions and idle-loop arrays) while the
stream goes on with the old avatar, then hands the renderer to the pipeline, which takes it at the next frame.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from models.enroll.enroll import enrolled_avatars

DEFAULT_NAME = "default"  # the shipped avatar's name in the list (an enrolled avatar of that name replaces it)


def available_avatars(avatars_dir: Path | None = None) -> dict[str, Path]:
    """Every avatar the page can switch to, by name: the shipped default (where installed) and those enrolled."""
    from stream.bundle_renderer import DEFAULT_BUNDLE

    shipped = {DEFAULT_NAME: DEFAULT_BUNDLE} if (DEFAULT_BUNDLE / "manifest.json").is_file() else {}
    return {**shipped, **enrolled_avatars(avatars_dir)}


class AvatarChoice:
    def __init__(self, pipeline, current: str | None, backend: str = "onnxruntime",
                 avatars_dir: Path | None = None, load=None) -> None:
        self.pipeline = pipeline
        self.current = current  # None: the running renderer is not one of the list (a folder or a test double)
        self.backend = backend
        self.avatars_dir = avatars_dir
        self.load = load or self._load_bundle  # path -> renderer (tests pass their doubles' factory)
        self._lock = asyncio.Lock()  # one load at a time: a second request waits rather than racing the first

    def available(self) -> dict[str, Path]:
        return available_avatars(self.avatars_dir)

    def describe(self) -> dict:
        return {"avatar": self.current, "avatars": list(self.available())}

    def _load_bundle(self, path: Path):
        from stream.bundle_renderer import BundleRenderer

        return BundleRenderer(path, self.backend)

    async def switch(self, name: str) -> None:
        """Load avatar `name` and have the pipeline take it; ValueError (said to the user) for an unknown name, a
        bundle that does not load, or one whose audio window differs from the running avatar's."""
        async with self._lock:
            if name == self.current:
                return
            paths = self.available()
            if name not in paths:
                raise ValueError(f"no avatar named {name!r}; avatars: {', '.join(paths) or 'none'}")
            try:
                renderer = await asyncio.to_thread(self.load, paths[name])
            except Exception as e:  # a damaged or other-version bundle: the stream goes on with the current one
                raise ValueError(f"cannot load avatar {name!r}: {e}") from None
            self.pipeline.switch_renderer(renderer)
            self.current = name
