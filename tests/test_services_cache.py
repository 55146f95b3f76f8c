"""The Services caches the destination check reads (federation.services_cache): one list, then a
watch that brings what changes out of band; a relist after the watch expires (410); a namespace
the service may not list or watch stays unknown and is not hammered; the watch has a
connection pool of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from federation import services_cache
from federation.config import parse_registry
from federation.kube import ClusterClient, build_clients
from federation.services_cache import ClusterServices
from federation.testing.kubeapi import KubeAPIServer, write_kubeconfig
from federation.testing.kubeapi.rbac import Rule

from .conftest import USER_NAMESPACE, base_config, fast_settings

PROXY = "federation-proxy"  # the user the service's requests are recorded under


@pytest.fixture
def server(tmp_path: Path) -> Iterator[KubeAPIServer]:
    with KubeAPIServer("east") as api:
        api.add_namespace(USER_NAMESPACE)
        api.bookmark_interval = 3600  # no bookmark moves a watch's version behind a test's back
        api.add_token(api.token, PROXY)  # the service's requests, recorded
        yield api


def east_client(server: KubeAPIServer, tmp_path: Path) -> ClusterClient:
    """The service's client of one cluster, "east", served by ``server`` (in a running loop)."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig",
                                  {"east": (server.url, server.token, "jupyterhub")})
    doc = base_config(str(kubeconfig))
    doc["clusters"] = [c for c in doc["clusters"] if c["name"] == "east"]
    doc["clusters"][0]["context"] = "east"
    doc["home"] = "east"
    return build_clients(parse_registry(doc), fast_settings(tmp_path / "clusters.yaml"))["east"]


def run(server: KubeAPIServer, tmp_path: Path,
        body: Callable[[ClusterServices], Awaitable[None]]) -> None:
    """Run ``body`` with a cache of the east cluster's Services, stopped afterwards."""

    async def main() -> None:
        client = east_client(server, tmp_path)
        services = ClusterServices("east", client, timeout=30)
        try:
            await body(services)
        finally:
            await services.stop()
            await client.close()

    asyncio.run(main())


def api(server: KubeAPIServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=10,
                        headers={"Authorization": f"Bearer {server.token}"})


def service_body(name: str, *ports: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": USER_NAMESPACE},
            "spec": {"ports": [{"port": p, "targetPort": p} for p in ports]}}


def create(server: KubeAPIServer, name: str, *ports: int) -> None:
    with api(server) as http:
        http.post(f"/api/v1/namespaces/{USER_NAMESPACE}/services",
                  json=service_body(name, *ports)).raise_for_status()


def delete(server: KubeAPIServer, name: str) -> None:
    with api(server) as http:
        http.delete(f"/api/v1/namespaces/{USER_NAMESPACE}/services/{name}").raise_for_status()


def lists(server: KubeAPIServer) -> int:
    """The Service lists the service made in the users' namespace."""
    return sum(1 for a in server.access_log if a.user == PROXY and a.verb == "list"
               and a.resource == "services" and a.namespace == USER_NAMESPACE)


