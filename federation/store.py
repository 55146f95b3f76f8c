"""One cluster's store: the only owner of that cluster's cache and the only writer to it.

Everything the service does to a cluster goes through :class:`ClusterStore`'s public surface:

* ``put_entry`` / ``remove_entry``: a route's entry into (out of) its shard, and the shard into
  its roots; shards split as they grow (see :mod:`federation.layout`);
* ``ensure_object``: a support object (ServiceEntry, DestinationRule) as built;
* ``entry``, ``paths``, ``route_count``, ``health``: what it holds;
* ``tidy``: its own housekeeping (roots follow shards, unused objects go, interrupted splits
  finish, legacy shards migrate).

The cache is fed by a list-then-watch per kind, through the same Kubernetes access layer as
every write (:mod:`federation.kube`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from . import _json, logs, metrics
from ._batch import Codec, ObjectWriter, Redirect
from .cache import ClusterCache, RouteTable, ShardState, canonical
from .config import Cluster, Registry
from .errors import ClusterUnavailable, Conflict, InvalidRoute, KubeError, NotFound, Rejected
from .kube import ClusterClient, Resource, resource_version_of
from .layout import MAX_LEVEL, ShardKey, locate, partition
from .objects import (
    GROUP,
    KINDS,
    SPLIT_ROUTES_BYTES,
    VERSION,
    Entry,
    ShardFull,
    ShardMemo,
    build_root,
    build_shard,
    build_split_marker,
    decode_entries,
    entry_destination,
    is_split_marker,
    plural_of,
    root_delegates,
    root_name,
    roots_for_shard,
    selector,
    shard_body,
    support_objects,
)
from .routespec import RouteKey
from .settings import Settings

log = logging.getLogger(__name__)
RESOURCES = {plural: Resource(GROUP, VERSION, plural) for plural in KINDS}
VS = "virtualservices"
# Objects per list page: a page of shards is ~4 MB of JSON, of support objects ~0.5 MB.
LIST_PAGE = {VS: 250}
LIST_PAGE_DEFAULT = 1000
MEMO_SHARDS = 128  # shards per cluster whose rendered rules are kept
Rank = tuple[str, str]  # (written at, owner): the table's order between two writes of a route


def _rank(entry: Entry) -> Rank:
    return (entry.last_activity, entry.owner)


class Pacer:
    """Lets other work run on the event loop at least every ``budget`` seconds of a long pass."""

    def __init__(self, budget: float = 0.005) -> None:
        self.budget = budget
        self.mark = time.perf_counter()

    async def __call__(self) -> None:
        if time.perf_counter() - self.mark >= self.budget:
            await asyncio.sleep(0)
            self.mark = time.perf_counter()


async def purge(client: ClusterClient, objects: list[tuple[Resource, str]]) -> None:
    """Delete these objects (already gone is as good); failures are logged, not raised."""
    for res, name in objects:
        try:
            await client.delete(res, name)
        except NotFound:
            pass
        except KubeError as exc:
            log.warning("cluster %s: cannot delete %s %s: %s", client.name, res.plural, name,
                        exc, extra={"cluster": client.name})


class StoreBase:
    """What both backends' stores share: lifecycle, the list-then-watch of each kind into the
    cache, the probe fields, and the queries over the cache's route index (``cache.entries``:
    path -> (object name, entry))."""

    registry: Registry
    cluster: Cluster
    client: ClusterClient
    settings: Settings
    cache: Any
    resources: dict[str, Resource] = RESOURCES  # plural -> where its objects live
    optional: frozenset[str] = frozenset()  # kinds a cluster may not serve (CRD not installed)

    def _init_base(self, registry: Registry, cluster: Cluster, client: ClusterClient,
                   settings: Settings) -> None:
        self.registry = registry
        self.cluster = cluster
        self.client = client
        self.settings = settings
        self._tasks: set[asyncio.Task[None]] = set()
        self._watches: list[asyncio.Task[None]] = []
        self._own_writes: set[str] = set()  # resourceVersions of our writes, until echoed
        self._created: set[str] = set()  # shards this store created, until put in their roots
        self._unused_since: dict[tuple[str, str], float] = {}  # housekeeping's grace clocks
        # Filled by the federation's probe.
        self.reachable: bool | None = None
        self.latency: float | None = None
        self.version: str | None = None
        self.last_probe: float | None = None
        self.probe_error: str | None = None

    async def _absent(self, plural: str) -> None:
        """A kind this cluster does not serve: nothing of it to hear about (checked again
        every minute, so installing its CRD later is noticed)."""
        health = self.cache.health
        health.synced[plural] = True
        health.last_error = f"{plural}: not served by this cluster (CRD not installed?)"
        if all(health.synced.values()):
            health.ever_synced = True
            health.state = "synced"
        await asyncio.sleep(60)

    @property
    def name(self) -> str:
        return self.cluster.name

    @property
    def health(self) -> Any:
        return self.cache.health

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self._watches = [self._spawn(self._watch(plural)) for plural in self.resources]

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

    def adopt_table(self, table: RouteTable) -> None:
        """Publish this store's routes into ``table`` (a reload swapping a new store in)."""
        self.cache.table = table
        for path, (_, entry) in self.cache.entries.items():
            if entry.owner == self.name and not entry.edge:
                table.update(self.name, path, entry)

    def withdraw(self) -> None:
        """Take this store's routes out of the table (a reload retiring it)."""
        for path in list(self.cache.entries):
            self.cache.table.update(self.name, path, None)
        # Its watches run until it stops (and see its objects go, when its cluster switched
        # backends): what they hear must not reach the table its successor now fills.
        self.cache.table = RouteTable()

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- watching ------------------------------------------------------------------------------

    async def _watch(self, plural: str) -> None:
        """List, then watch from the list's version; resume after a break, relist after 410."""
        res, sel = self.resources[plural], selector(self.registry.instance)
        rv: str | None = None
        failures = 0
        while True:
            try:
                if rv is None:
                    rv = await self._relist(res, sel, plural)
                self._watch_state("synced", None, plural)
                failures = 0
                rv = await self._follow(res, sel, plural, rv)
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                if exc.status == 410:
                    rv = None
                if isinstance(exc, NotFound) and plural in self.optional:
                    await self._absent(plural)
                    continue
                self._restart(plural, "error", str(exc))
                await asyncio.sleep(self.client.backoff.delay(min(failures, 5), exc))
                failures += 1

    async def _relist(self, res: Resource, sel: str, plural: str) -> str:
        """List in pages (memory stays flat with the table's size); returns the list's version."""
        listed: set[str] = set()
        token: str | None = None
        list_rv: str | None = None
        while True:
            limit = LIST_PAGE.get(res.plural, LIST_PAGE_DEFAULT)
            page = await self.client.list(res, sel, limit=limit, continue_token=token)
            meta = page.get("metadata") or {}
            list_rv = list_rv or str(meta["resourceVersion"])
            items = page.get("items") or []
            listed.update(i["metadata"]["name"] for i in items)
            self.cache.apply_page(plural, items)
            token = meta.get("continue")
            if not token:
                break
            await asyncio.sleep(0)  # let requests in between pages
        self.cache.end_relist(plural, listed, int(list_rv))
        return list_rv

    async def _follow(self, res: Resource, sel: str, plural: str, rv: str) -> str | None:
        """One watch request; returns where to resume (None: relist)."""
        async for line in self.client.watch(res, sel, rv, self.settings.watch_timeout):
            echoed = resource_version_of(line)
            if echoed is not None and echoed in self._own_writes:
                # The echo of our own write, already in the cache: not worth parsing.
                self._own_writes.discard(echoed)
                rv = echoed
                continue
            try:
                event = _json.loads(line)
            except ValueError as exc:
                raise ClusterUnavailable(f"watch on cluster {self.name!r}: malformed event",
                                         cluster=self.name, verb="watch") from exc
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                code = obj.get("code")
                self._restart(plural, "expired" if code == 410 else "error",
                              f"watch: {obj.get('message', code)}")
                return None
            new_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if new_rv:
                rv = str(new_rv)
            if kind != "BOOKMARK":
                self.cache.apply(plural, str(kind), obj)
                self.cache.health.last_event = time.time()
        metrics.WATCH_RESTARTS.labels(self.name, plural, "closed").inc()
        return rv

    def _watch_state(self, state: str, error: str | None, plural: str) -> None:
        health = self.cache.health
        if error is not None:
            health.last_error = error
        before = health.state
        if state == "failing" or before != "failing" or all(health.synced.values()):
            health.state = state
        if before == "failing" and health.state == "synced":
            log.info("cluster %s: watch of %s resumed", self.name, plural,
                     extra={"cluster": self.name, "kind": plural, "event": "watch-resumed"})

    def _restart(self, plural: str, reason: str, error: str) -> None:
        self.cache.health.watch_restarts += 1
        metrics.WATCH_RESTARTS.labels(self.name, plural, reason).inc()
        state = "resyncing" if reason == "expired" else "failing"
        if self.cache.health.state != state:
            logs.watch_restarted(self.name, plural, f"{reason}: {error}",
                                 relist=reason == "expired")
        self._watch_state(state, error, plural)

    # -- what it holds ---------------------------------------------------------------------

    def entry(self, path: str) -> Entry | None:
        held = self.cache.entries.get(path)
        return None if held is None else held[1]

    def holds(self, path: str) -> bool:
        return path in self.cache.entries

    def paths(self) -> list[str]:
        return list(self.cache.entries)

    def route_count(self) -> int:
        return self.cache.route_count()

    @property
    def synced(self) -> bool:
        return self.cache.health.ever_synced


    # -- housekeeping helpers both backends use ----------------------------------------------

    def _unused_for(self, kind: str, name: str, now: float) -> float:
        return now - self._unused_since.setdefault((kind, name), now)

    def _used(self, kind: str, name: str) -> None:
        self._unused_since.pop((kind, name), None)

    async def _delete(self, plural: str, name: str, rv: str) -> bool:
        """Delete if unchanged since ``rv``; False when it was written meanwhile."""
        try:
            await self.client.delete(self.resources[plural], name, rv)
        except NotFound:
            pass
        except KubeError:
            return False
        self.cache.forget(plural, name)
        return True

    async def _delete_unused(self, needed: dict[tuple[str, str], Any], grace: float,
                             pace: Pacer) -> None:
        """Support objects nothing needs go once unused for ``grace`` seconds."""
        now = time.monotonic()
        for plural, held in self.cache.support.items():
            for name, state in list(held.items()):
                await pace()
                if (plural, name) in needed:
                    self._used(plural, name)
                elif self._unused_for(plural, name, now) >= grace:
                    self._used(plural, name)
                    await self._delete(plural, name, state.rv)


