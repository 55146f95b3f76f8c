"""The watch-fed cache: a copy of every object this service owns, per cluster, and the route
table derived from them. GET /api/routes is answered from here, never by listing.

Watches run in threads (the ``kubernetes`` client is blocking) and hand their events to the
event loop, which alone mutates the cache; so the cache needs no locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import urllib3
from kubernetes.client.rest import ApiException
from kubernetes.watch.watch import iter_resp_lines

from . import metrics
from .activity import ActivityBook
from .kube import ClusterClient, translate
from .objects import (
    GROUP,
    KINDS,
    LABEL_ROLE,
    VERSION,
    Entry,
    decode_entries,
    selector,
)

log = logging.getLogger(__name__)


def _rv(obj: dict[str, Any] | None) -> int:
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion") or 0)
    except (TypeError, ValueError):
        return 0


def is_shard(obj: dict[str, Any]) -> bool:
    return (obj.get("metadata", {}).get("labels") or {}).get(LABEL_ROLE) == "shard"


class RouteTable:
    """The hub's view: every route owned by some cluster, one answer per path.

    Each route's JSON is kept rendered, so a GET after a write joins strings instead of
    serialising the whole table again (the hub polls it, and big hubs have many routes).
    """

    def __init__(self) -> None:
        self.owned: dict[str, dict[str, Entry]] = {}
        self.fragments: dict[str, str] = {}
        self.version = 0
        self._rendered: tuple[int, bytes] | None = None
        self.activity = ActivityBook()  # traffic activity overlaid on write times (activity.py)

    def update(self, cluster: str, path: str, entry: Entry | None) -> None:
        owners = self.owned.get(path)
        if entry is None:
            if owners and owners.pop(cluster, None) is not None:
                if not owners:
                    del self.owned[path]
                self._changed(path)
            return
        if owners is None:
            owners = self.owned[path] = {}
        if owners.get(cluster) != entry:
            owners[cluster] = entry
            self._changed(path)

    def _changed(self, path: str) -> None:
        self.version += 1
        entry = self.get(path)
        if entry is None:
            self.fragments.pop(path, None)
        else:
            self.fragments[path] = _dumps(path) + ":" + _dumps(self.public(entry))

    def get(self, path: str) -> Entry | None:
        owners = self.owned.get(path)
        if not owners:
            return None
        # A route briefly owned twice (a move whose old side is unreachable) resolves to the
        # newest write; the reconciler removes the stale copy.
        return max(owners.values(), key=lambda e: (e.last_activity, e.owner))

    def duplicates(self) -> list[tuple[str, list[Entry]]]:
        return [(p, list(o.values())) for p, o in self.owned.items() if len(o) > 1]

    def __len__(self) -> int:
        return len(self.owned)

    def public(self, entry: Entry) -> dict[str, Any]:
        route = dict(entry.data)
        route["target"] = entry.target
        last_activity = self.activity.last_activity(entry)
        if last_activity:
            route["last_activity"] = last_activity
        return route

    def render(self) -> bytes:
        """The whole table as JSON, cached until the next change."""
        if self._rendered is None or self._rendered[0] != self.version:
            body = ("{" + ",".join(self.fragments.values()) + "}").encode("utf-8")
            self._rendered = (self.version, body)
        return self._rendered[1]

    def filtered(self, inactive_since: str) -> bytes:
        table = {}
        for path in self.owned:
            entry = self.get(path)
            last_activity = None if entry is None else self.activity.last_activity(entry)
            if entry is not None and last_activity and last_activity < inactive_since:
                table[path] = self.public(entry)
        return _dumps(table).encode("utf-8")

    # -- traffic activity (federation/activity.py) -------------------------------------------

    def routes(self) -> Iterator[tuple[str, Entry]]:
        """Every route and the entry that answers for it."""
        for path in list(self.owned):
            entry = self.get(path)
            if entry is not None:
                yield path, entry

    def note_activity(self, seen: dict[str, str]) -> int:
        """Newer activity times (path -> ISO time); the routes they move are rendered again."""
        moved = [p for p in self.activity.merge(seen) if p in self.owned]
        for path in moved:
            self._changed(path)
        return len(moved)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class ClusterCache:
    """Objects of one cluster, kept current by a list-then-watch per kind."""

    def __init__(self, client: ClusterClient, instance: str, table: RouteTable) -> None:
        self.client = client
        self.name = client.name
        self.instance = instance
        self.table = table
        self.objects: dict[str, dict[str, dict[str, Any]]] = {p: {} for p in KINDS}
        self.tombstones: dict[str, dict[str, int]] = {p: {} for p in KINDS}
        self.entries: dict[str, tuple[str, Entry]] = {}  # path -> (shard name, entry)
        self.decoded: dict[str, dict[str, Entry]] = {}  # shard name -> its entries
        self.owned = 0  # entries this cluster owns (not edge rules): its route count
        self._routes_metric = metrics.ROUTES.labels(self.name)
        self.synced: dict[str, bool] = {p: False for p in KINDS}
        self.ever_synced = False
        self.state = "starting"  # starting | synced | resyncing | failing
        self.last_sync: float | None = None
        self.last_event: float | None = None
        self.last_error: str | None = None
        self.watch_restarts = 0
        self.changed = asyncio.Event()

    # -- applying state (event loop only) ---------------------------------------------------

    def _index(
        self,
        name: str,
        new: dict[str, Any] | None,
        decoded: dict[str, Entry] | None = None,
    ) -> None:
        """Bring the route index up to date with one shard's new state."""
        old_entries = self.decoded.pop(name, {})
        if new is not None and is_shard(new):
            new_entries = decoded if decoded is not None else decode_entries(new)
            self.decoded[name] = new_entries
        else:
            new_entries = {}
        for path in old_entries:
            if path not in new_entries and self.entries.get(path, ("",))[0] == name:
                self._set(path, None)
        for path, entry in new_entries.items():
            held = self.entries.get(path)
            # Unchanged entries are the very same objects when we wrote the shard ourselves.
            if held is None or held[1] is not entry or held[0] != name:
                self._set(path, (name, entry))
        self._routes_metric.set(self.owned)

    def _set(self, path: str, value: tuple[str, Entry] | None) -> None:
        old = self.entries.pop(path, None)
        if old is not None and self._is_owned(old[1]):
            self.owned -= 1
        if value is not None:
            self.entries[path] = value
            if self._is_owned(value[1]):
                self.owned += 1
        owned = value is not None and self._is_owned(value[1])
        self.table.update(self.name, path, value[1] if owned and value is not None else None)

    def _is_owned(self, entry: Entry) -> bool:
        return entry.owner == self.name and not entry.edge

    def route_count(self) -> int:
        return self.owned

    def apply(
        self, plural: str, kind: str, obj: dict[str, Any], decoded: dict[str, Entry] | None = None
    ) -> None:
        """Apply one watch event or one of our own write results, ignoring stale ones.

        ``decoded``: the entries of a shard we just wrote, so they need not be parsed again.
        """
        name = obj.get("metadata", {}).get("name")
        if not name:
            return
        store = self.objects[plural]
        current = store.get(name)
        rv = _rv(obj)
        newest = max(_rv(current), self.tombstones[plural].get(name, 0))
        if rv and rv <= newest:
            return
        if kind == "DELETED":
            if current is not None:
                del store[name]
                self.tombstones[plural][name] = rv
                if plural == "virtualservices":
                    self._index(name, None)
            return
        store[name] = obj
        self.tombstones[plural].pop(name, None)
        if plural == "virtualservices":
            self._index(name, obj, decoded)
        self.changed.set()

    def forget(self, plural: str, name: str, rv: int = 0) -> None:
        """Our own successful delete."""
        current = self.objects[plural].pop(name, None)
        self.tombstones[plural][name] = max(rv, _rv(current) + 1)
        if current is not None and plural == "virtualservices":
            self._index(name, None)

    def replace_all(self, plural: str, items: list[dict[str, Any]], list_rv: int) -> None:
        """A fresh list: the new truth, except objects we know are newer than the list."""
        fresh = {i["metadata"]["name"]: i for i in items}
        for name, obj in list(self.objects[plural].items()):
            if name not in fresh and _rv(obj) <= list_rv:
                self.forget(plural, name, list_rv)
        self.tombstones[plural] = {
            n: rv for n, rv in self.tombstones[plural].items() if rv > list_rv
        }
        for obj in items:
            self.apply(plural, "ADDED", obj)
        self.synced[plural] = True
        self.last_sync = self.last_event = time.time()
        if all(self.synced.values()):
            self.ever_synced = True
            self.state = "synced"

    # -- queries -----------------------------------------------------------------------------

    def shard_entries(self, shard: str) -> dict[str, Entry]:
        return self.decoded.get(shard, {})

    def entries_of(self, obj: dict[str, Any]) -> dict[str, Entry]:
        """A shard object's entries, parsed once: the cached ones when it is the cached object."""
        name = obj.get("metadata", {}).get("name", "")
        if self.objects["virtualservices"].get(name) is obj and name in self.decoded:
            return self.decoded[name]
        return decode_entries(obj)



