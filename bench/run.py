"""Runs a plan: each figure in its own emulated world, against a fresh service process."""

from __future__ import annotations

import functools
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from .backends import write_cost
from .chp import CHPProcess, chp_version, find_chp
from .clusters import HOME, Route, World, entries_in, routes, settle_harness
from .config import WRITE_KINDS, Plan, ScalePoint, StormScenario
from .grown import grown_point
from .machine import machine, snapshot_sources
from .measure import (
    AUTH,
    Timed,
    api_client,
    bare_create_delete,
    bare_replace,
    concurrent,
    jupyterhub_adds,
    sequential,
    service_metrics,
    table_reads,
)
from .results import Results, ScaleResult, Series, StormResult
from .service import ServiceProcess
from .stats import ratio
from .watch import Tally, WriteRecorder

LOAD_CLIENTS = 10  # concurrent clients for bulk writes that are measured for CPU, not latency
IDLE_POLL = 0.2  # seconds between /healthz probes while idle (5/s: cheap, catches 0.2 s stalls)


def harness_cpu() -> float:
    """CPU seconds of this process: the emulated clusters and the clients."""
    times = psutil.Process().cpu_times()
    return float(times.user + times.system)


_STARTED = time.monotonic()


def log(message: str) -> None:
    minutes, seconds = divmod(int(time.monotonic() - _STARTED), 60)
    print(f"[bench {minutes:02d}:{seconds:02d}] {message}", file=sys.stderr, flush=True)


