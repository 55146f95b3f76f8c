"""10. Tables grown through the API: a service started on empty clusters, its table written by
many concurrent clients as a hub writes it over days, then the same figures as a table loaded
at start (idle stalls, memory, restart), and what JupyterHub's route check costs."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx

from .clusters import World, routes, settle_harness
from .config import Plan, ScalePoint
from .measure import api_client, concurrent, sequential, table_reads
from .results import ScaleResult, Series
from .service import ServiceProcess

if TYPE_CHECKING:
    from .run import Runner

CHUNK = 5_000  # routes per growth step (a progress line each)


def gc_metrics(client: httpx.Client) -> dict[str, float]:
    """The service's full-collection figures from /metrics (heap.py), where it has them."""
    out: dict[str, float] = {}
    for line in client.get("/metrics").text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in ("federation_gc_longest_full_pause_seconds",
                    "federation_gc_full_pause_seconds_count",
                    "federation_gc_full_pause_seconds_sum", "federation_heap_freezes_total"):
            out[name] = float(value)
    return out


def grown_point(runner: Runner, size: int, backend: str = "istio") -> None:
    plan = runner.plan
    result = ScaleResult(ScalePoint(size, 4, backend=backend))
    runner.results.grown.append(result)
    tag = f"grown-{size}" + ("-gateway" if backend == "gateway-api" else "")
    for run in range(min(plan.runs, plan.grown_runs)):
        with World.create(4, backend=backend) as world:
            world.set_latency(plan.latency)
            env = {"FEDERATION_RECONCILE_INTERVAL": f"{plan.reconcile_interval:g}"}
            with runner.service(world, f"{tag}-{run}", env) as svc, \
                    api_client(svc.url) as client:
                listed = _grow(runner, world, svc, client, size, result.series)
                _reposts(runner, world, client, size, result.series)
                _idle_and_memory(runner, svc, client, result.series)
            # The table as it was listed: a failed POST (reported) must not stall the restart.
            with runner.service(world, f"{tag}-{run}-restart",
                                expect_routes=listed) as svc:
                result.series.add("listed", svc.listed_seconds)
                result.series.add("rss.start_peak", svc.start_peak_rss)
                if plan.prod_idle_seconds:
                    result.series.add("idle.prod", production_idle(plan, svc))
            stored = sum(world.stored_routes().values())
            runner.check(stored == listed,
                         f"grown {size:,}: {stored} routes stored, {listed} listed")


def production_idle(plan: Plan, svc: ServiceProcess) -> float:
    """CPU seconds per minute of a service left alone with the production settings (this
    process has no FEDERATION_RECONCILE_INTERVAL: housekeeping every 15 s), once the passes
    that follow its start are done."""
    time.sleep(plan.prod_idle_settle)
    cpu0 = svc.cpu_seconds()
    time.sleep(plan.prod_idle_seconds)
    return (svc.cpu_seconds() - cpu0) / plan.prod_idle_seconds * 60


def _grow(runner: Runner, world: World, svc: ServiceProcess, client: httpx.Client, size: int,
          s: Series) -> int:
    """All but the last ``grow_sample`` routes in chunks, then those timed for CPU per add;
    returns how many routes GET /api/routes lists then."""
    from .run import log  # run imports this module

    plan = runner.plan
    bulk = max(0, size - plan.grow_sample)
    start = time.perf_counter()
    for first in range(0, bulk, CHUNK):
        count = min(CHUNK, bulk - first)
        log(f"grown {size:,}: routes {first:,}-{first + count:,}")
        chunk = routes(first, count, world.names)
        world.add_user_services(chunk)  # the spawner makes each user's Service first
        timed = concurrent(svc.url, "POST", chunk, plan.grow_clients)
        runner.check_statuses(timed, f"grown {size:,}: POST", 201)
        settle_harness()  # else its pauses grow with the table and stall the growth
    sample = routes(bulk, size - bulk, world.names)
    world.add_user_services(sample)
    cpu0 = svc.cpu_seconds()
    timed = concurrent(svc.url, "POST", sample, plan.grow_clients)
    s.add("cpu.add", (svc.cpu_seconds() - cpu0) / len(sample) * 1000)
    s.add("adds.p50", timed.p(50))
    runner.check_statuses(timed, f"grown {size:,}: POST (timed)", 201)
    s.add("grow.seconds", time.perf_counter() - start)
    s.add("grow.throughput", size / (time.perf_counter() - start))
    _, _, count = table_reads(client, 1)
    runner.check(count == size, f"grown {size:,}: GET /api/routes lists {count}")
    return count


def _reposts(runner: Runner, world: World, client: httpx.Client, size: int, s: Series) -> None:
    """JupyterHub's route check POSTs routes again that it finds unchanged: what one such
    re-POST stores in the clusters."""
    again = routes(0, min(runner.plan.reposts, size), world.names)
    with world.recorder() as recorder:
        mark = recorder.tally()
        timed = sequential(client, "POST", again)
        runner.check(recorder.sync(), f"grown {size:,}: the watches did not catch up")
        seen = recorder.tally() - mark
    runner.check_statuses(timed, f"grown {size:,}: POST again, unchanged", 201)
    s.add("repost.bytes", seen.stored_bytes / len(again))
    s.add("repost.revisions", seen.revisions / len(again))
    s.add("repost.p50", timed.p(50))


def _idle_and_memory(runner: Runner, svc: ServiceProcess, client: httpx.Client,
                     s: Series) -> None:
    before = gc_metrics(client)
    if runner.plan.idle_seconds:
        runner._idle(svc, client, s)
    after = gc_metrics(client)
    if after:
        count = "federation_gc_full_pause_seconds_count"
        s.add("gc.longest", after.get("federation_gc_longest_full_pause_seconds", 0.0))
        s.add("gc.idle_full", after.get(count, 0.0) - before.get(count, 0.0))
        s.add("gc.freezes", after.get("federation_heap_freezes_total", 0.0))
    s.add("rss.after", svc.rss())
