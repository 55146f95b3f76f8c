"""Route destinations checked against the clusters: does each route's Service exist there, and
does it serve the route's port?

A route's destination is predicted (federation.placement: a user's Service named as the spawner
names it, a kubespawner Service, ``<host>.<namespace>.svc``); nothing in Kubernetes tells the
hub when the prediction is wrong. An Istio VirtualService to a missing host answers 503 only
when a user arrives, and the Gateway API reports unresolved references only where a controller
writes status. So every housekeeping pass judges each route against the Services its namespace
serves, as kept by list-then-watch (:mod:`federation.services_cache`), and reports its state:

* ``ok``: the Service exists and one of its ports is the route's port;
* ``missing``: no Service of that name in that namespace;
* ``no_port``: the Service exists but serves other ports;
* ``unknown``: not read: no right to list or watch Services there (403), the cluster
  unreachable (its circuit open), its first list still running, or more namespaces than one
  cluster watches. Never a blocked route: writes do not wait for this.

Routes to pod IPs, external hosts and other clusters' ingresses name no Service and are not
checked. The same check runs in ``federation check`` (:func:`check_finding`), which reads each
namespace once, paged through every Service.

What a pass costs: the Services are read once per cluster and namespace (one paged list), then
only their changes arrive, by a watch renewed every ``FEDERATION_WATCH_TIMEOUT`` seconds; a
410 relists. A pass sends no request. It takes the routes' expected Services again only when
the cluster's route index changed (a memo keeps each unchanged entry's), and judges again only
the routes that changed and those expecting a Service the watch reported changed
(:class:`Judgement`); with nothing changed it republishes the last judgement. Measured with
``python -m bench.destinations_idle`` (one emulated cluster, MultiClusterKubeSpawner 0.2's one
namespace, the event loop's CPU): at 50,000 routes and 50,000 Services an idle pass costs under
0.1 ms and no request (a paged list every pass: 40 list requests, 20,000 Services parsed,
~360 ms, and every route "unknown" past 20,000 Services); a pass after one route changed costs
30-45 ms (the expected Services walked again through the memo, the report copied). While more
than WARNINGS_PER_PASS routes wait for their warning, a pass that judged nothing anew warns the
next of them from a list kept by the pass that held them back, without scanning every problem
(sorting them took most of an idle replica's CPU at 50,000 routes, half of them missing).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from . import metrics
from .config import Cluster, Registry
from .errors import InvalidRoute, KubeError, NotFound
from .mirror import Pacer
from .model import Entry, decode_entries, entry_destination, selector
from .services_cache import (
    BEYOND,
    MAX_NAMESPACES,
    PAGE,
    ClusterServices,
    Served,
    first_line,
    served_by,
)

log = logging.getLogger(__name__)

__all__ = ["BEYOND", "MAX_NAMESPACES", "PAGE", "STATES", "DestinationChecks", "Expected", "Report",
           "Served", "check_finding", "expected_service", "judge", "served_by"]

STATES = ("ok", "missing", "no_port", "unknown")
EXAMPLES = 5
WARNINGS_PER_PASS = 100  # new per-route warnings per cluster and pass; the rest wait a pass
PACE_EVERY = 256  # routes a pass looks at between two chances to yield, where nothing is new


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


def judge(expected: Expected, served: Served | None) -> str:
    """One route's state, from what its Service's namespace serves (None: not read)."""
    if served is None:
        return "unknown"
    if expected.name not in served:
        return "missing"
    ports = served[expected.name]
    return "ok" if ports is None or expected.port in ports else "no_port"


async def read_services(client: Any, namespace: str) -> Served:
    """Every Service of ``namespace``, paged (``federation check``: one read, no cache);
    KubeError when the list is refused or fails."""
    out: Served = {}
    token = ""
    while True:
        query = f"?limit={PAGE}" + (f"&continue={quote(token, safe='')}" if token else "")
        page = await client.read(f"/api/v1/namespaces/{namespace}/services{query}")
        out.update(served_by(page.get("items") or []))
        token = (page.get("metadata") or {}).get("continue") or ""
        if not token:
            return out


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
        except KubeError as exc:
            errors[ns] = first_line(exc)
    return served, errors


@dataclass
class Report:
    """One cluster's last check."""

    at: float
    states: dict[str, tuple[str, Expected]] = field(default_factory=dict)  # path -> state
    errors: dict[str, str] = field(default_factory=dict)  # namespace -> why not read

    counted: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def counts(self) -> dict[str, int]:
        if self.counted is None:  # reports are not changed once published: counted once
            found = Counter(state for state, _ in self.states.values())
            self.counted = {state: found.get(state, 0) for state in STATES}
        return self.counted

    def again(self, at: float) -> Report:
        """The same judgement, checked again at ``at`` (nothing it read has changed)."""
        return Report(at, self.states, self.errors, self.counts())

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
    """Read the Services the entries route to and judge each one (I/O: the Service lists,
    once: ``federation check``)."""
    expected = await expected_services(registry, cluster, entries, memo)
    served, errors = await read_namespaces(client, (e.namespace for e in expected.values()))
    return judged(expected, lambda ns: (served.get(ns), errors.get(ns)))


