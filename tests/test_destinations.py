"""Routes checked against the Services they point to (federation.destinations): reported in
/clusters, the metric, one warning per route and `federation check`, on both backends; cleared
when the Service appears; "unknown" (and the route still written) without the right to read."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from federation.config import load_registry, parse_registry
from federation.destinations import Expected, expected_service, judge, served_by
from federation.istio.backend import KIND_SET
from federation.model import Entry
from federation.testing import EmulatedClusters
from federation.testing.harness import ServiceThread, wait_for, write_clusters_yaml
from federation.testing.kubeapi.rbac import Rule

from .conftest import CONTEXTS, TOKEN, USER_NAMESPACE, base_config, fast_settings

EAST = "https://east.hub.example.org"
NOW = "2026-01-01T00:00:00.000000Z"
ALICE = "/user/alice"
HOUSEKEEPING = 0.5  # s: the service's housekeeping interval in these tests


def entry(path: str, target: str, owner: str = "east", **data: Any) -> Entry:
    return Entry(path, target, owner, data, NOW)


def test_a_pass_whose_routes_are_all_remembered_still_yields(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where every route's expected Service is remembered, the pass still walks the whole table:
    it gives other work a chance every PACE_EVERY routes (115 ms without, at 50,000 routes)."""
    from federation import destinations

    yields = [0]

    class Counting:
        async def __call__(self) -> None:
            yields[0] += 1

    monkeypatch.setattr(destinations, "Pacer", Counting)
    reg = parse_registry(base_config(), check_kubeconfig=False)
    east = reg.clusters["east"]
    entries = [entry(f"/user/u{i}", EAST, user=f"u{i}") for i in range(2000)]
    memo: dict[str, Any] = {}
    first = asyncio.run(destinations.expected_services(reg, east, entries, memo))
    yields[0] = 0
    again = asyncio.run(destinations.expected_services(reg, east, entries, memo))
    assert again == first and len(again) == 2000
    assert yields[0] >= 2000 // destinations.PACE_EVERY


# -- pure: which Service a route expects, and the judgement -----------------------------------

def test_expected_service_of_each_kind_of_target() -> None:
    reg = parse_registry(base_config(), check_kubeconfig=False)
    east, hub = reg.clusters["east"], reg.clusters["hub"]
    assert expected_service(reg, east, entry(ALICE, EAST, user="alice")) == \
        Expected(USER_NAMESPACE, "jupyter-alice", 8888)
    assert expected_service(reg, east, entry("/user/b/gpu", EAST, user="B", server_name="gpu")) \
        == Expected(USER_NAMESPACE, "jupyter--42--gpu", 8888)
    assert expected_service(reg, hub, entry("/", "http://hub:8081", "hub")) == \
        Expected("jupyterhub", "hub", 8081)
    assert expected_service(reg, hub, entry("/s/x", "http://x.other:9000", "hub")) == \
        Expected("other", "x", 9000)
    # A pod IP, an external host and an edge rule name no Service.
    assert expected_service(reg, hub, entry("/u/c", "http://10.1.2.3:8888", "hub")) is None
    assert expected_service(reg, hub, entry("/e", "https://files.example.com", "hub")) is None
    edge = Entry(ALICE, EAST, "east", {}, NOW, edge=True)
    assert expected_service(reg, hub, edge) is None
    # Route data the placement refuses (no user for an ingress target): nothing to check.
    assert expected_service(reg, east, entry(ALICE, EAST)) is None


def test_judge() -> None:
    exp = Expected("ns", "svc", 8888)
    assert judge(exp, None) == "unknown"
    assert judge(exp, served_by([])) == "missing"
    assert judge(exp, served_by([service("svc", "ns", 8888, 80)])) == "ok"
    assert judge(exp, served_by([service("svc", "ns", 80)])) == "no_port"
    external = {"metadata": {"name": "svc"}, "spec": {"type": "ExternalName",
                                                      "externalName": "x.example.org"}}
    assert judge(exp, served_by([external])) == "ok"


# -- against emulated clusters ----------------------------------------------------------------

