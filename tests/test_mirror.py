"""The mirror's re-read rule and writers, without a cluster: a scripted API client answers each
call as a lagging API server could."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from federation.errors import Conflict, NotFound
from federation.gateway.check import ROUTE
from federation.gateway.index import ROUTES, RouteObjectIndex
from federation.kube import Resource
from federation.mirror import Kinds, Mirror, ObjectWriter, RouteEntries, View
from federation.model import ANN_ROUTES, Entry, decode_entries, encode_entries, labels, newest
from federation.table import RouteTable

RES = Resource("gateway.networking.k8s.io", "v1", ROUTES)
KINDS = Kinds(resources={ROUTES: RES}, names={"HTTPRoute": ROUTES}, watched=(ROUTES,),
              route=ROUTE)


def route_object(name: str, rv: int, entry: Entry | None) -> dict[str, Any]:
    annotations = {} if entry is None else {ANN_ROUTES: encode_entries([entry])}
    return {"kind": "HTTPRoute", "metadata": {
        "name": name, "resourceVersion": str(rv), "labels": labels("jupyterhub", "route"),
        "annotations": annotations}}


class LaggingServer:
    """One object's API server: creates and replaces guarded as Kubernetes guards them
    (409), deletes too; ``late`` holds GET answers decided earlier, delivered before any fresh
    one (an exception is raised)."""

    name = "hub"
    namespace = "jupyterhub"

    def __init__(self, stored: dict[str, Any] | None, late: list[Any] | None = None) -> None:
        self.stored = stored
        self.late = late or []
        self.rv = int(stored["metadata"]["resourceVersion"]) if stored else 1
        self.calls: list[str] = []

    async def get(self, res: Resource, name: str) -> dict[str, Any]:
        self.calls.append("get")
        if self.late:
            answer = self.late.pop(0)
            if isinstance(answer, Exception):
                raise answer
            return dict(answer)
        if self.stored is None:
            raise NotFound("not found", cluster="hub", verb="get")
        return dict(self.stored)

    async def write_raw(self, res: Resource, body: bytes, name: str, exists: bool) -> bytes:
        self.calls.append("replace" if exists else "create")
        obj = json.loads(body)
        held = None if self.stored is None else self.stored["metadata"]["resourceVersion"]
        if (not exists and held is not None) or (exists and obj["metadata"].get(
                "resourceVersion") != held):
            raise Conflict("conflict", cluster="hub", verb="update", status=409)
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.stored = obj
        return json.dumps(obj).encode()

    async def delete(self, res: Resource, name: str, rv: str | None = None) -> None:
        self.calls.append("delete")
        if self.stored is None:
            raise NotFound("not found", cluster="hub", verb="delete")
        self.stored = None


def mirror_with(client: LaggingServer) -> tuple[Mirror, RouteObjectIndex]:
    index = RouteObjectIndex(RouteEntries("hub", RouteTable()))
    return Mirror("hub", client, KINDS, index, "sel", 60), index  # type: ignore[arg-type]


class RouteView(View[Entry]):
    def __init__(self, index: RouteObjectIndex) -> None:
        self.index = index

    def cached(self, name: str) -> Entry | None:
        return self.index.routes.get(name)

    def decode(self, obj: dict[str, Any]) -> Entry | None:
        entries = list(decode_entries(obj).values())
        return entries[0] if entries else None

    def build(self, name: str, state: Entry) -> dict[str, Any]:
        return route_object(name, 0, state)


def writer_of(mirror: Mirror, index: RouteObjectIndex, name: str) -> ObjectWriter[Entry]:
    return mirror.writer(ROUTES, name, RouteView(index))


def put(entry: Entry) -> Callable[[Entry | None], Entry | None]:
    return lambda held: newest(held, entry)


ENTRY = Entry("/user/a", "http://10.0.0.1:8888", "hub", {}, "2026-01-01T00:00:00.000Z")
NEWER = Entry("/user/a", "http://10.0.0.2:8888", "hub", {}, "2026-01-01T00:00:01.000Z")
LATE_404 = NotFound("not found (decided before the create)", cluster="hub", verb="get")


def test_a_get_404_forgets_nothing_the_cache_holds() -> None:
    """A GET decided before our create and delivered after it says 404: the cache keeps the
    object (forgetting it would leave a tombstone above its version)."""
    created = route_object("rt-a", 7, ENTRY)
    server = LaggingServer(created, late=[LATE_404])
    mirror, index = mirror_with(server)
    mirror.cache.apply(ROUTES, "MODIFIED", created)
    assert asyncio.run(mirror.reread(ROUTES, "rt-a")) is None
    assert mirror.cache.rv_of(ROUTES, "rt-a") == 7 and "rt-a" in index.routes
    assert (ROUTES, "rt-a") not in mirror.cache.tombstones


def test_after_a_late_404_the_next_write_goes_on_from_the_object() -> None:
    """The original fault: our create's result is cached, a late 404 arrives, then a write of
    the object. It must replace the object at its version, not loop create -> 409 -> re-read
    on a state the cache will not show."""
    created = route_object("rt-a", 7, ENTRY)
    server = LaggingServer(created, late=[LATE_404])
    mirror, index = mirror_with(server)
    mirror.cache.apply(ROUTES, "MODIFIED", created)

    async def scenario() -> None:
        await mirror.reread(ROUTES, "rt-a")
        await writer_of(mirror, index, "rt-a").submit(put(NEWER))

    asyncio.run(scenario())
    assert server.calls == ["get", "replace"]
    assert index.routes["rt-a"] == NEWER


def test_a_writer_works_from_the_object_it_read() -> None:
    """A conflict, then a late 404, then the object at a version below a tombstone the cache
    holds: the writer writes from the object read."""
    stored = route_object("rt-a", 7, ENTRY)
    server = LaggingServer(stored, late=[LATE_404])
    mirror, index = mirror_with(server)
    mirror.cache.tombstones[(ROUTES, "rt-a")] = 8  # a deletion heard of, newer than rv 7
    asyncio.run(writer_of(mirror, index, "rt-a").submit(put(NEWER)))
    assert server.calls == ["create", "get", "create", "get", "replace"]
    assert server.stored is not None and NEWER.target in json.dumps(server.stored)


def test_a_delete_of_an_object_already_gone_settles() -> None:
    created = route_object("rt-a", 7, ENTRY)
    server = LaggingServer(None)
    mirror, index = mirror_with(server)
    mirror.cache.apply(ROUTES, "MODIFIED", created)  # deleted meanwhile, not heard of yet
    asyncio.run(writer_of(mirror, index, "rt-a").submit(lambda held: None))
    assert server.calls == ["delete", "get"]