class ClusterStore(StoreBase):
    def __init__(self, registry: Registry, cluster: Cluster, client: ClusterClient,
                 table: RouteTable, settings: Settings) -> None:
        self._init_base(registry, cluster, client, settings)
        self.cache = ClusterCache(cluster.name, registry.instance, table)
        self.capacity = settings.shard_routes
        self._writers: dict[str, ObjectWriter[Any]] = {}
        # Rendered rules of recently written shards (LRU): a hot shard is rendered from kept
        # text, and memory stays bounded whatever the table size.
        self._memos: OrderedDict[ShardKey, ShardMemo] = OrderedDict()
        self._splits: dict[ShardKey, asyncio.Task[None]] = {}
        self._support_memo: dict[str, tuple[Entry, list[dict[str, Any]]]] = {}

    def reconfigure(self, registry: Registry, cluster: Cluster) -> None:
        self.registry = registry
        self.cluster = cluster
        self._memos.clear()  # rendered rules depend on the configuration
        self._support_memo.clear()

    # -- route entries ----------------------------------------------------------------------

    async def put_entry(self, entry: Entry, still: Callable[[], bool] | None = None) -> None:
        """Store a route's entry in its shard (unless a newer write of it is there) and make
        the shard reachable from its roots; then drop older copies from other shards.

        ``still``: checked when the write is made; False leaves everything as it is (a
        migration whose route was deleted meanwhile must not bring it back)."""
        key = RouteKey.parse(entry.path)
        applied = [False]

        def put(entries: dict[str, Entry] | None) -> dict[str, Entry] | None:
            if still is not None and not still():
                return entries
            entries = {} if entries is None else entries
            held = entries.get(entry.path)
            if held is None or _rank(held) <= _rank(entry):
                entries[entry.path] = entry
            applied[0] = True
            return entries

        shard = await self._submit(key, put)
        if not applied[0]:
            return
        await self.ensure_in_roots(shard)
        self._maybe_split(shard)
        # Another live copy in this shard's own tree can only be this very write, carried into
        # a child by a split that finished meanwhile: never drop that one.
        others = [s for s in self._live_copies(entry.path) if s != shard
                  and (s.legacy or (s.host, s.depth) != (shard.host, shard.depth))]
        await asyncio.gather(*(self._drop(s, entry.path, _rank(entry), inclusive=True)
                               for s in others))

    async def remove_entry(self, path: str, older_than: Rank | None = None) -> None:
        """Remove a route's entry; with ``older_than`` only a copy that loses to that write, so
        two racing moves never remove each other."""
        shards = self._live_copies(path) or [locate(RouteKey.parse(path), self.cache.is_split)]
        await asyncio.gather(*(self._drop(s, path, older_than, inclusive=False) for s in shards))

    async def refresh(self, path: str) -> None:
        """Read the shard a route would be in (a write through another replica that this
        cache has not heard of yet). Absent: nothing to learn; unreachable: ClusterUnavailable,
        for the caller cannot tell the route is not there."""
        key = RouteKey.parse(path)
        for _ in range(MAX_LEVEL + 1):
            shard = locate(key, self.cache.is_split)
            try:
                self.cache.apply(VS, "MODIFIED",
                                 await self.client.get(RESOURCES[VS], shard.name(self._inst)))
            except (NotFound, Rejected):
                return
            if not self.cache.is_split(shard):
                return

    @property
    def _inst(self) -> str:
        return self.registry.instance

    def _live_copies(self, path: str) -> list[ShardKey]:
        out = []
        for name in self.cache.copies(path):
            state = self.cache.shards.get(name)
            if state is not None and self.cache.live(state):
                out.append(state.key)
        return out

    async def _submit(self, key: RouteKey, mutation: Callable[[Any], Any]) -> ShardKey:
        """Apply a mutation to the shard the route belongs in, following splits (and splitting
        a shard its routes' data no longer fits in)."""
        for _ in range(2 * MAX_LEVEL + 2):
            shard = locate(key, self.cache.is_split)
            try:
                await self._shard_writer(shard).submit(mutation)
                return shard
            except Redirect:
                continue
            except ShardFull:
                await self._split_now(shard)
        raise Conflict(f"no stable shard for {key.path} on cluster {self.name!r}",
                       cluster=self.name, verb="update", status=409)

    async def _drop(self, shard: ShardKey, path: str, rank: Rank | None, inclusive: bool) -> None:
        def drop(entries: dict[str, Entry] | None) -> dict[str, Entry] | None:
            held = None if entries is None else entries.get(path)
            if held is None:
                return entries
            if rank is not None and (_rank(held) > rank if inclusive else _rank(held) >= rank):
                return entries
            assert entries is not None
            del entries[path]
            return entries

        try:
            await self._shard_writer(shard).submit(drop)
        except (Redirect, ShardFull):
            # The shard split meanwhile (or must split first): the route is in one of its
            # children now, which this cache may not have heard of: read them before dropping,
            # or the drop would find nothing to remove and the route would stay.
            await self.refresh(path)
            await self._submit(RouteKey.parse(path), drop)

    # -- object writers ----------------------------------------------------------------------

    def _memo(self, key: ShardKey) -> ShardMemo:
        memo = self._memos.get(key)
        if memo is None:
            memo = self._memos[key] = ShardMemo()
            if len(self._memos) > MEMO_SHARDS:
                self._memos.popitem(last=False)
        else:
            self._memos.move_to_end(key)
        return memo

    def _shard_writer(self, key: ShardKey) -> ObjectWriter[Any]:
        name = key.name(self._inst)
        writer = self._writers.get(name)
        if writer is not None:
            return writer

        def cached() -> tuple[dict[str, Entry] | None, str | None]:
            state = self.cache.shards.get(name)
            if state is None:
                return None, None
            if state.split:
                raise Redirect(name)
            return state.entries, state.rv

        def decode(obj: dict[str, Any]) -> tuple[dict[str, Entry] | None, str | None]:
            if is_split_marker(obj):
                raise Redirect(name)
            return decode_entries(obj), str(obj["metadata"]["resourceVersion"])

        async def store(entries: dict[str, Entry] | None, body: bytes, exists: bool) -> None:
            raw = await self.client.write_raw(RESOURCES[VS], body, name, exists)
            if not exists:
                self._created.add(name)
            rv = resource_version_of(raw)
            if rv is None:  # an API server that writes JSON otherwise: read it all
                self.cache.apply(VS, "MODIFIED", _json.loads(raw), entries)
                return
            self._note_own_write(rv)
            self.cache.put_written_shard(name, rv, key, entries or {}, self._memo(key).routes_size)

        codec: Codec[dict[str, Entry]] = Codec(
            cached=cached,
            render=lambda entries, rv: shard_body(self.registry, self.cluster, key, entries or {},
                                                  self._memo(key), rv),
            store=store,
            reread=lambda: self._reread(name, cached, decode),
            copy=lambda entries: None if entries is None else dict(entries),
        )
        writer = self._writers[name] = ObjectWriter(self.name, name, codec)
        return writer

    def _note_own_write(self, rv: str) -> None:
        if len(self._own_writes) > 10_000:
            self._own_writes.clear()  # echoes lost to a watch restart: forget them
        self._own_writes.add(rv)

    async def _reread(self, name: str, cached: Callable[[], Any],
                      decode: Callable[[dict[str, Any]], Any]) -> Any:
        """The object as the API server has it now (after a 409 or 404), into the cache too.
        The state is taken from what was read, not from the cache, which may hold a newer
        tombstone and ignore it: a writer must never loop on a state it cannot see."""
        try:
            obj = await self.client.get(RESOURCES[VS], name)
        except NotFound:
            # Not forgotten in the cache: this answer may be older than a create whose result
            # the cache already holds; deletions reach the cache through the watch.
            return None, None
        self.cache.apply(VS, "MODIFIED", obj)
        return decode(obj)

    def _root_writer(self, host_key: str) -> ObjectWriter[Any]:
        name = root_name(self._inst, host_key)
        writer = self._writers.get(name)
        if writer is not None:
            return writer

        def cached() -> tuple[set[str] | None, str | None]:
            state = self.cache.roots.get(name)
            return (None, None) if state is None else (set(state.delegates), state.rv)

        async def store(_: set[str] | None, body: bytes, exists: bool) -> None:
            res = RESOURCES[VS]
            stored = await (self.client.replace(res, body, name) if exists
                            else self.client.create(res, body, name))
            self.cache.apply(VS, "MODIFIED", stored)

        def render(shards: set[str] | None, rv: str | None) -> bytes:
            body = build_root(self.registry, self.cluster, host_key, sorted(shards or ()))
            if rv is not None:
                body["metadata"]["resourceVersion"] = rv
            return _json.dumps(body)

        codec: Codec[set[str]] = Codec(
            cached=cached,
            render=render,
            store=store,
            reread=lambda: self._reread(
                name, cached,
                lambda obj: (set(root_delegates(obj)), str(obj["metadata"]["resourceVersion"]))),
            copy=lambda shards: None if shards is None else set(shards),
        )
        writer = self._writers[name] = ObjectWriter(self.name, name, codec)
        return writer

    # -- roots ------------------------------------------------------------------------------

    def host_roots(self) -> set[str]:
        """Host keys of the host roots this cluster has or needs."""
        return (self.cache.root_hosts | set(self.cache.shard_hosts)) - set(self.cluster.hosts)

    def plain_top_shards(self) -> set[str]:
        """Plain (no host) depth-0 shards: the "/" route, which every host root delegates to."""
        return set(self.cache.plain_tops)

    async def ensure_in_roots(self, key: ShardKey) -> None:
        """Make every root that must delegate to this shard do so (idempotent, cached)."""
        shard = key.name(self._inst)
        created = shard in self._created
        self._created.discard(shard)
        for host_key in roots_for_shard(self.cluster, key.host, key.depth, self.host_roots()):
            name = root_name(self._inst, host_key)
            if created:
                # A shard we just (re)created may have been taken out of the root by another
                # replica's housekeeping that this cache has not heard of: read the root.
                await self._fresh(name)
            root = self.cache.roots.get(name)
            wanted = {shard} | (self.plain_top_shards() if host_key else set())
            if root is not None and wanted <= root.delegate_set:
                continue

            def add(shards: set[str] | None, wanted: set[str] = wanted) -> set[str]:
                return (shards or set()) | wanted

            await self._root_writer(host_key).submit(add)

    async def remove_from_roots(self, key: ShardKey) -> None:
        shard = key.name(self._inst)
        for host_key in roots_for_shard(self.cluster, key.host, key.depth, self.host_roots()):
            await self._remove_delegate(host_key, shard)

    async def _remove_delegate(self, host_key: str, shard: str) -> None:
        def drop(shards: set[str] | None) -> set[str] | None:
            if shards is not None:
                shards.discard(shard)
            return shards

        await self._root_writer(host_key).submit(drop)

    # -- splitting ---------------------------------------------------------------------------

    def _maybe_split(self, key: ShardKey) -> asyncio.Task[None] | None:
        """Start splitting a shard that holds more than its capacity (once at a time)."""
        state = self.cache.shards.get(key.name(self._inst))
        if (state is None or state.split or key.legacy or key.level >= MAX_LEVEL
                or (len(state.entries) <= self.capacity and state.size <= SPLIT_ROUTES_BYTES)):
            return self._splits.get(key)
        return self._split_task(key)

    def _split_task(self, key: ShardKey) -> asyncio.Task[None]:
        running = self._splits.get(key)
        if running is None:
            running = self._splits[key] = self._spawn(self._split(key))
            running.add_done_callback(lambda _: self._splits.pop(key, None))
        return running

    async def _split_now(self, key: ShardKey) -> None:
        """Split before a write that would not fit (a legacy shard cannot: its routes move)."""
        if key.legacy or key.level >= MAX_LEVEL:
            raise Rejected(f"routes of shard {key.name(self._inst)} on cluster {self.name!r} "
                           "do not fit on one object", cluster=self.name, verb="update",
                           status=422)
        await asyncio.gather(self._split_task(key), return_exceptions=True)

    async def settle_splits(self) -> None:
        """Split until no shard holds more than its capacity (housekeeping, tests)."""
        for _ in range(MAX_LEVEL + 1):
            tasks = [t for s in list(self.cache.shards.values()) if self.cache.live(s)
                     for t in [self._maybe_split(s.key)] if t is not None]
            if not tasks:
                return
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _split(self, key: ShardKey) -> None:
        """Move a shard's routes into its two children, then mark it split.

        Order matters for routing and for other replicas: the children are written with the
        parent's exact content and added to the roots (after the parent, which stays the
        authoritative copy until marked); then the parent becomes a marker in one write guarded
        by the resourceVersion its content was read at. A write to the parent in between fails
        that guard, and the split starts over from the parent's new content. This replica's
        own writes to the parent wait meanwhile, then follow the marker to the children.
        """
        name = key.name(self._inst)
        try:
            for attempt in range(20):
                async with self._shard_writer(key).lock:
                    if await self._split_once(key):
                        break
                await asyncio.sleep(self.client.backoff.delay(min(attempt, 4)))
            else:
                return
        except KubeError as exc:
            log.warning("cluster %s: split of shard %s failed, will retry in housekeeping: %s",
                        self.name, name, exc, extra={"cluster": self.name, "object": name})
            return
        for child in key.children():
            self._maybe_split(child)  # a big parent can leave a child over capacity too

    async def _fresh(self, name: str) -> dict[str, Any] | None:
        try:
            obj = await self.client.get(RESOURCES[VS], name)
        except NotFound:
            return None  # as in _reread: the watch, not a racing GET, reports deletions
        self.cache.apply(VS, "MODIFIED", obj)
        return obj

    async def _split_once(self, key: ShardKey) -> bool:
        """One attempt; True when done (or nothing to do), False to start over."""
        name = key.name(self._inst)
        children = key.children()
        # The children are read before the parent: a replica that already finished this split
        # and took new writes into a child makes our guarded child write fail, not clobber it.
        child_objs = [await self._fresh(c.name(self._inst)) for c in children]
        parent = await self._fresh(name)
        if parent is None or is_split_marker(parent):
            return True
        parts = partition(key, decode_entries(parent))
        res = RESOURCES[VS]
        try:
            for child, obj in zip(children, child_objs, strict=True):
                body = build_shard(self.registry, self.cluster, child, parts[child], self._memo(child))
                if obj is None:
                    stored = await self.client.create(res, body)
                else:
                    body["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
                    stored = await self.client.replace(res, body)
                self.cache.apply(VS, "MODIFIED", stored, parts[child])
            for child in children:
                await self.ensure_in_roots(child)
            marker = build_split_marker(self.registry, self.cluster, key)
            marker["metadata"]["resourceVersion"] = parent["metadata"]["resourceVersion"]
            self.cache.apply(VS, "MODIFIED", await self.client.replace(res, marker))
        except (Conflict, NotFound):
            return False
        await self.remove_from_roots(key)
        log.info("cluster %s: shard %s split in two (%d routes)", self.name, name,
                 sum(len(p) for p in parts.values()),
                 extra={"cluster": self.name, "object": name})
        return True

    # -- support objects -------------------------------------------------------------------

    async def ensure_object(self, obj: dict[str, Any]) -> None:
        """Create or update a support object as built (a concurrent create by another replica
        is as good as ours)."""
        plural = plural_of(obj)
        name = obj["metadata"]["name"]
        held = self.cache.support[plural].get(name)
        if held is not None and held.spec == canonical(obj["spec"]):
            return
        res = RESOURCES[plural]
        try:
            if held is None:
                stored = await self.client.create(res, obj)
            else:
                meta = {**obj["metadata"], "resourceVersion": held.rv}
                stored = await self.client.replace(res, {**obj, "metadata": meta})
        except Conflict:
            stored = await self.client.get(res, name)
        self.cache.apply(plural, "MODIFIED", stored)

    def support_for(self, entry: Entry) -> list[dict[str, Any]]:
        """The support objects an entry needs here (memoised: housekeeping asks for all)."""
        held = self._support_memo.get(entry.path)
        if held is not None and held[0] is entry:
            return held[1]
        try:
            objs = support_objects(self.registry, self.cluster,
                                   entry_destination(self.registry, self.cluster, entry))
        except (KeyError, InvalidRoute, ValueError):
            objs = []  # its cluster left the registry: nothing to route to
        self._support_memo[entry.path] = (entry, objs)
        return objs

    # -- housekeeping of its own objects ----------------------------------------------------

    async def tidy(self, grace: float) -> None:
        """Repair and tidy this cluster's objects; yields to the event loop as it goes."""
        pace = Pacer()
        await self._tidy_shards(grace, pace)
        await self.settle_splits()
        await self._tidy_roots(grace, pace)
        await self._tidy_support(grace, pace)

    async def _tidy_shards(self, grace: float, pace: Pacer) -> None:
        now = time.monotonic()
        for name, state in list(self.cache.shards.items()):
            await pace()
            if state.split:
                continue  # markers stay: every replica finds routes through them
            if not self.cache.live(state):
                await self._resume_split(state)
            elif state.key.legacy and state.entries:
                await self._migrate(state, pace)
            elif state.entries:
                self._used("shard", name)
                await self.ensure_in_roots(state.key)
            elif self._unused_for("shard", name, now) >= grace:
                self._used("shard", name)
                await self.remove_from_roots(state.key)
                if not await self._delete(VS, name, state.rv):
                    await self.ensure_in_roots(state.key)  # written meanwhile: it stays

    async def _resume_split(self, state: ShardState) -> None:
        """A child whose parent is not a marker: a split that stopped half-way (finish it), or
        a marker deleted by hand (put it back)."""
        parent = state.key.parent()
        if parent is None:
            return
        if parent.name(self._inst) in self.cache.shards:
            await asyncio.gather(self._split_task(parent), return_exceptions=True)
            return
        try:
            stored = await self.client.create(
                RESOURCES[VS], build_split_marker(self.registry, self.cluster, parent))
            self.cache.apply(VS, "MODIFIED", stored)
        except KubeError as exc:
            log.info("cluster %s: cannot restore split marker %s: %s", self.name,
                     parent.name(self._inst), exc, extra={"cluster": self.name})

    async def _migrate(self, state: ShardState, pace: Pacer) -> None:
        """Move a legacy shard's routes into the shard tree, a slice at a time: each is written
        to its new shard (and root) before it leaves the old one, so it always answers."""
        current = [e for p, e in state.entries.items()
                   if self.cache.entries.get(p, ("",))[0] == state.name]
        def still(entry: Entry) -> Callable[[], bool]:
            # Still the route's current copy, in the legacy shard (not deleted meanwhile).
            return lambda: self.cache.entries.get(entry.path) == (state.name, entry)

        for i in range(0, len(current), 200):
            await asyncio.gather(*(self.put_entry(e, still(e)) for e in current[i:i + 200]))
            await pace()
        log.info("cluster %s: moved %d routes out of legacy shard %s", self.name, len(current),
                 state.name, extra={"cluster": self.name, "object": state.name})

    async def _tidy_roots(self, grace: float, pace: Pacer) -> None:
        now = time.monotonic()
        default = root_name(self._inst, "")
        for name, root in list(self.cache.roots.items()):
            await pace()
            for shard in root.delegates:
                state = self.cache.shards.get(shard)
                if state is not None and not state.split:
                    self._used("delegate", shard)
                elif self._unused_for("delegate", shard, now) >= grace:
                    self._used("delegate", shard)
                    await self._remove_delegate(root.host_key, shard)
            root = self.cache.roots.get(name) or root
            if not root.delegates and name != default:
                if self._unused_for("root", name, now) >= grace:
                    self._used("root", name)
                    await self._delete(VS, name, root.rv)
            else:
                self._used("root", name)

    async def needed_support(self, pace: Pacer) -> dict[tuple[str, str], dict[str, Any]]:
        needed: dict[tuple[str, str], dict[str, Any]] = {}
        for _, entry in list(self.cache.entries.values()):
            await pace()
            for obj in self.support_for(entry):
                needed[(plural_of(obj), obj["metadata"]["name"])] = obj
        return needed

    async def _tidy_support(self, grace: float, pace: Pacer) -> None:
        needed = await self.needed_support(pace)
        for obj in needed.values():
            await pace()
            try:
                await self.ensure_object(obj)
            except KubeError as exc:
                log.warning("cluster %s: cannot restore %s %s: %s", self.name, obj["kind"],
                            obj["metadata"]["name"], exc,
                            extra={"cluster": self.name, "kind": obj["kind"],
                                   "object": obj["metadata"]["name"], "status": exc.status})
        await self._delete_unused(needed, grace, pace)

    async def purge(self) -> None:
        """Delete every object of this store (its cluster moved to the other backend): roots
        first, so no root names a missing shard. Unconditional: nothing writes them any more."""
        names = [(VS, n) for n in self.cache.roots] + [(VS, n) for n in self.cache.shards]
        names += [(p, n) for p, held in self.cache.support.items() for n in held]
        await purge(self.client, [(RESOURCES[p], n) for p, n in names])

    # -- for tests and docs ----------------------------------------------------------------

    def shard_sizes(self) -> Iterable[int]:
        return (len(s.entries) for s in self.cache.shards.values() if not s.split)
