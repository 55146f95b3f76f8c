"""Shards and roots rendered again when the configuration they were built from changed.

A shard's rules are rendered from the configuration (the user Service's name, namespace and
port, the cluster domain, http options) when it is written; a root's hosts and gateway too. A
restart or reload with a changed configuration would leave them as built before, so after a
start and after each reload one pass compares, for every shard with routes and every root, the
hash of its spec as the current configuration builds it with the hash stored on it (the
spec-hash annotation, or the stored spec's own hash for an object written without one), and
writes again only those that differ, each through its writer (queued behind route writes and
splits like any change). Later passes look only at shards and roots read from the cluster since
without a spec hash (written by an older release, during a rolling update): our own writes are
rendered from the current configuration, and another replica's from its own, which its own
pass after its reload brings in line (rewriting them here would make two replicas a reload
reaches at different moments rewrite each other's objects every pass).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import KubeError
from ..scope import Scope
from ..seam import Pace
from .index import RootState, ShardIndex, ShardState
from .objects import ShardFull
from .roots import Roots
from .shards import ShardWriters

log = logging.getLogger("federation.istio")


class Rerenderer:
    def __init__(self, scope: Scope, index: ShardIndex, shards: ShardWriters,
                 roots: Roots) -> None:
        self.scope = scope
        self.index = index
        self.shards = shards
        self.roots = roots
        # The configuration the last pass over every shard and root compared them with
        # (None: none yet, a start); a reload moves the scope's generation.
        self.compared: int | None = None

    async def run(self, pace: Pace) -> None:
        """One pass: every shard and root after a start or reload, else those read since."""
        generation = self.scope.generation
        everything = self.compared != generation
        names = list(self.index.shards) + list(self.index.roots) if everything \
            else list(self.index.changed)
        if everything:
            self.index.changed.clear()
        rewritten = 0
        for name in names:
            await pace()
            self.index.changed.discard(name)  # as visited: a pass cut short leaves the rest
            try:
                rewritten += await self._shard(name) or await self._root(name)
            except ShardFull:
                self.index.changed.add(name)  # a write batched with it splits the shard first
            except KubeError as exc:
                self.index.changed.add(name)  # unreachable, or written meanwhile: next pass
                log.warning("cluster %s: cannot render %s again: %s", self.scope.name, name,
                            exc, extra={"cluster": self.scope.name, "object": name,
                                        "status": exc.status})
        if everything:
            self.compared = generation
        if rewritten:
            log.info("cluster %s: %d VirtualServices rendered again from the configuration",
                     self.scope.name, rewritten, extra={"cluster": self.scope.name})

    async def _shard(self, name: str) -> bool:
        state = self.index.shards.get(name)
        if state is None or not state.entries or state.key.legacy \
                or not self.index.live(state):
            return False  # markers hold no rules; legacy shards' routes move; splits finish
        if self._holds_unclaimed_edge(state):
            # Looked at again every pass, so the claim's return re-points it.
            self.index.changed.add(name)
            return False
        if self._shard_current(state):
            return False
        await self.shards.rerender(state.key, state.entries, self._still(name, state.spec))
        self._look_again_unless(name, self._shard_current)
        return True

    def _shard_current(self, state: ShardState) -> bool:
        return self.shards.spec_hash_now(state.key, state.entries) == state.spec

    def _holds_unclaimed_edge(self, state: ShardState) -> bool:
        """An edge rule sends traffic to its owner's hosts: not re-pointed at a host this hub
        does not hold there (another hub's users answer for it)."""
        return any(e.edge and not self.scope.claimed(e.owner) for e in state.entries.values())

    async def _root(self, name: str) -> bool:
        root = self.index.roots.get(name)
        if root is None or self._root_current(root):
            return False
        await self.roots.rerender(root.host_key, root.delegates, self._still(name, root.spec))
        self._look_again_unless(name, self._root_current)
        return True

    def _root_current(self, root: RootState) -> bool:
        return self.roots.spec_hash_now(root.host_key, root.delegates) == root.spec

    def _still(self, name: str, stale: str) -> Callable[[], bool]:
        """Whether the shard or root still holds the spec this pass found stale, when its
        rewrite is made (False: written meanwhile, the rewrite is left out)."""

        def still_stale() -> bool:
            held = self.index.shards.get(name) or self.index.roots.get(name)
            return held is not None and held.spec == stale

        return still_stale

    def _look_again_unless(self, name: str, current: Callable[[Any], bool]) -> None:
        """A rewrite can be absorbed by a change batched with it that left the object as it
        was (a root's delegate added twice): then the next pass looks again."""
        held = self.index.shards.get(name) or self.index.roots.get(name)
        if held is not None and not current(held):
            self.index.changed.add(name)
