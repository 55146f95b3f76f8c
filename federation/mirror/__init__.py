"""One cluster's mirror: everything the service knows of its objects there, whatever the backend.

:class:`Mirror` alone owns, per cluster:

* the list-then-watch of each kind its backend names, into the object cache (resourceVersions,
  tombstones, relists, health, the echoes of its own writes);
* the one rule for re-reading an object after a conflict or a 404 (:meth:`Mirror.reread`);
* the writers: every write to the cluster is a mutation through an :class:`ObjectWriter` it
  makes (:meth:`Mirror.writer`), of a state a backend's :class:`View` of the object's kind
  reads and builds; the mirror sets the resourceVersion, serialises and sends;
* support objects, ensured as built and removed once unused for a grace period (the grace
  clocks too), with the delete guarded by the resourceVersion it was judged at;
* the cluster's probe state (filled by the federation's probe).

A backend gives it its kinds (data) and a route index (what its route-holding objects hold);
support objects are compared by one :func:`fingerprint`. The factory makes the mirror first
and hands it to the backend; the store holds the two side by side.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from .. import _json
from ..errors import Conflict, KubeError, NotFound
from ..kube import ClusterClient, resource_version_of
from ..model import ANN_SPEC
from ..seam import Kinds, Pace, RouteIndex, RouteKind
from ._cache import Health, ObjectCache, SupportState, resource_version
from ._entries import RouteEntries
from ._watch import OwnWrites, Watcher
from ._writer import Body, Change, Mutation, ObjectWriter, View, settle

__all__ = ["Health", "Kinds", "Mirror", "fingerprint", "ObjectCache", "Pacer", "ProbeState", "RouteEntries",
           "RouteIndex", "SupportState", "View", "resource_version", "serialise", "Body", "Change", "Mutation",
           "ObjectWriter", "settle"]

log = logging.getLogger(__name__)
S = TypeVar("S")
T = TypeVar("T")
W = TypeVar("W", bound=ObjectWriter[Any])
# Seconds an object outside our namespace is taken to still exist: its namespace may be deleted
# and made again (a user's), taking it along, and nothing watches it there.
ELSEWHERE_RECHECK = 600.0


class Pacer:
    """Lets other work run on the event loop at least every ``budget`` seconds of a long pass."""

    def __init__(self, budget: float = 0.005) -> None:
        self.budget = budget
        self.mark = time.perf_counter()

    async def __call__(self) -> None:
        if time.perf_counter() - self.mark >= self.budget:
            await asyncio.sleep(0)
            self.mark = time.perf_counter()


@dataclass
class ProbeState:
    """The federation's last look at the cluster's API server (for /clusters and readiness)."""

    reachable: bool | None = None
    latency: float | None = None
    version: str | None = None
    last_probe: float | None = None
    error: str | None = None


class Mirror:
    def __init__(self, name: str, client: ClusterClient, kinds: Kinds, index: RouteIndex,
                 selector: str, watch_timeout: int) -> None:
        self.name = name
        self.client = client
        self.kinds = kinds
        self.selector = selector
        self.cache = ObjectCache(_RouteObjects(kinds.route, index), kinds.resources,
                                 kinds.watched, fingerprint)
        self.probe = ProbeState()
        self.own = OwnWrites()
        self._watch_timeout = watch_timeout
        self._tasks: set[asyncio.Task[None]] = set()
        self._watches: list[asyncio.Task[None]] = []
        self._writers: dict[tuple[str, str], ObjectWriter[Any]] = {}
        self._unused_since: dict[tuple[str, str], float] = {}  # the grace clocks
        # Objects kept outside our namespace, and when they were last known to exist.
        self._elsewhere: dict[tuple[str, str, str], float] = {}

    @property
    def health(self) -> Health:
        return self.cache.health

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        pages = dict(self.kinds.pages)
        self.client.watch_pool(len(self.kinds.watched))
        for plural in self.kinds.watched:
            watcher = Watcher(self.name, self.client, self.cache, self.kinds.resources[plural],
                              self.selector, self.own, optional=plural in self.kinds.optional,
                              page=pages.get(plural), timeout=self._watch_timeout)
            self._watches.append(self.spawn(watcher.run()))

    async def stop_watching(self) -> None:
        """Stop hearing from the cluster (tests of a replica whose cache lags)."""
        for task in self._watches:
            task.cancel()
        await asyncio.gather(*self._watches, return_exceptions=True)

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.client.close()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- reading ------------------------------------------------------------------------------

    async def reread(self, plural: str, name: str) -> dict[str, Any] | None:
        """The object as the API server has it now (None: not found), into the cache too.

        The one re-read rule, for every writer and every backend: work from the object read,
        not from the cache (which may hold a newer tombstone and ignore it, and a writer must
        never loop on a state it cannot see); and a 404 forgets nothing, for it may be older
        than a create whose result the cache already holds. Deletions reach the cache through
        the watch and through our own deletes.
        """
        try:
            obj = await self.client.get(self.kinds.resources[plural], name)
        except NotFound:
            return None
        self.cache.apply(plural, "MODIFIED", obj)
        return obj

    # -- writing ------------------------------------------------------------------------------

    def writer(self, plural: str, name: str, view: View[S]) -> ObjectWriter[S]:
        """The writer of one object (made once), through its kind's view."""
        return self.writer_made(plural, name, view, ObjectWriter)

    def writer_made(self, plural: str, name: str, view: View[S],
                    make: Callable[[Mirror, str, str, View[S]], W]) -> W:
        """The writer of one object (made once, by ``make``: a backend's own kind of writer)."""
        held = self._writers.get((plural, name))
        if held is not None:
            return cast(W, held)
        writer = make(self, plural, name, view)
        self._writers[(plural, name)] = writer
        return writer

    async def send(self, plural: str, name: str, view: View[S], state: S | None,
                   rv: str | None) -> None:
        """Write a state (None: delete, guarded by ``rv``; ``rv`` None: create), the
        resourceVersion set here; the result goes into the cache."""
        res = self.kinds.resources[plural]
        if state is None:
            await self.client.delete(res, name, rv)
            self.cache.forget(plural, name)
            return
        body = serialise(view.build(name, state), rv)
        raw = await self.client.write_raw(res, body, name, exists=rv is not None)
        new_rv = resource_version_of(raw)
        if new_rv is None or not view.remember(name, state, new_rv, rv is None):
            self.cache.apply(plural, "MODIFIED", _json.loads(raw))
        if new_rv is not None:
            self.own.note(new_rv)  # its watch echo holds nothing new: not parsed again

    async def reread_state(self, plural: str, name: str, view: View[T]
                           ) -> tuple[T | None, str | None]:
        """A writer's re-read: the rule of :meth:`reread`, the state decoded from the object
        read (never from the cache), with its resourceVersion."""
        obj = await self.reread(plural, name)
        return (None, None) if obj is None else (view.decode(obj), str(resource_version(obj)))

    # -- support objects ----------------------------------------------------------------------

    def _support_writer(self, plural: str, name: str) -> ObjectWriter[Support]:
        return self.writer(plural, name, _SupportView(self.cache, plural))

    async def ensure(self, obj: dict[str, Any]) -> None:
        """Create or update an object as built; one the API server holds with the same
        fingerprint (another replica's) is as good."""
        plural = self.kinds.names[obj["kind"]]
        meta = obj["metadata"]
        if meta.get("namespace") not in (None, self.client.namespace):
            await self._ensure_elsewhere(plural, obj)
            return
        wanted = self.cache.fingerprint(obj)

        def put(held: Support | None) -> Support | None:
            same = isinstance(held, SupportState) and held.spec == wanted
            return held if same else obj

        held = self.cache.support[plural].get(meta["name"])
        if held is None or held.spec != wanted:
            await self._support_writer(plural, meta["name"]).submit(put)

    async def _ensure_elsewhere(self, plural: str, obj: dict[str, Any]) -> None:
        """An object in another namespace (a ReferenceGrant in a user's): created once and
        kept, never watched (a namespaced watch cannot see it, and a cluster-wide one would
        need cluster-wide rights); so no writer: nothing rewrites or deletes it."""
        meta = obj["metadata"]
        where = (plural, meta["namespace"], meta["name"])
        if time.monotonic() - self._elsewhere.get(where, -ELSEWHERE_RECHECK) < ELSEWHERE_RECHECK:
            return
        try:
            await self.client.create(self.kinds.resources[plural], obj, namespace=where[1])
        except Conflict:
            pass  # it exists
        except NotFound:
            # The namespace is not there (yet): the route is stored all the same, and
            # housekeeping creates the object once the spawner has made the namespace.
            log.info("cluster %s: namespace %s not found for %s %s; will retry", self.name,
                     where[1], plural, where[2], extra={"cluster": self.name})
            return
        self._elsewhere[where] = time.monotonic()

    async def remove_unused(self, needed: Iterable[tuple[str, str]], grace: float,
                            pace: Pace) -> None:
        """Support objects nothing needs go once unused for ``grace`` seconds, each deleted
        only if unchanged since it was judged unused (another replica may need it now)."""
        needed = set(needed)
        now = time.monotonic()
        for plural, held in self.cache.support.items():
            for name, state in list(held.items()):
                await pace()
                if (plural, name) in needed:
                    self.used(plural, name)
                elif self.unused_for(plural, name, now) >= grace:
                    self.used(plural, name)
                    await self.delete_if_unchanged(plural, name, state.rv)

    async def delete_if_unchanged(self, plural: str, name: str, rv: str) -> bool:
        """Delete a support object if still at ``rv``; False when it was written meanwhile
        (or the cluster cannot be reached now: the next pass judges again)."""
        def drop(held: Support | None) -> Support | None:
            return None if isinstance(held, SupportState) and held.rv == rv else held

        try:
            await self._support_writer(plural, name).submit(drop)
        except KubeError:
            return False
        return name not in self.cache.support[plural]

    # -- grace clocks -------------------------------------------------------------------------

    def unused_for(self, kind: str, name: str, now: float) -> float:
        return now - self._unused_since.setdefault((kind, name), now)

    def used(self, kind: str, name: str) -> None:
        self._unused_since.pop((kind, name), None)

    @property
    def clocks_running(self) -> bool:
        """Whether some object waits out its grace period (a later pass must look again)."""
        return bool(self._unused_since)

    # -- the end of a backend -----------------------------------------------------------------

    async def purge(self, objects: list[tuple[str, str]]) -> None:
        """Delete these objects, whatever they hold now (their cluster moved to the other
        backend: nothing writes them any more). Failures are logged, not raised."""
        for plural, name in objects:
            # A writer of its own, not kept: a later write of the name (a request still in
            # flight on this store) must not meet a delete-only view of it.
            writer = ObjectWriter(self, plural, name, _Held(self.cache, plural))
            try:
                await writer.submit(lambda _: None)
            except KubeError as exc:
                log.warning("cluster %s: cannot delete %s %s: %s", self.name, plural, name, exc,
                            extra={"cluster": self.name})


