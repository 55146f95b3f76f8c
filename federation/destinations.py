"""Route destinations checked against the clusters: does each route's Service exist there, and
does it serve the route's port?

A route's destination is predicted (federation.placement: a user's Service named as the spawner
names it, a kubespawner Service, ``<host>.<namespace>.svc``); nothing in Kubernetes tells the
hub when the prediction is wrong. An Istio VirtualService to a missing host answers 503 only
when a user arrives, and the Gateway API reports unresolved references only where a controller
writes status. So every housekeeping pass reads the Services the routes point to, with one list
per namespace (bounded), and reports each route's state:

* ``ok``: the Service exists and one of its ports is the route's port;
* ``missing``: no Service of that name in that namespace;
* ``no_port``: the Service exists but serves other ports;
* ``unknown``: not read: no right to list Services there (403), the cluster unreachable, or
  more namespaces than one pass reads. Never a blocked route: writes do not wait for this.

Routes to pod IPs, external hosts and other clusters' ingresses name no Service and are not
checked. The same check runs in ``federation check`` (:func:`check_finding`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from . import metrics
from .config import Cluster, Registry
from .errors import InvalidRoute, KubeError, NotFound
from .mirror import Pacer
from .model import Entry, decode_entries, entry_destination, selector

log = logging.getLogger(__name__)

STATES = ("ok", "missing", "no_port", "unknown")
MAX_NAMESPACES = 64  # namespaces read per cluster and pass; routes beyond them stay "unknown"
PAGE = 500  # Services per list request
MAX_PAGES = 40  # per namespace and pass: 20,000 Services
EXAMPLES = 5
WARNINGS_PER_PASS = 100  # new per-route warnings per cluster and pass; the rest wait a pass
BEYOND = f"more than {MAX_NAMESPACES} namespaces to read in one pass"


@dataclass(frozen=True)
class Expected:
    """The Service a route's traffic goes to in its cluster."""

    namespace: str
    name: str
    port: int

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name} port {self.port}"


def expected_service(registry: Registry, cluster: Cluster, entry: Entry) -> Expected | None:
    """The Service ``entry`` routes to in ``cluster`` (None: its destination is no Service)."""
    if entry.edge:
        return None
    try:
        dest = entry_destination(registry, cluster, entry)
    except (KeyError, InvalidRoute, ValueError):
        return None
    suffix = f".svc.{cluster.cluster_domain}"
    if dest.kind != "service" or not dest.host.endswith(suffix):
        return None
    name, _, namespace = dest.host[: -len(suffix)].partition(".")
    if not name or not namespace or "." in namespace:
        return None
    return Expected(namespace, name, dest.port)


# What a namespace's Services serve: {name: ports (None: any port, an ExternalName Service)},
# or the error that kept them from being read.
Served = dict[str, frozenset[int] | None]


def served_by(items: Iterable[dict[str, Any]]) -> Served:
    out: Served = {}
    for svc in items:
        spec = svc.get("spec") or {}
        name = (svc.get("metadata") or {}).get("name")
        if not isinstance(name, str):
            continue
        if spec.get("type") == "ExternalName":
            out[name] = None  # ports are optional there: the name alone resolves
        else:
            out[name] = frozenset(p.get("port") for p in spec.get("ports") or []
                                  if isinstance(p.get("port"), int))
    return out


def judge(expected: Expected, served: Served | None) -> str:
    """One route's state, from what its Service's namespace serves (None: not read)."""
    if served is None:
        return "unknown"
    if expected.name not in served:
        return "missing"
    ports = served[expected.name]
    return "ok" if ports is None or expected.port in ports else "no_port"


async def read_services(client: Any, namespace: str) -> Served:
    """Every Service of ``namespace`` (paged, at most MAX_PAGES pages); KubeError when the
    list is refused or fails, ValueError when there are more than the bound."""
    out: Served = {}
    token = ""
    for _ in range(MAX_PAGES):
        query = f"?limit={PAGE}" + (f"&continue={quote(token, safe='')}" if token else "")
        page = await client.read(f"/api/v1/namespaces/{namespace}/services{query}")
        out.update(served_by(page.get("items") or []))
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return out
    raise ValueError(f"more than {PAGE * MAX_PAGES} Services in namespace {namespace}")


async def read_namespaces(client: Any, namespaces: Iterable[str]
                          ) -> tuple[dict[str, Served], dict[str, str]]:
    """(what each namespace serves, why others were not read), at most MAX_NAMESPACES."""
    ordered = sorted(set(namespaces))
    served: dict[str, Served] = {}
    errors = {ns: BEYOND for ns in ordered[MAX_NAMESPACES:]}
    for ns in ordered[:MAX_NAMESPACES]:
        try:
            served[ns] = await read_services(client, ns)
        except NotFound:
            served[ns] = {}  # no such namespace (where the API server says so): no Service
        except (KubeError, ValueError) as exc:
            errors[ns] = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return served, errors


