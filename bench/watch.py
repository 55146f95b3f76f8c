"""What the service stores, seen as any other Kubernetes client sees it: a REST watch per cluster
and resource kind the service writes, summing the size of every object revision written.

Independent of the service's internals: the bytes are those the API server serves for each
ADDED or MODIFIED event (the stored object as serialised), whatever the object layout."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import httpx

from federation.mesh import GROUP, VERSION
from federation.model import LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY

PLURALS = ("virtualservices", "serviceentries", "destinationrules")  # the Istio backend's
GATEWAY = "gateway.networking.k8s.io"
# (group, version, plural) of every kind either backend writes in the service's namespace.
RESOURCES = tuple((GROUP, VERSION, p) for p in PLURALS) + (
    (GATEWAY, "v1", "httproutes"), ("", "v1", "services"),
    ("discovery.k8s.io", "v1", "endpointslices"), (GATEWAY, "v1", "backendtlspolicies"))
# The service's objects; the bench's own look-alike objects (bare-client baselines) are left out.
SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_INSTANCE}!=bench-bare"
BOOKMARK_SECONDS = 0.5  # how often an idle watch confirms its resourceVersion (see sync)
_OBJECT = b'"object":'


@dataclass(frozen=True)
class Tally:
    """What the watches saw between two moments."""

    stored_bytes: int = 0  # serialised size of every ADDED/MODIFIED object revision
    revisions: int = 0  # ADDED/MODIFIED events
    deletions: int = 0  # DELETED events
    traffic_bytes: int = 0  # watch event lines, ADDED/MODIFIED/DELETED (bookmarks left out)
    largest: int = 0  # the largest object revision seen (bytes)
    largest_what: str = ""  # cluster/plural/name of that object

    def __sub__(self, other: Tally) -> Tally:
        """Counts between ``other`` (earlier) and this; ``largest`` stays this one's."""
        return replace(
            self,
            stored_bytes=self.stored_bytes - other.stored_bytes,
            revisions=self.revisions - other.revisions,
            deletions=self.deletions - other.deletions,
            traffic_bytes=self.traffic_bytes - other.traffic_bytes,
        )


@dataclass
class _Stream:
    cluster: str
    resource: tuple[str, str, str]
    rv: int = 0  # the last resourceVersion this stream has seen (event or bookmark)
    error: str = ""
    expired: bool = False  # the server answered 410: revisions may have been missed
    thread: threading.Thread | None = None
    opened: threading.Event = field(default_factory=threading.Event)