Support = SupportState | dict[str, Any]  # a support object as cached, or as built to write


def fingerprint(obj: dict[str, Any]) -> bytes:
    """What makes two support objects the same, as built or as the API server stores them: the
    hash of the object as built where it carries one (the API server adds defaults to what it
    stores: a Gateway API object's), else its spec (Istio's are stored as sent)."""
    held = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_SPEC)
    return str(held).encode() if held else _json.dumps_sorted(obj.get("spec") or {})


class _RouteObjects:
    """The backend's index, as the cache asks it: which objects are its (the route kind says,
    as data), and keep or forget one."""

    def __init__(self, route: RouteKind, index: RouteIndex) -> None:
        self.takes = route.holds
        self.put = index.put
        self.drop = index.drop


class _SupportView(View[Support]):
    """Support objects: cached by fingerprint, written as built."""

    def __init__(self, cache: ObjectCache, plural: str) -> None:
        self.cache = cache
        self.plural = plural

    def cached(self, name: str) -> Support | None:
        return self.cache.support[self.plural].get(name)

    def decode(self, obj: dict[str, Any]) -> Support:
        return SupportState(obj["metadata"]["name"], str(resource_version(obj)),
                            self.cache.fingerprint(obj))

    def build(self, name: str, state: Support) -> Body:
        assert isinstance(state, dict), "a support object is written as built"
        return state


class _Held(View[int]):
    """Any object as its resourceVersion alone: all a delete needs (a purge)."""

    def __init__(self, cache: ObjectCache, plural: str) -> None:
        self.cache = cache
        self.plural = plural

    def cached(self, name: str) -> int | None:
        return self.cache.rv_of(self.plural, name) or None

    def decode(self, obj: dict[str, Any]) -> int:
        return resource_version(obj)

    def build(self, name: str, state: int) -> Body:
        raise AssertionError("a purge only deletes")


def serialise(body: Body, rv: str | None) -> bytes:
    """The JSON text to send, with ``rv`` (the resourceVersion it replaces) in its metadata.
    Text joined elsewhere (a shard, from kept fragments) opens its metadata before any other
    object member, so the version goes first in it."""
    if isinstance(body, bytes):
        if rv is None:
            return body
        head, opened, tail = body.partition(b'"metadata":{')
        if not opened:
            raise ValueError("an object's JSON text without metadata")
        comma = b"" if tail.startswith(b"}") else b","
        return head + opened + b'"resourceVersion":"' + rv.encode() + b'"' + comma + tail
    if rv is not None:
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": rv}}
    return _json.dumps(body)
