"""Istio shards and roots built from an older configuration are rendered again: after a restart
or a reload that changed what they hold (the user Service's namespace, the hosts), the first
housekeeping pass rewrites them, and later passes write nothing."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from federation.config import parse_registry
from federation.istio import shards as shards_module
from federation.istio.index import ShardIndex, ShardState
from federation.istio.layout import ShardKey
from federation.istio.objects import ANN_SPEC, build_root, build_shard, stored_spec_hash
from federation.istio.rerender import Rerenderer
from federation.mirror import RouteEntries
from federation.model import Entry
from federation.scope import Scope
from federation.table import RouteTable
from federation.testing.harness import ServiceThread, wait_for, write_clusters_yaml
from federation.testing.kubeapi import write_kubeconfig

from .api.test_housekeeping_work import Counted
from .conftest import (
    CONTEXTS,
    TOKEN,
    base_config,
    fast_settings,
    objects_in,
    running_replicas,
    stored_routes,
)
from .routing.evaluator import route

HEADERS = {"Authorization": f"token {TOKEN}"}
GATEWAY = "istio-system/jupyterhub-gateway"
WRITES = ("create", "update", "patch", "delete")


def config(tmp_path: Path, clusters: Any, namespace: str, hosts: list[str] | None = None) -> Path:
    doc = base_config(str(clusters.kubeconfig))
    for cluster in doc["clusters"]:
        if "userService" in cluster:
            cluster["userService"]["namespace"] = namespace
    if hosts is not None:
        doc["defaults"]["hosts"] = hosts
    return write_clusters_yaml(tmp_path / "clusters.yaml", doc)


def destination(clusters: Any, host: str = "hub.example.org") -> str | None:
    return route(objects_in(clusters, "east"), gateway=GATEWAY, host=host,
                 path="/user/alice/lab").destination_host


def add_alice(svc: ServiceThread) -> None:
    answer = httpx.post(svc.url + "/api/routes/user/alice", headers=HEADERS,
                        json={"target": "https://east.hub.example.org", "user": "alice"})
    assert answer.status_code == 201, answer.text


def writes(clusters: Any) -> dict[str, int]:
    """Write requests each cluster's API server answered, by cluster name."""
    return {name: sum(clusters.servers[context].request_counts.get(v, 0) for v in WRITES)
            for name, context in CONTEXTS.items()}


def claim_renewals(svc: ServiceThread) -> dict[str, int]:
    """The writes every pass makes: one per host claim held (a Lease renewed)."""
    held = [key[0] for key in svc.federation.claims.held]
    return {name: held.count(name) for name in CONTEXTS}


def virtual_services(clusters: Any) -> dict[str, dict[str, str]]:
    return {name: {o["metadata"]["name"]: o["metadata"]["resourceVersion"]
                   for o in objects_in(clusters, name)} for name in CONTEXTS}


@contextmanager
def counting_renders(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counted]:
    counted = Counted(shards_module.ShardWriters.spec_hash_now)
    monkeypatch.setattr(shards_module.ShardWriters, "spec_hash_now",
                        lambda self, *a: counted(self, *a))
    yield counted


