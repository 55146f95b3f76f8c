"""Prometheus metrics (one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

API_REQUESTS = Counter(
    "federation_api_requests_total", "Proxy and admin API requests", ["route", "method", "status"]
)
API_LATENCY = Histogram(
    "federation_api_request_seconds", "Proxy and admin API request latency", ["route", "method"]
)
KUBE_CALLS = Counter(
    "federation_kube_calls_total", "Kubernetes API calls by outcome", ["cluster", "verb", "outcome"]
)
KUBE_LATENCY = Histogram(
    "federation_kube_call_seconds", "Kubernetes API call latency", ["cluster", "verb"]
)
ROUTES = Gauge("federation_routes", "Routes placed in each cluster (from the cache)", ["cluster"])
WATCH_RESTARTS = Counter(
    "federation_watch_restarts_total", "Watch streams restarted", ["cluster", "kind", "reason"]
)
CACHE_AGE = Gauge(
    "federation_cache_age_seconds", "Seconds since the cluster's cache last heard from its watch",
    ["cluster"],
)
WARMUP_TIMEOUTS = Counter(
    "federation_warmup_timeouts_total", "Writes answered before the gateway showed the route",
    ["cluster"],
)
ACTIVITY_READS = Counter(
    "federation_activity_reads_total", "Activity reads from a cluster's Prometheus", ["cluster"]
)
ACTIVITY_FAILURES = Counter(
    "federation_activity_read_failures_total",
    "Activity reads that failed (routes kept their last known activity)", ["cluster"],
)
ACTIVITY_LATENCY = Histogram(
    "federation_activity_read_seconds", "Activity read latency, failures included", ["cluster"]
)
ACTIVITY_LAST_SUCCESS = Gauge(
    "federation_activity_last_success_timestamp_seconds",
    "When the cluster's activity was last read successfully", ["cluster"],
)
ROUTE_DESTINATIONS = Gauge(
    "federation_route_destinations",
    "Routes to a Service, by what the last housekeeping pass found: ok, missing (no such "
    "Service), no_port (the Service serves other ports), unknown (not allowed or not read)",
    ["cluster", "state"],
)
CLUSTER_STATE = Gauge(
    "federation_cluster_state",
    "1 for the state this replica sees the cluster in (reachable, failing, circuit-open), else 0",
    ["cluster", "state"],
)
HOST_CLAIM_CONFLICTS = Gauge(
    "federation_host_claim_conflicts",
    "Gateway hosts this hub needs on the cluster that another hub claims (federation/claims.py)",
    ["cluster"],
)
HOST_CLAIM_REFUSALS = Counter(
    "federation_host_claim_refusals_total",
    "Route writes refused (409) because another hub claims a host they need", ["cluster"],
)
