"""Traffic activity without Prometheus: the read window, the query, the answer's parsing, the
overlay on the route table, and the activity keys of clusters.yaml."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation.activity import (
    DEFAULT_QUERY,
    ActivityError,
    iso,
    parse_response,
    plan_read,
    render_query,
)
from federation.activity_book import ActivityBook
from federation.config import Activity, load_registry, parse_registry
from federation.errors import ConfigError
from federation.model import Entry
from federation.table import RouteTable

from .conftest import REPO, base_config
from .prometheus import prometheus_binary

T0 = 1_800_000_000.0


def activity(**overrides: Any) -> Activity:
    values: dict[str, Any] = {
        "prometheus_url": "http://prometheus.istio-system:9090", "query": None,
        "gateway_workload": "istio-ingressgateway", "bearer_token_file": None, "ca_file": None,
        "timeout": 10.0, "headers": (),
    }
    values.update(overrides)
    return Activity(**values)


# -- the read window ----------------------------------------------------------------------------


def test_a_regular_read_evaluates_this_interval_and_the_last_read_again() -> None:
    plan = plan_read(T0 - 60, T0 + 7, interval=60, recovery=3600)
    assert (plan.start, plan.end, plan.step, plan.window) == (T0 - 60, T0, 60, 60)


def test_points_lie_on_one_grid_whatever_the_time_of_the_read() -> None:
    # Two replicas reading at different moments evaluate the same points, so agree.
    one = plan_read(None, T0 + 3, interval=60, recovery=600)
    other = plan_read(None, T0 + 59, interval=60, recovery=600)
    assert one == other and one.end == T0
    again = plan_read(T0, T0 + 5, interval=60, recovery=600)  # nothing new yet: last point again
    assert (again.start, again.end) == (T0 - 60, T0)


def test_a_first_read_recovers_the_recent_past_in_one_query() -> None:
    plan = plan_read(None, T0, interval=60, recovery=3600)
    assert plan.end == T0 and plan.step == 60
    # A point every interval back to the recovery horizon.
    assert plan.start == T0 - 3600


def test_a_read_after_failures_covers_the_whole_gap_but_not_beyond_recovery() -> None:
    gap = plan_read(T0 - 600, T0, interval=60, recovery=3600)
    assert (gap.start, gap.step) == (T0 - 600, 60)
    capped = plan_read(T0 - 86_400, T0, interval=60, recovery=3600)
    assert capped.start == T0 - 3600


def test_a_long_recovery_widens_the_step_under_prometheus_point_limit() -> None:
    plan = plan_read(None, T0, interval=1, recovery=86_400)
    points = round((plan.end - plan.start) / plan.step) + 1
    assert points <= 10_000 and plan.step > 1
    assert plan.start <= T0 - 86_400


# -- the query ----------------------------------------------------------------------------------


def test_default_query_counts_gateway_requests_by_destination() -> None:
    query = render_query(activity(gateway_workload="my-gateway"), "east", 60)
    assert "${" not in query
    assert "by (destination_service)" in query
    assert 'reporter="source"' in query and 'source_workload="my-gateway"' in query
    assert "offset 60000ms" in query and "up offset 60000ms" in query
    assert query == render_query(activity(query=DEFAULT_QUERY, gateway_workload="my-gateway"),
                                 "east", 60)


def test_query_override_gets_cluster_and_window() -> None:
    custom = ('sum by (destination_service) (increase(istio_requests_total{cluster="${cluster}"}'
              "[${window}])) > 0")
    query = render_query(activity(query=custom), "aws-east", 1.5)
    assert query == ('sum by (destination_service) (increase(istio_requests_total'
                     '{cluster="aws-east"}[1500ms])) > 0')


# -- the answer ---------------------------------------------------------------------------------


def matrix(*series: tuple[dict[str, str], list[tuple[float, str]]]) -> dict[str, Any]:
    return {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": metric, "values": [[ts, value] for ts, value in values]}
        for metric, values in series
    ]}}


def test_latest_active_point_per_destination() -> None:
    body = matrix(
        ({"destination_service": "a.svc"}, [(T0, "2"), (T0 + 60, "0.5"), (T0 + 120, "0")]),
        ({"destination_service": "b.svc"}, [(T0, "1")]),
        ({"destination_service": "c.svc"}, [(T0, "0"), (T0 + 60, "NaN")]),
    )
    assert parse_response(json.loads(json.dumps(body))) == {"a.svc": T0 + 60, "b.svc": T0}


def test_instant_answers_are_read_too() -> None:
    body = {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"destination_service": "a.svc"}, "value": [T0, "3"]}]}}
    assert parse_response(body) == {"a.svc": T0}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"status": "error", "errorType": "bad_data", "error": "parse error at char 7"},
         "query refused: parse error at char 7"),
        ({"status": "success", "data": {"resultType": "scalar", "result": [T0, "1"]}},
         "must return series"),
        (matrix(({"le": "1"}, [(T0, "1")])), "no destination_service label"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_unusable_answers_are_errors(body: Any, message: str) -> None:
    with pytest.raises(ActivityError, match=message):
        parse_response(body)


# -- the overlay on the route table ---------------------------------------------------------------


def entry(path: str, at: str, owner: str = "east") -> Entry:
    return Entry(path, "https://east.hub.example.org", owner, {"user": path.rsplit("/", 1)[1]}, at)


def test_activity_moves_last_activity_forward_only_and_never_before_the_write() -> None:
    book = ActivityBook()
    written = entry("/user/a", iso(T0))
    assert book.last_activity(written) == iso(T0)
    assert book.merge({"/user/a": iso(T0 - 30)}) == ["/user/a"]
    assert book.last_activity(written) == iso(T0)  # activity before the write does not count
    assert book.merge({"/user/a": iso(T0 + 30)}) == ["/user/a"]
    assert book.merge({"/user/a": iso(T0 + 10)}) == []  # never backwards
    assert book.last_activity(written) == iso(T0 + 30)
    book.retain({"/user/b"})
    assert book.last_activity(written) == iso(T0)


def test_route_table_renders_and_filters_with_activity() -> None:
    table = RouteTable()
    table.update("east", "/user/a", entry("/user/a", iso(T0)))
    table.update("east", "/user/b", entry("/user/b", iso(T0)))
    before = json.loads(table.render())
    assert before["/user/a"]["last_activity"] == iso(T0)

    assert table.note_activity({"/user/a": iso(T0 + 90), "/user/gone": iso(T0 + 90)}) == 1
    # The cached rendering of /user/a is replaced; /user/b's answer is unchanged.
    after = json.loads(table.render())
    assert after["/user/a"]["last_activity"] == iso(T0 + 90)
    assert after["/user/b"] == before["/user/b"]
    assert table.public(table.get("/user/a"))["last_activity"] == iso(T0 + 90)  # type: ignore[arg-type]
    assert set(json.loads(table.filtered(iso(T0 + 60)))) == {"/user/b"}
    assert set(json.loads(table.filtered(iso(T0 + 120)))) == {"/user/a", "/user/b"}
    assert table.note_activity({"/user/a": iso(T0 + 60)}) == 0


def test_a_rewritten_route_keeps_the_newer_of_write_and_activity() -> None:
    table = RouteTable()
    table.update("east", "/user/a", entry("/user/a", iso(T0)))
    table.note_activity({"/user/a": iso(T0 + 90)})
    table.update("east", "/user/a", entry("/user/a", iso(T0 + 300)))
    assert json.loads(table.render())["/user/a"]["last_activity"] == iso(T0 + 300)


# -- clusters.yaml ------------------------------------------------------------------------------


def doc_with(**activity_keys: Any) -> dict[str, Any]:
    doc = base_config()
    doc["clusters"][1]["activity"] = activity_keys
    return doc


def test_defaults_and_cluster_keys_merge_key_by_key(tmp_path: Path) -> None:
    doc = base_config()
    doc["defaults"]["activity"] = {"query": "sum by (destination_service) (x[${window}])",
                                   "timeout": 3, "headers": {"X-Scope-OrgID": "hub"}}
    doc["clusters"][1]["activity"] = {"prometheusUrl": "http://prom.east:9090/prometheus"}
    doc["clusters"][2]["activity"] = {"enabled": False}
    reg = parse_registry(doc, check_kubeconfig=False)
    east = reg.clusters["east"].activity
    assert east is not None
    assert (east.prometheus_url, east.timeout, east.headers) == (
        "http://prom.east:9090/prometheus", 3, (("X-Scope-OrgID", "hub"),))
    assert east.query == "sum by (destination_service) (x[${window}])"
    assert east.gateway_workload == "istio-ingressgateway"
    assert reg.clusters["west"].activity is None
    assert reg.clusters["hub"].activity is None  # shared keys alone name no Prometheus
    doc["clusters"][0]["activity"] = {"timeout": 5}
    with pytest.raises(ConfigError, match=r"clusters\[hub\]\.activity\.prometheusUrl: missing"):
        parse_registry(doc, check_kubeconfig=False)


def test_no_activity_key_means_no_source() -> None:
    reg = parse_registry(base_config(), check_kubeconfig=False)
    assert all(c.activity is None for c in reg.clusters.values())


def test_the_example_file_shows_the_activity_keys() -> None:
    raw = yaml.safe_load((REPO / "clusters.example.yaml").read_text())
    reg = parse_registry(raw, source="clusters.example.yaml", check_kubeconfig=False)
    east = reg.clusters["aws-east"].activity
    assert east is not None and east.prometheus_url.startswith("http")
    assert reg.clusters["hub"].activity is None  # defaults' shared keys alone name no Prometheus
    text = (REPO / "clusters.example.yaml").read_text()
    for key in ("prometheusUrl", "query", "gatewayWorkload", "bearerTokenFile", "caFile",
                "timeout", "headers", "enabled"):
        assert f"{key}:" in text, key


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({"prometheusUrl": "prometheus:9090"}, ["clusters[east].activity.prometheusUrl",
                                                 "absolute http(s) URL"]),
        ({"prometheusUrl": "http://admin:hunter2@prom:9090"}, ["use bearerTokenFile"]),
        ({"prometheusUrl": "http://prom:9090", "promUrl": "x"},
         ["clusters[east].activity.promUrl", "unknown key"]),
        ({"prometheusUrl": "http://prom:9090", "query": "sum(x)"}, ["${window}"]),
        ({"prometheusUrl": "http://prom:9090", "query": "x[${window}] ${user}"},
         ["unknown placeholder", "user"]),
        ({"prometheusUrl": "http://prom:9090", "headers": {"Authorization": "Bearer hunter2"}},
         ["use bearerTokenFile"]),
        ({"prometheusUrl": "http://prom:9090", "timeout": 0}, ["timeout"]),
    ],
)
def test_bad_activity_config_is_refused_with_file_key_and_fix(
    tmp_path: Path, keys: dict[str, Any], expected: list[str]
) -> None:
    path = tmp_path / "clusters.yaml"
    path.write_text(yaml.safe_dump(doc_with(**keys)))
    with pytest.raises(ConfigError) as info:
        load_registry(path, check_kubeconfig=False)
    message = str(info.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message
    assert "hunter2" not in message


def test_token_and_ca_files_are_checked_at_load(tmp_path: Path) -> None:
    path = tmp_path / "clusters.yaml"
    token = tmp_path / "token"
    doc = doc_with(prometheusUrl="https://prom:9090", bearerTokenFile=str(token))
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"clusters\[east\]\.activity\.bearerTokenFile: .* not a readable file"):
        load_registry(path, check_kubeconfig=False)
    token.write_text("s3cret-token\n")
    assert load_registry(path, check_kubeconfig=False).clusters["east"].activity is not None

    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate")
    doc["clusters"][1]["activity"]["caFile"] = str(bad_ca)
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=r"activity\.caFile: .* not a readable PEM CA bundle") as info:
        load_registry(path, check_kubeconfig=False)
    assert "s3cret-token" not in str(info.value)


# -- the real-Prometheus tests never skip in CI -------------------------------------------------


def test_missing_prometheus_skips_on_a_developer_machine_and_fails_in_ci(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEDERATION_PROMETHEUS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install prometheus"):
        prometheus_binary(search_path=str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="prometheus binary is missing"):
        prometheus_binary(search_path=str(tmp_path))
    fake = tmp_path / "prometheus"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert prometheus_binary(search_path=str(tmp_path)) == str(fake)


def test_the_guides_activity_examples_load() -> None:
    guide = (REPO / "docs" / "operations.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", guide, re.S)
              if "activity:" in b]
    assert len(blocks) >= 2
    for block in blocks:
        doc = base_config()
        doc["defaults"].update(block.get("defaults") or {})
        for own in block.get("clusters") or []:
            own.pop("name")
            doc["clusters"][1].update(own)
        for key in ("bearerTokenFile", "caFile"):
            assert key not in str(block)  # commented out: files the test does not have
        reg = parse_registry(doc, check_kubeconfig=False)
        east = reg.clusters["east"].activity
        assert east is not None
        query = render_query(east, "east", 60)
        assert "${" not in query and "destination_service" in query
