"""Shard writers: how a shard's state is read, rendered and remembered by its writer.

A shard's state, as its writer sees it, is its entries (path -> Entry), :data:`SPLIT` for a
split marker, or None when absent. Route mutations raise :class:`~federation.writer.Redirect` on
a marker (the route lives one level down now); the split protocol turns a shard into a marker
with a mutation too (:mod:`federation.istio.splits`).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from .. import _json
from ..mirror import Mirror
from ..model import Entry, decode_entries
from ..scope import Scope
from ..writer import ObjectWriter
from .index import ShardIndex
from .layout import ShardKey
from .objects import VS, ShardMemo, build_split_marker, is_split_marker, shard_body

MEMO_SHARDS = 128  # shards per cluster whose rendered rules are kept


class SplitMarker:
    """The state of a shard that split: no routes of its own; look in its children."""

    def __repr__(self) -> str:
        return "SPLIT"


SPLIT = SplitMarker()
ShardState = dict[str, Entry] | SplitMarker | None


def decode_shard(obj: dict[str, Any]) -> dict[str, Entry] | SplitMarker:
    return SPLIT if is_split_marker(obj) else decode_entries(obj)


def copy_shard(state: ShardState) -> ShardState:
    return dict(state) if isinstance(state, dict) else state


class ShardWriters:
    """The writers of one cluster's shards, and the rendered rules of the recently written."""

    def __init__(self, scope: Scope, index: ShardIndex, mirror: Mirror) -> None:
        self.scope = scope
        self.index = index
        self.mirror = mirror
        # Rendered rules of recently written shards (LRU): a hot shard is rendered from kept
        # text, and memory stays bounded whatever the table size.
        self._memos: OrderedDict[ShardKey, ShardMemo] = OrderedDict()
        self.created: set[str] = set()  # shards this replica created, until put in their roots

    def forget_rendered(self) -> None:
        self._memos.clear()  # rendered rules depend on the configuration

    def memo(self, key: ShardKey) -> ShardMemo:
        memo = self._memos.get(key)
        if memo is None:
            memo = self._memos[key] = ShardMemo()
            if len(self._memos) > MEMO_SHARDS:
                self._memos.popitem(last=False)
        else:
            self._memos.move_to_end(key)
        return memo

    def writer(self, key: ShardKey) -> ObjectWriter[Any]:
        name = key.name(self.scope.instance)

        def cached() -> tuple[ShardState, str | None]:
            state = self.index.shards.get(name)
            if state is None:
                return None, None
            return (SPLIT if state.split else state.entries), state.rv

        def render(state: dict[str, Entry] | SplitMarker, rv: str | None) -> bytes:
            scope = self.scope
            if isinstance(state, SplitMarker):
                marker = build_split_marker(scope.registry, scope.cluster, key)
                if rv is not None:
                    marker["metadata"]["resourceVersion"] = rv
                return _json.dumps(marker)
            return shard_body(scope.registry, scope.cluster, key, state, self.memo(key), rv)

        def remember(state: dict[str, Entry] | SplitMarker, rv: str, created: bool) -> bool:
            if isinstance(state, SplitMarker):
                return False  # read the answer: it is small
            if created:
                self.created.add(name)
            if self.mirror.cache.admit(VS, name, rv):
                self.index.put_written(name, rv, key, state, self.memo(key).routes_size)
            return True

        return self.mirror.writer(VS, name, cached=cached, decode=decode_shard, render=render,
                                  copy=copy_shard, remember=remember)
