"""How deep a POST goes before its first write, per backend, measured (issue 24's "a POST
reaches its first write through at most 10 modules and 2 callbacks").

A profile hook on the service's event-loop thread follows ``Federation.add_route`` (a second
route on a cluster, so its shard or HTTPRoute kind is warm; and a route added again with a new
target, which replaces its object) until the first POST or PUT of a VirtualService or HTTPRoute
reaches :mod:`federation.kube`, and counts:

(a) the layers the request goes *through*: the distinct ``federation.*`` modules on the stack
    of the write at that moment. The write is made by the object's writer task (a task hop:
    the request waits on a future the writer settles), so the hop counts as crossing: the
    modules on the waiting stacks of the request's own tasks (the ones made since it began)
    are added to those of the writing task;
(b) every distinct ``federation.*`` module entered at all before the write (leaf helpers
    included), ``federation.metrics`` and ``federation.logs`` left out;
(c) up-calls: calls from ``federation.mirror.*`` into a backend module (``federation.istio.*``,
    ``federation.gateway.*``), as distinct (caller function, callee function) pairs.

Only calls made in the request's tasks count (watches and housekeeping run on the same loop).
The bounds below are what the code achieves: the test fails when a change deepens the path.
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from federation.testing import EmulatedClusters
from federation.testing.harness import ServiceThread, write_clusters_yaml

from .conftest import CONTEXTS, base_config, fast_settings

ROUTE_KINDS = ("/virtualservices", "/httproutes")
LEFT_OUT = ("federation.metrics", "federation.logs")
BACKEND_MODULES = ("federation.istio.", "federation.gateway.")
# As achieved, per backend: a change that goes deeper fails here. Before this was measured,
# for a new route, (a) was 7 / 6 (the issue asks at most 10), (b) 23 / 19 and (c) 6 / 4 (the
# issue asks at most 2: here the route's mutation, and its object built for the write). A
# route added again with a new target enters one module more (b): the access layer's
# credentials, for its new destination's support objects are written first.
MAX_LAYERS = {"istio": 5, "gateway-api": 5}
MAX_ENTERED = {"istio/new": 22, "istio/update": 23, "gateway-api/new": 18,
               "gateway-api/update": 19}
MAX_UPCALLS = {"istio": 2, "gateway-api": 2}


def module_of(frame: types.FrameType) -> str:
    return str(frame.f_globals.get("__name__", ""))


def waiting_frames(coro: Any) -> Iterator[types.FrameType]:
    """The frames of a suspended task's coroutine, outermost first, down its awaits."""
    while coro is not None and getattr(coro, "cr_frame", None) is not None:
        yield coro.cr_frame
        coro = coro.cr_await


def ours(name: str) -> bool:
    return name.startswith("federation.")


@dataclass
class PostPath:
    entered: set[str] = field(default_factory=set)
    upcalls: set[tuple[str, str]] = field(default_factory=set)
    layers: set[str] = field(default_factory=set)
    write: tuple[str, str] | None = None  # (method, url) of the first route write