@dataclass
class Report:
    """One cluster's last check."""

    at: float
    states: dict[str, tuple[str, Expected]] = field(default_factory=dict)  # path -> state
    errors: dict[str, str] = field(default_factory=dict)  # namespace -> why not read

    def counts(self) -> dict[str, int]:
        found = Counter(state for state, _ in self.states.values())
        return {state: found.get(state, 0) for state in STATES}

    def problems(self) -> list[tuple[str, str, Expected]]:
        return sorted((path, state, exp) for path, (state, exp) in self.states.items()
                      if state in ("missing", "no_port"))

    def describe(self) -> dict[str, Any]:
        counts = self.counts()
        problems = self.problems()
        state = ("problems" if problems else "unknown" if counts["unknown"] else "ok")
        return {
            "state": state,
            "checked": len(self.states),
            **counts,
            "examples": [example(path, st, exp) for path, st, exp in problems[:EXAMPLES]],
            "unread": dict(sorted(self.errors.items())[:EXAMPLES]),
            "last_check": datetime.fromtimestamp(self.at, UTC).isoformat().replace("+00:00", "Z"),
        }


def example(path: str, state: str, exp: Expected) -> str:
    what = "does not exist" if state == "missing" else f"does not serve port {exp.port}"
    return f"{path}: Service {exp.namespace}/{exp.name} {what}"


# Each route's expected Service, by path: (the entry it was computed for, the Service).
Memo = dict[str, tuple[Entry, Expected | None]]


async def check_entries(registry: Registry, cluster: Cluster, entries: Iterable[Entry],
                        client: Any, memo: Memo | None = None) -> Report:
    """Read the Services the entries route to and judge each one (I/O: the Service lists).
    ``memo`` keeps each entry's expected Service between passes (housekeeping's thousands of
    routes); it is refilled with the current entries only."""
    pace = Pacer()
    known = dict(memo or {})
    if memo is not None:
        memo.clear()
    expected: dict[str, Expected] = {}
    for entry in entries:
        held = known.get(entry.path)
        if held is None or held[0] is not entry:
            await pace()
            held = (entry, expected_service(registry, cluster, entry))
        if memo is not None:
            memo[entry.path] = held
        if held[1] is not None:
            expected[entry.path] = held[1]
    served, errors = await read_namespaces(client, (e.namespace for e in expected.values()))
    report = Report(time.time(), errors=errors)
    for path, exp in expected.items():
        report.states[path] = (judge(exp, served.get(exp.namespace)), exp)
    return report


def _state_of(report: Report, path: str) -> str:
    held = report.states.get(path)
    return "" if held is None else held[0]


def _fields(cluster: str, path: str, state: str, exp: Expected) -> dict[str, Any]:
    """A route's log fields: cluster, route, state and the Service it expects."""
    return {"cluster": cluster, "route": path, "state": state,
            "service": f"{exp.namespace}/{exp.name}", "port": exp.port}


