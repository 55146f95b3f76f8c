"""Keeping Python's cycle collector off the route cache for the life of the process.

The cache holds millions of long-lived objects, and a full (generation 2) collection walks
every one of them with the event loop held: hundreds of milliseconds to a second at 50,000
routes. Objects moved into the permanent generation by ``gc.freeze()`` are no longer walked
(they are still freed when nothing references them; only garbage *cycles* among them would
wait for an unfreeze, and the cache's entries die by reference count).

Freezing once after start-up covers a table loaded from the clusters, but a hub grows its
table through POSTs over days: every route added after that freeze stays in the walked heap.
So the table size is watched, and each time it has grown by ``step`` routes the heap is
collected and frozen again in a quiet moment, when the table has not changed for ``quiet``
seconds; a table that never stops growing is frozen anyway once it has grown by ``force``
steps. Such a collection walks only what was added since the last freeze, so its pause is
bounded by the step, whatever the size of the table: the step is a number of routes, not a
share of the table (a share of 10%, tried first, made the pause grow with the table: a
second at 50,000 routes).

The service starts :func:`keep_settled` as one of its tasks.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

log = logging.getLogger(__name__)

FULL_PAUSES = Histogram(
    "federation_gc_full_pause_seconds",
    "Full (generation 2) collections of Python's cycle collector: the event loop is held",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LONGEST_PAUSE = Gauge(
    "federation_gc_longest_full_pause_seconds", "The longest full collection since start"
)
FREEZES = Counter("federation_heap_freezes_total", "Heap collected and frozen (heap.py)")
FROZEN = Gauge("federation_heap_frozen_objects", "Objects in the permanent generation")

STARTUP_LIMIT = 120.0  # seconds the collector may stay paused while the caches fill


@dataclass(frozen=True)
class HeapPolicy:
    """When to collect and freeze the heap again as the table grows."""

    # Routes added between freezes: a collection then walks their objects (and what else
    # survived since), not the table's.
    step: int = 500
    quiet: float = 2.0  # seconds without a table change: a moment nobody waits on us
    force: float = 2.0  # steps of growth after which we freeze even if never quiet
    interval: float = 1.0  # seconds between looks at the table size

    def due(self, routes: int, frozen_at: int, still_for: float) -> bool:
        """Whether to freeze now: ``routes`` in the table, ``frozen_at`` at the last freeze,
        the table unchanged for ``still_for`` seconds."""
        grown = routes - frozen_at
        if grown < self.step:
            return False
        return still_for >= self.quiet or grown >= self.force * self.step


class _PauseClock:
    """Times full collections through ``gc.callbacks`` (young ones return at once)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.longest = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self.started = time.perf_counter()
            return
        pause = time.perf_counter() - self.started
        FULL_PAUSES.observe(pause)
        if pause > self.longest:
            self.longest = pause
            LONGEST_PAUSE.set(pause)


_clock = _PauseClock()


def watch_pauses() -> None:
    """Record every full collection's pause in the metrics (idempotent)."""
    if _clock not in gc.callbacks:
        gc.callbacks.append(_clock)


def freeze() -> float:
    """Collect what is not frozen yet, then freeze the survivors; returns the pause."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    pause = time.perf_counter() - started
    FREEZES.inc()
    FROZEN.set(gc.get_freeze_count())
    return pause


async def _after_start(ready: Callable[[], bool]) -> None:
    """Collection paused while the caches fill (every pass would walk the growing cache)."""
    gc.disable()
    try:
        deadline = time.monotonic() + STARTUP_LIMIT
        while not ready() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    finally:
        freeze()
        gc.enable()


async def keep_settled(routes: Callable[[], int], ready: Callable[[], bool],
                       policy: HeapPolicy | None = None) -> None:
    """Freeze the heap once the caches are filled, then again each time the table (``routes``
    gives its size) has grown by a step: the service's task for the life of the process."""
    policy = policy or HeapPolicy()
    watch_pauses()
    await _after_start(ready)
    frozen_at = last = routes()
    changed = time.monotonic()
    while True:
        await asyncio.sleep(policy.interval)
        size, now = routes(), time.monotonic()
        if size != last:
            last, changed = size, now
        if size < frozen_at:
            frozen_at = size  # routes removed: grow again from here
        elif policy.due(size, frozen_at, now - changed):
            pause = freeze()
            log.debug("heap frozen at %d routes (was %d): %.1f ms", size, frozen_at,
                      pause * 1000, extra={"routes": size, "pause_ms": round(pause * 1000, 1)})
            frozen_at = size
