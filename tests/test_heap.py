"""stream/heap.py: malloc_trim hands fragmented free heap memory back, the trimmer keeps its interval, and the
pipeline calls it."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from models.lighting.sources import preset
from stream.backgrounds import BackgroundSet
from stream.file_source import FileSource
from stream.heap import HeapTrimmer, glibc_malloc_trim
from stream.lighting_state import LightingState
from stream.pipeline import Pipeline, PipelineConfig
from test_stream_doubles import RecordingSink, SphereHeadRenderer, tone_after_silence

needs_glibc = pytest.mark.skipif(glibc_malloc_trim() is None, reason="malloc_trim is glibc's")

# 400 arrays of 96 kB (under glibc's 128 kB mmap threshold: heap memory), written so they are resident; all freed
# but the last, which pins the top of the heap so free() alone cannot shrink it.
FRAGMENTED_HEAP = """
import os, sys
import numpy as np
from stream.heap import glibc_malloc_trim
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
blocks = [np.ones(96 * 1024 // 8) for _ in range(400)]
before = rss_mb()
del blocks[:-1]
freed = rss_mb()
if sys.argv[1] == "trim":
    glibc_malloc_trim()()
print(before, freed, rss_mb())
"""


@needs_glibc
def test_malloc_trim_returns_freed_heap_memory_that_free_alone_keeps():
    def run(mode):
        out = subprocess.run([sys.executable, "-c", FRAGMENTED_HEAP, mode], capture_output=True, text=True,
                             check=True, timeout=60).stdout
        return [float(v) for v in out.split()]

    before, freed, kept = run("keep")
    assert freed > before - 5 and kept > before - 5  # ~37 MB stay resident after free()
    before, freed, trimmed = run("trim")
    assert trimmed < freed - 30


def test_trimmer_waits_its_interval_and_can_be_off():
    calls = []
    trimmer = HeapTrimmer(5.0, trim=lambda: calls.append(1))
    assert [trimmer.maybe_trim(t) for t in (100.0, 101.0, 104.9, 105.0, 106.0, 110.1)] == \
        [False, False, False, True, False, True]
    assert trimmer.count == len(calls) == 2
    off = HeapTrimmer(0.0, trim=lambda: calls.append(1))
    assert not off.active and not any(off.maybe_trim(t) for t in (0.0, 10.0, 100.0))
    with pytest.raises(ValueError, match=">= 0"):
        HeapTrimmer(-1.0)
    with pytest.raises(ValueError, match="heap_trim_s"):
        PipelineConfig(heap_trim_s=-1.0)


@needs_glibc
@pytest.mark.parametrize("every_s", [0.0, 0.05])
def test_pipeline_trims_the_heap_from_the_compose_thread(every_s):
    canvas = (320, 240)
    pipeline = Pipeline(FileSource(tone_after_silence(0.5, 1.0), realtime=False), SphereHeadRenderer(),
                        LightingState(preset("studio_key")), BackgroundSet(None, canvas), [RecordingSink()],
                        PipelineConfig(canvas_size_px=canvas, realtime=False, heap_trim_s=every_s))
    stats = asyncio.run(pipeline.run())
    trims = stats.timers.get("heap_trim")
    if every_s == 0.0:
        assert trims is None
    else:
        assert trims is not None and trims.count >= 1
