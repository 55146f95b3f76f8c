"""Traffic activity read from a real Prometheus server.

Real: the ``prometheus`` binary (scraping every 0.2 s), the service, its HTTP API, the
Kubernetes REST traffic (to emulated API servers). Stand-in: the ingress gateway's metrics
endpoint (``tests/prometheus.py``), whose counters the tests move as requests would.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from federation.activity import iso
from federation.testing.harness import ServiceThread, free_port, wait_for, write_clusters_yaml

from ..conftest import TOKEN, USER_NAMESPACE, base_config, fast_settings
from ..prometheus import GatewayMetrics, Prometheus

EAST_URL = "https://east.hub.example.org"


def svc_of(user: str) -> str:
    """MultiClusterKubeSpawner's Service for a (lower-case) user: jupyter-{user} in the
    namespace clusters.yaml names (base_config's USER_NAMESPACE)."""
    return f"jupyter-{user}.{USER_NAMESPACE}.svc.cluster.local"


# Each test has users of its own: the shared Prometheus keeps every counter it has scraped.
INTERVAL = 0.5




def activity_config(path: Path, kubeconfig: str, prometheus_url: str, **keys: Any) -> Path:
    doc = base_config(kubeconfig)
    # east reads its activity; west has none (its /clusters row says so).
    doc["clusters"][1]["activity"] = {"prometheusUrl": prometheus_url, "timeout": 1, **keys}
    return write_clusters_yaml(path, doc)


def start_service(config: Path, **overrides: Any) -> ServiceThread:
    settings = fast_settings(config, activity_interval=INTERVAL, activity_recovery=600, **overrides)
    svc = ServiceThread(settings)
    svc.start()
    svc.wait_ready()
    return svc


def client(svc: ServiceThread) -> httpx.Client:
    return httpx.Client(base_url=svc.url, headers={"Authorization": f"token {TOKEN}"}, timeout=10)


def add_user(api: httpx.Client, user: str) -> str:
    r = api.post(f"/api/routes/user/{user}",
                 json={"target": EAST_URL, "user": user, "server_name": ""})
    assert r.status_code == 201, r.text
    return str(api.get(f"/api/routes/user/{user}").json()["last_activity"])


def last_activity(api: httpx.Client, user: str) -> str:
    return str(api.get(f"/api/routes/user/{user}").json()["last_activity"])


def east_activity(api: httpx.Client) -> dict[str, Any]:
    r = api.get("/clusters/east")
    assert r.status_code == 200, r.text
    return dict(r.json()["activity"])


def reads_after(api: httpx.Client, moment: float, count: int = 2) -> None:
    """Wait until east's source has read successfully ``count`` intervals past ``moment``."""
    wait_for(
        lambda: (east_activity(api)["covered_until"] or "") >= iso(moment + count * INTERVAL),
        f"{count} more activity reads",
    )


def test_requests_move_only_their_routes_activity(
    tmp_path: Path, clusters: Any, mesh: tuple[Prometheus, GatewayMetrics]
) -> None:
    prometheus, gateway = mesh
    config = activity_config(tmp_path / "clusters.yaml", str(clusters.kubeconfig), prometheus.url)
    svc = start_service(config)
    try:
        with client(svc) as api:
            written = {user: add_user(api, user) for user in ("amy", "ben")}
            # Traffic that is not a user's through the gateway: Ben's own sidecar reporting, the
            # hub calling Ben's server, and the home gateway's edge hop to east's ingress.
            gateway.hit(svc_of("ben"), 5, reporter="destination", workload="jupyter-ben")
            gateway.hit(svc_of("ben"), 5, workload="hub")
            gateway.hit("east.hub.example.org", 5)
            before = time.time()
            gateway.hit(svc_of("amy"), 3)
            gateway.hit(svc_of("amy"), 1, code="404")
            prometheus.wait_scraped(svc_of("amy"), 4)
            gateway.hit(svc_of("amy"), 2)  # a second request on a series that already exists

            moved = wait_for(lambda: last_activity(api, "amy") > written["amy"] and
                             last_activity(api, "amy"), "amy's last_activity to move")
            assert iso(before) <= moved <= iso(time.time())
            reads_after(api, time.time())
            assert last_activity(api, "ben") == written["ben"]
            later = last_activity(api, "amy")
            assert later >= moved

            # The whole table and inactive_since answer from the same values.
            table = api.get("/api/routes").json()
            assert table["/user/amy"]["last_activity"] == later
            assert table["/user/ben"]["last_activity"] == written["ben"]
            between = api.get("/api/routes", params={"inactive_since": later}).json()
            assert set(between) == {"/user/ben"}
            assert set(api.get("/api/routes", params={"inactive_since": iso(time.time() + 60)})
                       .json()) == {"/user/amy", "/user/ben"}

            state = east_activity(api)
            assert (state["state"], state["last_error"], state["prometheus"]) == (
                "ok", None, prometheus.url)
            assert api.get("/clusters/west").json()["activity"] is None
            text = api.get("/clusters", params={"format": "text"}).text
            assert text.splitlines()[0].split().count("activity") == 1
            metrics = api.get("/metrics").text
            assert 'federation_activity_reads_total{cluster="east"}' in metrics
            assert 'federation_activity_read_seconds_count{cluster="east"}' in metrics
    finally:
        svc.stop()


def test_a_starting_replica_recovers_the_recent_past(
    tmp_path: Path, clusters: Any, mesh: tuple[Prometheus, GatewayMetrics]
) -> None:
    prometheus, gateway = mesh
    config = activity_config(tmp_path / "clusters.yaml", str(clusters.kubeconfig), prometheus.url)
    first = start_service(config)
    try:
        with client(first) as api:
            written = add_user(api, "cleo")
            time.sleep(0.01)
            hit_at = time.time()
            gateway.hit(svc_of("cleo"), 2)
            prometheus.wait_scraped(svc_of("cleo"), 2)
            wait_for(lambda: last_activity(api, "cleo") > written,
                     "the first replica to see cleo's requests")
            reads_after(api, time.time())  # a late sample may still move it by a point
            seen_by_first = last_activity(api, "cleo")
    finally:
        first.stop()
    time.sleep(4 * INTERVAL)  # the past: nothing happens while no replica runs
    started = time.time()
    second = start_service(config)
    try:
        with client(second) as api:
            recovered = wait_for(
                lambda: last_activity(api, "cleo") > written and last_activity(api, "cleo"),
                "the new replica to recover cleo's activity",
            )
            # From the past, to the granularity of one read (two intervals and a scrape), not
            # the time of the replica's start.
            assert iso(hit_at) <= recovered <= iso(hit_at + 2 * INTERVAL + 1.0)
            assert recovered < iso(started)
            # Same points, same data: the same answer as the replica that saw it happen.
            assert recovered == seen_by_first
    finally:
        second.stop()


def timed_reads(api: httpx.Client, count: int = 30) -> list[float]:
    """Latency of route requests as the hub makes them (whole table, one route)."""
    out = []
    for i in range(count):
        start = time.perf_counter()
        r = api.get("/api/routes" if i % 2 else "/api/routes/user/dan")
        out.append(time.perf_counter() - start)
        assert r.status_code == 200
    return out


def test_prometheus_down_never_slows_routes_and_recovery_needs_no_restart(
    tmp_path: Path, clusters: Any, mesh: tuple[Prometheus, GatewayMetrics]
) -> None:
    prometheus, gateway = mesh
    config = activity_config(tmp_path / "clusters.yaml", str(clusters.kubeconfig), prometheus.url,
                             timeout=2)
    svc = start_service(config)
    try:
        with client(svc) as api:
            written = {user: add_user(api, user) for user in ("dan", "eve")}
            gateway.hit(svc_of("dan"), 1)
            wait_for(lambda: last_activity(api, "dan") > written["dan"], "dan's first activity")
            usual = timed_reads(api)

            # 1. Hung (accepts connections, never answers): reads time out after 2 s.
            prometheus.pause()
            failing = wait_for(lambda: (s := east_activity(api))["state"] == "failing" and s,
                               "the activity source to show failing")
            assert "no answer in 2s" in failing["last_error"]
            known = last_activity(api, "dan")
            during = timed_reads(api)
            # Route requests do not wait on Prometheus: none near its 2 s timeout, and at about
            # their usual speed (generous: two cores are shared with the rest of the suite).
            assert max(during) < 1.5, during
            assert statistics.median(during) <= 3 * statistics.median(usual) + 0.05, (usual, during)
            assert last_activity(api, "dan") == known  # the last known activity stays
            assert last_activity(api, "eve") == written["eve"]

            # 2. Back: picked up at the next read; new requests move eve.
            prometheus.resume()
            wait_for(lambda: east_activity(api)["state"] == "ok", "the source to recover")
            before = time.time()
            gateway.hit(svc_of("eve"), 1)
            moved = wait_for(lambda: last_activity(api, "eve") > written["eve"] and
                             last_activity(api, "eve"), "eve's activity after the recovery")
            assert moved >= iso(before)

            # 3. Stopped (connection refused), then started again on the same port and data.
            prometheus.stop()
            refused = wait_for(lambda: (s := east_activity(api))["state"] == "failing" and s,
                               "the source to fail on a stopped Prometheus")
            assert refused["last_error"].startswith("ConnectError"), refused
            during = timed_reads(api)
            assert max(during) < 1.5, during
            prometheus.start()
            wait_for(lambda: east_activity(api)["state"] == "ok", "the source to recover again")
            before = time.time()
            gateway.hit(svc_of("dan"), 1)
            wait_for(lambda: last_activity(api, "dan") >= iso(before),
                     "dan's activity after the restart of Prometheus")
            metrics = api.get("/metrics").text
            failures = [line for line in metrics.splitlines()
                        if line.startswith('federation_activity_read_failures_total{cluster="east"}')]
            assert failures and float(failures[0].split()[-1]) >= 2, failures
    finally:
        svc.stop()


def test_check_reads_each_activity_source_once(
    tmp_path: Path, clusters: Any, mesh: tuple[Prometheus, GatewayMetrics],
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    from federation.check import run_check
    from federation.config import load_registry

    prometheus, gateway = mesh
    gateway.hit(svc_of("fay"), 1)
    prometheus.wait_scraped(svc_of("fay"), 1)
    time.sleep(2 * INTERVAL)  # a point of the interval's grid after it
    config = activity_config(tmp_path / "clusters.yaml", str(clusters.kubeconfig), prometheus.url)
    doc = yaml.safe_load(config.read_text())
    doc["clusters"][2]["activity"] = {"prometheusUrl": f"http://127.0.0.1:{free_port()}"}
    write_clusters_yaml(config, doc)
    asyncio.run(run_check(load_registry(config), fast_settings(config, activity_interval=INTERVAL)))
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    east = [line for line in lines if "activity from Prometheus" in line and prometheus.url in line]
    assert len(east) == 1 and east[0].startswith("ok") and "destinations with requests" in east[0]
    west = [line for line in lines if "activity from Prometheus" in line and line not in east]
    assert len(west) == 1 and west[0].startswith("FAIL") and "ConnectError" in west[0]


def test_a_reloaded_config_adds_and_removes_a_source(
    tmp_path: Path, clusters: Any, mesh: tuple[Prometheus, GatewayMetrics]
) -> None:
    from federation.app import reload_config

    prometheus, gateway = mesh
    config = write_clusters_yaml(tmp_path / "clusters.yaml", base_config(str(clusters.kubeconfig)))
    svc = start_service(config)
    try:
        with client(svc) as api:
            written = add_user(api, "gus")
            assert api.get("/clusters/east").json()["activity"] is None
            activity_config(config, str(clusters.kubeconfig), prometheus.url)
            assert svc.run(reload_config(svc.app)) is True
            wait_for(lambda: (api.get("/clusters/east").json()["activity"] or {}).get("state") == "ok",
                     "the new source's first read")
            gateway.hit(svc_of("gus"), 1)
            wait_for(lambda: last_activity(api, "gus") > written, "gus's activity after the reload")
            write_clusters_yaml(config, base_config(str(clusters.kubeconfig)))
            assert svc.run(reload_config(svc.app)) is True
            wait_for(lambda: api.get("/clusters/east").json()["activity"] is None,
                     "the source to go with its config")
    finally:
        svc.stop()
