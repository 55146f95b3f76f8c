"""The one list-then-watch loop: list a kind in pages, then follow a watch from the list's
resourceVersion through a cluster's access layer (:mod:`federation.kube`), resuming after a break
from the last version heard (events or bookmarks) and listing again after 410 Gone, its
restarts paced by the cluster's one retry schedule. Its users say what a listed page, the end of
a list, an event and a failure mean: the mirror's watch of each kind it keeps
(:mod:`federation.mirror._watch`) and the destination checks' watch of a namespace's Services
(:mod:`federation.services_cache`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from . import _json
from .errors import ClusterUnavailable, KubeError
from .kube import ClusterClient, Resource

log = logging.getLogger("federation.listwatch")


class ListWatch:
    """One kind in one cluster (in the client's namespace, or ``namespace``), kept by list and
    watch. Subclasses fill in the ``on_*`` steps and :meth:`failed`."""

    def __init__(self, cluster: str, client: ClusterClient, res: Resource, selector: str,
                 timeout: int, page: int, *, namespace: str | None = None,
                 pool: str | None = None) -> None:
        self.cluster = cluster
        self.client = client
        self.res = res
        self.selector = selector
        self.timeout = timeout
        self.page = page
        self.namespace = namespace
        self.pool = pool  # a connection pool of its own (None: the client's watch pool)

    async def run(self) -> None:
        """List, then watch from the list's version; resume after a break, relist after 410."""
        rv: str | None = None
        failures = 0
        while True:
            try:
                if rv is None:
                    rv = await self._relist()
                self.on_watching()
                failures = 0
                rv = await self._follow(rv)
            except asyncio.CancelledError:
                raise
            except KubeError as exc:
                relist, wait, counted = await self.failed(exc, failures)
                rv = None if relist else rv
                await asyncio.sleep(wait)
                failures += counted
            except Exception as exc:  # noqa: BLE001 - a dead watch would leave its cache stale for good
                # Not the API server's doing (an object or event we could not read, a bug): the
                # cache may have taken half of it, so list again, paced as any failure.
                self._crashed(exc, failures)
                wrapped = ClusterUnavailable(
                    f"watch of {self.res.plural} on cluster {self.cluster!r}: "
                    f"{type(exc).__name__}: {exc}", cluster=self.cluster, verb="watch")
                wrapped.__cause__ = exc
                _, wait, counted = await self.failed(wrapped, failures)
                rv = None
                await asyncio.sleep(wait)
                failures += counted

    def _crashed(self, exc: Exception, failures: int) -> None:
        where = f" in namespace {self.namespace}" if self.namespace else ""
        # The first of a run with its traceback; the repeats only at debug level.
        log.log(logging.ERROR if failures == 0 else logging.DEBUG,
                "cluster %s: the watch of %s%s failed (%s: %s); listing again", self.cluster,
                self.res.plural, where, type(exc).__name__, exc, exc_info=failures == 0,
                extra={"cluster": self.cluster, "kind": self.res.plural,
                       "event": "watch-crashed"})

    async def _relist(self) -> str:
        """List in pages (memory stays flat with the table's size); returns the list's version."""
        token: str | None = None
        list_rv: str | None = None
        self.on_relist()
        while True:
            page = await self.client.list(self.res, self.selector, limit=self.page,
                                          continue_token=token, namespace=self.namespace)
            meta = page.get("metadata") or {}
            list_rv = list_rv or str(meta.get("resourceVersion") or "0")
            self.on_page(page.get("items") or [])
            token = meta.get("continue")
            if not token:
                break
            await asyncio.sleep(0)  # let requests in between pages
        self.on_listed(list_rv)
        return list_rv

    async def _follow(self, rv: str) -> str | None:
        """One watch request; returns where to resume (None: relist)."""
        async for line in self.client.watch(self.res, self.selector, rv, self.timeout,
                                            namespace=self.namespace, pool=self.pool):
            skipped = self.skip(line)
            if skipped is not None:
                rv = skipped or rv
                continue
            try:
                event = _json.loads(line)
            except ValueError as exc:
                raise ClusterUnavailable(f"watch on cluster {self.cluster!r}: malformed event",
                                         cluster=self.cluster, verb="watch") from exc
            kind, obj = event.get("type"), event.get("object") or {}
            if kind == "ERROR":
                self.on_error_event(obj)
                return None  # 410 Expired (or another end the API server chose): relist
            new_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if new_rv:
                rv = str(new_rv)
            if kind != "BOOKMARK":
                self.on_event(str(kind), obj)
        self.on_closed()
        return rv

    # -- what its user says -------------------------------------------------------------------

    def on_relist(self) -> None:
        """A list starts (what a list cut short had gathered is dropped)."""

    def on_page(self, items: list[dict[str, Any]]) -> None:
        """One page of the list, as it arrives."""
        raise NotImplementedError

    def on_listed(self, list_rv: str) -> None:
        """The list is whole: the new truth."""
        raise NotImplementedError

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        """One watch event (ADDED, MODIFIED, DELETED)."""
        raise NotImplementedError

    async def failed(self, exc: KubeError, failures: int) -> tuple[bool, float, int]:
        """A failed list or watch (``failures`` in a row before it): whether to list again,
        the seconds to wait first, and whether it counts as a failure (1) or not (0)."""
        raise NotImplementedError

    def on_watching(self) -> None:
        """Listed, or resuming: the watch starts."""

    def skip(self, line: str) -> str | None:
        """The resourceVersion of an event not worth parsing ("" when unknown), or None."""
        return None

    def on_error_event(self, obj: dict[str, Any]) -> None:
        """The API server ended the watch with an ERROR event (410 Expired, mostly)."""

    def on_closed(self) -> None:
        """The watch request ended (its timeout): it resumes from the last version."""
