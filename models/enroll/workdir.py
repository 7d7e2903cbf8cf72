"""Enrollment work folder: every stage's output lands atomically next to a JSON record of what produced it.

A stage is "done" when its record exists, names the same inputs (content hashes) and parameters as the current
call, and every output it lists is still there; a rerun then skips it. Records are written last, after the outputs
have been renamed into place, so a crash mid-stage leaves no record and the stage simply runs again.

Training stages keep their own checkpoints (`checkpoint_path`, `save_checkpoint`, `load_checkpoint`); those are
written to a temporary file and renamed too, so a kill during torch.save never corrupts the last good one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_ROOT = Path("~/.cache/relitcam/enroll")
# Overrides DEFAULT_ROOT for every work folder (CI, shared disks).
ROOT_ENV = "RELITCAM_ENROLL_DIR"
RECORDS_DIR = "stages"
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class StageRecord:
    """What one finished stage was given and what it wrote (paths relative to the work folder)."""

    stage: str
    inputs: dict[str, str]  # input name -> content hash (or the key of an upstream stage record)
    params: dict[str, Any]
    outputs: list[str]
    elapsed_s: float
    finished_utc: str
    key: str  # hash of stage + inputs + params; what "matches" compares
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific facts (counts, speeds) for reports


def file_sha256(path: str | os.PathLike, block_bytes: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(block_bytes), b""):
            h.update(block)
    return h.hexdigest()


def stage_key(stage: str, inputs: dict[str, str], params: dict[str, Any]) -> str:
    # sort_keys makes the key independent of dict order; params must be plain JSON (numbers, strings, lists).
    text = json.dumps({"stage": stage, "inputs": inputs, "params": params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _temp_sibling(path: Path) -> Path:
    # Hidden, unique, same folder: the final rename is atomic and never collides with a concurrent writer.
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write a file or folder at; it is renamed to `path` only if the block succeeds.

    An existing `path` is replaced (folders: the old one is removed after the new one is in place under a
    temporary name, so readers see either the old or the new one, never a half-written mix).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_sibling(path)
    try:
        yield tmp
        if not tmp.exists():
            raise ValueError(f"atomic_path block wrote nothing at {tmp} for {path}")
        if tmp.is_dir() and path.exists():
            old = _temp_sibling(path)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:  # a file object stops numpy from appending a second ".npz"
            np.savez(f, **arrays)


class WorkDir:
    """One avatar's enrollment folder. Create with `WorkDir(path)` or `WorkDir.for_name(name)`."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise ValueError(f"enrollment work folder '{self.root}' exists and is not a folder")
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_name(cls, name: str, base: str | os.PathLike | None = None) -> WorkDir:
        """`<base>/<name>`; base defaults to $RELITCAM_ENROLL_DIR, else ~/.cache/relitcam/enroll."""
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ValueError(f"enrollment name must be a plain folder name, got {name!r}")
        base = Path(base or os.environ.get(ROOT_ENV) or DEFAULT_ROOT).expanduser()
        return cls(base / name)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    # ------------------------------------------------------------------------------------------------ records

    def _record_file(self, stage: str) -> Path:
        if not stage or not stage.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"stage name must be letters, digits, '-' or '_', got {stage!r}")
        return self.path(RECORDS_DIR, f"{stage}.json")

    def record(self, stage: str) -> StageRecord | None:
        """The stage's record, or None when it never finished (or its record is unreadable)."""
        f = self._record_file(stage)
        if not f.is_file():
            return None
        try:
            return StageRecord(**json.loads(f.read_text()))
        except (json.JSONDecodeError, TypeError):
            return None  # a foreign or damaged record only means the stage runs again

    def is_done(self, stage: str, inputs: dict[str, str], params: dict[str, Any]) -> bool:
        rec = self.record(stage)
        if rec is None or rec.key != stage_key(stage, inputs, params):
            return False
        return all(self.path(p).exists() for p in rec.outputs)

    def write_record(
        self,
        stage: str,
        inputs: dict[str, str],
        params: dict[str, Any],
        outputs: list[str],
        elapsed_s: float,
        extra: dict[str, Any] | None = None,
    ) -> StageRecord:
        missing = [p for p in outputs if not self.path(p).exists()]
        if missing:
            raise ValueError(f"stage {stage!r} lists outputs that do not exist in {self.root}: {missing}")
        rec = StageRecord(
            stage=stage,
            inputs=dict(inputs),
            params=dict(params),
            outputs=list(outputs),
            elapsed_s=float(elapsed_s),
            finished_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            key=stage_key(stage, inputs, params),
            extra=dict(extra or {}),
        )
        atomic_write_json(self._record_file(stage), asdict(rec))
        return rec

    def invalidate(self, stage: str) -> None:
        """Forget that a stage finished (its outputs stay until the rerun replaces them)."""
        self._record_file(stage).unlink(missing_ok=True)

    def run_stage(self, stage: str, inputs: dict[str, str], params: dict[str, Any], work) -> tuple[StageRecord, bool]:
        """Run `work()` unless the stage is done; returns (record, ran).

        `work()` writes its outputs (atomically) and returns (outputs: list of relative paths, extra: dict).
        """
        if self.is_done(stage, inputs, params):
            rec = self.record(stage)
            assert rec is not None
            return rec, False
        start = time.perf_counter()
        outputs, extra = work()
        return self.write_record(stage, inputs, params, outputs, time.perf_counter() - start, extra), True

    # -------------------------------------------------------------------------------------------- checkpoints

    def checkpoint_path(self, stage: str) -> Path:
        self._record_file(stage)  # same name rules as records
        return self.path(CHECKPOINTS_DIR, f"{stage}.pt")

    def save_checkpoint(self, stage: str, state: dict[str, Any]) -> Path:
        import torch

        path = self.checkpoint_path(stage)
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        return path

    def load_checkpoint(self, stage: str, map_location: str = "cpu") -> dict[str, Any] | None:
        """The last saved state, or None when the stage has no checkpoint yet."""
        import torch

        path = self.checkpoint_path(stage)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location=map_location, weights_only=False)
        except Exception as e:  # torch raises several types for truncated / foreign files
            raise ValueError(f"checkpoint '{path}' cannot be loaded ({e}); delete it to restart stage {stage!r}") from e
