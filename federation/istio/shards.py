"""Shard writers: how a shard's state is read, rendered and remembered by its writer.

A shard's state, as its writer sees it, is its entries (path -> Entry), :data:`SPLIT` for a
split marker, or None when absent. Route mutations raise :class:`Redirect` on a marker (the
route lives one level down now); the split protocol turns a shard into a marker with a mutation
too (:mod:`federation.istio.splits`), holding the shard's writer meanwhile
(:class:`ShardWriter`): a replica does not race itself.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from ..mirror import Body, Change, Mirror, Mutation, ObjectCache, ObjectWriter, View, settle
from ..model import Entry, decode_entries
from ..scope import Scope
from .index import SPLIT as SPLIT
from .index import Shard as Shard
from .index import ShardIndex
from .index import SplitMarker as SplitMarker
from .layout import ShardKey
from .objects import (
    VS,
    ShardMemo,
    build_split_marker,
    is_split_marker,
    shard_body,
    shard_spec_text,
    spec_hash,
)

MEMO_SHARDS = 128  # shards per cluster whose rendered rules are kept


ShardState = Shard | None  # None: absent


class Rerender(dict[str, Entry]):
    """The same entries, to be written again (rendered from a newer configuration): never
    equal to what is stored, so the writer writes them."""

    def __eq__(self, other: object) -> bool:
        return False

    __hash__ = None  # type: ignore[assignment]


def decode_shard(obj: dict[str, Any]) -> Shard:
    return SPLIT if is_split_marker(obj) else decode_entries(obj)


class Redirect(Exception):  # noqa: N818 - a signal, not a failure
    """The shard may no longer take this change (it split): place it again."""


class ShardWriter(ObjectWriter[Shard]):
    """A shard's writer, which a split of the shard holds (:attr:`lock`): its queued writes
    wait, and the split writes ahead of them (:meth:`submit_held`)."""

    lock: asyncio.Lock

    def __init__(self, mirror: Mirror, plural: str, name: str, view: View[Shard]) -> None:
        super().__init__(mirror, plural, name, view)
        self.lock = asyncio.Lock()

    async def submit_held(self, mutation: Mutation[Shard]) -> None:
        """A write by the holder of :attr:`lock` (a split of this shard), ahead of the changes
        queued behind it: the same optimistic loop, without waiting for the lock it holds."""
        assert self.lock.locked(), "submit_held is for the holder of the writer's lock"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        change = Change[Shard](mutation, future)
        try:
            await self.write([change])
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through its future
            settle([change], exc)
        else:
            settle([change], None)
        await future


class ShardView(View[Shard]):
    """Shards: their entries (or a split marker) from the index, built from the memo's text."""

    def __init__(self, scope: Scope, index: ShardIndex, cache: ObjectCache,
                 memo: Callable[[ShardKey], ShardMemo]) -> None:
        self.scope = scope
        self.index = index
        self.held = index.states  # what the writer reads as cached: data, no call here
        self.cache = cache
        self.memo = memo
        self.keys: dict[str, ShardKey] = {}  # shard name -> its key, for every shard written
        self.created: set[str] = set()  # shards this replica created, until put in their roots

    def decode(self, obj: dict[str, Any]) -> Shard:
        return decode_shard(obj)

    def build(self, name: str, state: Shard) -> Body:
        key, scope = self.keys[name], self.scope
        if isinstance(state, SplitMarker):
            return build_split_marker(scope.registry, scope.cluster, key)
        return shard_body(scope.registry, scope.cluster, key, state, self.memo(key))

    def remember(self, name: str, state: Shard, rv: str, created: bool) -> bool:
        if isinstance(state, SplitMarker):
            return False  # read the answer: it is small
        if created:
            self.created.add(name)
        if self.cache.admit(VS, name, rv):
            key = self.keys[name]
            memo = self.memo(key)
            entries = dict(state) if isinstance(state, Rerender) else state
            self.index.put_written(name, key, entries, memo.routes_size, memo.spec_hash)
        return True


class ShardWriters:
    """The writers of one cluster's shards, and the rendered rules of the recently written."""

    def __init__(self, scope: Scope, index: ShardIndex, mirror: Mirror) -> None:
        self.scope = scope
        self.mirror = mirror
        # Rendered rules of recently written shards (LRU): a hot shard is rendered from kept
        # text, and memory stays bounded whatever the table size.
        self._memos: OrderedDict[ShardKey, ShardMemo] = OrderedDict()
        self._rendered_at = scope.generation  # the configuration the memos were rendered from
        self.view = ShardView(scope, index, mirror.cache, self.memo)

    @property
    def created(self) -> set[str]:
        """Shards this replica created, until put in their roots."""
        return self.view.created

    def _memos_now(self) -> OrderedDict[ShardKey, ShardMemo]:
        """The memos, forgotten when the configuration changed (rendered rules depend on it)."""
        if self._rendered_at != self.scope.generation:
            self._memos.clear()
            self._rendered_at = self.scope.generation
        return self._memos

    def memo(self, key: ShardKey) -> ShardMemo:
        memo = self._memos_now().get(key)
        if memo is None:
            memo = self._memos[key] = ShardMemo()
            if len(self._memos) > MEMO_SHARDS:
                self._memos.popitem(last=False)
        else:
            self._memos.move_to_end(key)
        return memo

    def writer(self, key: ShardKey) -> ShardWriter:
        name = key.name(self.scope.instance)
        self.view.keys[name] = key
        return self.mirror.writer_made(VS, name, self.view, ShardWriter)

    def spec_hash_now(self, key: ShardKey, entries: dict[str, Entry]) -> str:
        """The hash of the shard's spec as the current configuration builds it: from the kept
        rules of a recently written shard, else rendered afresh and not kept (a pass over every
        shard must not push the hot ones out of the memo)."""
        memo = self._memos_now().get(key) or ShardMemo()
        return spec_hash(shard_spec_text(self.scope.registry, self.scope.cluster, entries, memo))

    async def rerender(self, key: ShardKey, seen: dict[str, Entry],
                       stale: Callable[[], bool]) -> None:
        """Write the shard again, rendered from the current configuration, if it still holds
        the entries seen (any other write of it renders it anew anyway) and is still
        ``stale`` (another replica may have rendered it meanwhile: a conflict re-reads it).
        Through its writer, so it queues behind route writes and a split like any change."""
        def rerender(held: ShardState) -> ShardState:
            if isinstance(held, dict) and dict.__eq__(held, seen) and stale():
                return Rerender(held)
            return held

        await self.writer(key).submit(rerender)