class DestinationChecks:
    """The last destination report of every cluster (the one owner of that state), its
    metric, and the log lines: one warning when a route's Service goes missing (not every
    pass), one line when it is back, one warning per namespace that cannot be read."""

    def __init__(self) -> None:
        self.reports: dict[str, Report] = {}
        self._warned: dict[str, dict[str, tuple[str, Expected]]] = {}  # cluster -> path -> state
        self._unread: dict[str, dict[str, str]] = {}  # cluster -> namespace -> error logged
        self._memos: dict[str, tuple[Cluster, Registry, Memo]] = {}

    def describe(self, cluster: str) -> dict[str, Any] | None:
        """What /clusters shows (None before the first check of the cluster)."""
        report = self.reports.get(cluster)
        return None if report is None else report.describe()

    async def run(self, registry: Registry, stores: Iterable[Any]) -> None:
        """Check every synced, reachable store's routes (concurrently, one task per cluster)."""
        stores = list(stores)
        names = {s.name for s in stores}
        for gone in set(self.reports) - names:
            self.forget(gone)
        await asyncio.gather(*(self._run_one(registry, s) for s in stores if s.synced))

    async def _run_one(self, registry: Registry, store: Any) -> None:
        entries = [e for e in (store.entry(p) for p in store.paths()) if e is not None]
        if store.client.circuit.is_open:  # failing fast: not a moment to add reads
            report = Report(time.time())
            for entry in entries:
                exp = expected_service(registry, store.cluster, entry)
                if exp is not None:
                    report.states[entry.path] = ("unknown", exp)
                    report.errors[exp.namespace] = "the cluster's circuit is open"
        else:
            memo = self._memo_for(store)
            report = await check_entries(registry, store.cluster, entries, store.client, memo)
        self.publish(store.name, report)

    def _memo_for(self, store: Any) -> Memo:
        """The store's memo, emptied when its cluster's settings changed (a reload)."""
        held = self._memos.get(store.name)
        if held is None or held[0] is not store.cluster or held[1] is not store.registry:
            held = self._memos[store.name] = (store.cluster, store.registry, {})
        return held[2]

    def publish(self, cluster: str, report: Report) -> None:
        """Take a cluster's new report: the metric and the log lines follow it."""
        self.reports[cluster] = report
        for state, count in report.counts().items():
            metrics.ROUTE_DESTINATIONS.labels(cluster, state).set(count)
        self._log_changes(cluster, report)

    def _log_changes(self, cluster: str, report: Report) -> None:
        self._log_routes(cluster, report)
        self._log_unread(cluster, report)

    def _log_routes(self, cluster: str, report: Report) -> None:
        """One warning per route whose Service goes missing (at most WARNINGS_PER_PASS new
        ones a pass: a wrong setting breaks thousands at once), one line when it is back."""
        warned = self._warned.get(cluster, {})
        now_bad: dict[str, tuple[str, Expected]] = {}
        held_back = 0
        for path, state, exp in report.problems():
            if warned.get(path) != (state, exp):
                if len(now_bad.keys() - warned.keys()) >= WARNINGS_PER_PASS:
                    held_back += 1  # not marked as warned: warned in a later pass
                    continue
                log.warning("cluster %s: route %s goes to Service %s, which %s", cluster, path,
                            exp, "does not exist" if state == "missing"
                            else "serves other ports", extra=_fields(cluster, path, state, exp))
            now_bad[path] = (state, exp)
        if held_back:
            log.warning("cluster %s: %d more routes whose Service is missing or lacks the port, "
                        "each logged in a later pass (GET /clusters counts them all)", cluster,
                        held_back, extra={"cluster": cluster, "routes": held_back})
        for path, (_, exp) in warned.items():
            if path not in now_bad and _state_of(report, path) == "ok":
                log.info("cluster %s: route %s: Service %s is there now", cluster, path, exp,
                         extra=_fields(cluster, path, "ok", exp))
        # A route whose state is unknown this pass keeps its warning (no repeat when it reads
        # as missing again); a route that is gone or fine drops it.
        self._warned[cluster] = {
            **{p: v for p, v in warned.items() if _state_of(report, p) == "unknown"}, **now_bad}

    def _log_unread(self, cluster: str, report: Report) -> None:
        """One warning per namespace whose Services cannot be read (again when the error
        changes)."""
        logged = self._unread.get(cluster, {})
        beyond = sum(1 for error in report.errors.values() if error == BEYOND)
        if beyond and BEYOND not in logged.values():
            # A namespace per user: thousands of them. One line, not one per namespace.
            log.warning("cluster %s: %d namespaces beyond the %d whose Services one pass "
                        "reads: the destinations of routes there are unknown", cluster,
                        beyond, MAX_NAMESPACES,
                        extra={"cluster": cluster, "namespaces": beyond})
        for ns, error in report.errors.items():
            if error != BEYOND and logged.get(ns) != error:
                log.warning("cluster %s: cannot read the Services in namespace %s (%s): the "
                            "destinations of routes there are unknown; grant get, list and "
                            "watch on services there (docs/operations.md)", cluster, ns, error,
                            extra={"cluster": cluster, "namespace": ns, "error": error})
        self._unread[cluster] = dict(report.errors)

    def forget(self, cluster: str) -> None:
        """The cluster left the registry: its report, warnings and metric go too."""
        self.reports.pop(cluster, None)
        self._warned.pop(cluster, None)
        self._unread.pop(cluster, None)
        self._memos.pop(cluster, None)
        for state in STATES:
            try:
                metrics.ROUTE_DESTINATIONS.remove(cluster, state)
            except KeyError:
                pass


async def stored_entries(registry: Registry, cluster: Cluster, client: Any,
                         resource: Any) -> list[Entry]:
    """The route entries held in the cluster's route-holding objects (read for ``check``)."""
    entries: list[Entry] = []
    token: str | None = None
    while True:
        page = await client.list(resource, selector(registry.instance), limit=PAGE,
                                 continue_token=token)
        for obj in page.get("items") or []:
            entries += [e for e in decode_entries(obj).values() if not e.edge]
        token = (page.get("metadata") or {}).get("continue") or None
        if not token:
            return entries


async def check_finding(registry: Registry, cluster: Cluster, client: Any,
                        resource: Any) -> tuple[str, bool | None, str]:
    """``federation check``'s line: (what, ok, detail); ok None when it could not tell."""
    what = "routes' Services exist"
    try:
        entries = await stored_entries(registry, cluster, client, resource)
    except KubeError as exc:
        return what, None, f"cannot read the routes: {exc}"
    report = await check_entries(registry, cluster, entries, client)
    counts = report.counts()
    problems = report.problems()
    if problems:
        shown = "; ".join(example(p, s, e) for p, s, e in problems[:EXAMPLES])
        return what, False, (f"{counts['missing']} missing, {counts['no_port']} without the "
                             f"port, of {len(report.states)}: {shown}")
    if counts["unknown"]:
        why = "; ".join(f"{ns}: {err}" for ns, err in sorted(report.errors.items())[:EXAMPLES])
        return what, None, f"{counts['unknown']} of {len(report.states)} unknown ({why})"
    return what, True, f"{counts['ok']} route(s) to Services, all there"
