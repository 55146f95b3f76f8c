"""Routing stays right after arbitrary interleavings of add, replace and delete, as the service
really writes them (incrementally, batched, into the emulated clusters)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from federation.testing.harness import ServiceThread

from ..conftest import CONTEXTS, base_config, fast_settings
from .evaluator import all_orders, route
from .test_properties import (
    GATEWAY,
    HUB_HOST,
    chp_expected,
    expected_destination,
    probes,
    random_table,
)


def cluster_vs(clusters: Any, name: str) -> list[dict[str, Any]]:
    return clusters.servers[CONTEXTS[name]].objects("networking.istio.io", "v1", "virtualservices", "jupyterhub")


def check_objects(clusters: Any, registry: Any, table: dict[str, Any], rng: random.Random) -> int:
    home = cluster_vs(clusters, "hub")
    host_mode = any(p.split("/")[1].count(".") for p in table if p != "/")
    checked = 0
    for host, path in probes(table, rng):
        want = chp_expected(table, host, path, host_mode)
        hop1, hop2 = expected_destination(registry, table, want)
        wire = quote(path, safe="/@~")
        for order in all_orders(len(home), 3, rng):
            got = route(home, gateway=GATEWAY, host=host, path=wire, order=order)
            assert got.destination_host == hop1, (host, path, want, got)
        if hop2 is not None:
            owner = next(c for c in registry.clusters.values()
                         if c.ingress_origin and c.ingress_origin[1] == hop1)
            got = route(cluster_vs(clusters, owner.name), gateway=GATEWAY,
                        host=hop1 if host == HUB_HOST else host, path=wire)
            assert got.destination_host == hop2, (path, want, got)
        checked += 1
    return checked


def test_interleaved_adds_replaces_and_deletes(service, clusters) -> None:
    fed = service.federation
    for seed in range(8):
        rng = random.Random(1000 + seed)
        pool, _ = random_table(rng)
        table: dict[str, Any] = {}

        async def step(path: str, body: dict[str, Any] | None) -> None:
            if body is None:
                await fed.delete_route(path)
            else:
                await fed.add_route(path, dict(body))

        ops = []
        for _ in range(60):
            path = rng.choice(list(pool))
            if path in table and rng.random() < 0.35:
                ops.append((path, None))
                table.pop(path)
            else:
                body = dict(pool[path])
                if rng.random() < 0.5:  # a replace: move the route elsewhere
                    other = pool[rng.choice(list(pool))]
                    body["target"] = other["target"]
                    body.setdefault("user", "x")
                ops.append((path, body))
                table[path] = body

        async def run_all(ops: list[tuple[str, dict[str, Any] | None]]) -> None:
            # Concurrent batches of independent paths, in order per path.
            for i in range(0, len(ops), 6):
                batch = ops[i:i + 6]
                seen: set[str] = set()
                group = []
                for path, body in batch:
                    if path in seen:
                        await asyncio.gather(*group)
                        group, seen = [], set()
                    seen.add(path)
                    group.append(step(path, body))
                await asyncio.gather(*group)

        service.run(run_all(ops))
        service.run(fed.reconcile(grace=0))
        assert {p: r.target for p, r in ((p, fed.table.get(p)) for p in fed.table.owned) if r} == \
            {p: b["target"] for p, b in table.items()}
        check_objects(clusters, fed.registry, table, rng)
        for path in list(table):  # start the next table from empty clusters
            service.run(fed.delete_route(path))


def test_edge_off_writes_nothing_in_home(tmp_path: Path, clusters) -> None:
    doc = base_config(str(clusters.kubeconfig))
    doc["clusters"][1]["edge"] = False
    config = tmp_path / "edge-off.yaml"
    config.write_text(yaml.safe_dump(doc))
    with ServiceThread(fast_settings(config)) as svc:
        svc.run(svc.federation.add_route("/user/alice", {
            "target": "https://east.hub.example.org", "user": "alice"}))
        svc.run(svc.federation.add_route("/user/bob", {
            "target": "http://west.hub.example.org:8080", "user": "bob"}))
    home_paths = {r.get("name") for o in cluster_vs(clusters, "hub") for r in o["spec"].get("http", [])}
    east_rules = [r for o in cluster_vs(clusters, "east") for r in o["spec"].get("http", []) if "route" in r]
    assert len(east_rules) == 1
    from federation.model import route_id

    assert route_id("/user/alice") not in home_paths  # edge off: east is reached by DNS
    assert route_id("/user/bob") in home_paths  # west still has its edge rule
    hub_se = {o["spec"]["hosts"][0] for o in clusters.servers[CONTEXTS["hub"]].objects(
        "networking.istio.io", "v1", "serviceentries", "jupyterhub")}
    assert hub_se == {"west.hub.example.org"}