async def follow(federation: Any, path: str, body: dict[str, Any]) -> PostPath:
    """Add a route with the profile hook on, until its first route write."""
    loop = asyncio.get_running_loop()
    before = asyncio.all_tasks(loop)
    root = asyncio.current_task()
    seen = PostPath()

    def of_request(task: Any) -> bool:
        return task is root or (task is not None and task not in before)

    def first_write(frame: types.FrameType, task: Any) -> None:
        stack = set()
        at: types.FrameType | None = frame
        while at is not None:
            stack.add(module_of(at))
            at = at.f_back
        for other in asyncio.all_tasks(loop):  # the request's tasks waiting across the hop
            if of_request(other) and other is not task:
                stack |= {module_of(f) for f in waiting_frames(other.get_coro())}
        seen.layers = {m for m in stack if ours(m)}
        seen.write = (frame.f_locals["method"], frame.f_locals["url"])

    def hook(frame: types.FrameType, event: str, arg: Any) -> None:
        if event != "call" or seen.write is not None or not ours(module_of(frame)):
            return
        task = asyncio.current_task(loop)
        if not of_request(task):
            return
        name = module_of(frame)
        if name not in LEFT_OUT:
            seen.entered.add(name)
        caller = frame.f_back
        if caller is not None and module_of(caller).startswith("federation.mirror") \
                and name.startswith(BACKEND_MODULES):
            seen.upcalls.add((f"{module_of(caller)}.{caller.f_code.co_qualname}",
                              f"{name}.{frame.f_code.co_qualname}"))
        if name == "federation.kube" and frame.f_code.co_name == "_once" and \
                frame.f_locals.get("method") in ("POST", "PUT") and \
                any(kind in frame.f_locals.get("url", "") for kind in ROUTE_KINDS):
            first_write(frame, task)

    sys.setprofile(hook)
    try:
        await federation.add_route(path, body)
    finally:
        sys.setprofile(None)
    return seen


@pytest.fixture(scope="module", params=["istio/new", "istio/update", "gateway-api/new",
                                        "gateway-api/update"])
def measured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[str, PostPath]:
    backend, what = request.param.split("/")
    tmp = tmp_path_factory.mktemp(f"post-{backend}")
    with EmulatedClusters(list(CONTEXTS.values()), tmp) as clusters:
        doc = base_config(str(clusters.kubeconfig))
        for cluster in doc["clusters"]:
            cluster["backend"] = backend
        config = write_clusters_yaml(Path(tmp) / "clusters.yaml", doc)
        with ServiceThread(fast_settings(config)) as svc:
            body = {"target": "http://10.0.0.5:8888", "user": "u"}
            svc.run(svc.federation.add_route("/user/warm", body))
            if what == "new":
                seen = svc.run(follow(svc.federation, "/user/measured", body))
            else:
                moved = {"target": "http://10.0.0.6:8888", "user": "u"}
                seen = svc.run(follow(svc.federation, "/user/warm", moved))
    print(f"\n{request.param}: (a) {len(seen.layers)} {sorted(seen.layers)}\n"
          f"(b) {len(seen.entered)} {sorted(seen.entered)}\n(c) {len(seen.upcalls)} "
          f"{sorted(seen.upcalls)}")
    return request.param, seen


def test_the_first_write_is_a_route_write(measured: tuple[str, PostPath]) -> None:
    case, seen = measured
    backend = case.split("/")[0]
    assert seen.write is not None, "no route write seen"
    assert seen.write[0] in ("POST", "PUT")
    assert "/virtualservices" in seen.write[1] if backend == "istio" else \
        "/httproutes" in seen.write[1]


def test_a_post_goes_through_few_modules(measured: tuple[str, PostPath]) -> None:
    case, seen = measured
    backend = case.split("/")[0]
    # The layers seen include the service, the backend, the mirror's writer and kube: the
    # writer's task and the request's tasks waiting on it are both counted.
    assert {"federation.service", "federation.kube", "federation.mirror._writer",
            f"federation.{backend.split('-')[0]}.backend"} <= seen.layers
    assert len(seen.layers) <= MAX_LAYERS[backend] <= 10, sorted(seen.layers)


def test_modules_entered_before_the_first_write(measured: tuple[str, PostPath]) -> None:
    case, seen = measured
    assert "federation.plan" in seen.entered  # the hook saw the planning, before the write
    assert len(seen.entered) <= MAX_ENTERED[case], sorted(seen.entered)


def test_up_calls_from_the_mirror_into_the_backend(measured: tuple[str, PostPath]) -> None:
    case, seen = measured
    backend = case.split("/")[0]
    # The route's mutation is one: a backend's change, applied by its writer.
    assert any(callee.endswith(".put") for _, callee in seen.upcalls), sorted(seen.upcalls)
    assert len(seen.upcalls) <= MAX_UPCALLS[backend], sorted(seen.upcalls)