def service(name: str, namespace: str, *ports: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"port": p, "targetPort": p} for p in ports]}}


def create_service(clusters: Any, cluster: str, svc: dict[str, Any]) -> None:
    server = clusters.servers[CONTEXTS[cluster]]
    namespace = svc["metadata"]["namespace"]
    with httpx.Client(base_url=server.url, timeout=10,
                      headers={"Authorization": f"Bearer {server.token}"}) as http:
        http.post(f"/api/v1/namespaces/{namespace}/services", json=svc).raise_for_status()


@contextlib.contextmanager
def running(tmp_path: Path, backend: str) -> Iterator[tuple[Any, Path, httpx.Client]]:
    with EmulatedClusters(list(CONTEXTS.values()), tmp_path) as clusters:
        for name in ("east", "west"):  # where MultiClusterKubeSpawner 0.2 puts users' objects
            clusters.servers[CONTEXTS[name]].add_namespace(USER_NAMESPACE)
        doc = base_config(str(clusters.kubeconfig))
        doc["defaults"]["backend"] = backend
        config = write_clusters_yaml(tmp_path / "clusters.yaml", doc)
        settings = fast_settings(config, reconcile_interval=HOUSEKEEPING)
        with ServiceThread(settings) as svc, httpx.Client(
                base_url=svc.url, headers={"Authorization": f"token {TOKEN}"}, timeout=20) as api:
            yield clusters, config, api


def destinations(api: httpx.Client, cluster: str) -> dict[str, Any] | None:
    return api.get(f"/clusters/{cluster}").json()["destinations"]


def metric(api: httpx.Client, cluster: str, state: str) -> float:
    text = api.get("/metrics").text
    found = re.search(
        rf'^federation_route_destinations{{cluster="{cluster}",state="{state}"}} (\S+)$',
        text, re.M)
    assert found, f"no federation_route_destinations sample for {cluster}/{state}"
    return float(found.group(1))


def check_output(config: Path) -> tuple[int, str]:
    from federation.check import run_check

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = asyncio.run(run_check(load_registry(config), fast_settings(config)))
    return code, out.getvalue()


def section(output: str, cluster: str) -> str:
    """The lines `federation check` prints for one cluster."""
    found = re.search(rf"^{cluster}\b.*?(?=^\S|\Z)", output, re.M | re.S)
    assert found, output
    return found.group(0)


@pytest.mark.parametrize("backend", ["istio", "gateway-api"])
def test_a_route_to_a_missing_service_is_reported_until_the_service_exists(
        tmp_path: Path, backend: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="federation.destinations")
    with running(tmp_path, backend) as (clusters, config, api):
        for path, body in [(ALICE, {"target": EAST, "user": "alice"}),
                           ("/user/carol", {"target": "http://10.1.2.3:8888", "user": "carol"})]:
            assert api.post(f"/api/routes{path}", json=body).status_code == 201

        # Within one housekeeping interval (and a little for the pass itself).
        found = wait_for(lambda: (d := destinations(api, "east")) and d["missing"] == 1 and d,
                         "the missing Service reported", timeout=HOUSEKEEPING * 2 + 5)
        assert found["state"] == "problems" and found["checked"] == 1
        assert found["examples"] == [f"{ALICE}: Service {USER_NAMESPACE}/jupyter-alice does not exist"]
        assert destinations(api, "hub")["checked"] == 0  # a pod IP names no Service
        assert metric(api, "east", "missing") == 1 and metric(api, "east", "ok") == 0
        assert "1 missing, 0 no port" in api.get("/clusters", params={"format": "text"}).text

        code, output = check_output(config)
        east = section(output, "east")
        assert code == 1 and "FAIL routes' Services exist" in east
        assert f"{ALICE}: Service {USER_NAMESPACE}/jupyter-alice does not exist" in east
        assert "ok   routes' Services exist" in section(output, "west")

        # More passes: still one warning for the route, naming route, cluster and Service.
        first = found["last_check"]
        wait_for(lambda: destinations(api, "east")["last_check"] > first, "another pass",
                 timeout=HOUSEKEEPING * 4 + 5)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                    and getattr(r, "route", None) == ALICE]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
        assert warnings[0].cluster == "east"  # type: ignore[attr-defined]
        assert f"{USER_NAMESPACE}/jupyter-alice port 8888" in warnings[0].getMessage()

        create_service(clusters, "east", service("jupyter-alice", USER_NAMESPACE, 8888))
        cleared = wait_for(lambda: (d := destinations(api, "east")) and d["ok"] == 1 and d,
                           "the report cleared", timeout=HOUSEKEEPING * 2 + 5)
        assert cleared["state"] == "ok" and cleared["missing"] == 0 and cleared["examples"] == []
        assert metric(api, "east", "missing") == 0 and metric(api, "east", "ok") == 1
        code, output = check_output(config)
        assert "ok   routes' Services exist" in section(output, "east")
        assert any(r.levelno == logging.INFO and getattr(r, "route", None) == ALICE
                   for r in caplog.records)


