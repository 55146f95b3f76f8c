"""Housekeeping's work follows change, not the table: a pass over a cluster where nothing
changed since a pass that settled everything is skipped (until the periodic full pass), and
the Gateway API backend compares with the configuration only the HTTPRoutes kept anew."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from federation import store as store_module
from federation.gateway import backend as gateway_backend
from federation.testing.harness import wait_for

from ..conftest import CONTEXTS
from .test_gateway_backend import ALL_GATEWAY, client, gw_clusters, service_on, write_config

__all__ = ["gw_clusters"]  # the fixture, used by name
SERVICES = ("", "v1", "services")
GW_ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")


class Counted:
    """Calls of a function, counted (the original called through)."""

    def __init__(self, func: Any) -> None:
        self.func = func
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.func(*args, **kwargs)


def add_routes(api: httpx.Client, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        answer = api.post(f"/api/routes/user/u{i}", json={"target": f"http://10.1.0.{i}:8888"})
        assert answer.status_code == 201


def count_edge_repairs(monkeypatch: pytest.MonkeyPatch) -> Counted:
    """Housekeeping's edge-rule repair, its passes counted (the original still runs)."""
    from federation import housekeeping

    async def repair(*args: Any) -> None:
        counted.calls += 1
        await original(*args)

    original = housekeeping._repair_edges
    counted = Counted(original)
    monkeypatch.setattr(housekeeping, "_repair_edges", repair)
    return counted


def wait_until(check: Any, timeout: float = 10.0) -> None:
    wait_for(check, "the housekeeping's work", timeout)


def test_a_pass_with_nothing_changed_is_skipped_until_the_full_pass(
        tmp_path: Path, gw_clusters: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "FULL_PASS_EVERY", 3)
    config = write_config(tmp_path, gw_clusters, ALL_GATEWAY)
    with service_on(config) as svc, client(svc) as api:
        add_routes(api, 4)
        hub = svc.federation.stores["hub"]
        visits = Counted(hub.support_for)
        monkeypatch.setattr(hub, "support_for", visits)
        svc.run(svc.federation.reconcile())  # the first pass after the writes settles
        assert visits.calls == 4 and hub._settled is not None
        visits.calls = 0
        for _ in range(3):
            svc.run(svc.federation.reconcile())
        assert visits.calls == 0  # nothing changed: three passes skipped
        svc.run(svc.federation.reconcile())
        assert visits.calls == 4  # the full pass looks at every entry anyway


def test_a_change_heard_from_the_cluster_makes_the_next_pass_look(
        tmp_path: Path, gw_clusters: Any) -> None:
    """A support object deleted behind the service's back is restored by the next pass."""
    config = write_config(tmp_path, gw_clusters, ALL_GATEWAY)
    server = gw_clusters.servers[CONTEXTS["hub"]]
    with service_on(config) as svc, client(svc) as api:
        add_routes(api, 2)
        svc.run(svc.federation.reconcile())
        hub = svc.federation.stores["hub"]
        heard = hub.mirror.cache.changes
        name = server.objects(*SERVICES, "jupyterhub")[0]["metadata"]["name"]
        with httpx.Client(base_url=server.url,
                          headers={"Authorization": f"Bearer {server.token}"}) as kube:
            kube.delete(f"/api/v1/namespaces/jupyterhub/services/{name}").raise_for_status()
        wait_until(lambda: hub.mirror.cache.changes > heard)
        svc.run(svc.federation.reconcile())
        names = [o["metadata"]["name"] for o in server.objects(*SERVICES, "jupyterhub")]
        assert name in names