async def expected_services(registry: Registry, cluster: Cluster, entries: Iterable[Entry],
                            memo: Memo | None = None) -> dict[str, Expected]:
    """Each entry's expected Service, by path (entries that name none left out). ``memo``
    keeps each entry's between calls (housekeeping's thousands of routes); it is refilled
    with the current entries only."""
    pace = Pacer()
    known = dict(memo or {})
    if memo is not None:
        memo.clear()
    expected: dict[str, Expected] = {}
    for i, entry in enumerate(entries):
        held = known.get(entry.path)
        if held is None or held[0] is not entry:
            await pace()
            held = (entry, expected_service(registry, cluster, entry))
        elif i % PACE_EVERY == 0:
            await pace()  # all memo hits still walk the whole table (115 ms at 50,000 routes)
        if memo is not None:
            memo[entry.path] = held
        if held[1] is not None:
            expected[entry.path] = held[1]
    return expected


def judged(expected: dict[str, Expected],
           view: Callable[[str], tuple[Served | None, str | None]]) -> Report:
    """Each route judged from what its namespace serves; ``view`` gives (what a namespace
    serves, None when not read; why it was not read)."""
    report = Report(time.time())
    seen: dict[str, Served | None] = {}
    for path, exp in expected.items():
        ns = exp.namespace
        if ns not in seen:
            seen[ns], error = view(ns)
            if error is not None:
                report.errors[ns] = error
        report.states[path] = (judge(exp, seen[ns]), exp)
    return report


def _state_of(report: Report, path: str) -> str:
    held = report.states.get(path)
    return "" if held is None else held[0]


def _warn_route(cluster: str, path: str, state: str, exp: Expected) -> None:
    log.warning("cluster %s: route %s goes to Service %s, which %s", cluster, path, exp,
                "does not exist" if state == "missing" else "serves other ports",
                extra=_fields(cluster, path, state, exp))


def _fields(cluster: str, path: str, state: str, exp: Expected) -> dict[str, Any]:
    """A route's log fields: cluster, route, state and the Service it expects."""
    return {"cluster": cluster, "route": path, "state": state,
            "service": f"{exp.namespace}/{exp.name}", "port": exp.port}


@dataclass(frozen=True)
class Expectations:
    """A cluster's routes' expected Services (by path), and the namespaces they are in."""

    paths: dict[str, Expected]
    namespaces: frozenset[str] | set[str]


View = Callable[[str], tuple[Served | None, str | None]]


@dataclass
class Judgement:
    """A cluster's last report and what it was judged from: the next pass judges again only
    the routes whose expected Service, or whose Service, changed since."""

    expected: Expectations
    report: Report
    beyond: set[str]  # namespaces past the watched ones (their routes judged "unknown")
    # The routes expecting each Service: where a Service's change is felt.
    by_service: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for path, exp in self.expected.paths.items():
            self.by_service.setdefault((exp.namespace, exp.name), set()).add(path)

    def again(self, expected: Expectations, changes: dict[str, set[str] | None],
              view: View) -> Report:
        """This pass's report: the last one where nothing it read changed (the same states),
        else a copy with the changed routes judged again. ``changes``: the Service names
        changed per namespace (none None: a namespace read again is judged whole)."""
        dirty = self._routes_changed(expected)
        for ns, names in changes.items():
            for name in names or ():
                dirty |= self.by_service.get((ns, name), set())
        errors = {}
        seen: dict[str, Served | None] = {}
        for ns in expected.namespaces:
            seen[ns], error = view(ns)
            if error is not None:
                errors[ns] = error
        if not dirty and errors == self.report.errors:
            return self.report.again(time.time())
        states = dict(self.report.states)
        for path in dirty:
            exp = expected.paths.get(path)
            if exp is None:
                states.pop(path, None)
            else:
                states[path] = (judge(exp, seen.get(exp.namespace)), exp)
        return Report(time.time(), states, errors)

    def _routes_changed(self, expected: Expectations) -> set[str]:
        """Routes added, gone, or expecting another Service since the last pass (the memo
        keeps an unchanged route's Expected the same object); the index follows them."""
        if expected is self.expected:
            return set()
        old, new = self.expected.paths, expected.paths
        changed = {p for p, exp in new.items() if old.get(p) is not exp}
        changed |= old.keys() - new.keys()
        for path in changed:
            before, after = old.get(path), new.get(path)
            if before is not None:
                self.by_service.get((before.namespace, before.name), set()).discard(path)
            if after is not None:
                self.by_service.setdefault((after.namespace, after.name), set()).add(path)
        self.expected = expected
        return changed


