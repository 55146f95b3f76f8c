"""A real JupyterHub takes traffic activity read from a real Prometheus into a user's
``last_activity``: the hub (``last_activity_interval`` 1 s here) reads the route table, as it
does from configurable-http-proxy, and keeps the newest time."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from federation.activity import iso
from federation.testing.harness import write_clusters_yaml

from ..conftest import TOKEN, base_config
from ..prometheus import GatewayMetrics, Prometheus
from .test_real_hub import BOB_SVC, Hub, stack, wait_for  # noqa: F401 - stack is a fixture


@pytest.fixture
def config_path(
    tmp_path: Path, clusters: Any, mesh: tuple[Prometheus, GatewayMetrics], monkeypatch: Any
) -> Path:
    """The real hub test's clusters, with east reading its activity from the Prometheus."""
    # Read by the service's settings from the environment, as in a deployment.
    monkeypatch.setenv("FEDERATION_ACTIVITY_INTERVAL", "0.5")
    doc = base_config(str(clusters.kubeconfig))
    doc["clusters"][1]["activity"] = {"prometheusUrl": mesh[0].url, "timeout": 2}
    return write_clusters_yaml(tmp_path / "clusters.yaml", doc)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).replace(tzinfo=None)


def test_the_hub_takes_traffic_activity_into_last_activity(
    stack: dict[str, Any],  # noqa: F811 - the real hub test's fixture, with this config_path
    mesh: tuple[Prometheus, GatewayMetrics],
) -> None:
    _, gateway = mesh
    hub: Hub = stack["hub"]
    api = httpx.Client(base_url=stack["svc"].url, headers={"Authorization": f"token {TOKEN}"},
                       timeout=10)

    def route() -> str:
        return str(api.get("/api/routes/user/Bob").json()["last_activity"])

    def hub_times() -> tuple[datetime, datetime]:
        r = hub.api.get("/users/Bob")
        assert r.status_code == 200, r.text
        user = r.json()
        return when(user["last_activity"]), when(user["servers"][""]["last_activity"])

    try:
        hub.start()
        hub.create_user("Bob")
        hub.start_server("Bob", profile="east")
        written = route()
        time.sleep(1.0)  # so that traffic is clearly later than the write and the spawn
        spawned = hub_times()  # the hub's own record before any traffic

        before = time.time()
        gateway.hit(BOB_SVC, 7)  # Bob uses his server through east's ingress gateway
        wait_for(lambda: route() > written, "the route's last_activity to move")
        assert route() >= iso(before)
        # The hub's user and server take exactly the service's value (once it settles).
        wait_for(lambda: hub_times() == (when(route()), when(route())),
                 f"the hub to take the route's last_activity\n{hub.tail()}")
        assert hub_times()[0] >= when(iso(before)) > max(spawned)
        assert hub.errors() == []
    except BaseException:
        print(f"--- jupyterhub log ---\n{hub.tail(200)}")
        raise
    finally:
        api.close()
