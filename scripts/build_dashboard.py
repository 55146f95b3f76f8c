"""Builds the chart's Grafana dashboard from the metrics the service exports (federation/metrics.py)
with Grafana's typed builders, and writes it to charts/federation-proxy/dashboards/federation.json.

Run after changing a panel or a metric: .venv/bin/python scripts/build_dashboard.py
(needs the `dashboard` extra: pip install -e '.[dashboard]'). The tests check that the file
is what this script builds now, and that every metric a panel queries is on /metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import BigValueColorMode, GraphDrawStyle, StackingMode
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

OUTPUT = Path(__file__).resolve().parents[1] / "charts" / "federation-proxy" / "dashboards" / "federation.json"
UID = "federation-proxy"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
CLUSTER = 'cluster=~"$cluster"'
RATE = "$__rate_interval"


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def graph(title: str, description: str, unit: str, *queries: prometheus.Dataquery,
          width: int = 12, stacked: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).height(8).span(width).min(0)
             .draw_style(GraphDrawStyle.LINE).fill_opacity(10)
             .legend(common.VizLegendOptions().show_legend(True).display_mode("table")
                     .placement("bottom").calcs(["lastNotNull", "max"])))
    if stacked:
        panel = panel.stacking(common.StackingConfig().mode(StackingMode.NORMAL))
    for q in queries:
        panel = panel.with_target(q)
    return panel


def red_above(limit: float | None) -> dashboard.ThresholdsConfig:
    """Green, and red from ``limit`` on (None: always green)."""
    steps = [Threshold(value=None, color="green")]
    if limit is not None:
        steps.append(Threshold(value=limit, color="red"))
    return dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(steps)


def big_number(title: str, description: str, expr: str, legend: str, unit: str,
               alarm: float | None) -> stat.Panel:
    return (stat.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
            .height(6).span(8).with_target(query(expr, legend)).thresholds(red_above(alarm))
            .color_mode(BigValueColorMode.BACKGROUND))


def cluster_rows(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (board.with_row(dashboard.Row("Clusters"))
            .with_panel(big_number(
                "Open circuits", "Clusters whose circuit a replica holds open: their writes fail "
                "fast with 503 until an API call succeeds again (see /clusters).",
                f'sum by (cluster) (federation_cluster_state{{{CLUSTER}, state="circuit-open"}})',
                "{{cluster}}", "none", 1))
            .with_panel(big_number(
                "Failing clusters", "Clusters a replica sees failing (transport errors or 5xx): "
                "the circuit opens after FEDERATION_CIRCUIT_THRESHOLD in a row.",
                f'sum by (cluster) (federation_cluster_state{{{CLUSTER}, state="failing"}})',
                "{{cluster}}", "none", 1))
            .with_panel(big_number(
                "Routes", "Routes placed in each cluster, from the watch-fed cache.",
                f"max by (cluster) (federation_routes{{{CLUSTER}}})", "{{cluster}}", "none",
                None))
            .with_panel(big_number(
                "Routes to a missing Service", "Routes whose Service does not exist, or does "
                "not serve the route's port, as the last housekeeping pass read them (see "
                "destinations in /clusters; users get 503 there).",
                "sum by (cluster) (max by (cluster, state) (federation_route_destinations"
                f'{{{CLUSTER}, state=~"missing|no_port"}}))', "{{cluster}}", "none", 1))
            .with_panel(graph(
                "Cluster state over time", "Replicas seeing each cluster in each state "
                "(reachable, failing, circuit-open).", "none",
                query(f"sum by (cluster, state) (federation_cluster_state{{{CLUSTER}}})",
                      "{{cluster}} {{state}}"), width=24)))


def write_rows(board: dashboard.Dashboard) -> dashboard.Dashboard:
    calls = f"federation_kube_calls_total{{{CLUSTER}}}"
    # watches last minutes: their latency would hide the other calls'
    buckets = f'federation_kube_call_seconds_bucket{{{CLUSTER}, verb!="watch"}}'
    return (board.with_row(dashboard.Row("Kubernetes calls (writes, reads, watches)"))
            .with_panel(graph(
                "Calls by cluster and verb", "Kubernetes API calls per second.", "reqps",
                query(f"sum by (cluster, verb) (rate({calls}[{RATE}]))", "{{cluster}} {{verb}}")))
            .with_panel(graph(
                "Failed calls by cluster, verb and outcome", "Calls that did not succeed, by the "
                "error kind (CircuitOpen, ClusterUnavailable, Conflict, NotFound...): a 409 or "
                "404 of an optimistic write is normal.", "reqps",
                query(f'sum by (cluster, verb, outcome) (rate(federation_kube_calls_total'
                      f'{{{CLUSTER}, outcome!="ok"}}[{RATE}]))',
                      "{{cluster}} {{verb}} {{outcome}}")))
            .with_panel(graph(
                "Call latency p95 by cluster and verb", "95th percentile of one call (watches "
                "excluded: they last minutes).", "s",
                query(f"histogram_quantile(0.95, sum by (le, cluster, verb) (rate({buckets}[{RATE}])))",
                      "{{cluster}} {{verb}}")))
            .with_panel(graph(
                "Call latency p50 by cluster and verb", "Median of one call (watches excluded).",
                "s",
                query(f"histogram_quantile(0.5, sum by (le, cluster, verb) (rate({buckets}[{RATE}])))",
                      "{{cluster}} {{verb}}"))))


def api_rows(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (board.with_row(dashboard.Row("Proxy API (the hub's requests)"))
            .with_panel(graph(
                "Requests by route, method and status", "The hub's calls to the proxy API.",
                "reqps",
                query(f"sum by (route, method, status) (rate(federation_api_requests_total[{RATE}]))",
                      "{{method}} {{route}} {{status}}")))
            .with_panel(graph(
                "Request latency p95", "95th percentile by route and method.", "s",
                query("histogram_quantile(0.95, sum by (le, route, method) "
                      f"(rate(federation_api_request_seconds_bucket[{RATE}])))",
                      "{{method}} {{route}}"))))


def cache_rows(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (board.with_row(dashboard.Row("Cache sync and watches"))
            .with_panel(graph(
                "Cache age", "Seconds since each cluster's cache last heard from its watch "
                "(the highest over replicas); it grows while a watch is down.", "s",
                query(f"max by (cluster) (federation_cache_age_seconds{{{CLUSTER}}})", "{{cluster}}")))
            .with_panel(graph(
                "Watch restarts", "Watch streams restarted, by kind and reason (a 410 Gone makes "
                "the cache list again).", "short",
                query(f"sum by (cluster, kind, reason) (increase(federation_watch_restarts_total"
                      f"{{{CLUSTER}}}[{RATE}]))", "{{cluster}} {{kind}} {{reason}}"),
                stacked=True)))


def activity_rows(board: dashboard.Dashboard) -> dashboard.Dashboard:
    return (board.with_row(dashboard.Row("Traffic activity and warm-up"))
            .with_panel(graph(
                "Activity reads and failures", "Reads of each cluster's Prometheus for "
                "last_activity; failed reads keep the routes' last known activity.", "reqps",
                query(f"sum by (cluster) (rate(federation_activity_reads_total{{{CLUSTER}}}[{RATE}]))",
                      "{{cluster}} reads"),
                query("sum by (cluster) (rate(federation_activity_read_failures_total"
                      f"{{{CLUSTER}}}[{RATE}]))", "{{cluster}} failures", "B"), width=8))
            .with_panel(graph(
                "Activity read latency p95", "95th percentile of one read, failures included.",
                "s",
                query("histogram_quantile(0.95, sum by (le, cluster) (rate("
                      f"federation_activity_read_seconds_bucket{{{CLUSTER}}}[{RATE}])))",
                      "{{cluster}}"), width=8))
            .with_panel(graph(
                "Since the last good activity read", "Seconds since each cluster's activity was "
                "last read (the freshest replica); it grows while Prometheus is unreachable.", "s",
                query("time() - max by (cluster) (federation_activity_last_success_timestamp_seconds"
                      f"{{{CLUSTER}}})", "{{cluster}}"), width=8))
            .with_panel(graph(
                "Warm-up timeouts", "Writes answered before the gateway showed the new route "
                "(FEDERATION_WARMUP; the write succeeded anyway).", "short",
                query(f"sum by (cluster) (increase(federation_warmup_timeouts_total{{{CLUSTER}}}"
                      f"[{RATE}]))", "{{cluster}}"), width=24)))


def variables(board: dashboard.Dashboard) -> dashboard.Dashboard:
    every = VariableOption(selected=True, text="All", value="$__all")
    return (board.with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus")
                                .type("prometheus"))
            .with_variable(dashboard.QueryVariable("cluster").label("Cluster")
                           .datasource(DATASOURCE).query("label_values(federation_routes, cluster)")
                           .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
                           .sort(VariableSort.ALPHABETICAL_ASC).multi(True).include_all(True)
                           .current(every)))


def build() -> dashboard.Dashboard:
    board = (dashboard.Dashboard("JupyterHub federation proxy").uid(UID)
             .description("Cluster health and circuits, Kubernetes calls by cluster and verb, "
                          "cache sync, watches, traffic activity and warm-up of the federation "
                          "proxy (metrics: federation_*).")
             .tags(["jupyterhub", "federation-proxy"]).refresh("30s").time("now-3h", "now")
             .timezone("browser").tooltip(DashboardCursorSync.CROSSHAIR).editable())
    for add in (variables, cluster_rows, write_rows, api_rows, cache_rows, activity_rows):
        board = add(board)
    return board


def render() -> str:
    model = build().build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number  # unique ids, in layout order (rows too), as Grafana expects
    return json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main() -> None:
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