class DestinationChecks:
    """The last destination report of every cluster (the one owner of that state), its
    metric, and the log lines: one warning when a route's Service goes missing (not every
    pass), one line when it is back, one warning per namespace that cannot be read."""

    def __init__(self, watch_timeout: int = 300) -> None:
        self.reports: dict[str, Report] = {}
        self._warned: dict[str, dict[str, tuple[str, Expected]]] = {}  # cluster -> path -> state
        self._unread: dict[str, dict[str, str]] = {}  # cluster -> namespace -> error logged
        self._held_back: set[str] = set()  # clusters with route warnings left for a later pass
        # Per held-back cluster: the states judged (the report's, unchanged while nothing
        # changed) and the routes not warned about yet, in order: a pass with the same
        # states warns the next of them without scanning every problem again. Paths only:
        # strings are not walked by the cycle collector, tuples would be.
        self._due: dict[str, tuple[dict[str, tuple[str, Expected]], list[str]]] = {}
        self._memos: dict[str, tuple[Cluster, Registry, Memo]] = {}
        # Each cluster's expected Services, and the route-index version they were taken at.
        self._expected: dict[str, tuple[int, Memo, Expectations]] = {}
        self._services: dict[str, ClusterServices] = {}  # the Services caches, per cluster
        self._judgements: dict[str, Judgement] = {}  # what each last report was judged from
        self._watch_timeout = watch_timeout

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
        expected = await self._expected_of(store)
        if store.client.circuit.is_open:  # failing fast: not a moment to add reads
            self._judgements.pop(store.name, None)
            self.publish(store.name, judged(expected.paths, lambda _: (
                None, "the cluster's circuit is open")))
            return
        services = await self._services_for(store)
        await services.want(expected.namespaces)
        changes = services.take_changes()
        last = self._judgements.get(store.name)
        if last is None or last.report is not self.reports.get(store.name) \
                or last.beyond != services.beyond \
                or any(names is None for names in changes.values()):
            report = judged(expected.paths, services.view)
            self._judgements[store.name] = Judgement(expected, report, set(services.beyond))
            self.publish(store.name, report)
            return
        report = last.again(expected, changes, services.view)
        self.publish(store.name, report, changed=report.states is not last.report.states)
        last.report = report

    async def _expected_of(self, store: Any) -> Expectations:
        """The store's routes' expected Services, taken again only when its route index
        changed (or its settings: a reload empties the memo)."""
        memo = self._memo_for(store)
        version = store.entries.changes
        held = self._expected.get(store.name)
        if held is not None and held[0] == version and held[1] is memo:
            return held[2]
        entries = [entry for _, entry in store.entries.values()]
        paths = await expected_services(store.registry, store.cluster, entries, memo)
        expected = Expectations(paths, {e.namespace for e in paths.values()})
        self._expected[store.name] = (version, memo, expected)
        return expected

    async def _services_for(self, store: Any) -> ClusterServices:
        """The cluster's Services caches; made again when its client changed (a reload)."""
        held = self._services.get(store.name)
        if held is not None and held.client is not store.client:
            await held.stop()
            held = None
        if held is None:
            held = self._services[store.name] = ClusterServices(store.name, store.client,
                                                                self._watch_timeout)
        return held

    def services_parsed(self) -> int:
        """Services parsed by every cache so far (lists and watch events): their cost."""
        return sum(held.parsed() for held in self._services.values())

    async def stop(self) -> None:
        """Stop every Services watch."""
        for held in self._services.values():
            await held.stop()
        self._services.clear()

    def _memo_for(self, store: Any) -> Memo:
        """The store's memo, emptied when its cluster's settings changed (a reload)."""
        held = self._memos.get(store.name)
        if held is None or held[0] is not store.cluster or held[1] is not store.registry:
            held = self._memos[store.name] = (store.cluster, store.registry, {})
        return held[2]

    def publish(self, cluster: str, report: Report, changed: bool = True) -> None:
        """Take a cluster's new report: the metric and the log lines follow it (``changed``
        False: the same judgement as the last, so only warnings held back are still due)."""
        self.reports[cluster] = report
        for state, count in report.counts().items():
            metrics.ROUTE_DESTINATIONS.labels(cluster, state).set(count)
        if changed or cluster in self._held_back:
            self._log_changes(cluster, report)

    def _log_changes(self, cluster: str, report: Report) -> None:
        self._log_routes(cluster, report)
        self._log_unread(cluster, report)

    def _log_routes(self, cluster: str, report: Report) -> None:
        """One warning per route whose Service goes missing (at most WARNINGS_PER_PASS new
        ones a pass: a wrong setting breaks thousands at once), one line when it is back."""
        due = self._due.pop(cluster, None)
        if due is not None and due[0] is report.states:
            # The same judgement as the pass that held them back: only they are new.
            self._warn_due(cluster, report, due[1])
            return
        warned = self._warned.get(cluster, {})
        now_bad: dict[str, tuple[str, Expected]] = {}
        later: list[str] = []  # not marked as warned: warned in a later pass
        fresh = 0  # routes warned about for the first time in this pass
        for path, state, exp in report.problems():
            if warned.get(path) != (state, exp):
                if path not in warned:
                    if fresh >= WARNINGS_PER_PASS:
                        later.append(path)
                        continue
                    fresh += 1
                _warn_route(cluster, path, state, exp)
            now_bad[path] = (state, exp)
        self._hold_back(cluster, report, later)
        for path, (_, exp) in warned.items():
            if path not in now_bad and _state_of(report, path) == "ok":
                log.info("cluster %s: route %s: Service %s is there now", cluster, path, exp,
                         extra=_fields(cluster, path, "ok", exp))
        # A route whose state is unknown this pass keeps its warning (no repeat when it reads
        # as missing again); a route that is gone or fine drops it.
        self._warned[cluster] = {
            **{p: v for p, v in warned.items() if _state_of(report, p) == "unknown"}, **now_bad}

    def _warn_due(self, cluster: str, report: Report, due: list[str]) -> None:
        warned = self._warned.setdefault(cluster, {})
        for path in due[:WARNINGS_PER_PASS]:
            state, exp = report.states[path]
            _warn_route(cluster, path, state, exp)
            warned[path] = (state, exp)
        self._hold_back(cluster, report, due[WARNINGS_PER_PASS:])

    def _hold_back(self, cluster: str, report: Report, later: list[str]) -> None:
        self._held_back.discard(cluster)
        if later:
            self._held_back.add(cluster)  # due in the next pass, changed or not
            self._due[cluster] = (report.states, later)
            log.warning("cluster %s: %d more routes whose Service is missing or lacks the port, "
                        "each logged in a later pass (GET /clusters counts them all)", cluster,
                        len(later), extra={"cluster": cluster, "routes": len(later)})

    def _log_unread(self, cluster: str, report: Report) -> None:
        """One warning per namespace whose Services cannot be read (again when the error
        changes)."""
        logged = self._unread.get(cluster, {})
        beyond = sum(1 for error in report.errors.values() if error == BEYOND)
        if beyond and BEYOND not in logged.values():
            # A namespace per user: thousands of them. One line, not one per namespace.
            log.warning("cluster %s: %d namespaces beyond the %d whose Services are read: "
                        "the destinations of routes there are unknown", cluster,
                        beyond, MAX_NAMESPACES,
                        extra={"cluster": cluster, "namespaces": beyond})
        for ns, error in report.errors.items():
            if error != BEYOND and logged.get(ns) != error:
                fix = ("grant get, list and watch on services there (docs/operations.md)"
                       if "403" in error else "the cluster's API server keeps failing")
                log.warning("cluster %s: cannot read the Services in namespace %s (%s): the "
                            "destinations of routes there are unknown; %s", cluster, ns, error,
                            fix, extra={"cluster": cluster, "namespace": ns, "error": error})
        self._unread[cluster] = dict(report.errors)

    def forget(self, cluster: str) -> None:
        """The cluster left the registry: its report, warnings and metric go too."""
        self.reports.pop(cluster, None)
        self._warned.pop(cluster, None)
        self._unread.pop(cluster, None)
        self._memos.pop(cluster, None)
        self._expected.pop(cluster, None)
        self._judgements.pop(cluster, None)
        self._held_back.discard(cluster)
        self._due.pop(cluster, None)
        services = self._services.pop(cluster, None)
        if services is not None:
            services.cancel()  # its client, closed with its store, closes the pools
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
