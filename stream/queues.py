"""Bounded queues that drop instead of growing, and count what they drop.

Live video must not fall further and further behind: when a consumer is slower than its producer, the oldest item
is thrown away so the newest is always next. Offline rendering wants every frame, so the same queue can instead
make the producer wait (`lossless=True`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class QueueClosed(Exception):
    """Raised by `get` once the queue is closed and empty: the producer is done."""


class DropQueue(Generic[T]):
    """A bounded FIFO for one producer and one consumer.

    lossless=False: `put` never waits; when full, the oldest item is dropped and `dropped` goes up.
    lossless=True: `put` waits for room (back-pressure for offline rendering); nothing is dropped.
    """

    def __init__(self, maxsize: int, name: str = "queue", lossless: bool = False) -> None:
        if maxsize < 1:
            raise ValueError(f"{name}: maxsize must be >= 1, got {maxsize}")
        self.name = name
        self.maxsize = maxsize
        self.lossless = lossless
        self.dropped = 0
        self.put_count = 0
        self._items: deque[T] = deque()
        self._closed = False
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        return self._closed

    def put_nowait(self, item: T) -> None:
        """Add an item; in lossy mode drop the oldest when full. In lossless mode a full queue raises."""
        if self._closed:
            return  # late items after close are discarded: the consumer has gone
        if len(self._items) >= self.maxsize:
            if self.lossless:
                raise asyncio.QueueFull(f"{self.name} is full")
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self.put_count += 1
        self._readable.set()
        if len(self._items) >= self.maxsize:
            self._writable.clear()

    async def put(self, item: T) -> None:
        if self.lossless:
            while len(self._items) >= self.maxsize and not self._closed:
                await self._writable.wait()
        self.put_nowait(item)

    async def get(self) -> T:
        while not self._items:
            if self._closed:
                raise QueueClosed(self.name)
            self._readable.clear()
            await self._readable.wait()
        item = self._items.popleft()
        self._writable.set()
        return item

    def get_latest_nowait(self) -> T | None:
        """Newest item, dropping (and counting) any older ones; None when empty."""
        if not self._items:
            return None
        self.dropped += len(self._items) - 1
        item = self._items[-1]
        self._items.clear()
        self._writable.set()
        return item

    def close(self) -> None:
        """No more items will come; waiting consumers wake and, once drained, get QueueClosed."""
        self._closed = True
        self._readable.set()
        self._writable.set()