def test_a_service_without_the_port_or_its_namespace_is_reported(tmp_path: Path) -> None:
    with running(tmp_path, "istio") as (clusters, _, api):
        create_service(clusters, "hub", service("hub", "jupyterhub", 80))
        assert api.post("/api/routes/", json={"target": "http://hub:8081"}).status_code == 201
        # A namespace that does not exist holds no Service (its list is empty).
        assert api.post("/api/routes/services/x", json={"target": "http://x.nowhere:9000"}
                        ).status_code == 201
        found = wait_for(lambda: (d := destinations(api, "hub")) and d["checked"] == 2 and d,
                         "both routes checked", timeout=HOUSEKEEPING * 2 + 5)
        assert (found["no_port"], found["missing"], found["unknown"]) == (1, 1, 0), found
        assert found["examples"] == ["/: Service jupyterhub/hub does not serve port 8081",
                                     "/services/x: Service nowhere/x does not exist"]


def test_without_the_right_to_read_services_the_state_is_unknown(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A 403 on the Service list: "unknown", one warning naming the namespace, and routes are
    written as ever."""
    with running(tmp_path, "istio") as (clusters, _, api):
        east = clusters.servers[CONTEXTS["east"]]
        # The service's own token may do anything in its namespace, and nothing elsewhere.
        east.add_token(east.token, "federation-proxy",
                       [Rule("jupyterhub", frozenset("*"), frozenset("*"), frozenset("*"),
                             frozenset())])
        assert api.post(f"/api/routes{ALICE}", json={"target": EAST, "user": "alice"}
                        ).status_code == 201
        found = wait_for(lambda: (d := destinations(api, "east")) and d["unknown"] == 1 and d,
                         "the unknown state", timeout=HOUSEKEEPING * 2 + 5)
        assert found["state"] == "unknown" and found["missing"] == 0
        assert "403" in found["unread"][USER_NAMESPACE] or \
            "forbidden" in found["unread"][USER_NAMESPACE].lower()
        assert metric(api, "east", "unknown") == 1
        assert api.post("/api/routes/user/dave", json={"target": EAST, "user": "dave"}
                        ).status_code == 201
        assert api.get("/api/routes/user/dave").status_code == 200
        first = found["last_check"]
        wait_for(lambda: destinations(api, "east")["last_check"] > first, "another pass",
                 timeout=HOUSEKEEPING * 4 + 5)
        unread = [r for r in caplog.records if getattr(r, "namespace", None) == USER_NAMESPACE
                  and getattr(r, "cluster", None) == "east"]
        assert len(unread) == 1 and "grant get, list and watch on services" in unread[0].getMessage()


def test_each_route_is_warned_once_and_a_flood_is_spread_over_passes(
        caplog: pytest.LogCaptureFixture) -> None:
    from federation import destinations
    from federation.destinations import DestinationChecks, Report

    caplog.set_level(logging.INFO, logger="federation.destinations")
    many = destinations.WARNINGS_PER_PASS + 50

    def report(state: str, count: int = many) -> Report:
        found = Report(0.0)
        for i in range(count):
            found.states[f"/user/u{i}"] = (state, Expected(USER_NAMESPACE, f"jupyter-u{i}", 8888))
        return found

    def routes_logged() -> list[str]:
        out = [r.route for r in caplog.records if hasattr(r, "route")]  # type: ignore[attr-defined]
        caplog.clear()
        return out

    checks = DestinationChecks()
    checks.publish("east", report("missing"))
    first = routes_logged()
    assert len(first) == destinations.WARNINGS_PER_PASS and len(set(first)) == len(first)
    checks.publish("east", report("missing"))
    second = routes_logged()
    assert len(second) == 50 and not set(first) & set(second)
    checks.publish("east", report("unknown"))  # not read this pass: nothing said
    checks.publish("east", report("missing"))  # the same again: still nothing
    assert routes_logged() == []
    checks.publish("east", report("ok", 1))
    back = [r for r in caplog.records if getattr(r, "route", None) == "/user/u0"]
    assert [r.levelno for r in back] == [logging.INFO]
    checks.forget("east")
    assert checks.describe("east") is None


def delete_service(clusters: Any, cluster: str, namespace: str, name: str) -> None:
    server = clusters.servers[CONTEXTS[cluster]]
    with httpx.Client(base_url=server.url, timeout=10,
                      headers={"Authorization": f"Bearer {server.token}"}) as http:
        http.delete(f"/api/v1/namespaces/{namespace}/services/{name}").raise_for_status()


def passes_after(api: httpx.Client, cluster: str, count: int) -> None:
    """Wait until ``count`` more housekeeping passes have checked ``cluster``."""
    for _ in range(count):
        last = destinations(api, cluster)["last_check"]
        wait_for(lambda last=last: destinations(api, cluster)["last_check"] > last,
                 "another pass", timeout=HOUSEKEEPING * 4 + 5)


def test_services_are_watched_so_idle_passes_list_nothing(tmp_path: Path) -> None:
    """The Services are listed once and then watched, through a connection of their own (the
    mirror's watches all stay open): a Service deleted or created out of band is reflected
    within one pass, and passes where nothing changed send no list at all."""
    with running(tmp_path, "istio") as (clusters, _, api):
        east = clusters.servers[CONTEXTS["east"]]
        east.add_token(east.token, "federation-proxy")  # the service's requests, recorded
        create_service(clusters, "east", service("jupyter-alice", USER_NAMESPACE, 8888))
        assert api.post(f"/api/routes{ALICE}", json={"target": EAST, "user": "alice"}
                        ).status_code == 201
        wait_for(lambda: (d := destinations(api, "east")) and d["ok"] == 1,
                 "the route's Service found", timeout=HOUSEKEEPING * 2 + 5)
        mirror_kinds = set(KIND_SET.watched)  # the Istio backend's
        wait_for(lambda: mirror_kinds | {"services"} <= east.watched_kinds(),
                 "the mirror's watches and the Services watch, all open", timeout=10)

        def service_lists() -> int:
            return sum(1 for a in list(east.access_log) if a.verb == "list"
                       and a.resource == "services" and a.namespace == USER_NAMESPACE)

        listed = service_lists()
        passes_after(api, "east", 3)
        assert service_lists() == listed, "an idle pass listed the Services"

        delete_service(clusters, "east", USER_NAMESPACE, "jupyter-alice")
        gone = wait_for(lambda: (d := destinations(api, "east")) and d["missing"] == 1 and d,
                        "the deleted Service reported", timeout=HOUSEKEEPING * 2 + 5)
        assert gone["examples"] == [
            f"{ALICE}: Service {USER_NAMESPACE}/jupyter-alice does not exist"]
        create_service(clusters, "east", service("jupyter-alice", USER_NAMESPACE, 8888))
        wait_for(lambda: (d := destinations(api, "east")) and d["ok"] == 1,
                 "the Service made again found", timeout=HOUSEKEEPING * 2 + 5)
        assert service_lists() == listed, "a change out of band was read by a list"



def test_a_pass_judges_again_only_what_changed() -> None:
    """Judgement.again: nothing changed, the same states (not judged); a route added, gone or
    moved, and a route whose Service changed, judged again; the rest kept as judged."""
    from federation.destinations import Expectations, Judgement, judged

    def expect(paths: dict[str, Expected]) -> Expectations:
        return Expectations(paths, {e.namespace for e in paths.values()})

    alice, bob = (Expected(USER_NAMESPACE, f"jupyter-{u}", 8888) for u in ("alice", "bob"))
    served = {"jupyter-alice": frozenset({8888})}
    calls: list[str] = []

    def view(ns: str) -> tuple[dict[str, frozenset[int] | None], None]:
        calls.append(ns)
        return served, None

    first = expect({"/user/alice": alice, "/user/bob": bob})
    last = Judgement(first, judged(first.paths, view), set())
    assert {p: s for p, (s, _) in last.report.states.items()} == {
        "/user/alice": "ok", "/user/bob": "missing"}

    same = last.again(first, {USER_NAMESPACE: set()}, view)
    assert same.states is last.report.states  # nothing judged

    served["jupyter-bob"] = frozenset({8888})
    del served["jupyter-alice"]
    # Only bob's Service is reported changed: alice's route keeps its judgement until told.
    report = last.again(first, {USER_NAMESPACE: {"jupyter-bob"}}, view)
    assert {p: s for p, (s, _) in report.states.items()} == {
        "/user/alice": "ok", "/user/bob": "ok"}
    last.report = report
    carol = Expected(USER_NAMESPACE, "jupyter-carol", 80)
    moved = expect({"/user/bob": bob, "/user/carol": carol})  # alice gone, carol new
    report = last.again(moved, {USER_NAMESPACE: {"jupyter-alice"}}, view)
    assert {p: s for p, (s, _) in report.states.items()} == {
        "/user/bob": "ok", "/user/carol": "missing"}


def test_namespaces_beyond_one_pass_are_one_warning_not_one_each(
        caplog: pytest.LogCaptureFixture) -> None:
    """A hub with a namespace per user (kubespawner's jupyter-{username}) has thousands of
    namespaces: those left for later are one warning, not one line per namespace."""
    from federation.destinations import MAX_NAMESPACES, DestinationChecks, Report, read_namespaces

    class Empty:
        async def read(self, path: str) -> dict[str, Any]:
            return {"items": []}

    namespaces = [f"jupyter-user{i}" for i in range(5000)]
    served, errors = asyncio.run(read_namespaces(Empty(), namespaces))
    assert len(served) == MAX_NAMESPACES
    report = Report(0.0, errors=errors)
    checks = DestinationChecks()
    with caplog.at_level(logging.WARNING, logger="federation.destinations"):
        checks.publish("east", report)
        checks.publish("east", report)
    assert len(caplog.records) == 1, len(caplog.records)
    assert "4936 namespaces" in caplog.records[0].getMessage()


def test_a_pass_that_judged_nothing_anew_warns_the_held_back_routes_without_a_scan(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    from federation import destinations
    from federation.destinations import DestinationChecks, Report

    caplog.set_level(logging.INFO, logger="federation.destinations")
    per_pass = destinations.WARNINGS_PER_PASS
    judged = Report(0.0)
    for i in range(per_pass * 2 + 30):
        judged.states[f"/user/u{i:04d}"] = ("missing", Expected(USER_NAMESPACE, f"u{i}", 8888))
    scans = []
    problems = Report.problems
    monkeypatch.setattr(Report, "problems", lambda self: scans.append(1) or problems(self))
    checks = DestinationChecks()
    checks.publish("east", judged)
    for _ in range(4):  # nothing read changed: the same states, republished
        checks.publish("east", judged.again(1.0), changed=False)
    logged = [r.route for r in caplog.records if hasattr(r, "route")]  # type: ignore[attr-defined]
    assert sorted(logged) == sorted(judged.states)  # each once, all of them
    assert len(scans) == 1  # the first pass only
    caplog.clear()
    checks.publish("east", judged.again(2.0), changed=False)
    assert not [r for r in caplog.records if hasattr(r, "route")]
