"""On-disk engine cache: one serialized engine per (ONNX, GPU, TensorRT, precision, profile).

A TensorRT engine only runs on the GPU model (compute capability) and the TensorRT version it was built with;
deserializing it anywhere else fails or, worse, gives a slow engine. So every cached engine carries a JSON sidecar with
its full key, the file name is the key's digest, and a lookup compares the sidecar, not just the name. Engines for the
same net built under another GPU or TensorRT are reported (`stale_engines`), so the caller can say why it rebuilds.

Layout: ~/.cache/relitcam/engines/<net>-<digest16>.engine + .json (RELITCAM_CACHE or XDG_CACHE_HOME move it).
Writes go to a temporary file renamed into place, so a crash never leaves half an engine under a valid name.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from models.enroll.workdir import atomic_write_bytes

KEY_VERSION = 1  # bump when the meaning of a key field changes


def default_cache_dir() -> Path:
    if os.environ.get("RELITCAM_CACHE"):
        return Path(os.environ["RELITCAM_CACHE"]) / "engines"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "relitcam" / "engines"


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Two builds with equal keys are interchangeable."""

    net: str
    onnx_sha256: str
    gpu_name: str
    compute_capability: str  # "8.9"
    trt_module: str  # "tensorrt" or "tensorrt_rtx"
    trt_version: str
    precision: str  # what the engine really is (PrecisionPlan.precision), "fp16", ...
    profile: str  # trt_engines.profile.profile_key
    calibration_sha256: str = ""  # INT8: digest of the calibration data (another user's data -> another engine)
    key_version: int = KEY_VERSION

    def digest(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def file_stem(self) -> str:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.net)
        return f"{safe}-{self.digest()[:16]}"

    def mismatch(self, other: "EngineKey") -> list[str]:
        """Names of fields that differ, with both values: the reason an engine cannot be reused."""
        return [f"{f.name} {getattr(other, f.name)!r} (wanted {getattr(self, f.name)!r})"
                for f in fields(self) if getattr(self, f.name) != getattr(other, f.name)]


# Fields naming what is built; the others (GPU, TensorRT, key version) name where it can run.
_BUILD_FIELDS = ("net", "onnx_sha256", "precision", "profile", "calibration_sha256")


def _key_from_json(data: dict) -> EngineKey | None:
    try:
        return EngineKey(**{f.name: data[f.name] for f in fields(EngineKey) if f.name in data})
    except TypeError:
        return None


class EngineCache:
    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def paths(self, key: EngineKey) -> tuple[Path, Path]:
        stem = key.file_stem()
        return self.root / f"{stem}.engine", self.root / f"{stem}.json"

    def load(self, key: EngineKey) -> bytes | None:
        """The cached engine for exactly `key`, or None (missing, damaged sidecar, or a key that differs)."""
        engine, meta = self.paths(key)
        if not (engine.is_file() and meta.is_file()):
            return None
        try:
            data = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if _key_from_json(data.get("key", {})) != key:
            return None
        blob = engine.read_bytes()
        if hashlib.sha256(blob).hexdigest() != data.get("engine_sha256"):
            return None  # truncated or overwritten: rebuild rather than hand TensorRT garbage
        return blob

    def store(self, key: EngineKey, engine_bytes: bytes, extra: dict | None = None) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        engine, meta = self.paths(key)
        record = {"key": asdict(key), "engine_sha256": hashlib.sha256(engine_bytes).hexdigest(), **(extra or {})}
        atomic_write_bytes(engine, engine_bytes)
        atomic_write_bytes(meta, json.dumps(record, indent=1).encode())
        return engine

    def stale_engines(self, key: EngineKey) -> list[tuple[Path, list[str]]]:
        """Cached engines of this very build (net, ONNX, precision, profile, data) made for another GPU or TensorRT,
        with what differs: the reason a rebuild is needed."""
        out = []
        if not self.root.is_dir():
            return out
        for meta in sorted(self.root.glob("*.json")):
            try:
                other = _key_from_json(json.loads(meta.read_text()).get("key", {}))
            except (OSError, json.JSONDecodeError):
                continue
            if other is None or other == key:
                continue
            same_build = all(getattr(other, f) == getattr(key, f) for f in _BUILD_FIELDS)
            if not same_build:
                continue
            out.append((meta.with_suffix(".engine"), key.mismatch(other)))
        return out
