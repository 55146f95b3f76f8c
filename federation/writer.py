"""Writes to the cluster: read-modify-write of shard and root VirtualServices with optimistic
concurrency, batched per object.

Many routes share one shard, so concurrent POSTs to one replica are coalesced: while one write
of a shard is in flight, further changes queue and go out together in the next write. Between
replicas, Kubernetes' resourceVersion check (409 Conflict) serialises writers; the loser
re-reads and re-applies its changes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cache import ClusterCache
from .config import Cluster, Registry
from .errors import Conflict, NotFound
from .kube import ClusterClient
from .objects import (
    Entry,
    ShardKey,
    ShardMemo,
    build_root,
    build_shard,
    depth_of_shard_name,
    root_delegates,
    root_name,
    roots_for_shard,
)

log = logging.getLogger(__name__)
MAX_CONFLICT_RETRIES = 20


@dataclass
class _Change:
    apply: Callable[[Any], Any]
    future: asyncio.Future[None]


# A mutation takes the object's current state (or None) and returns the new state; returning
# the state unchanged means "nothing to do", and no write is made for it.
Mutation = Callable[[Any], Any]


class ObjectWriter:
    """Serialises and batches the changes to one object in one cluster."""

    def __init__(
        self,
        client: ClusterClient,
        cache: ClusterCache,
        plural: str,
        name: str,
        decode: Callable[[dict[str, Any] | None], Any],
        encode: Callable[[Any], dict[str, Any] | None],
    ) -> None:
        self.client = client
        self.cache = cache
        self.plural = plural
        self.name = name
        self.decode = decode
        self.encode = encode
        self.pending: list[_Change] = []
        # A shard writer's state is the shard's entries: the cache can take them as they are.
        self.hands_entries = False
        self.running = False
        self.created = False

    async def submit(self, mutation: Mutation) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(_Change(mutation, future))
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._drain())
        await future

    async def _drain(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                try:
                    await self._write(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to every waiter
                    for change in batch:
                        if not change.future.done():
                            change.future.set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                else:
                    for change in batch:
                        if not change.future.done():
                            change.future.set_result(None)
        finally:
            self.running = False

    async def _write(self, batch: list[_Change]) -> None:
        current = self.cache.objects[self.plural].get(self.name)
        for _ in range(MAX_CONFLICT_RETRIES):
            before = self.decode(current)
            state = before
            for change in batch:
                state = change.apply(state)
            if state == before:
                return  # nothing to change: no write at all
            body = self.encode(state)
            try:
                if body is None:
                    return
                if current is None:
                    stored = await self.client.create(self.plural, body)
                    self.created = True
                else:
                    body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
                    stored = await self.client.replace(self.plural, body)
                self.cache.apply(
                    self.plural, "MODIFIED", stored, state if self.hands_entries else None
                )
                return
            except (Conflict, NotFound):
                # Someone else wrote (or removed) it: read the truth and apply our changes again.
                try:
                    current = await self.client.get(self.plural, self.name)
                    self.cache.apply(self.plural, "MODIFIED", current)
                except NotFound:
                    current = None
        raise Conflict(
            f"update of {self.plural}/{self.name} kept conflicting",
            cluster=self.client.name,
            verb="update",
            status=409,
        )


class ClusterWriter:
    """All writes to one cluster: route entries into shards, shards into roots."""

    def __init__(
        self, registry: Registry, cluster: Cluster, client: ClusterClient, cache: ClusterCache
    ) -> None:
        self.registry = registry
        self.cluster = cluster
        self.client = client
        self.cache = cache
        self.writers: dict[str, ObjectWriter] = {}
        self.memos: dict[ShardKey, ShardMemo] = {}

    def reconfigure(self, registry: Registry, cluster: Cluster) -> None:
        self.registry = registry
        self.cluster = cluster
        self.memos.clear()  # rendered rules depend on the configuration

    def _memo(self, key: ShardKey) -> ShardMemo:
        memo = self.memos.get(key)
        if memo is None:
            memo = self.memos[key] = ShardMemo()
        return memo

    def _writer(
        self,
        name: str,
        decode: Callable[[dict[str, Any] | None], Any],
        encode: Callable[[Any], dict[str, Any] | None],
    ) -> ObjectWriter:
        writer = self.writers.get(name)
        if writer is None:
            writer = ObjectWriter(self.client, self.cache, "virtualservices", name, decode, encode)
            self.writers[name] = writer
        return writer

    def _shard_writer(self, key: ShardKey) -> ObjectWriter:
        writer = self._writer(
            key.name(self.registry.instance),
            decode=lambda obj: dict(self.cache.entries_of(obj)) if obj is not None else None,
            encode=lambda entries: None
            if entries is None
            else build_shard(self.registry, self.cluster, key, entries, self._memo(key)),
        )
        writer.hands_entries = True
        return writer

    def _root_writer(self, host_key: str) -> ObjectWriter:
        return self._writer(
            root_name(self.registry.instance, host_key),
            decode=lambda obj: set(root_delegates(obj)) if obj is not None else None,
            encode=lambda shards: None
            if shards is None
            else build_root(self.registry, self.cluster, host_key, sorted(shards)),
        )

    async def set_entry(self, key: ShardKey, entry: Entry) -> None:
        def put(entries: dict[str, Entry] | None) -> dict[str, Entry] | None:
            held = (entries or {}).get(entry.path)
            if held is not None and (held.last_activity, held.owner) > (entry.last_activity, entry.owner):
                return entries  # a newer write of this route (another replica's) stays
            entries = dict(entries or {})
            entries[entry.path] = entry
            return entries

        await self._shard_writer(key).submit(put)
        await self.ensure_in_roots(key)

    async def remove_entry(
        self, key: ShardKey, path: str, older_than: tuple[str, str] | None = None
    ) -> None:
        """Remove a route's entry; with ``older_than`` (written at, owner) only a copy that
        loses to that write by the table's rule, so two racing moves never remove each other."""

        def drop(entries: dict[str, Entry] | None) -> dict[str, Entry] | None:
            if entries is None or path not in entries:
                return entries
            held = entries[path]
            if older_than is not None and (held.last_activity, held.owner) >= older_than:
                return entries
            entries = dict(entries)
            del entries[path]
            return entries

        await self._shard_writer(key).submit(drop)

    def host_roots(self) -> set[str]:
        """Host keys of the host roots this cluster has or needs, from the cache."""
        hosts: set[str] = set()
        for _name, obj in self.cache.objects["virtualservices"].items():
            host = (obj["metadata"].get("annotations") or {}).get("federation.jupyter.org/host")
            if host and host not in self.cluster.hosts:
                hosts.add(host)
        return hosts

    def plain_top_shards(self) -> set[str]:
        """Plain (no host) depth-0 shards: the "/" route, which every host root delegates to."""
        out = set()
        for name, obj in self.cache.objects["virtualservices"].items():
            meta = obj["metadata"]
            if (meta.get("labels") or {}).get("federation.jupyter.org/role") != "shard":
                continue
            if depth_of_shard_name(name) == 0 and not (meta.get("annotations") or {}).get(
                "federation.jupyter.org/host"
            ):
                out.add(name)
        return out

    async def ensure_in_roots(self, key: ShardKey) -> None:
        """Make every root that must delegate to this shard do so (idempotent, cached)."""
        shard = key.name(self.registry.instance)
        for host_key in roots_for_shard(self.cluster, key.host, key.depth, self.host_roots()):
            root = self.cache.objects["virtualservices"].get(
                root_name(self.registry.instance, host_key)
            )
            wanted = {shard}
            if host_key:
                wanted |= self.plain_top_shards()
            if root is not None and wanted <= set(root_delegates(root)):
                continue

            def add(shards: set[str] | None, wanted: set[str] = wanted) -> set[str]:
                return set(shards or set()) | wanted

            await self._root_writer(host_key).submit(add)

    async def remove_from_root(self, host_key: str, shard: str) -> None:
        def drop(shards: set[str] | None) -> set[str] | None:
            if shards is None or shard not in shards:
                return shards
            return set(shards) - {shard}

        await self._root_writer(host_key).submit(drop)
