"""List-then-watch of one kind into the object cache, through the same access layer as every
write (:mod:`federation.kube`): the one loop of :mod:`federation.listwatch` (resume after a
break, relist after 410), what it hears applied to the cache, and the health of it."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .. import logs, metrics
from ..errors import KubeError, NotFound
from ..kube import ClusterClient, Resource, resource_version_of
from ..listwatch import ListWatch
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


class Watcher(ListWatch):
    """The watch of one kind in one cluster, into the object cache."""

    def __init__(self, cluster: str, client: ClusterClient, cache: ObjectCache, res: Resource,
                 selector: str, own: OwnWrites, *, optional: bool, page: int | None,
                 timeout: int) -> None:
        super().__init__(cluster, client, res, selector, timeout, page or LIST_PAGE_DEFAULT)
        self.cache = cache
        self.own = own
        self.optional = optional  # a kind a cluster may not serve (its CRD not installed)
        self._listed: set[str] = set()

    @property
    def plural(self) -> str:
        return self.res.plural

    # -- the steps of the loop (federation.listwatch) -----------------------------------------

    def on_watching(self) -> None:
        self._state("synced", None)

    async def failed(self, exc: KubeError, failures: int) -> tuple[bool, float, int]:
        relist = exc.status == 410
        if isinstance(exc, NotFound) and self.optional:
            await self._absent()
            return relist, 0.0, 0
        self._restart("error", str(exc))
        return relist, self.client.backoff.delay(failures, exc), 1

    async def _absent(self) -> None:
        """A kind this cluster does not serve: nothing of it to hear about (checked again
        every minute, so installing its CRD later is noticed)."""
        health = self.cache.health
        health.last_error = f"{self.plural}: not served by this cluster (CRD not installed?)"
        health.kind_synced(self.plural)
        await asyncio.sleep(60)

    def on_relist(self) -> None:
        self._listed = set()

    def on_page(self, items: list[dict[str, Any]]) -> None:
        self._listed.update(i["metadata"]["name"] for i in items)
        self.cache.apply_page(self.plural, items)

    def on_listed(self, list_rv: str) -> None:
        self.cache.end_relist(self.plural, self._listed, int(list_rv))
        self._listed = set()

    def skip(self, line: str) -> str | None:
        echoed = resource_version_of(line)  # our own write's echo: the cache holds it
        return echoed if self.own.echoed(echoed) else None

    def on_error_event(self, obj: dict[str, Any]) -> None:
        code = obj.get("code")
        self._restart("expired" if code == 410 else "error", f"watch: {obj.get('message', code)}")

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        self.cache.apply(self.plural, kind, obj)
        self.cache.health.last_event = time.time()

    def on_closed(self) -> None:
        metrics.WATCH_RESTARTS.labels(self.cluster, self.plural, "closed").inc()

    # -- health -------------------------------------------------------------------------------

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
