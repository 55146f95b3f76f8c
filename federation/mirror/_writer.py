"""Optimistic-concurrency writes of one object, batched: every write the service makes.

A write is a *mutation*: a function from the object's current state (None: absent) to the
state wanted (None: delete it). A state is what a backend keeps of an object of one kind (its
:class:`View`: a shard's entries, a root's delegates, an HTTPRoute's entry). Many routes share
one shard, so concurrent mutations of it are coalesced: while one write of an object is in
flight, further ones queue and go out together in the next write. Between replicas,
Kubernetes' resourceVersion check (409 Conflict, or 404 for an object gone) serialises writers:
the loser re-reads and applies its mutations again, at most :data:`MAX_CONFLICT_RETRIES` times.
This is the one loop for optimistic writes; transient failures of a call are the access
layer's one retry schedule (:mod:`federation.kube`). A writer calls nothing of a backend's but
its view and the mutations it is given. The other loops above them are navigation,
each with its bound named once: following split markers down a shard tree
(:data:`federation.istio.layout.LEVELS`), and a split starting over from what is stored when
another writer changed what it read (:data:`federation.istio.splits.ATTEMPTS`). A mutation
that raises fails its own caller only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from ..errors import Conflict, NotFound

if TYPE_CHECKING:
    from . import Mirror

MAX_CONFLICT_RETRIES = 20
S = TypeVar("S")

# A mutation takes the object's current state (None: absent) and returns the new state;
# returning the state unchanged means "nothing to do", and no write is made for it.
Mutation = Callable[[S | None], S | None]
Body = dict[str, Any] | bytes  # an object to send: built, or its JSON text (no resourceVersion)


class View(Generic[S]):
    """One kind of object as its writers see it: the state cached for it, how an object read
    decodes to that state, and how a state is built into an object. The mirror sets the
    resourceVersion and serialises."""

    # The states the cache holds, by name, where a view keeps them as data (its cached()).
    held: Mapping[str, S | None] = {}

    def cached(self, name: str) -> S | None:
        """The state the cache holds (None: not held; the mirror knows its resourceVersion)."""
        return self.held.get(name)

    def decode(self, obj: dict[str, Any]) -> S | None:
        """The state of an object read from the API server (None: nothing this view reads
        in it; a write replaces it)."""
        raise NotImplementedError

    def build(self, name: str, state: S) -> Body:
        """The object to send for a state."""
        raise NotImplementedError

    def remember(self, name: str, state: S, rv: str, created: bool) -> bool:
        """Keep a written state known by its new resourceVersion alone (True), without
        reading the API server's answer."""
        return False


@dataclass
class Change(Generic[S]):
    apply: Mutation[S]
    future: asyncio.Future[None]


def copy_state(state: S | None) -> S | None:
    """A copy mutations may change in place: a dict or set state is copied (one level deep);
    every other state is immutable."""
    if isinstance(state, dict):
        return cast(S, dict(state))  # a subclass (a shard's Rerender) becomes a plain dict
    if isinstance(state, set):
        return cast(S, set(state))
    return state


class ObjectWriter(Generic[S]):
    """Serialises and batches the changes to one object, through its kind's view. Its owner
    may give it a :attr:`lock` to hold it: its batches wait while the lock is held (an Istio
    shard's split writes ahead of them, :mod:`federation.istio.shards`)."""

    def __init__(self, mirror: Mirror, plural: str, name: str, view: View[S]) -> None:
        self.mirror = mirror
        self.plural = plural
        self.name = name
        self.view = view
        self.pending: list[Change[S]] = []
        self.running = False
        self.lock: asyncio.Lock | None = None

    async def submit(self, mutation: Mutation[S]) -> None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self.pending.append(Change(mutation, future))
        if not self.running:
            self.running = True
            loop.create_task(self._drain())
        await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    await self.write_batch(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                    settle(batch, exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                else:
                    settle(batch, None)
        finally:
            self.running = False

    async def write_batch(self, batch: list[Change[S]]) -> None:
        """One write of a batch of queued changes, once the writer's lock (if any) is free."""
        if self.lock is None:
            await self.write(batch)
            return
        async with self.lock:
            await self.write(batch)

    def _apply(self, state: S | None, batch: list[Change[S]]) -> tuple[S | None, list[Change[S]]]:
        """Apply every change that takes; a change that raises is settled with its error."""
        live: list[Change[S]] = []
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

    async def write(self, batch: list[Change[S]]) -> None:
        """The optimistic loop: apply, send, and on a conflict re-read and apply again."""
        view, mirror = self.view, self.mirror
        rv = mirror.cache.version(self.plural, self.name)
        # An object the cache does not hold has no state to read: it is created.
        state: S | None = None if rv is None else view.cached(self.name)
        for _ in range(MAX_CONFLICT_RETRIES):
            before = copy_state(state)
            after, batch = self._apply(copy_state(state), batch)
            if not batch or after == before:
                return  # nothing to change: no write at all
            try:
                await mirror.send(self.plural, self.name, view, after, rv)
                return
            except (Conflict, NotFound):
                # Someone else wrote (or removed) it: read the truth and apply our changes again.
                fresh = await mirror.reread_state(self.plural, self.name, view)
                state, rv = fresh
        raise Conflict(f"update of {self.name} on cluster {mirror.name!r} kept conflicting",
                       cluster=mirror.name, verb="update", status=409)


def settle(batch: list[Change[S]], exc: BaseException | None) -> None:
    for change in batch:
        if change.future.done():
            continue
        if exc is None:
            change.future.set_result(None)
        else:
            change.future.set_exception(exc)
