"""The heap policy: when the table has grown enough, in a quiet moment, the heap is collected
and frozen again, so full collections never walk more than one step of growth."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator

import pytest

from federation import heap
from federation.heap import HeapPolicy


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    """Each test starts and ends with nothing frozen and the collector on."""
    gc.unfreeze()
    yield
    gc.unfreeze()
    gc.enable()


def test_freezes_only_after_a_step_of_growth_in_a_quiet_moment() -> None:
    policy = HeapPolicy(step=500, quiet=2.0, force=2.0)
    assert not policy.due(10_499, 10_000, still_for=60)  # less than a step
    assert not policy.due(10_500, 10_000, still_for=1.0)  # a step, but still busy
    assert policy.due(10_500, 10_000, still_for=2.0)
    # A table that never stops growing is frozen anyway after ``force`` steps.
    assert not policy.due(10_999, 10_000, still_for=0)
    assert policy.due(11_000, 10_000, still_for=0)
    # The step does not grow with the table: the pause it bounds must not either.
    assert policy.due(100_500, 100_000, still_for=2.0)


def test_the_pause_of_a_full_collection_is_recorded() -> None:
    heap.watch_pauses()
    heap.watch_pauses()  # idempotent: one callback
    assert gc.callbacks.count(heap._clock) == 1
    before = _sample("federation_gc_full_pause_seconds_count")
    gc.collect()
    gc.collect(0)  # young collections are not recorded
    assert _sample("federation_gc_full_pause_seconds_count") == before + 1
    assert _sample("federation_gc_longest_full_pause_seconds") > 0


def test_growth_through_writes_is_frozen_again() -> None:
    table: list[list[int]] = []
    policy = HeapPolicy(step=10, quiet=0.05, force=100, interval=0.01)

    async def scenario() -> tuple[int, int, int]:
        task = asyncio.create_task(heap.keep_settled(lambda: len(table), lambda: True, policy))
        await asyncio.sleep(0.05)
        assert gc.isenabled()
        at_start = gc.get_freeze_count()
        table.extend([i] for i in range(5))  # less than a step: nothing more frozen
        await asyncio.sleep(0.2)
        small = gc.get_freeze_count()
        table.extend([i] for i in range(20_000))  # lists are tracked by the collector
        await asyncio.sleep(0.3)
        task.cancel()
        return at_start, small, gc.get_freeze_count()

    at_start, small, grown = asyncio.run(scenario())
    assert at_start > 0
    assert small - at_start < 1_000
    assert grown - small >= 20_000


def test_the_collector_comes_back_on_when_the_caches_never_fill(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(heap, "STARTUP_LIMIT", 0.05)

    async def scenario() -> bool:
        task = asyncio.create_task(heap.keep_settled(lambda: 0, lambda: False, HeapPolicy()))
        await asyncio.sleep(0.01)
        paused = not gc.isenabled()
        await asyncio.sleep(0.3)
        task.cancel()
        return paused

    assert asyncio.run(scenario())
    assert gc.isenabled() and gc.get_freeze_count() > 0


def _sample(name: str) -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(name)
    return float(value or 0.0)