def test_the_gateway_rerender_looks_only_at_routes_kept_anew(
        tmp_path: Path, gw_clusters: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_config(tmp_path, gw_clusters, ALL_GATEWAY)
    with service_on(config) as svc, client(svc) as api:
        add_routes(api, 6)
        svc.run(svc.federation.reconcile())
        built = Counted(gateway_backend.build_route)
        monkeypatch.setattr(gateway_backend, "build_route", built)
        add_routes(api, 1, first=6)
        built.calls = 0  # the write rendered it once
        svc.run(svc.federation.reconcile())
        assert built.calls == 1  # the new route's HTTPRoute, not the table's seven
        built.calls = 0
        hub = svc.federation.stores["hub"]
        hub.reconfigure(hub.registry, hub.cluster)  # what a reload does
        svc.run(svc.federation.reconcile())
        assert built.calls == 7  # a new configuration: every HTTPRoute compared with it


def test_edge_rules_are_visited_again_only_after_a_change(
        tmp_path: Path, gw_clusters: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table-wide steps (duplicates, edge rules) are skipped while nothing changed; an
    edge rule deleted behind the service's back is a change, and the next pass restores it."""
    config = write_config(tmp_path, gw_clusters, ALL_GATEWAY)
    server = gw_clusters.servers[CONTEXTS["hub"]]
    with service_on(config) as svc, client(svc) as api:
        answer = api.post("/api/routes/user/zoe", json={
            "target": "https://east.hub.example.org", "user": "zoe", "server_name": ""})
        assert answer.status_code == 201
        svc.run(svc.federation.reconcile())
        repairs = count_edge_repairs(monkeypatch)
        svc.run(svc.federation.reconcile())
        assert repairs.calls == 0
        (edge,) = server.objects(*GW_ROUTES, "jupyterhub")
        hub = svc.federation.stores["hub"]
        heard = hub.mirror.cache.changes
        with httpx.Client(base_url=server.url,
                          headers={"Authorization": f"Bearer {server.token}"}) as kube:
            kube.delete(f"/apis/{'/'.join(GW_ROUTES[:2])}/namespaces/jupyterhub/httproutes/"
                        f"{edge['metadata']['name']}").raise_for_status()
        wait_until(lambda: hub.mirror.cache.changes > heard)
        svc.run(svc.federation.reconcile())
        assert repairs.calls == 1
        assert [o["metadata"]["name"] for o in server.objects(*GW_ROUTES, "jupyterhub")] == [
            edge["metadata"]["name"]]


def test_support_objects_are_built_once_per_destination(tmp_path: Path,
                                                        gw_clusters: Any) -> None:
    """Every edge rule to one remote cluster needs the same objects: one copy is kept for all
    of them, and what routes no longer held needed is forgotten by the next pass."""
    config = write_config(tmp_path, gw_clusters, ALL_GATEWAY)
    with service_on(config) as svc, client(svc) as api:
        for user in ("zoe", "秀樹"):
            answer = api.post(f"/api/routes/user/{user}", json={
                "target": "https://east.hub.example.org", "user": user, "server_name": ""})
            assert answer.status_code == 201
        hub = svc.federation.stores["hub"]
        zoe, hideki = (hub.entry(p) for p in ("/user/zoe", "/user/秀樹"))
        assert zoe is not None and hideki is not None and zoe.edge
        objects = hub.support_for(zoe)
        assert objects and hub.support_for(hideki) is objects
        assert api.delete("/api/routes/user/zoe").status_code == 204
        svc.run(svc.federation.reconcile())
        assert "/user/zoe" not in hub._support_memo
        assert hub.support_for(hideki) is objects  # still needed: kept


def test_a_pass_made_before_the_home_cluster_synced_does_not_count_as_settled(
        tmp_path: Path, gw_clusters: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Edge rules are repaired only once the home cluster's cache has synced; a pass made before
    that (a start) must not mark the table as settled, or the next passes skip the repair until
    the periodic full pass although nothing was looked at."""
    config = write_config(tmp_path, gw_clusters, ALL_GATEWAY)
    with service_on(config) as svc:
        svc.run(svc.federation.reconcile())  # settled
        repairs = count_edge_repairs(monkeypatch)
        health = svc.federation.stores["hub"].mirror.health
        health.ever_synced = False  # as at a start, before the first list is in
        svc.run(svc.federation.reconcile())
        assert repairs.calls == 1  # the state changed since the settled pass: looked (and skipped)
        health.ever_synced = True  # the list is in; nothing else changed
        svc.run(svc.federation.reconcile())
        assert repairs.calls == 2


def test_a_pass_takes_each_shared_support_list_once_and_paces_itself(
        tmp_path: Path, gw_clusters: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Edge rules to one cluster share their support objects: a pass takes them once, not
    once per route, and yields between every two objects it looks at (at 50,000 routes the
    walk over every route's objects held the event loop for over 100 ms)."""
    import asyncio

    config = write_config(tmp_path, gw_clusters, ALL_GATEWAY)
    with service_on(config) as svc, client(svc) as api:
        routes = 30
        for i in range(routes):
            answer = api.post(f"/api/routes/user/e{i}",
                              json={"target": "https://east.hub.example.org",
                                    "user": f"e{i}", "server_name": ""})
            assert answer.status_code == 201
        hub = svc.federation.stores["hub"]
        assert hub.support_for(hub.entry("/user/e0"))  # edge rules: shared objects
        since_yield = [0, 0]  # objects looked at since the last yield, the most of them

        class CountingPacer:
            async def __call__(self) -> None:
                since_yield[0] = 0
                await asyncio.sleep(0)

        plural_of = hub._plural

        def plural(obj: dict[str, Any]) -> str:
            since_yield[0] += 1
            since_yield[1] = max(since_yield)
            return plural_of(obj)

        looked = Counted(plural)
        monkeypatch.setattr(store_module, "Pacer", CountingPacer)
        monkeypatch.setattr(hub, "_plural", looked)
        hub._settled = None  # this cluster's pass looks at everything
        svc.run(svc.federation.reconcile())
        assert since_yield[1] == 1
        assert 0 < looked.calls < routes


def test_a_reload_during_a_pass_leaves_no_support_object_of_the_old_configuration(
        tmp_path: Path, gw_clusters: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload empties the store's memo of support objects (they are built from the
    configuration); a pass under way must not put back what it built before the reload, or
    routes would be given the old configuration's objects for good."""
    import asyncio

    config = write_config(tmp_path, gw_clusters, ALL_GATEWAY)
    with service_on(config) as svc, client(svc) as api:
        for i in range(6):
            answer = api.post(f"/api/routes/user/r{i}", json={
                "target": "https://east.hub.example.org", "user": f"r{i}", "server_name": ""})
            assert answer.status_code == 201
        svc.run(svc.federation.reconcile())
        hub = svc.federation.stores["hub"]
        old_lists = {id(objs) for _, objs in hub._support_memo.values()}
        assert old_lists
        calls = [0]

        class ReloadingPacer:
            async def __call__(self) -> None:
                calls[0] += 1
                if calls[0] == 3:  # part-way through the walk: a reload lands
                    hub.reconfigure(hub.scope.registry, hub.scope.cluster)
                await asyncio.sleep(0)

        monkeypatch.setattr(store_module, "Pacer", ReloadingPacer)
        hub._settled = None
        svc.run(svc.federation.reconcile())
        assert calls[0] > 3
        kept = {id(objs) for _, objs in hub._support_memo.values()}
        assert not kept & old_lists, "objects built before the reload are back in the memo"
        assert hub._settled is None  # that pass settled nothing: the next one looks again


def test_a_host_claim_coming_back_ends_a_quiet_spell(
        tmp_path: Path, gw_clusters: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Edge rules to a cluster whose claims another hub held were left as they were; when the
    claim comes back, the next pass looks (nothing else changed in the cluster)."""
    config = write_config(tmp_path, gw_clusters, ALL_GATEWAY)
    with service_on(config) as svc:
        hub = svc.federation.stores["hub"]
        held = {"east": False}
        claimed = hub.scope.claimed
        hub.scope.claimed = lambda name: held.get(name, claimed(name))
        svc.run(svc.federation.reconcile())
        svc.run(svc.federation.reconcile())
        assert hub._settled is not None
        passes = Counted(hub._tidy)
        monkeypatch.setattr(hub, "_tidy", passes)
        svc.run(svc.federation.reconcile())
        assert passes.calls == 0  # quiet
        held["east"] = True
        svc.run(svc.federation.reconcile())
        assert passes.calls == 1
