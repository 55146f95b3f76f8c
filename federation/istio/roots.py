"""Root VirtualServices: one per host, delegating to its shards deepest-first.

A root's state, as its writer sees it, is the set of shard names it delegates to (None:
absent). Every change is a mutation of that set; an empty host root is deleted by one too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from ..errors import KubeError
from ..mirror import Body, Mirror, ObjectWriter, View
from ..model import ANN_SPEC
from ..scope import Scope
from ..seam import Pace
from .index import ShardIndex
from .layout import ShardKey
from .objects import VS, build_root, root_delegates, root_name, roots_for_shard
from .shards import ShardWriters


class RerenderDelegates(set[str]):
    """The same delegates, to be written again (rendered from a newer configuration): never
    equal to what is stored, so the writer writes them."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


class RootView(View[set[str]]):
    """Roots: the names of the shards they delegate to, from the index."""

    def __init__(self, scope: Scope, index: ShardIndex) -> None:
        self.scope = scope
        self.index = index
        self.hosts: dict[str, str] = {}  # root name -> its host key, for every root written

    def cached(self, name: str) -> set[str] | None:
        state = self.index.roots.get(name)
        return None if state is None else set(state.delegates)

    def decode(self, obj: dict[str, Any]) -> set[str]:
        return set(root_delegates(obj))

    def build(self, name: str, state: set[str]) -> Body:
        return build_root(self.scope.registry, self.scope.cluster, self.hosts[name], sorted(state))


class Roots:
    def __init__(self, scope: Scope, index: ShardIndex, mirror: Mirror,
                 shards: ShardWriters) -> None:
        self.scope = scope
        self.index = index
        self.mirror = mirror
        self.shards = shards
        self.view = RootView(scope, index)

    def writer(self, host_key: str) -> ObjectWriter[set[str]]:
        name = root_name(self.scope.instance, host_key)
        self.view.hosts[name] = host_key
        return self.mirror.writer(VS, name, self.view)

    def host_roots(self) -> set[str]:
        """Host keys of the host roots this cluster has or needs."""
        return ((self.index.root_hosts | set(self.index.shard_hosts))
                - set(self.scope.cluster.hosts))

    def _for_shard(self, key: ShardKey) -> set[str]:
        return roots_for_shard(self.scope.cluster, key.host, key.depth, self.host_roots())

    async def ensure_in_roots(self, key: ShardKey) -> None:
        """Make every root that must delegate to this shard do so (idempotent, cached)."""
        shard = key.name(self.scope.instance)
        created = shard in self.shards.created
        self.shards.created.discard(shard)
        for host_key in self._for_shard(key):
            name = root_name(self.scope.instance, host_key)
            if created:
                # A shard we just (re)created may have been taken out of the root by another
                # replica's housekeeping that this cache has not heard of: read the root.
                await self.mirror.reread(VS, name)
            root = self.index.roots.get(name)
            wanted = {shard} | (set(self.index.plain_tops) if host_key else set())
            if root is not None and wanted <= root.delegate_set:
                continue

            def add(shards: set[str] | None, wanted: set[str] = wanted) -> set[str]:
                return (shards or set()) | wanted

            await self.writer(host_key).submit(add)

    async def remove_from_roots(self, key: ShardKey) -> None:
        shard = key.name(self.scope.instance)
        for host_key in self._for_shard(key):
            await self.remove_delegate(host_key, shard)

    async def remove_delegate(self, host_key: str, shard: str) -> None:
        def drop(shards: set[str] | None) -> set[str] | None:
            if shards is not None:
                shards.discard(shard)
            return shards

        await self.writer(host_key).submit(drop)

    def spec_hash_now(self, host_key: str, delegates: tuple[str, ...]) -> str:
        """The hash of the root's spec as the current configuration builds it."""
        built = build_root(self.scope.registry, self.scope.cluster, host_key, list(delegates))
        return str(built["metadata"]["annotations"][ANN_SPEC])

    async def rerender(self, host_key: str, seen: tuple[str, ...],
                       stale: Callable[[], bool]) -> None:
        """Write the root again, rendered from the current configuration, if it still lists
        the delegates seen (any other write of it renders it anew anyway) and is still
        ``stale`` (another replica may have rendered it meanwhile: a conflict re-reads it)."""
        def rerender(held: set[str] | None) -> set[str] | None:
            if held is not None and set.__eq__(held, set(seen)) and stale():
                return RerenderDelegates(held)
            return held

        await self.writer(host_key).submit(rerender)

    async def tidy(self, grace: float, pace: Pace) -> None:
        """Delegates to shards that are gone go; so do host roots left with none, after
        ``grace`` seconds (each by a mutation: a concurrent write wins)."""
        now = time.monotonic()
        default = root_name(self.scope.instance, "")
        for name, root in list(self.index.roots.items()):
            await pace()
            for shard in root.delegates:
                state = self.index.shards.get(shard)
                if state is not None and not state.split:
                    self.mirror.used("delegate", shard)
                elif self.mirror.unused_for("delegate", shard, now) >= grace:
                    self.mirror.used("delegate", shard)
                    await self.remove_delegate(root.host_key, shard)
            root = self.index.roots.get(name) or root
            if root.delegates or name == default:
                self.mirror.used("root", name)
            elif self.mirror.unused_for("root", name, now) >= grace:
                self.mirror.used("root", name)
                with contextlib.suppress(KubeError):  # the next pass judges again
                    await self.writer(root.host_key).submit(lambda shards: shards or None)
