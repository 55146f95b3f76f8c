"""Splitting a shard that outgrew its capacity, as writer mutations.

A split moves a shard's routes into its two children, then marks it split. Order matters for
routing and for other replicas:

1. the children are read, then the parent (a replica that already finished this split and took
   new writes into a child then makes our child write fail, instead of being overwritten);
2. each child is written with the parent's exact content, by a mutation that holds only if the
   child is still as read;
3. the children are added to the roots (after the parent, which stays the authoritative copy
   until it is marked: a child is not *live* before that);
4. the parent becomes a marker, by a mutation that holds only if its routes are still those
   read; this replica's own writes to the parent wait meanwhile (the split holds its writer's
   lock), then follow the marker to the children;
5. the parent leaves the roots.

A mutation that finds its object changed by someone else ends the attempt (:class:`Stale`);
the split starts over from what is stored then, a few times (housekeeping resumes it after
that). This is a restart of the protocol on a concurrent change, not a retry of a failed call:
every write goes through the objects' writers, where a 409 is re-read and judged again, and a
failed call (after the access layer's retries) ends the split until housekeeping.
"""

from __future__ import annotations

import asyncio
import logging

from ..errors import KubeError, Rejected
from ..mirror import Mirror, Mutation
from ..model import decode_entries
from ..scope import Scope
from .index import ShardIndex
from .layout import LEVELS, MAX_LEVEL, ShardKey, partition
from .objects import SPLIT_ROUTES_BYTES, VS, is_split_marker
from .roots import Roots
from .shards import SPLIT, Shard, ShardState, ShardWriters, decode_shard

log = logging.getLogger("federation.istio")
ATTEMPTS = 5  # restarts of a split whose reads went stale (then housekeeping resumes it)


class Stale(Exception):  # noqa: N818 - a signal: the split's reads are out of date
    """An object the split read was written meanwhile: this attempt ends."""


def _expect(seen: ShardState, wanted: Shard) -> Mutation[Shard]:
    """A mutation that writes ``wanted`` only over the state the split read."""
    def mutation(current: ShardState) -> ShardState:
        if current != seen:
            raise Stale()
        return wanted
    return mutation


class Splitter:
    def __init__(self, scope: Scope, index: ShardIndex, mirror: Mirror, shards: ShardWriters,
                 roots: Roots, capacity: int) -> None:
        self.scope = scope
        self.index = index
        self.mirror = mirror
        self.shards = shards
        self.roots = roots
        self.capacity = capacity
        self._running: dict[ShardKey, asyncio.Task[None]] = {}

    def maybe(self, key: ShardKey) -> asyncio.Task[None] | None:
        """Start splitting a shard that holds more than its capacity (once at a time)."""
        state = self.index.shards.get(key.name(self.scope.instance))
        if (state is None or state.split or key.legacy or key.level >= MAX_LEVEL
                or (len(state.entries) <= self.capacity and state.size <= SPLIT_ROUTES_BYTES)):
            return self._running.get(key)
        return self.task(key)

    def task(self, key: ShardKey) -> asyncio.Task[None]:
        running = self._running.get(key)
        if running is None:
            running = self._running[key] = self.mirror.spawn(self._split(key))
            running.add_done_callback(lambda _: self._running.pop(key, None))
        return running

    async def now(self, key: ShardKey) -> None:
        """Split before a write that would not fit (a legacy shard cannot: its routes move)."""
        if key.legacy or key.level >= MAX_LEVEL:
            raise Rejected(f"routes of shard {key.name(self.scope.instance)} on cluster "
                           f"{self.scope.name!r} do not fit on one object",
                           cluster=self.scope.name, verb="update", status=422)
        await asyncio.gather(self.task(key), return_exceptions=True)

    async def settle(self) -> None:
        """Split until no shard holds more than its capacity (housekeeping, tests)."""
        for _ in range(LEVELS):  # a split per level at most, down each tree
            tasks = [t for s in list(self.index.shards.values()) if self.index.live(s)
                     for t in [self.maybe(s.key)] if t is not None]
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _split(self, key: ShardKey) -> None:
        name = key.name(self.scope.instance)
        try:
            for attempt in range(ATTEMPTS):
                async with self.shards.writer(key).lock:
                    done = await self._attempt(key)
                if done:
                    break
                # Start over from what is stored now, soon: a child written by an attempt
                # that went stale still holds routes the parent may have lost since, and the
                # root, which lists it, would route them until a split rewrites it.
                await asyncio.sleep(self.mirror.client.backoff.delay(attempt))
        except KubeError as exc:
            log.warning("cluster %s: split of shard %s failed, will retry in housekeeping: %s",
                        self.scope.name, name, exc,
                        extra={"cluster": self.scope.name, "object": name})
            return
        if done:
            await self.roots.remove_from_roots(key)
            for child in key.children():
                self.maybe(child)  # a big parent can leave a child over capacity too

    async def _attempt(self, key: ShardKey) -> bool:
        """One attempt (the parent's writer lock held); True when the parent is a marker."""
        inst = self.scope.instance
        children = key.children()
        seen = [await self._read(c.name(inst)) for c in children]
        parent = await self.mirror.reread(VS, key.name(inst))
        if parent is None or is_split_marker(parent):
            return parent is not None
        entries = decode_entries(parent)
        parts = partition(key, entries)
        try:
            for child, state in zip(children, seen, strict=True):
                await self.shards.writer(child).submit(_expect(state, dict(parts[child])))
            for child in children:
                await self.roots.ensure_in_roots(child)
            await self.shards.writer(key).submit_held(_expect(entries, SPLIT))
        except Stale:
            return False
        log.info("cluster %s: shard %s split in two (%d routes)", self.scope.name,
                 key.name(inst), len(entries),
                 extra={"cluster": self.scope.name, "object": key.name(inst)})
        return True

    async def _read(self, name: str) -> ShardState:
        obj = await self.mirror.reread(VS, name)
        return None if obj is None else decode_shard(obj)

    async def resume(self, key: ShardKey) -> None:
        """A child whose parent is not a marker: a split that stopped half-way (finish it), or
        a marker deleted by hand (put it back)."""
        parent = key.parent()
        if parent is None:
            return
        if parent.name(self.scope.instance) in self.index.shards:
            await asyncio.gather(self.task(parent), return_exceptions=True)
            return
        try:
            await self.shards.writer(parent).submit(
                lambda state: SPLIT if state is None else state)
        except KubeError as exc:
            log.info("cluster %s: cannot restore split marker %s: %s", self.scope.name,
                     parent.name(self.scope.instance), exc, extra={"cluster": self.scope.name})