class Runner:
    def __init__(self, plan: Plan, profile_dir: Path | None = None) -> None:
        self.plan = plan
        self.profile_dir = profile_dir
        self._tmp = tempfile.TemporaryDirectory(prefix="federation-bench-src-")
        self.sources = snapshot_sources(Path(self._tmp.name))
        self.results = Results(plan, machine(plan.latency, self.sources), datetime.now(UTC))
        self._chp: CHPProcess | None = None
        self._chp_size = -1

    # -- helpers -----------------------------------------------------------------------------

    def check(self, ok: bool, message: str) -> None:
        """A functional check: a failure is reported and makes the run exit non-zero."""
        if not ok:
            log(f"FAILED: {message}")
            self.results.failures.append(message)

    def check_statuses(self, timed: Timed, what: str, *ok: int) -> None:
        bad = timed.unexpected(*ok)
        errors = f", transport errors {dict(timed.errors)}" if timed.errors else ""
        self.check(bad == 0, f"{what}: {bad} of {len(timed.seconds)} requests failed "
                             f"(statuses {dict(timed.statuses)}{errors})")

    def guarded(self, what: str, measure: Callable[[], object]) -> None:
        """Run one figure; if it breaks (the service does not start, a request hangs), record
        a failure and go on with the next, so the report still shows everything else."""
        try:
            measure()
        except Exception as exc:  # noqa: BLE001 - any breakage is a finding, not a crash
            self.check(False, f"{what}: {type(exc).__name__}: {exc}")

    @contextmanager
    def service(self, world: World, tag: str, env: dict[str, str] | None = None,
                expect_routes: int | None = None) -> Iterator[ServiceProcess]:
        profile = self.profile_dir / f"{tag}.prof" if self.profile_dir else None
        svc = ServiceProcess(world.config_path, profile=profile,
                             log=world.directory / f"{tag}.log", sources=self.sources, env=env,
                             expect_routes=expect_routes)
        settle_harness()
        svc.start()
        try:
            yield svc
        finally:
            svc.stop()

    def run(self) -> Results:
        start = time.perf_counter()
        plan = self.plan
        log(f"plan {plan.name}: latency {plan.latency * 1000:g} ms, {plan.runs} run(s)")
        try:
            if plan.write_samples:
                self.guarded("write overhead", self.write_overhead)
            # Points of one size in a row, so one CHP holds their table.
            for point in sorted(plan.points, key=lambda p: (p.routes, p.shards or 0, p.backend)):
                self.guarded(point.label, functools.partial(self.scale_point, point))
            self.results.scale.sort(key=lambda r: plan.points.index(r.point))
            self.guarded("write cost by backend", self.backend_costs)
            for scenario in plan.storms:
                self.guarded(f"storm, {scenario.label}", functools.partial(self.storm, scenario))
            if plan.largest_routes:
                self.guarded(f"largest object at {plan.largest_routes:,} routes",
                             self.largest_object)
            for size in plan.grown:
                for backend in plan.grown_backends:
                    self.guarded(f"table grown to {size:,} routes ({backend})",
                                 functools.partial(grown_point, self, size, backend))
        finally:
            if self._chp is not None:
                self._chp.stop()
            self._tmp.cleanup()
        self.results.duration = time.perf_counter() - start
        return self.results

    def backend_costs(self) -> None:
        for count in sorted({p.routes for p in self.plan.points}):
            self.results.backends[count] = write_cost(count)

    # -- 1. write overhead -------------------------------------------------------------------

    def write_overhead(self) -> None:
        plan, series, info = self.plan, self.results.writes, self.results.write_info
        with World.create(4) as world:
            world.preload(routes(0, plan.write_table, world.names))
            template = world.median_shard(HOME)
            info.update(table=plan.write_table, clusters=4, shard_entries=entries_in(template))
            world.set_latency(plan.latency)
            bare = world.custom_api(HOME)
            with self.service(world, "writes") as svc, api_client(svc.url) as client:
                # Warm-up, untimed: connections, writers, the edge ServiceEntry in home.
                for kind in WRITE_KINDS:
                    warm = routes(900_000, 3, world.names, kind)
                    sequential(client, "POST", warm)
                    sequential(client, "DELETE", [(p, None) for p, _ in warm])
                bare_create_delete(bare, world.registry, warm, "bench-warm")
                for run in range(plan.runs):
                    log(f"write overhead: run {run + 1}/{plan.runs}")
                    self._write_run(world, client, bare, template, run)
            bare.api_client.close()
        for kind in WRITE_KINDS:
            for verb, ref in (("post", "create"), ("delete", "delete")):
                for q in ("p50", "p99"):
                    series[f"{kind}.{verb}.{q}.ratio"] = [
                        ratio(a, b) for a, b in zip(series[f"{kind}.{verb}.{q}"],
                                                    series[f"bare.{ref}.{q}"], strict=True)
                    ]

    def _write_run(self, world: World, client: httpx.Client, bare: Any,
                   template: dict[str, Any], run: int) -> None:
        plan, series = self.plan, self.results.writes
        n = plan.write_samples
        # The floor: the same client asking the service something that needs no cluster.
        floor = Timed()
        for _ in range(n):
            t0 = time.perf_counter()
            status = client.get("/healthz").status_code
            floor.add(time.perf_counter() - t0, status)
        series.add("floor.p50", floor.p(50))
        for k, kind in enumerate(WRITE_KINDS):
            batch = routes(1_000_000 * (run + 1) + 100_000 * k, n, world.names, kind)
            for verb, requests in (("post", batch), ("delete", [(p, None) for p, _ in batch])):
                before = service_metrics(client)
                timed = sequential(client, verb.upper(), requests)
                after = service_metrics(client)
                inside = {key: after[key] - before.get(key, 0.0) for key in after}
                self.check_statuses(timed, f"write overhead: {verb.upper()} {kind}",
                                    201 if verb == "post" else 204)
                series.add(f"{kind}.{verb}.p50", timed.p(50))
                series.add(f"{kind}.{verb}.p99", timed.p(99))
                series.add(f"{kind}.{verb}.mean", timed.mean)
                series.add(f"{kind}.{verb}.calls", inside.get("kube.count", math.nan) / n)
                series.add(f"{kind}.{verb}.kube", inside.get("kube.sum", math.nan) / n)
                series.add(f"{kind}.{verb}.server",
                           inside.get(f"api.{verb.upper()}.sum", math.nan) / n)
        creates, deletes = bare_create_delete(
            bare, world.registry, routes(1_000_000 * (run + 1) + 500_000, n, world.names, "service"),
            f"bench-bare-{run}",
        )
        replaces = bare_replace(bare, template, f"bench-replace-{run}", n)
        for name, timed in (("create", creates), ("delete", deletes), ("replace", replaces)):
            series.add(f"bare.{name}.p50", timed.p(50))
            series.add(f"bare.{name}.p99", timed.p(99))
        stored = world.stored_routes()
        self.check(sum(stored.values()) == plan.write_table,
                   f"write overhead: {sum(stored.values())} routes stored after POST+DELETE, "
                   f"expected {plan.write_table}")

    # -- 2, 4, 5. table read and scale of state ----------------------------------------------

    def chp_serving(self, table: list[Route]) -> CHPProcess | None:
        """A CHP holding ``table`` (kept running while consecutive points share the size)."""
        if not self.plan.chp:
            self.results.chp = "left out (disabled)"
            return None
        if self._chp is not None and self._chp_size == len(table):
            return self._chp
        if self._chp is not None:
            self._chp.stop()
            self._chp = None
        binary, why = find_chp(install=self.plan.install_chp)
        if binary is None:
            self.results.chp = f"left out: {why}"
            return None
        self.results.chp = f"configurable-http-proxy {chp_version(binary)}"
        chp = CHPProcess(binary)
        chp.start()
        log(f"loading {len(table):,} routes into configurable-http-proxy")
        loaded = concurrent(chp.url, "POST", table, 20)
        self.check_statuses(loaded, "CHP: POST", 201)
        with api_client(chp.url) as client:
            _, _, count = table_reads(client, 1)
        # CHP always holds its --default-target route "/" besides the table.
        self.check(count == len(table) + 1, f"CHP holds {count} routes, expected {len(table) + 1}")
        self._chp, self._chp_size = chp, len(table)
        return chp

    def scale_point(self, point: ScalePoint) -> None:
        plan = self.plan
        result = ScaleResult(point)
        self.results.scale.append(result)
        s, info = result.series, result.info
        with World.create(point.clusters, point.shards, point.backend) as world:
            table = routes(0, point.routes, world.names)
            log(f"{point.label}: preloading")
            t0 = time.perf_counter()
            info["objects"] = world.preload(table)
            info["preload_seconds"] = time.perf_counter() - t0
            info["shard_entries"] = entries_in(world.median_shard(HOME))
            world.set_latency(plan.latency)
            chp = self.chp_serving(table)
            for run in range(plan.runs):
                log(f"{point.label}: run {run + 1}/{plan.runs}")
                tag = (f"scale-{point.routes}r-{point.clusters}c-{point.shards or 'd'}s-"
                       f"{point.backend}-{run}")
                env = ({"FEDERATION_RECONCILE_INTERVAL": f"{plan.reconcile_interval:g}"}
                       if self._idles(point) else None)
                with self.service(world, tag, env) as svc:
                    self._scale_run(world, svc, point, run, result, chp)
                # A restart on the same table: until GET /api/routes lists all of it (asked
                # throughout, so the run above keeps its first GET after start cold).
                with self.service(world, tag + "-restart", expect_routes=point.routes) as svc:
                    s.add("listed", svc.listed_seconds)
                    s.add("rss.start_peak", svc.start_peak_rss)
                    s.add("rss.start_ratio", ratio(svc.start_peak_rss, s["rss.after"][-1]))
                if chp is not None:
                    with api_client(chp.url) as client:
                        reads, size, _ = table_reads(client, plan.get_samples)
                    s.add("chp.get.p50", reads.p(50))
                    s.add("chp.rss", chp.rss())
                    info["chp_body_bytes"] = size
                    s.add("get.cached.ratio", ratio(s["get.cached.p50"][-1], reads.p(50)))
                    s.add("get.changed.ratio", ratio(s["get.changed.p50"][-1], reads.p(50)))
            stored = sum(world.stored_routes().values())
            self.check(stored == point.routes,
                       f"{point.label}: {stored} routes stored at the end, expected {point.routes}")

    def _idles(self, point: ScalePoint) -> bool:
        return bool(self.plan.idle_seconds) and point.clusters == 4 and not point.shards

    def _scale_run(self, world: World, svc: ServiceProcess, point: ScalePoint, run: int,
                   result: ScaleResult, chp: CHPProcess | None) -> None:
        plan, s, info = self.plan, result.series, result.info
        base = 10_000_000 * (run + 1)
        s.add("ready", svc.ready_seconds)
        s.add("rss.ready", svc.rss())
        with api_client(svc.url) as client:
            cold, size, count = table_reads(client, 1)
            info["body_bytes"] = size
            self.check(count == point.routes,
                       f"{point.label}: GET /api/routes has {count} routes, expected {point.routes}")
            s.add("get.cold", cold.seconds[0])
            s.add("rss", svc.rss())
            cached, _, _ = table_reads(client, plan.get_samples)
            s.add("get.cached.p50", cached.p(50))
            # What one API call costs at this shard size, without the service: the split of
            # the POST latency between the (emulated) API server and the service; and the
            # bare create a POST is compared with, on the same API.
            api = world.custom_api(HOME)
            replace = bare_replace(api, world.median_shard(HOME), f"bench-replace-{run}",
                                   plan.post_samples)
            s.add("api.replace.p50", replace.p(50))
            creates, _ = bare_create_delete(
                api, world.registry, routes(base + 300_000, plan.post_samples, world.names,
                                            "service"), f"bench-bare-{run}")
            api.api_client.close()
            s.add("bare.create.p50", creates.p(50))
            with world.recorder() as recorder:
                self._measured_writes(world, svc, client, point, run, result, chp, recorder)
            if self._idles(point):
                self._idle(svc, client, s)
            _, _, count = table_reads(client, 1)
            self.check(count == point.routes,
                       f"{point.label}: {count} routes after writes and deletes, "
                       f"expected {point.routes}")
            s.add("rss.after", svc.rss())
            s.add("rss.peak", svc.peak_rss())

    def _measured_writes(self, world: World, svc: ServiceProcess, client: httpx.Client,
                         point: ScalePoint, run: int, result: ScaleResult,
                         chp: CHPProcess | None, recorder: WriteRecorder) -> None:
        """Every route write of a scale run, with what the clusters stored for them."""
        plan, s, info = self.plan, result.series, result.info
        base = 10_000_000 * (run + 1)
        mark = recorder.tally()
        # A GET right after a write: the table changed, so the body is rendered anew.
        changed = Timed()
        written = routes(base, plan.changed_samples, world.names)
        for path, body in written:
            client.post("/api/routes" + path, json=body)
            reads, _, _ = table_reads(client, 1)
            changed.add(reads.seconds[0], 200)
        s.add("get.changed.p50", changed.p(50))
        sequential(client, "DELETE", [(p, None) for p, _ in written])
        # Sequential single writes at this size: the table's mix (pod IPs in home, remote
        # ingresses), then Service-name targets in home (one object, as the bare create).
        batch = routes(base + 100_000, plan.post_samples, world.names)
        post = sequential(client, "POST", batch)
        delete = sequential(client, "DELETE", [(p, None) for p, _ in batch])
        self.check_statuses(post, f"{point.label}: POST", 201)
        self.check_statuses(delete, f"{point.label}: DELETE", 204)
        s.add("post.p50", post.p(50))
        s.add("post.p99", post.p(99))
        s.add("delete.p50", delete.p(50))
        single = routes(base + 400_000, plan.post_samples, world.names, "service")
        post_one = sequential(client, "POST", single)
        delete_one = sequential(client, "DELETE", [(p, None) for p, _ in single])
        self.check_statuses(post_one, f"{point.label}: POST (Service-name target)", 201)
        self.check_statuses(delete_one, f"{point.label}: DELETE (Service-name target)", 204)
        s.add("post.service.p50", post_one.p(50))
        s.add("post.service.ratio", ratio(post_one.p(50), s["bare.create.p50"][-1]))
        s.add("post.ratio", ratio(post.p(50), s["bare.create.p50"][-1]))
        mark = self._stored(recorder, mark, s, "seq", 2 * (len(written) + len(batch) + len(single)),
                            point.label)
        # CPU of the service process for bulk writes from 10 clients.
        n = plan.cpu_writes_at(point)
        info["cpu_writes"] = n
        batch = routes(base + 200_000, n, world.names)
        for verb, method, ok in (("post", "POST", 201), ("delete", "DELETE", 204)):
            cpu0 = svc.cpu_seconds()
            bulk = concurrent(svc.url, method, batch, LOAD_CLIENTS)
            s.add(f"cpu.{verb}", (svc.cpu_seconds() - cpu0) / n * 1000)
            s.add(f"bulk.{verb}.throughput", bulk.throughput)
            self.check_statuses(bulk, f"{point.label}: bulk {method}", ok)
        mark = self._stored(recorder, mark, s, "bulk", 2 * n, point.label)
        if point.routes == plan.adds_table and point.clusters == 4 and not point.shards:
            self._adds(world, svc, client, point, run, s, chp)
            self._stored(recorder, mark, s, "adds", 2 * plan.adds, point.label)
        total = recorder.tally()
        s.add("largest", total.largest)
        s.add("traffic.total", total.traffic_bytes)
        info["largest_what"] = total.largest_what

    def _stored(self, recorder: WriteRecorder, mark: Tally, s: Series, key: str, writes: int,
                what: str) -> Tally:
        """Bytes stored (and sent on the watch) per route write since ``mark``."""
        self.check(recorder.sync(), f"{what}: the watches did not catch up with the clusters")
        now = recorder.tally()
        seen = now - mark
        s.add(f"bytes.{key}", seen.stored_bytes / writes)
        s.add(f"traffic.{key}", seen.traffic_bytes / writes)
        s.add(f"revisions.{key}", seen.revisions / writes)
        return now

    def _adds(self, world: World, svc: ServiceProcess, client: httpx.Client, point: ScalePoint,
              run: int, s: Series, chp: CHPProcess | None) -> None:
        """``adds`` new routes from ``adds_clients`` concurrent clients into the stored table,
        then the same into CHP holding the same table; both removed again afterwards."""
        plan = self.plan
        batch = routes(10_000_000 * (run + 1) + 500_000, plan.adds, world.names)
        label = f"{point.label}: {plan.adds:,} adds from {plan.adds_clients} clients"
        log(f"{label} (run {run + 1})")
        added = concurrent(svc.url, "POST", batch, plan.adds_clients)
        self.check_statuses(added, label, 201)
        s.add("adds.throughput", added.throughput)
        s.add("adds.p50", added.p(50))
        s.add("adds.p99", added.p(99))
        _, _, listed = table_reads(client, 1)
        stored_paths = world.stored_paths()
        stored = sum(len(paths) for paths in stored_paths.values())
        everywhere = set().union(*stored_paths.values())
        s.add("adds.stored", sum(1 for path, _ in batch if path in everywhere))
        self.check(listed == point.routes + plan.adds,
                   f"{label}: GET /api/routes lists {listed}, expected {point.routes + plan.adds}")
        self.check(stored == point.routes + plan.adds,
                   f"{label}: {stored} routes stored in the clusters, "
                   f"expected {point.routes + plan.adds}")
        removed = concurrent(svc.url, "DELETE", [(p, None) for p, _ in batch], plan.adds_clients)
        self.check_statuses(removed, f"{label}: DELETE", 204)
        if chp is None:
            return
        added = concurrent(chp.url, "POST", batch, plan.adds_clients)
        self.check_statuses(added, f"CHP: {label}", 201)
        s.add("chp.adds.throughput", added.throughput)
        s.add("chp.adds.p99", added.p(99))
        s.add("adds.ratio", ratio(s["adds.throughput"][-1], added.throughput))
        with api_client(chp.url) as chp_client:
            _, _, listed = table_reads(chp_client, 1)
        self.check(listed == point.routes + plan.adds + 1,
                   f"CHP: {label}: lists {listed}, expected {point.routes + plan.adds + 1}")
        removed = concurrent(chp.url, "DELETE", [(p, None) for p, _ in batch], plan.adds_clients)
        self.check_statuses(removed, f"CHP: {label}: DELETE", 204)

    def _idle(self, svc: ServiceProcess, client: httpx.Client, s: Series) -> None:
        """CPU of an idle service over one reconcile interval, and the longest time it takes
        to answer /healthz meanwhile: how long background work holds the event loop."""
        settle_harness()  # the harness's own full collection would be timed as the service's
        cpu0 = svc.cpu_seconds()
        health = Timed()
        end = time.perf_counter() + self.plan.idle_seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            status = client.get("/healthz").status_code
            health.add(time.perf_counter() - t0, status)
            time.sleep(max(0.0, IDLE_POLL - (time.perf_counter() - t0)))
        self.check_statuses(health, "idle: GET /healthz", 200)
        s.add("cpu.idle", (svc.cpu_seconds() - cpu0) / self.plan.idle_seconds * 60)
        s.add("stall.max", max(health.seconds))
        s.add("stall.p50", health.p(50))

    # -- 3. spawn storm ----------------------------------------------------------------------

    def storm(self, scenario: StormScenario) -> None:
        plan = self.plan
        result = StormResult(scenario)
        self.results.storms.append(result)
        s = result.series
        for run in range(plan.runs):
            log(f"storm, {scenario.label}: run {run + 1}/{plan.runs}")
            with World.create(4) as world:
                world.set_latency(plan.latency)
                batch = routes(0, plan.storm_routes, world.names)
                tag = f"storm-{scenario.client}-{scenario.concurrency}-{run}"
                with self.service(world, tag) as svc:
                    cpu0, harness0 = svc.cpu_seconds(), harness_cpu()
                    if scenario.client == "jupyterhub":
                        timed = jupyterhub_adds(svc.url, batch)
                    else:
                        timed = concurrent(svc.url, "POST", batch, scenario.concurrency)
                    s.add("cpu", (svc.cpu_seconds() - cpu0) / len(batch) * 1000)
                    s.add("cpu.harness", (harness_cpu() - harness0) / len(batch) * 1000)
                    with httpx.Client(base_url=svc.url, headers=AUTH, timeout=60) as client:
                        listed = len(client.get("/api/routes").json())
                self.check_statuses(timed, f"storm, {scenario.label}", 201)
                stored = sum(world.stored_routes().values())
                result.stored.append(stored)
                self.check(stored == len(batch),
                           f"storm, {scenario.label}: {stored} routes stored in the clusters, "
                           f"expected {len(batch)}")
                self.check(listed == len(batch),
                           f"storm, {scenario.label}: GET /api/routes lists {listed}, "
                           f"expected {len(batch)}")
            s.add("wall", timed.wall)
            s.add("throughput", timed.throughput)
            s.add("p50", timed.p(50))
            s.add("p99", timed.p(99))

    # -- 8. the largest object ---------------------------------------------------------------

    def largest_object(self) -> None:
        """A table of ``largest_routes`` loaded (watched: the objects as stored), then a few
        writes through the service: the largest object either holds."""
        plan, s, info = self.plan, self.results.largest, self.results.largest_info
        n = plan.largest_routes
        with World.create(4) as world, world.recorder() as recorder:
            log(f"largest object: preloading {n:,} routes")
            info["objects"] = world.preload(routes(0, n, world.names))
            self.check(recorder.sync(120), "largest object: the watches did not catch up")
            loaded = recorder.tally()
            s.add("largest.loaded", loaded.largest)
            info["loaded_what"] = loaded.largest_what
            world.set_latency(plan.latency)
            recorder.reset_largest()
            with self.service(world, f"largest-{n}", expect_routes=n) as svc:
                s.add("listed", svc.listed_seconds)
                s.add("rss.start_peak", svc.start_peak_rss)
                with api_client(svc.url) as client:
                    batch = routes(n + 1_000_000, plan.largest_writes, world.names)
                    post = sequential(client, "POST", batch)
                    delete = sequential(client, "DELETE", [(p, None) for p, _ in batch])
                    self.check_statuses(post, f"{n:,} routes: POST", 201)
                    self.check_statuses(delete, f"{n:,} routes: DELETE", 204)
                    s.add("post.p50", post.p(50))
                    _, _, count = table_reads(client, 1)
                    self.check(count == n, f"{n:,} routes: GET /api/routes lists {count}")
                s.add("rss", svc.rss())
                self.check(recorder.sync(), "largest object: the watches did not catch up")
                written = recorder.tally() - loaded
                s.add("largest.written", written.largest)
                s.add("bytes", written.stored_bytes / (2 * plan.largest_writes))
                info["written_what"] = written.largest_what
        s.add("largest", max(s["largest.loaded"][-1], s["largest.written"][-1]))
