"""The chart's Grafana dashboard: the shipped JSON is what scripts/build_dashboard.py builds now,
every metric a panel queries is exported by a running service, and the chart ships it in a
ConfigMap that kube-prometheus-stack's Grafana sidecar discovers."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from .charts.conftest import require_helm
from .conftest import REPO, TOKEN

SHIPPED = REPO / "charts" / "federation-proxy" / "dashboards" / "federation.json"
METRIC = re.compile(r"\b(federation_[a-z_]+)\b")
# What a metric family of each type exposes as series (prometheus_client's text format).
SUFFIXES = {"counter": ("",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
            "summary": ("", "_sum", "_count")}


@pytest.fixture(scope="module")
def builder() -> Iterator[ModuleType]:
    pytest.importorskip("grafana_foundation_sdk",
                        reason="the dashboard extra is not installed (pip install -e '.[dashboard]')")
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import build_dashboard
    finally:
        sys.path.pop(0)
    yield build_dashboard


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def queried_metrics(board: dict[str, Any]) -> set[str]:
    exprs = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    exprs += [str(v.get("query", "")) for v in board["templating"]["list"]]
    return {m for expr in exprs for m in METRIC.findall(expr)}


def exported_series(text: str) -> set[str]:
    """Series names /metrics can carry, from its # TYPE lines (present before any sample)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE federation_"):
            _, _, family, kind = line.split()
            names |= {family + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return names


def test_the_shipped_dashboard_is_what_the_builder_makes(builder: ModuleType) -> None:
    assert SHIPPED.read_text() == builder.render(), "run: .venv/bin/python scripts/build_dashboard.py"


def test_every_queried_metric_is_on_metrics_of_a_running_service(service: Any) -> None:
    board = json.loads(SHIPPED.read_text())
    text = httpx.get(service.url + "/metrics", headers={"Authorization": f"token {TOKEN}"}).text
    exported = exported_series(text)
    queried = queried_metrics(board)
    assert len(queried) >= 12
    assert queried - exported == set(), f"queried but not exported: {sorted(queried - exported)}"


def test_the_panels_cover_what_an_operator_watches() -> None:
    board = json.loads(SHIPPED.read_text())
    by_title = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels(board)}
    wanted = {
        "Open circuits": 'state="circuit-open"',
        "Calls by cluster and verb": "by (cluster, verb)",
        "Call latency p95 by cluster and verb": "federation_kube_call_seconds_bucket",
        "Cache age": "federation_cache_age_seconds",
        "Watch restarts": "federation_watch_restarts_total",
        "Activity reads and failures": "federation_activity_read_failures_total",
        "Warm-up timeouts": "federation_warmup_timeouts_total",
        "Routes to a missing Service": "federation_route_destinations",
    }
    for title, fragment in wanted.items():
        assert fragment in by_title[title], title
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    assert board["uid"] == "federation-proxy"


def test_the_cluster_state_metric_follows_the_circuit() -> None:
    """federation_cluster_state, which the circuit panels read, flips with the client's state."""
    from prometheus_client import REGISTRY

    from federation import logs
    from federation.kube import ClusterClient

    client = ClusterClient.__new__(ClusterClient)
    client.name, client.state = "dash-test", None
    for state in (logs.REACHABLE, logs.FAILING, logs.CIRCUIT_OPEN, logs.REACHABLE):
        client._set_state(state, "boom" if state != logs.REACHABLE else None)
        values = {s: REGISTRY.get_sample_value("federation_cluster_state",
                                               {"cluster": "dash-test", "state": s})
                  for s in (logs.REACHABLE, logs.FAILING, logs.CIRCUIT_OPEN)}
        assert values == {s: 1.0 if s == state else 0.0 for s in values}


def test_the_chart_ships_the_dashboard_only_when_asked(tmp_path) -> None:
    helm = require_helm()
    chart = str(REPO / "charts" / "federation-proxy")

    def rendered(*args: str) -> list[dict[str, Any]]:
        out = subprocess.run([helm, "template", "fed", chart, "--namespace", "jupyterhub",
                              "--set", "image.repository=registry.example.org/fp",
                              "--set", "image.tag=1", *args],
                             capture_output=True, text=True, check=True).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    assert not [d for d in rendered() if d["metadata"]["name"].endswith("-dashboard")]
    (cm,) = [d for d in rendered("--set", "grafanaDashboard.enabled=true",
                                 "--set", "grafanaDashboard.namespace=monitoring")
             if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert json.loads(cm["data"]["federation-proxy.json"]) == json.loads(SHIPPED.read_text())
    bad = subprocess.run([helm, "template", "fed", chart, "--set", "grafanaDashboard.colour=red"],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "colour" in bad.stderr
