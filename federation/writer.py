"""Optimistic-concurrency writes of one object, batched: every write the service makes.

A write is a *mutation*: a function from the object's current state (None: absent) to the
state wanted (None: delete it). Many routes share one shard, so concurrent mutations of it are
coalesced: while one write of an object is in flight, further ones queue and go out together
in the next write. Between replicas, Kubernetes' resourceVersion check (409 Conflict, or 404 for
an object gone) serialises writers: the loser re-reads and applies its mutations again, at most
:data:`MAX_CONFLICT_RETRIES` times. This is the one loop for optimistic writes; transient
failures of a call are the access layer's one retry schedule (:mod:`federation.kube`). The
other loops above them are navigation, each with its bound named once: following split markers
down a shard tree (:data:`federation.istio.layout.LEVELS`), and a split starting over from what
is stored when another writer changed what it read (:data:`federation.istio.splits.ATTEMPTS`).
A mutation that raises fails its own caller only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import Conflict, NotFound

MAX_CONFLICT_RETRIES = 20
S = TypeVar("S")

# A mutation takes the object's current state (None: absent) and returns the new state;
# returning the state unchanged means "nothing to do", and no write is made for it.
Mutation = Callable[[Any], Any]


class Redirect(Exception):  # noqa: N818 - a signal, not a failure
    """The object may no longer take this change (a shard that split): place it again."""


@dataclass
class _Change:
    apply: Mutation
    future: asyncio.Future[None]


@dataclass
class Codec(Generic[S]):
    """How one object's state is read from the cache, rendered, stored and re-read."""

    cached: Callable[[], tuple[S | None, str | None]]  # (state, resourceVersion) from the cache
    # The body to send (JSON text) for a state, with the resourceVersion it replaces.
    render: Callable[[S, str | None], bytes]
    # Send it: (state wanted, body, resourceVersion replaced); state None deletes (guarded by
    # that resourceVersion), rv None creates.
    store: Callable[[S | None, bytes, str | None], Awaitable[None]]
    reread: Callable[[], Awaitable[tuple[S | None, str | None]]]  # a fresh GET, into the cache
    copy: Callable[[S | None], S | None]


class ObjectWriter(Generic[S]):
    """Serialises and batches the changes to one object."""

    def __init__(self, cluster: str, name: str, codec: Codec[S]) -> None:
        self.cluster = cluster
        self.name = name
        self.codec = codec
        self.pending: list[_Change] = []
        self.running = False
        # Held by each write, and by a split of this shard: a replica does not race itself.
        self.lock = asyncio.Lock()

    async def submit(self, mutation: Mutation) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.pending.append(_Change(mutation, future))
        if not self.running:
            self.running = True
            loop.create_task(self._drain())
        await future

    async def submit_held(self, mutation: Mutation) -> None:
        """A write by the holder of :attr:`lock` (a split of this shard), ahead of the changes
        queued behind it: the same optimistic loop, without waiting for the lock it holds."""
        assert self.lock.locked(), "submit_held is for the holder of the writer's lock"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        change = _Change(mutation, future)
        try:
            await self._write([change])
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through its future
            _settle([change], exc)
        else:
            _settle([change], None)
        await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    async with self.lock:
                        await self._write(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                    _settle(batch, exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                else:
                    _settle(batch, None)
        finally:
            self.running = False

    def _apply(self, state: S | None, batch: list[_Change]) -> tuple[S | None, list[_Change]]:
        """Apply every change that takes; a change that raises is settled with its error."""
        live: list[_Change] = []
        for change in batch:
            if change.future.done():
                continue
            try:
                state = change.apply(state)
            except Exception as exc:  # noqa: BLE001 - the caller's own problem, not the batch's
                change.future.set_exception(exc)
                continue
            live.append(change)
        return state, live

    async def _write(self, batch: list[_Change]) -> None:
        state, rv = self.codec.cached()
        for _ in range(MAX_CONFLICT_RETRIES):
            before = self.codec.copy(state)
            after, batch = self._apply(self.codec.copy(state), batch)
            if not batch or after == before:
                return  # nothing to change: no write at all
            body = b"" if after is None else self.codec.render(after, rv)
            try:
                await self.codec.store(after, body, rv)
                return
            except (Conflict, NotFound):
                # Someone else wrote (or removed) it: read the truth and apply our changes again.
                state, rv = await self.codec.reread()
        raise Conflict(f"update of {self.name} on cluster {self.cluster!r} kept conflicting",
                       cluster=self.cluster, verb="update", status=409)


def _settle(batch: list[_Change], exc: BaseException | None) -> None:
    for change in batch:
        if change.future.done():
            continue
        if exc is None:
            change.future.set_result(None)
        else:
            change.future.set_exception(exc)