def assert_idle_passes_write_nothing(svc: ServiceThread, clusters: Any,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The pass after the re-render writes nothing (it may compare the shards whose own
    writes' watch events were heard before their answers: rendered from kept rules); the
    next one, made to look at every store (as the periodic full pass does), not even that."""
    for look in ("heard since", "nothing"):
        with counting_renders(monkeypatch) as renders:
            before = virtual_services(clusters)
            for server in clusters.servers.values():
                server.reset_counts()
            for store in svc.federation.stores.values():
                store._settled = None
            svc.run(svc.federation.reconcile())
            assert writes(clusters) == claim_renewals(svc), look
            assert virtual_services(clusters) == before, look
        if look == "nothing":
            assert renders.calls == 0  # nothing read from the clusters since: nothing compared


def test_a_restart_with_a_new_user_namespace_points_routes_there(
        tmp_path: Path, clusters: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with ServiceThread(fast_settings(config(tmp_path, clusters, "jupyter-old"))) as svc:
        add_alice(svc)
    assert destination(clusters) == "jupyter-alice.jupyter-old.svc.cluster.local"
    with ServiceThread(fast_settings(config(tmp_path, clusters, "jupyter-users"))) as svc:
        svc.run(svc.federation.reconcile())
        assert destination(clusters) == "jupyter-alice.jupyter-users.svc.cluster.local"
        assert_idle_passes_write_nothing(svc, clusters, monkeypatch)


def test_an_unchanged_restart_writes_nothing(tmp_path: Path, clusters: Any) -> None:
    path = config(tmp_path, clusters, "jupyter-users")
    with ServiceThread(fast_settings(path)) as svc:
        add_alice(svc)
    before = virtual_services(clusters)
    with ServiceThread(fast_settings(path)) as svc:
        svc.run(svc.federation.reconcile())
        for server in clusters.servers.values():
            server.reset_counts()
        svc.run(svc.federation.reconcile())
        assert writes(clusters) == claim_renewals(svc)
    assert virtual_services(clusters) == before


def test_a_reload_with_new_namespace_and_hosts_renders_shards_and_roots_again(
        tmp_path: Path, clusters: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with ServiceThread(fast_settings(config(tmp_path, clusters, "jupyter-old"))) as svc:
        add_alice(svc)
        svc.run(svc.federation.reconcile())
        assert destination(clusters) == "jupyter-alice.jupyter-old.svc.cluster.local"
        assert destination(clusters, "www.hub.example.org") is None
        config(tmp_path, clusters, "jupyter-users", ["hub.example.org", "www.hub.example.org"])
        svc.app.state.reload_trigger.set()  # what SIGHUP does
        wait_for(lambda: svc.federation.registry.clusters["east"].user_service.namespace
                 == "jupyter-users", "the reload to be applied", timeout=10)
        svc.run(svc.federation.reconcile())
        assert destination(clusters) == "jupyter-alice.jupyter-users.svc.cluster.local"
        # The root's hosts come from the configuration too.
        assert destination(clusters, "www.hub.example.org") == \
            "jupyter-alice.jupyter-users.svc.cluster.local"
        assert_idle_passes_write_nothing(svc, clusters, monkeypatch)


def test_a_shard_or_root_written_without_a_hash_is_judged_by_its_spec() -> None:
    """Objects of a release before the annotation: equal specs need no write."""
    registry = parse_registry(base_config(), check_kubeconfig=False)
    cluster = registry.clusters["east"]
    entry = Entry(path="/user/alice", target="https://east.hub.example.org",
                  data={"user": "alice"}, last_activity="2026-01-01T00:00:00.000Z",
                  owner="east")
    for obj in (build_shard(registry, cluster, ShardKey("", 1, 0, 0), {entry.path: entry}),
                build_root(registry, cluster, "", ["jupyterhub-d1s0-0"])):
        written = obj["metadata"]["annotations"].pop(ANN_SPEC)
        assert stored_spec_hash(obj) == written
        obj["spec"]["http"] = []
        assert stored_spec_hash(obj) != written


def test_route_writes_racing_the_pass_of_two_replicas_are_all_kept_and_re_pointed(
        tmp_path: Path, clusters: Any) -> None:
    """The pass rewrites through each shard's writer: route writes queued with it (and the
    other replica's pass) lose nothing, and every route ends up at the new namespace."""
    def post(svc: ServiceThread, user: str) -> None:
        answer = httpx.post(svc.url + f"/api/routes/user/{user}", headers=HEADERS,
                            json={"target": "https://east.hub.example.org", "user": user},
                            timeout=20)
        assert answer.status_code == 201, answer.text

    users = [f"u{i}" for i in range(40)]
    path = config(tmp_path, clusters, "jupyter-old")
    with running_replicas(path, 1, shard_routes=4) as (old,):
        for user in users[:24]:
            post(old, user)
    config(tmp_path, clusters, "jupyter-users")
    with running_replicas(path, 2, shard_routes=4) as (a, b):
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            passes = [pool.submit(svc.run, svc.federation.reconcile()) for svc in (a, b)]
            writes = [pool.submit(post, (a, b)[i % 2], user) for i, user in enumerate(users[24:])]
            for done in passes + writes:
                done.result()
        for svc in (a, b):
            svc.run(svc.federation.reconcile())  # anything left for a later pass
        stored = stored_routes(clusters)["east"]
        assert sorted(stored) == sorted(f"/user/{u}" for u in users)
        objects = objects_in(clusters, "east")
        for user in users:
            decision = route(objects, gateway=GATEWAY, host="hub.example.org",
                             path=f"/user/{user}/lab")
            assert decision.destination_host == f"jupyter-{user}.jupyter-users.svc.cluster.local"


def test_two_replicas_whose_configurations_differ_do_not_rewrite_each_other(
        tmp_path: Path, clusters: Any) -> None:
    """A reload reaches pods seconds apart: a replica still on the old configuration hears the
    other's re-rendered shards and leaves them (its own pass after its reload settles it),
    rather than both rewriting every shard on every pass."""
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    with ServiceThread(fast_settings(config(old_dir, clusters, "jupyter-old"))) as first:
        add_alice(first)
    with ServiceThread(fast_settings(config(old_dir, clusters, "jupyter-old"))) as stale, \
            ServiceThread(fast_settings(config(new_dir, clusters, "jupyter-users"))) as fresh:
        for svc in (stale, fresh):
            svc.run(svc.federation.reconcile())  # each one's pass after its start
        fresh.run(fresh.federation.reconcile())  # the new one rewrites what the old one undid
        time.sleep(1)  # the watches bring each replica the other's writes
        before = virtual_services(clusters)
        for svc in (stale, fresh, stale, fresh):
            svc.run(svc.federation.reconcile())
        assert virtual_services(clusters) == before, "the replicas rewrote each other"
        assert destination(clusters) == "jupyter-alice.jupyter-users.svc.cluster.local"


def test_a_shard_held_back_for_a_claim_is_rendered_again_when_the_claim_returns(
        tmp_path: Path) -> None:
    """An edge rule to a cluster whose host claims this hub does not hold is not re-pointed
    (another hub's users answer there); once the claim is back, the next pass (not only the
    full one after a start or reload) renders the shard again."""
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {
        context: ("https://127.0.0.1:1", "unused", "jupyterhub") for context in CONTEXTS.values()})
    registry = parse_registry(base_config(str(kubeconfig)))
    held = {"east": False}
    scope = Scope(registry, registry.clusters["hub"], claimed=lambda name: held.get(name, True))
    index = ShardIndex(registry.instance, RouteEntries("hub", RouteTable()))
    key = ShardKey("", 2, 0, 1)
    edge = Entry("/user/alice", "https://east.hub.example.org", "east", {}, "2026-01-01T00:00:00Z",
                 edge=True)
    index.put_written(key.name(registry.instance), key, {edge.path: edge}, 100, "old-hash")

    class Shards:
        rendered: list[ShardKey] = []

        def spec_hash_now(self, key: ShardKey, entries: dict[str, Entry]) -> str:
            return "new-hash"

        async def rerender(self, key: ShardKey, entries: dict[str, Entry], still: Any) -> None:
            self.rendered.append(key)
            state = index.shards[key.name(registry.instance)]
            index.shards[state.name] = ShardState(state.name, key, False, state.entries,
                                                  state.size, "new-hash")

    shards = Shards()
    rerenderer = Rerenderer(scope, index, shards, None)  # type: ignore[arg-type]

    async def no_pause() -> None:
        return None

    asyncio.run(rerenderer.run(no_pause))  # the full pass after a start: held back
    assert shards.rendered == []
    asyncio.run(rerenderer.run(no_pause))  # an idle pass: still held back
    assert shards.rendered == []
    held["east"] = True
    asyncio.run(rerenderer.run(no_pause))  # the claim is back: rendered again
    assert shards.rendered == [key]
    asyncio.run(rerenderer.run(no_pause))  # and current since
    assert shards.rendered == [key]
