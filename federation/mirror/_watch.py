"""List-then-watch of one kind into the object cache, through the same access layer as every
write (:mod:`federation.kube`): resume after a break, relist after 410, and the health of it."""

from __future__ import annotations

import asyncio
import logging
import time

from .. import _json, logs, metrics
from ..errors import ClusterUnavailable, KubeError, NotFound
from ..kube import ClusterClient, Resource, resource_version_of
from ._cache import ObjectCache

log = logging.getLogger("federation.mirror")
LIST_PAGE_DEFAULT = 1000
MAX_OWN_WRITES = 10_000


class OwnWrites:
    """resourceVersions of our own writes, until their watch echo arrives: the cache holds
    them already, so the echo is not worth parsing (a shard is tens of KB)."""

    def __init__(self) -> None:
        self._pending: set[str] = set()

    def note(self, rv: str) -> None:
        if len(self._pending) > MAX_OWN_WRITES:
            self._pending.clear()  # echoes lost to a watch restart: forget them
        self._pending.add(rv)

    def echoed(self, rv: str | None) -> bool:
        if rv is None or rv not in self._pending:
            return False
        self._pending.discard(rv)
        return True


class Watcher:
    """The watch of one kind in one cluster."""

    def __init__(self, cluster: str, client: ClusterClient, cache: ObjectCache, res: Resource,
                 selector: str, own: OwnWrites, *, optional: bool, page: int | None,
                 timeout: int) -> None:
        self.cluster = cluster
        self.client = client
        self.cache = cache
        self.res = res
        self.selector = selector
        self.own = own
        self.optional = optional  # a kind a cluster may not serve (its CRD not installed)
        self.page = page or LIST_PAGE_DEFAULT
        self.timeout = timeout

    @property
    def plural(self) -> str:
        return self.res.plural

    async def run(self) -> None:
        """List, then watch from the list's version; resume after a break, relist after 410."""
        rv: str | None = None
        failures = 0
        while True:
            try:
                if rv is None:
                    rv = await self._relist()
                self._state("synced", None)
                failures = 0
                rv = await self._follow(rv)
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                if exc.status == 410:
                    rv = None
                if isinstance(exc, NotFound) and self.optional:
                    await self._absent()
                    continue
                self._restart("error", str(exc))
                await asyncio.sleep(self.client.backoff.delay(failures, exc))
                failures += 1

    async def _absent(self) -> None:
        """A kind this cluster does not serve: nothing of it to hear about (checked again
        every minute, so installing its CRD later is noticed)."""
        health = self.cache.health
        health.last_error = f"{self.plural}: not served by this cluster (CRD not installed?)"
        health.kind_synced(self.plural)
        await asyncio.sleep(60)

    async def _relist(self) -> str:
        """List in pages (memory stays flat with the table's size); returns the list's version."""
        listed: set[str] = set()
        token: str | None = None
        list_rv: str | None = None
        while True:
            page = await self.client.list(self.res, self.selector, limit=self.page,
                                          continue_token=token)
            meta = page.get("metadata") or {}
            list_rv = list_rv or str(meta["resourceVersion"])
            items = page.get("items") or []
            listed.update(i["metadata"]["name"] for i in items)
            self.cache.apply_page(self.plural, items)
            token = meta.get("continue")
            if not token:
                break
            await asyncio.sleep(0)  # let requests in between pages
        self.cache.end_relist(self.plural, listed, int(list_rv))
        return list_rv

    async def _follow(self, rv: str) -> str | None:
        """One watch request; returns where to resume (None: relist)."""
        async for line in self.client.watch(self.res, self.selector, rv, self.timeout):
            echoed = resource_version_of(line)
            if self.own.echoed(echoed):
                rv = echoed or rv
                continue
            try:
                event = _json.loads(line)
            except ValueError as exc:
                raise ClusterUnavailable(f"watch on cluster {self.cluster!r}: malformed event",
                                         cluster=self.cluster, verb="watch") from exc
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                code = obj.get("code")
                self._restart("expired" if code == 410 else "error",
                              f"watch: {obj.get('message', code)}")
                return None
            new_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if new_rv:
                rv = str(new_rv)
            if kind != "BOOKMARK":
                self.cache.apply(self.plural, str(kind), obj)
                self.cache.health.last_event = time.time()
        metrics.WATCH_RESTARTS.labels(self.cluster, self.plural, "closed").inc()
        return rv

    def _state(self, state: str, error: str | None) -> None:
        health = self.cache.health
        if error is not None:
            health.last_error = error
        before = health.state
        if state == "failing" or before != "failing" or all(health.synced.values()):
            health.state = state
        if before == "failing" and health.state == "synced":
            log.info("cluster %s: watch of %s resumed", self.cluster, self.plural,
                     extra={"cluster": self.cluster, "kind": self.plural,
                            "event": "watch-resumed"})

    def _restart(self, reason: str, error: str) -> None:
        health = self.cache.health
        health.watch_restarts += 1
        metrics.WATCH_RESTARTS.labels(self.cluster, self.plural, reason).inc()
        state = "resyncing" if reason == "expired" else "failing"
        if health.state != state:
            logs.watch_restarted(self.cluster, self.plural, f"{reason}: {error}",
                                 relist=reason == "expired")
        self._state(state, error)