async def until(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def test_one_list_then_changes_made_out_of_band_arrive_by_the_watch(
        server: KubeAPIServer, tmp_path: Path) -> None:
    create(server, "jupyter-alice", 8888)

    async def body(services: ClusterServices) -> None:
        await services.want({USER_NAMESPACE})
        assert services.view(USER_NAMESPACE) == ({"jupyter-alice": frozenset({8888})}, None)
        before = services.generations()
        await asyncio.to_thread(create, server, "jupyter-bob", 80)
        await until(lambda: "jupyter-bob" in (services.view(USER_NAMESPACE)[0] or {}),
                    "a Service created out of band")
        assert services.generations() != before
        await asyncio.to_thread(delete, server, "jupyter-alice")
        await until(lambda: "jupyter-alice" not in (services.view(USER_NAMESPACE)[0] or {}),
                    "a Service deleted out of band")
        assert services.view(USER_NAMESPACE) == ({"jupyter-bob": frozenset({80})}, None)
        # Asked again for the same namespace: nothing new is read.
        await services.want({USER_NAMESPACE})
        assert lists(server) == 1
        assert "services" in server.watched_kinds()

    run(server, tmp_path, body)


def test_a_watch_that_expired_is_followed_by_a_relist(server: KubeAPIServer,
                                                      tmp_path: Path) -> None:
    async def body(services: ClusterServices) -> None:
        await services.want({USER_NAMESPACE})
        await until(lambda: "services" in server.watched_kinds(), "the watch")
        assert lists(server) == 1
        # Something elsewhere moves the version on, the history is compacted past the watch's
        # version, and a Service is made while no watch is open: the resumed watch gets 410.
        with api(server) as http:
            await asyncio.to_thread(http.post, f"/api/v1/namespaces/{USER_NAMESPACE}/configmaps",
                                    json={"apiVersion": "v1", "kind": "ConfigMap",
                                          "metadata": {"name": "other-kind"}})
        server.set_down(True)
        server.break_watches()
        server.compact()
        server.set_down(False)
        await asyncio.to_thread(create, server, "jupyter-carol", 8888)
        await until(lambda: "jupyter-carol" in (services.view(USER_NAMESPACE)[0] or {}),
                    "the Service made during the break, by a relist", timeout=15)
        assert lists(server) == 2

    run(server, tmp_path, body)


def test_a_namespace_the_service_may_not_read_is_unknown_and_tried_again_rarely(
        server: KubeAPIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server.add_token(server.token, PROXY, [Rule("jupyterhub", frozenset("*"), frozenset("*"),
                                                frozenset("*"), frozenset())])
    monkeypatch.setattr(services_cache, "FORBIDDEN_RETRY", 1.0)

    async def body(services: ClusterServices) -> None:
        await services.want({USER_NAMESPACE})
        served, error = services.view(USER_NAMESPACE)
        assert served is None and error is not None and "403" in error
        await asyncio.sleep(0.5)  # the retry schedule (0.05 s here) would have tried often
        refused = server.accesses(PROXY, allowed=False)
        assert refused == {("list", "", "services", USER_NAMESPACE)}
        assert lists(server) == 1
        # Granted later: the next try (FORBIDDEN_RETRY later) reads it.
        server.add_token(server.token, PROXY, [Rule(None, frozenset("*"), frozenset("*"),
                                                    frozenset("*"), frozenset())])
        await until(lambda: services.view(USER_NAMESPACE)[0] is not None,
                    "the namespace read once allowed", timeout=5)
        assert services.view(USER_NAMESPACE) == ({}, None)

    run(server, tmp_path, body)


def test_without_the_watch_verb_the_namespace_is_unknown(server: KubeAPIServer,
                                                         tmp_path: Path) -> None:
    """get and list alone are not enough: a cache nothing keeps fresh would be trusted."""
    server.add_token(server.token, PROXY, [
        Rule("jupyterhub", frozenset("*"), frozenset("*"), frozenset("*"), frozenset()),
        Rule(USER_NAMESPACE, frozenset({""}), frozenset({"services"}),
             frozenset({"get", "list"}), frozenset())])

    async def body(services: ClusterServices) -> None:
        await services.want({USER_NAMESPACE})
        await until(lambda: services.view(USER_NAMESPACE)[1] is not None, "the refused watch")
        served, error = services.view(USER_NAMESPACE)
        assert served is None and error is not None
        assert "403" in error and "watch" in error

    run(server, tmp_path, body)


def test_a_namespace_no_route_needs_is_no_longer_watched(server: KubeAPIServer,
                                                         tmp_path: Path) -> None:
    async def body(services: ClusterServices) -> None:
        await services.want({USER_NAMESPACE})
        await until(lambda: server.open_watches == 1, "the watch")
        await services.want(set())
        assert services.view(USER_NAMESPACE) == (None, None)
        await until(lambda: server.open_watches == 0, "the watch closed")

    run(server, tmp_path, body)


def test_refused_services_watches_leave_the_circuit_and_housekeeping_alone(
        server: KubeAPIServer, tmp_path: Path) -> None:
    """The Services watches are advisory: a restarting API server breaks many at once, and
    their failures must not open the circuit that route writes go through, nor make
    housekeeping's idle passes full ones."""
    async def body(services: ClusterServices) -> None:
        client = services.client
        client.side_watch_pool("probe")
        server.inject_errors(20, 503, verbs=["watch"])
        for _ in range(10):
            with pytest.raises(Exception):  # noqa: B017 - any refusal: the point is what follows
                async for _line in client.watch(services_cache.SERVICES, "", "0", 5,
                                                namespace=USER_NAMESPACE, pool="probe"):
                    break
        assert client.circuit.failures == 0
        assert client.failed_calls == 0
        await client.close_side_pool("probe")

    run(server, tmp_path, body)


def test_a_namespace_whose_reads_keep_failing_turns_unknown_and_comes_back(
        server: KubeAPIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A watch that cannot reconnect keeps nothing fresh: after STALE_AFTER of failures the
    namespace is unknown (not judged by its last list), and the next list brings it back."""
    monkeypatch.setattr(services_cache, "STALE_AFTER", 0.5)
    create(server, "jupyter-alice", 8888)

    async def body(services: ClusterServices) -> None:
        await services.want({USER_NAMESPACE})
        await until(lambda: server.open_watches == 1, "the watch")
        assert services.view(USER_NAMESPACE) == ({"jupyter-alice": frozenset({8888})}, None)
        server.inject_errors(1_000_000, 503, verbs=["list", "watch"])
        server.break_watches()
        await until(lambda: services.view(USER_NAMESPACE)[0] is None,
                    "the namespace unknown after its reads kept failing")
        error = services.view(USER_NAMESPACE)[1]
        assert error is not None and "no read has succeeded" in error and "503" in error
        server.clear_errors()
        await until(lambda: services.view(USER_NAMESPACE)[0] is not None,
                    "the namespace read again once the API server answers")
        assert services.view(USER_NAMESPACE) == ({"jupyter-alice": frozenset({8888})}, None)

    run(server, tmp_path, body)


def test_a_quiet_watch_that_answers_counts_as_a_read(
        server: KubeAPIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure, then a resumed watch that works but hears no change (bookmarks only), then
    another failure long after: the namespace stays known (its watch was answering)."""
    monkeypatch.setattr(services_cache, "STALE_AFTER", 0.5)
    server.bookmark_interval = 0.1
    create(server, "jupyter-alice", 8888)

    async def body(services: ClusterServices) -> None:
        await services.want({USER_NAMESPACE})
        await until(lambda: server.open_watches == 1, "the watch")
        server.inject_errors(1, 503, verbs=["watch"])
        server.break_watches()  # one failed reconnect, then the watch resumes
        await until(lambda: server.open_watches == 1 and not server._faults, "the watch back")
        await asyncio.sleep(1.0)  # quiet: bookmarks only, past STALE_AFTER
        before = services.generations()
        server.inject_errors(1, 503, verbs=["watch"])
        server.break_watches()
        await asyncio.sleep(0.3)
        await until(lambda: server.open_watches == 1, "the watch back again")
        assert services.view(USER_NAMESPACE) == ({"jupyter-alice": frozenset({8888})}, None)
        assert services.generations() == before  # never unknown meanwhile

    run(server, tmp_path, body)
