"""The Istio backend: routes on shard VirtualServices, delegated to by one root per host.

A route's put and remove are mutations of its shard (found by following split markers down
its tree, :mod:`federation.istio.layout`), after which the shard is made reachable from its
roots (:mod:`federation.istio.roots`) and split if it grew too big
(:mod:`federation.istio.splits`). Its own tidy-up: shards join their roots, empty ones go,
interrupted splits finish, first-release shards migrate into the tree, shards and roots built
from an older configuration are rendered again (:mod:`federation.istio.rerender`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import Conflict, KubeError, Rejected
from ..kube import Resource
from ..mesh import GROUP, KINDS, VERSION, support_objects
from ..mirror import Mirror, Mutation
from ..model import Entry, Rank, loses_to, newest
from ..placement import Destination
from ..routespec import RouteKey
from ..scope import Scope
from ..seam import Kinds, Pace
from .check import ROUTE
from .index import ShardIndex
from .index import ShardState as HeldShard
from .layout import LEVELS, ShardKey, locate
from .objects import VS, ShardFull
from .rerender import Rerenderer
from .roots import Roots
from .shards import Redirect, Shard, ShardState, ShardWriters
from .splits import Splitter

log = logging.getLogger("federation.istio")
KIND_SET = Kinds(
    resources={plural: Resource(GROUP, VERSION, plural) for plural in KINDS},
    names={kind: plural for plural, kind in KINDS.items()},
    watched=tuple(KINDS),
    route=ROUTE,
    # Objects per list page: a page of shards is ~4 MB of JSON, of support objects ~0.5 MB.
    pages=((VS, 250),),
)


class IstioBackend:
    def __init__(self, scope: Scope, mirror: Mirror, index: ShardIndex, capacity: int) -> None:
        """With the cluster's mirror (made from :data:`KIND_SET` and ``index``). Rendered
        rules are kept per configuration, and every shard and root is compared with a new
        one at the next pass (both told by ``scope.generation``)."""
        self.scope = scope
        self.mirror = mirror
        self.index = index
        self.shards = ShardWriters(scope, index, mirror)
        self.roots = Roots(scope, index, mirror, self.shards)
        self.splits = Splitter(scope, index, mirror, self.shards, self.roots, capacity)
        self.rerenderer = Rerenderer(scope, index, self.shards, self.roots)

    # -- route entries ----------------------------------------------------------------------

    async def put(self, entry: Entry, still: Callable[[], bool] | None = None) -> None:
        """Store a route's entry in its shard (unless a newer write of it is there) and make
        the shard reachable from its roots; then drop older copies from other shards.

        ``still``: checked when the write is made; False leaves everything as it is (a
        migration whose route was deleted meanwhile must not bring it back)."""
        applied = [False]

        def put(entries: ShardState) -> ShardState:
            if not isinstance(entries, dict | None):
                raise Redirect(entry.path)
            if still is not None and not still():
                return entries
            entries = {} if entries is None else entries
            entries[entry.path] = newest(entries.get(entry.path), entry)
            applied[0] = True
            return entries

        shard = await self._submit(RouteKey.parse(entry.path), put)
        if not applied[0]:
            return
        await self.roots.ensure_in_roots(shard)
        self.splits.maybe(shard)
        # Another live copy in this shard's own tree can only be this very write, carried into
        # a child by a split that finished meanwhile: never drop that one.
        others = [s for s in self.index.live_copies(entry.path) if s != shard
                  and (s.legacy or (s.host, s.depth) != (shard.host, shard.depth))]
        await asyncio.gather(*(self._drop(s, entry.path, entry.rank, inclusive=True)
                               for s in others))

    async def remove(self, path: str, older_than: Rank | None = None) -> None:
        """Remove a route's entry; with ``older_than`` only a copy that loses to that write, so
        two racing moves never remove each other."""
        shards = (self.index.live_copies(path)
                  or [locate(RouteKey.parse(path), self.index.is_split)])
        await asyncio.gather(*(self._drop(s, path, older_than, inclusive=False) for s in shards))

    async def refresh(self, path: str) -> None:
        """Read the shard a route would be in (a write through another replica that this
        cache has not heard of yet), following markers down. Absent: nothing to learn;
        unreachable: ClusterUnavailable, for the caller cannot tell the route is not there."""
        key = RouteKey.parse(path)
        for _ in range(LEVELS):
            shard = locate(key, self.index.is_split)
            try:
                if await self.mirror.reread(VS, shard.name(self.scope.instance)) is None:
                    return
            except Rejected:
                return
            if not self.index.is_split(shard):
                return

    async def _submit(self, key: RouteKey, mutation: Mutation[Shard]) -> ShardKey:
        """Apply a mutation to the shard the route belongs in. Not a retry: it follows split
        markers down the route's tree (one level per Redirect), splitting first a shard the
        route's data no longer fits in (so at most two steps per level)."""
        for _ in range(2 * LEVELS):
            shard = locate(key, self.index.is_split)
            try:
                await self.shards.writer(shard).submit(mutation)
                return shard
            except Redirect:
                continue
            except ShardFull:
                await self.splits.now(shard)
        raise Conflict(f"no stable shard for {key.path} on cluster {self.scope.name!r}",
                       cluster=self.scope.name, verb="update", status=409)

    async def _drop(self, shard: ShardKey, path: str, rank: Rank | None, inclusive: bool) -> None:
        def drop(entries: ShardState) -> ShardState:
            if not isinstance(entries, dict | None):
                raise Redirect(path)
            held = None if entries is None else entries.get(path)
            if held is None or not loses_to(held, rank, inclusive):
                return entries
            assert entries is not None
            del entries[path]
            return entries

        try:
            await self.shards.writer(shard).submit(drop)
        except (Redirect, ShardFull):
            # The shard split meanwhile (or must split first): the route is in one of its
            # children now, which this cache may not have heard of: read them before dropping,
            # or the drop would find nothing to remove and the route would stay.
            await self.refresh(path)
            await self._submit(RouteKey.parse(path), drop)

    # -- support objects --------------------------------------------------------------------

    def support_objects(self, dest: Destination) -> list[dict[str, Any]]:
        """A ServiceEntry (and DestinationRule) for a destination outside the mesh's Services."""
        return support_objects(self.scope.registry, self.scope.cluster, dest)

    # -- its own tidy-up --------------------------------------------------------------------

    async def tidy(self, grace: float, pace: Pace) -> list[dict[str, Any]]:
        """Render again what an older configuration built; repair and tidy the shards and
        roots; no extra objects to keep."""
        await self.rerenderer.run(pace)
        await self._tidy_shards(grace, pace)
        await self.splits.settle()
        await self.roots.tidy(grace, pace)
        return []

    async def _tidy_shards(self, grace: float, pace: Pace) -> None:
        now = time.monotonic()
        for name, state in list(self.index.shards.items()):
            await pace()
            if state.split:
                continue  # markers stay: every replica finds routes through them
            if not self.index.live(state):
                await self.splits.resume(state.key)
            elif state.key.legacy and state.entries:
                await self._migrate(state, pace)
            elif state.entries:
                self.mirror.used("shard", name)
                await self.roots.ensure_in_roots(state.key)
            elif self.mirror.unused_for("shard", name, now) >= grace:
                self.mirror.used("shard", name)
                await self._delete_empty(state)

    async def _delete_empty(self, state: HeldShard) -> None:
        """An empty shard leaves its roots, then goes, unless written meanwhile (then it
        stays, back in its roots)."""
        await self.roots.remove_from_roots(state.key)
        seen: list[ShardState] = []

        def drop(held: ShardState) -> ShardState:
            seen.append(held)
            return None if isinstance(held, dict) and not held else held

        try:
            await self.shards.writer(state.key).submit(drop)
        except KubeError:
            pass  # unreachable now: it stays, and the next pass looks again
        # Written meanwhile (not empty): back into its roots. Gone (another replica deleted it;
        # the cache hears of it through the watch): left out.
        gone = bool(seen) and seen[-1] is None
        if not gone and state.name in self.index.shards:
            await self.roots.ensure_in_roots(state.key)

    async def _migrate(self, state: HeldShard, pace: Pace) -> None:
        """Move a legacy shard's routes into the shard tree, a slice at a time: each is written
        to its new shard (and root) before it leaves the old one, so it always answers."""
        current = [e for p, e in state.entries.items()
                   if (self.index.entries.get(p) or ("",))[0] == state.name]

        def still(entry: Entry) -> Callable[[], bool]:
            # Still the route's current copy, in the legacy shard (not deleted meanwhile).
            return lambda: self.index.entries.get(entry.path) == (state.name, entry)

        for i in range(0, len(current), 200):
            await asyncio.gather(*(self.put(e, still(e)) for e in current[i:i + 200]))
            await pace()
        log.info("cluster %s: moved %d routes out of legacy shard %s", self.scope.name,
                 len(current), state.name,
                 extra={"cluster": self.scope.name, "object": state.name})

    # -- what it shows ----------------------------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        return None  # nothing beyond the watches' health: Istio reports no per-route status
