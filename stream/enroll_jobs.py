"""`relitcam enroll` started from the web page: one child process at a time, its stages followed for the page.

The child is the real CLI (`python -m stream.cli enroll FILE --name NAME --resume`) at nice 10, so the live stream
keeps its frame rate while training takes what is left of the machine, with two cores fewer threads than the
machine has (at least one): torch's worker threads wait for each other at every operation, and one of them
preempted by the live stream holds up all the others (measured on 2 cores: decomposition not done after 28 min with
2 threads beside a live stream). Its lines are read as they come: "[k/N]
stage: title" says where it is, "relitcam enroll: error: ..." why it stopped. Stop sends SIGINT, as Ctrl+C would:
enrollment saves its checkpoints, and starting again with the same recording and name resumes.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

STAGE_LINE = re.compile(r"^\[(\d+)/(\d+)\] (\w+): (.*)$")
ERROR_PREFIX = "relitcam enroll: error: "
NICENESS = 10


def training_threads(cpu_count: int | None = None) -> int:
    """Threads for an enrollment that runs beside the live stream: all cores but the two the stream keeps busy."""
    return max(1, (cpu_count or os.cpu_count() or 1) - 2)


class JobConflict(ValueError):
    """The request does not fit the job's state: one already running, or none to stop."""


@dataclass
class EnrollStatus:
    state: str = "idle"  # idle | running | done | failed | stopped
    name: str | None = None
    file: str | None = None
    stage: str | None = None  # the running stage's name and title, "3/6 decompose: albedo, normals, ..."
    stage_index: int = 0
    stage_count: int = 0
    last_line: str | None = None
    error: str | None = None
    started_s: float | None = None
    ended_s: float | None = None

    def reply(self) -> dict:
        return {"type": "enroll", **asdict(self)}


class EnrollJobs:
    def __init__(self, recordings_dir: Path, avatars_dir: Path | None = None, command: list[str] | None = None) -> None:
        self.recordings_dir = Path(recordings_dir).expanduser()
        self.avatars_dir = avatars_dir
        # What runs: the real CLI; tests put a stand-in here that prints the same kind of lines.
        self.command = command or [sys.executable, "-m", "stream.cli", "enroll"]
        self.status = EnrollStatus()
        self._process: asyncio.subprocess.Process | None = None
        self._watch: asyncio.Task | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def _recording(self, file: str) -> Path:
        # The page can only enroll what it recorded: a path outside the recordings folder is refused.
        path = (self.recordings_dir / Path(file).name).resolve()
        if Path(file).name != file and Path(file).expanduser().resolve() != path:
            raise ValueError(f"only recordings made on this page can be enrolled from it, not {file!r}")
        if not path.is_file():
            raise ValueError(f"no recording {Path(file).name!r} in {self.recordings_dir}")
        return path

    async def start(self, file: str, name: str) -> EnrollStatus:
        from stream.recordings import check_name

        if self.running:
            raise JobConflict(f"an enrollment is already running ({self.status.name}); stop it first")
        path = self._recording(file)
        check_name(name)
        args = [*self.command, str(path), "--name", name, "--resume", "--quiet"]
        if self.avatars_dir is not None:
            args += ["--out", str(self.avatars_dir)]
        self._process = await asyncio.create_subprocess_exec(
            *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            preexec_fn=lambda: os.nice(NICENESS), start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1",  # its lines as they are said, not a pipe buffer later
                 "OMP_NUM_THREADS": str(training_threads())})
        self.status = EnrollStatus(state="running", name=name, file=str(path), started_s=time.time())
        self._watch = asyncio.create_task(self._follow(self._process))
        return self.status

    async def _follow(self, process: asyncio.subprocess.Process) -> None:
        status = self.status
        async for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip()
            if not line.strip():
                continue
            status.last_line = line.strip()
            stage = STAGE_LINE.match(line.strip())
            if stage:
                status.stage_index, status.stage_count = int(stage[1]), int(stage[2])
                status.stage = f"{stage[1]}/{stage[2]} {stage[3]}: {stage[4]}"
            elif line.startswith(ERROR_PREFIX):
                status.error = line[len(ERROR_PREFIX):]
        code = await process.wait()
        status.ended_s = time.time()
        if status.state == "stopping":
            status.state = "stopped"
        elif code == 0:
            status.state = "done"
        else:
            status.state = "failed"
            status.error = status.error or status.last_line or f"enroll exited with status {code}"

    async def stop(self) -> EnrollStatus:
        if not self.running:
            raise JobConflict("no enrollment is running")
        self.status.state = "stopping"
        self._process.send_signal(signal.SIGINT)
        return self.status

    async def wait(self) -> EnrollStatus:
        if self._watch is not None:
            await self._watch
        return self.status

    async def close(self) -> None:
        """At the end of `relitcam run`: a running enrollment is stopped (its checkpoints kept), not orphaned."""
        if self.running:
            await self.stop()
            try:
                await asyncio.wait_for(self.wait(), timeout=30)
            except asyncio.TimeoutError:
                self._process.kill()
                await self.wait()