class WriteRecorder:
    """Watches every (cluster, plural) in ``namespace``; ``tally()`` after ``sync()`` gives the
    totals so far. ``endpoints``: cluster name -> (API server URL, bearer token)."""

    def __init__(self, endpoints: Mapping[str, tuple[str, str]], namespace: str) -> None:
        self.endpoints = dict(endpoints)
        self.namespace = namespace
        self._lock = threading.Lock()
        self._total = Tally()
        self._stop = threading.Event()
        self._streams = [_Stream(c, r) for c in self.endpoints for r in RESOURCES]

    def _url(self, cluster: str, resource: tuple[str, str, str]) -> str:
        base = self.endpoints[cluster][0].rstrip("/")
        group, version, plural = resource
        api = f"apis/{group}/{version}" if group else f"api/{version}"
        return f"{base}/{api}/namespaces/{self.namespace}/{plural}"

    def _headers(self, cluster: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.endpoints[cluster][1]}"}

    def current_rv(self, cluster: str) -> int:
        """The cluster's resourceVersion now (a LIST's metadata; one item asked for)."""
        response = httpx.get(self._url(cluster, RESOURCES[0]), headers=self._headers(cluster),
                             params={"limit": "1", "labelSelector": SELECTOR}, timeout=60)
        response.raise_for_status()
        return int(response.json()["metadata"]["resourceVersion"])

    def start(self, timeout: float = 30.0) -> WriteRecorder:
        for stream in self._streams:
            stream.rv = self.current_rv(stream.cluster)
            stream.thread = threading.Thread(target=self._run, args=(stream,), daemon=True,
                                             name=f"bench-watch-{stream.cluster}-{stream.resource[2]}")
            stream.thread.start()
        deadline = time.monotonic() + timeout
        for stream in self._streams:
            if not stream.opened.wait(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"watch on {stream.cluster}/{stream.resource[2]} did not open"
                                   f"{': ' + stream.error if stream.error else ''}")
        return self

    def _run(self, stream: _Stream) -> None:
        # Resumes from the last resourceVersion seen if the stream ends (the server's
        # timeout): no revision is missed or counted twice.
        with httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0)) as client:
            while not self._stop.is_set():
                params = {"watch": "true", "labelSelector": SELECTOR, "allowWatchBookmarks":
                          "true", "resourceVersion": str(stream.rv), "timeoutSeconds": "3600"}
                try:
                    with client.stream("GET", self._url(stream.cluster, stream.resource),
                                       params=params,
                                       headers=self._headers(stream.cluster)) as response:
                        if response.status_code != 200:
                            stream.error = f"HTTP {response.status_code}"
                            return
                        stream.opened.set()
                        pending = b""
                        for chunk in response.iter_raw():
                            lines = (pending + chunk).split(b"\n")
                            pending = lines.pop()
                            for line in lines:
                                if line.strip():
                                    self._event(stream, line)
                            if self._stop.is_set() or stream.expired:
                                return
                except httpx.HTTPError as exc:
                    stream.error = f"{type(exc).__name__}: {exc}"
                    if self._stop.is_set():
                        return
                    if not stream.opened.is_set():
                        return  # never opened: start() reports it
                    time.sleep(0.1)

    def _event(self, stream: _Stream, line: bytes) -> None:
        head = line[:40]
        if b'"BOOKMARK"' in head or b'"ERROR"' in head:
            event = json.loads(line)
            if event.get("type") == "ERROR":
                # Revisions may have been missed: this stream stops and sync() reports it.
                stream.error = str(event.get("object", {}).get("message", "watch error"))
                stream.expired = True
                return
            stream.rv = max(stream.rv, int(event["object"]["metadata"]["resourceVersion"]))
            return
        at = line.find(_OBJECT)
        raw = line[at + len(_OBJECT):].rstrip()[:-1] if at >= 0 else b""
        deleted = b'"DELETED"' in head
        # The resourceVersion is near the object's start in every server's output we know;
        # parse the object only when needed (a new largest size), else search for it.
        rv = _resource_version(raw)
        with self._lock:
            total = self._total
            if deleted:
                self._total = replace(total, deletions=total.deletions + 1,
                                      traffic_bytes=total.traffic_bytes + len(line))
            else:
                largest, what = total.largest, total.largest_what
                if len(raw) > largest:
                    largest = len(raw)
                    name = json.loads(raw).get("metadata", {}).get("name", "?")
                    what = f"{stream.cluster}/{stream.resource[2]}/{name}"
                self._total = Tally(total.stored_bytes + len(raw), total.revisions + 1,
                                    total.deletions, total.traffic_bytes + len(line),
                                    largest, what)
        if rv:
            stream.rv = max(stream.rv, rv)

    def sync(self, timeout: float = 30.0) -> bool:
        """Wait until every stream has seen everything its cluster stored until now (events
        or a bookmark at or past the cluster's resourceVersion); False on timeout."""
        targets = {cluster: self.current_rv(cluster) for cluster in self.endpoints}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(s.expired for s in self._streams):
                return False
            if all(s.rv >= targets[s.cluster] for s in self._streams):
                return True
            time.sleep(0.05)
        return False

    def reset_largest(self) -> None:
        """Forget the largest object seen so far (counts go on)."""
        with self._lock:
            self._total = replace(self._total, largest=0, largest_what="")

    def tally(self) -> Tally:
        with self._lock:
            return self._total

    def stop(self) -> None:
        self._stop.set()
        for stream in self._streams:
            if stream.thread is not None:
                stream.thread.join(timeout=BOOKMARK_SECONDS * 4 + 5)

    def __enter__(self) -> WriteRecorder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _resource_version(raw: bytes) -> int:
    at = raw.find(b'"resourceVersion":"')
    if at < 0:
        return 0
    start = at + len(b'"resourceVersion":"')
    end = raw.find(b'"', start)
    try:
        return int(raw[start:end])
    except ValueError:
        return 0
