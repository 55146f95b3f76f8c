"""JupyterHub's own proxy client (jupyterhub.proxy.ConfigurableHTTPProxy) against the service."""

from __future__ import annotations

import asyncio
from urllib.parse import quote

import pytest

from ..conftest import TOKEN, stored_routes

jupyterhub_proxy = pytest.importorskip("jupyterhub.proxy")


def hub_proxy(service, host_routing: bool = False):
    proxy = jupyterhub_proxy.ConfigurableHTTPProxy(
        api_url=service.url, auth_token=TOKEN, should_start=False
    )
    proxy.host_routing = host_routing
    return proxy


def spec(name: str, server: str = "") -> str:
    """A user's routespec as the hub writes it: escaped with quote(safe='@~')."""
    out = f"/user/{quote(name, safe='@~')}/"
    return out + (f"{quote(server, safe='@~')}/" if server else "")


ROUTES = [
    ("/", "http://hub:8081", {"hub": True}),
    (spec("zoe"), "https://east.hub.example.org", {"user": "zoe", "server_name": ""}),
    (spec("50fia"), "http://west.hub.example.org:8080", {"user": "50fia", "server_name": ""}),
    (spec("秀樹"), "https://east.hub.example.org", {"user": "秀樹", "server_name": ""}),
    (spec("~TestJH"), "http://10.12.3.4:8888", {"user": "~TestJH", "server_name": ""}),
    (spec("has@"), "http://jupyter-has-40.jhub:8888", {"user": "has@", "server_name": ""}),
    (spec("alice", "gpu"), "http://west.hub.example.org:8080", {"user": "alice", "server_name": "gpu"}),
]


def test_hub_client_round_trip(service, clusters) -> None:
    async def scenario() -> None:
        proxy = hub_proxy(service)
        for routespec, target, data in ROUTES:
            await proxy.add_route(routespec, target, dict(data))
        routes = await proxy.get_all_routes()
        assert set(routes) == {r[0] for r in ROUTES}
        for routespec, target, data in ROUTES:
            got = await proxy.get_route(routespec)
            assert got is not None, routespec
            assert got["routespec"] == routespec
            assert got["target"] == target
            assert {k: v for k, v in got["data"].items() if k != "last_activity"} == data
        await proxy.delete_route(spec("zoe"))
        assert await proxy.get_route(spec("zoe")) is None
        await proxy.delete_route(spec("zoe"))  # 404 is "already deleted" for the hub
        assert len(await proxy.get_all_routes()) == len(ROUTES) - 1

    asyncio.run(scenario())
    stored = stored_routes(clusters)
    assert set(stored["east"]) == {"/user/秀樹"}
    assert set(stored["west"]) == {"/user/50fia", "/user/alice/gpu"}
    assert {"/", "/user/~TestJH", "/user/has@"} <= set(stored["hub"])


def test_hub_client_host_routing(service, clusters) -> None:
    async def scenario() -> None:
        proxy = hub_proxy(service, host_routing=True)
        await proxy.add_route("/", "http://hub:8081", {"hub": True})
        await proxy.add_route("host.name/path/", "http://10.0.0.9:8888", {"user": "x"})
        await proxy.add_route("alice.hub.example.org/user/alice/", "https://east.hub.example.org",
                              {"user": "alice", "server_name": ""})
        routes = await proxy.get_all_routes()
        assert set(routes) == {"/", "host.name/path/", "alice.hub.example.org/user/alice/"}
        got = await proxy.get_route("host.name/path/")
        assert got["target"] == "http://10.0.0.9:8888"
        await proxy.delete_route("host.name/path/")
        assert await proxy.get_route("host.name/path/") is None

    asyncio.run(scenario())
    from ..conftest import objects_in

    roots = [o for o in objects_in(clusters, "east") if "hosts" in o["spec"]]
    assert [r["spec"]["hosts"] for r in roots] == [["alice.hub.example.org"]]