class Watcher(threading.Thread):
    """List-then-watch of one kind in one cluster, resuming from the last resourceVersion and
    relisting on 410 Gone or any break it cannot resume from."""

    def __init__(
        self,
        cache: ClusterCache,
        plural: str,
        loop: asyncio.AbstractEventLoop,
        timeout: int,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name=f"watch-{cache.name}-{plural}", daemon=True)
        self.cache = cache
        self.plural = plural
        self.loop = loop
        self.timeout = timeout
        self.stopped = threading.Event()
        self._response: Any = None
        self.client = cache.client
        self.selector = selector(cache.instance)

    def stop(self) -> None:
        self.stopped.set()
        resp = self._response
        if resp is None:
            return
        # Closing the response from this thread would wait on the reader's lock; shutting the
        # socket down wakes the reader at once.
        conn = getattr(resp, "connection", None) or getattr(resp, "_connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(fn, *args)

    def _set_state(self, state: str, error: str | None) -> None:
        cache = self.cache
        if error is not None:
            cache.last_error = error
        if state == "failing" or cache.state != "failing" or all(cache.synced.values()):
            cache.state = state

    def _restart(self, reason: str) -> None:
        self.cache.watch_restarts += 1
        metrics.WATCH_RESTARTS.labels(self.cache.name, self.plural, reason).inc()

    def run(self) -> None:
        rv: str | None = None
        backoff = 0.2
        api = self.client.custom
        ns = self.client.namespace
        connect = self.client.settings.kube_connect_timeout
        while not self.stopped.is_set():
            try:
                if rv is None:
                    self.client.circuit.before(self.client.name)
                    listing: Any = api.list_namespaced_custom_object(
                        GROUP, VERSION, ns, self.plural, label_selector=self.selector,
                        _request_timeout=self.client.timeout,
                    )
                    self.client.circuit.success()
                    rv = str(listing["metadata"]["resourceVersion"])
                    self._post(self.cache.replace_all, self.plural, listing["items"], int(rv))
                    self._post(self._set_state, "synced", None)
                resp: Any = api.list_namespaced_custom_object(
                    GROUP, VERSION, ns, self.plural, label_selector=self.selector, watch=True,
                    resource_version=rv, timeout_seconds=self.timeout,
                    allow_watch_bookmarks=True, _preload_content=False,
                    _request_timeout=(connect, self.timeout + 30),
                )
                self._response = resp
                backoff = 0.2
                self._post(self._set_state, "synced", None)
                try:
                    for line in iter_resp_lines(resp):
                        if self.stopped.is_set():
                            return
                        event = json.loads(line)
                        kind = event.get("type")
                        obj = event.get("object") or {}
                        if kind == "ERROR":
                            code = obj.get("code")
                            self._restart("expired" if code == 410 else "error")
                            rv = None  # 410 Gone (or anything else): relist
                            self._post(self._set_state, "resyncing", f"watch: {obj.get('message', code)}")
                            break
                        new_rv = obj.get("metadata", {}).get("resourceVersion")
                        if new_rv:
                            rv = str(new_rv)
                        if kind == "BOOKMARK":
                            continue
                        self._post(self._event, kind, obj)
                    else:
                        if not self.stopped.is_set():
                            self._restart("closed")
                finally:
                    self._response = None
                    resp.release_conn()
            except ApiException as exc:
                if self.stopped.is_set():
                    return
                err = translate(exc, self.client.name, "watch")
                if exc.status == 410:
                    rv = None
                self._restart("error")
                self._post(self._set_state, "failing", str(err))
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                if self.stopped.is_set():
                    return
                err = translate(exc, self.client.name, "watch")
                self._restart("error")
                self._post(self._set_state, "failing", str(err))
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception as exc:  # noqa: BLE001 - CircuitOpen and friends: keep the thread alive
                if self.stopped.is_set():
                    return
                self._post(self._set_state, "failing", str(exc))
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, 5.0)

    def _event(self, kind: str, obj: dict[str, Any]) -> None:
        self.cache.apply(self.plural, kind, obj)
        self.cache.last_event = time.time()
