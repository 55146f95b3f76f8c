"""The benchmark harness, run in-process at its tiniest: every section is reported, the
counts are right, and a functional failure makes ``python -m bench`` exit non-zero. Timings
are never asserted."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import httpx
import pytest

from bench import __main__ as bench_main
from bench import config, plots, report
from bench.clusters import NAMESPACE, World
from bench.run import Results, Runner
from bench.stats import Spread, percentile
from bench.watch import PLURALS
from federation.mesh import GROUP, VERSION
from federation.model import LABEL_INSTANCE, LABEL_MANAGED_BY, MANAGED_BY

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def results() -> Results:
    return Runner(config.tiny()).run()


def test_every_section_is_reported(results: Results) -> None:
    text = report.render(results)
    for heading in ("### Targets", "### 1. Write overhead", "### 2. Table read",
                    "### 3. Spawn storm", "### 4. Scale of state", "### 5. Growth",
                    "### 6. Bytes stored per route write", "### 7. Adds into a stored table",
                    "### 8. Largest object", "### 9. Write cost by backend",
                    "### 10. Tables grown through the API",
                    "### 11. Both backends through the service", "### Functional checks",
                    "### How it was measured"):
        assert heading in text
    assert "| CPU |" in text and "Kubernetes API latency" in text
    assert results.failures == []


def test_counts_are_right(results: Results) -> None:
    plan = results.plan
    assert {r.point for r in results.scale} == set(plan.points)
    for storm in results.storms:
        assert storm.stored == [plan.storm_routes] * plan.runs
        assert len(storm.series["wall"]) == plan.runs
    for kind in ("service", "ip", "remote"):
        assert len(results.writes[f"{kind}.post.p50.ratio"]) == plan.runs
    for scale in results.scale:
        assert len(scale.series["ready"]) == plan.runs
        assert scale.info["objects"] > 0


def test_every_target_has_a_row(results: Results) -> None:
    text = report.render(results)
    for target in ("Bytes stored per route write at 50,000 routes at most 1.5x",
                   "Bytes stored per route write at 50,000 routes under 40 KiB",
                   "at least 0.5x CHP's rate", "into 10,000 routes: all stored",
                   "POST p50 with 10,000 routes stored within 1.6x",
                   "at 50,000 routes grown through the API under 50 ms",
                   "Service CPU per add at 50,000 routes within 1.3x",
                   "Service CPU per add at 10,000 routes at most 4 ms",
                   "Resident memory at 50,000 routes grown through the API",
                   "Restart to the full table listed at 50,000 routes grown through the API",
                   "Resident memory at 10,000 routes under 128 MiB",
                   "Resident memory at 50,000 routes under 320 MiB",
                   "Peak RSS during start at 50,000 routes at most 1.5x",
                   "Slowest /healthz while idle housekeeping runs at 50,000 routes",
                   "Restart to the full table listed at 50,000 routes",
                   "Largest object written at 100,000 routes",
                   "Istio: service CPU per add at 10,000 routes grown through the API at most 3 ms",
                   "Gateway API: service CPU per add at 10,000 routes grown through the API at "
                   "most 1.5 ms",
                   "Gateway API: CPU per add at 50,000 routes grown within 1.3x of 10,000",
                   "Istio: no full collection over 100 ms at 50,000 routes grown",
                   "Gateway API: resident memory at 50,000 routes grown at most 2x CHP's",
                   "Istio: at most 1 CPU second per idle minute at 50,000 routes grown",
                   "Gateway API: at most 2 object revisions per route write at 10,000 routes",
                   "Gateway API: restart to the full table listed at 50,000 routes grown"):
        assert target in text
    # The tiny plan has none of the target sizes: no verdict is made up.
    assert "**met**" not in text.split("Earlier targets")[0]


def test_stored_bytes_are_counted(results: Results) -> None:
    plan = results.plan
    measured = [r for r in results.scale if r.point.clusters == 4]
    assert len(measured) == 3
    for r in measured:
        s = r.series
        for key in ("bytes.seq", "traffic.seq", "revisions.seq", "bytes.bulk", "largest"):
            assert len(s[key]) == plan.runs, key
        for run in range(plan.runs):
            # Every route write sent one at a time stores at least one object revision (on the
            # Gateway API a DELETE removes the route's HTTPRoute instead: only the POSTs, half
            # the writes, store one), and an object's revision is no larger than the largest.
            assert s["revisions.seq"][run] >= (0.5 if r.point.gateway else 1)
            assert 0 < s["bytes.seq"][run] / s["revisions.seq"][run] <= s["largest"][run]
            assert s["traffic.seq"][run] >= s["bytes.seq"][run]
            # The whole window's watch traffic holds the sequential writes' share of it.
            seq_writes = 2 * (plan.changed_samples + 2 * plan.post_samples)
            assert s["traffic.total"][run] >= s["traffic.seq"][run] * seq_writes * (1 - 1e-9)
        assert r.info["largest_what"].count("/") == 2


def test_adds_into_a_stored_table(results: Results) -> None:
    plan = results.plan
    with_adds = [r for r in results.scale if "adds.throughput" in r.series]
    assert {r.point.backend for r in with_adds} == {"istio", "gateway-api"}  # one each
    (point,) = [r for r in with_adds if not r.point.gateway]
    assert point.point.routes == plan.adds_table and point.point.clusters == 4
    assert point.series["adds.stored"] == [plan.adds] * plan.runs
    assert "bytes.adds" in point.series
    assert all(r.series.get("adds.throughput") is None for r in results.scale
               if r not in with_adds)


def test_restart_memory_and_idle(results: Results) -> None:
    plan = results.plan
    for r in results.scale:
        s = r.series
        assert len(s["listed"]) == plan.runs and all(v > 0 for v in s["listed"])
        assert all(v > 0 for v in s["rss.start_peak"])
        assert len(s["rss.start_ratio"]) == plan.runs and all(v > 0 for v in s["rss.start_ratio"])
        # A process's high-water mark is at least what it holds.
        assert all(a <= b for a, b in zip(s["rss.after"], s["rss.peak"], strict=True))
        assert len(s["post.service.ratio"]) == plan.runs
        assert ("stall.max" in s) == (r.point.clusters == 4)


def test_grown_through_the_api(results: Results) -> None:
    """A table written through the API from empty clusters has every figure of fig. 10, and
    re-POSTing an unchanged route is seen to store something (one revision at least)."""
    plan = results.plan
    assert [(r.point.routes, r.point.backend) for r in results.grown] == [
        (size, backend) for size in plan.grown for backend in plan.grown_backends]
    assert {r.point.backend for r in results.grown} == {"istio", "gateway-api"}
    for r in results.grown:
        s = r.series
        for key in ("cpu.add", "stall.max", "rss.after", "listed", "rss.start_peak",
                    "grow.throughput", "repost.bytes", "idle.prod"):
            assert len(s[key]) == min(plan.runs, plan.grown_runs), key
            assert all(v > 0 for v in s[key]) or key == "idle.prod", (key, s[key])
        assert all(v >= 1 for v in s["repost.revisions"])
        assert all(v >= 0 for v in s["idle.prod"])  # none at all is fine: nothing to do


def test_both_backends_through_the_service(results: Results) -> None:
    """The Gateway API point stores HTTPRoutes, one per route: fewer bytes per write than the
    Istio point of the same size, whose writes re-send a shard."""
    (gateway,) = [r for r in results.scale if r.point.gateway]
    (istio,) = [r for r in results.scale if r.point == dataclasses.replace(gateway.point,
                                                                          backend="istio")]
    assert "/httproutes/" in gateway.info["largest_what"]
    assert "/virtualservices/" in istio.info["largest_what"]
    assert gateway.series["bytes.seq"][0] < istio.series["bytes.seq"][0]
    assert "Gateway API" in report.both_backends(results)[4]


def test_largest_object(results: Results) -> None:
    s, info = results.largest, results.largest_info
    assert info["objects"] > 0
    assert s["largest.loaded"][0] > 0 and s["largest.written"][0] > 0
    assert s["largest"] == [max(s["largest.loaded"][0], s["largest.written"][0])]
    assert s["listed"][0] > 0


def test_watch_counts_what_is_stored() -> None:
    """The recorder sums the stored size of every revision of the service's objects (and only
    theirs), each counted once, whichever kind."""
    with World.create(2) as world, world.recorder() as recorder:
        server = world.emulated.servers["hub"]
        base = f"{server.url}/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}"
        written = []
        with httpx.Client(headers={"Authorization": f"Bearer {server.token}"}) as http:
            kinds = ("VirtualService", "ServiceEntry", "DestinationRule")
            for i, (plural, kind) in enumerate(zip(PLURALS, kinds, strict=True)):
                labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_INSTANCE: "default"}
                obj = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
                       "metadata": {"name": f"o{i}", "labels": labels},
                       "spec": {"n": "x" * (i + 1) * 100}}
                created = http.post(f"{base}/{plural}", json=obj)
                changed = {**created.json(), "spec": {"n": "y"}}
                replaced = http.put(f"{base}/{plural}/o{i}", json=changed)
                assert http.delete(f"{base}/{plural}/o{i}").status_code == 200
                written += [len(created.content), len(replaced.content)]
                # The bench's own look-alike objects are not the service's.
                bare = {**obj, "metadata": {"name": f"b{i}",
                                            "labels": {**labels, LABEL_INSTANCE: "bench-bare"}}}
                assert http.post(f"{base}/{plural}", json=bare).status_code == 201
        assert recorder.sync()
        tally = recorder.tally()
    assert tally.revisions == 2 * len(PLURALS) and tally.deletions == len(PLURALS)
    assert tally.stored_bytes == sum(written)
    assert tally.largest == max(written) and tally.largest_what == "hub/destinationrules/o2"
    assert tally.traffic_bytes > tally.stored_bytes


def test_unknown_figure_is_refused() -> None:
    with pytest.raises(SystemExit):
        bench_main.main(["--only", "nothing"])


def test_a_wrong_count_fails_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tiny = dataclasses.replace(config.tiny(), points=(), storms=config.tiny().storms[:1],
                               largest_routes=0)
    monkeypatch.setattr(config, "quick", lambda latency: tiny)
    real = World.stored_routes

    def one_missing(world: World) -> dict[str, int]:
        counts = real(world)
        counts[world.names[0]] -= 1
        return counts

    monkeypatch.setattr(World, "stored_routes", one_missing)
    out = tmp_path / "report.md"
    assert bench_main.main(["--quick", "--output", str(out)]) == 1
    assert "FAILED" in out.read_text()


def test_report_keeps_the_text_around_its_block(tmp_path: Path) -> None:
    path = tmp_path / "performance.md"
    path.write_text(f"# Title\n\nintro\n\n{report.BEGIN}\nold\n{report.END}\n\n## Analysis\n")
    report.write(path, "new figures\n")
    text = path.read_text()
    assert text.startswith("# Title\n\nintro\n\n") and text.rstrip().endswith("## Analysis")
    assert "new figures" in text and "old" not in text


def test_spread_and_percentiles() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 99) == pytest.approx(9.9)
    spread = Spread.of([0.010, 0.012, 0.011])
    assert (spread.median, spread.low, spread.high) == (0.011, 0.010, 0.012)
    assert spread.fmt(1000, "ms") == "11.0 ms (10.0–12.0)"


def test_write_cost_by_backend(results: Results) -> None:
    """Both backends measured at every table size; one HTTPRoute per route costs less per
    write than re-sending whole shards (and does not grow with the table)."""
    assert set(results.backends) == {p.routes for p in results.plan.points}
    for costs in results.backends.values():
        assert set(costs) == {"istio", "gateway-api"}
        assert 0 < costs["gateway-api"]["bytes"] < costs["istio"]["bytes"]


def test_plots_hold_every_curve(results: Results) -> None:
    """Each growth curve has a point per table size measured, per backend and for the grown
    tables; matplotlib missing means no plot, not an error."""
    drawn = {p.name: p for p in plots.plots(results)}
    assert set(drawn) == {"cpu-per-add", "rss", "idle-stall", "idle-cpu", "restart",
                          "bytes-per-write"}
    curves = {c.label: c.points for c in drawn["rss"].curves}
    assert [x for x, _ in curves["Istio, loaded at start"]] == [20, 40]
    assert [x for x, _ in curves["Gateway API, loaded at start"]] == [40]
    assert [x for x, _ in curves["Istio, grown through the API"]] == list(results.plan.grown)
    assert [x for x, _ in curves["Gateway API, grown through the API"]] == list(
        results.plan.grown)
    # Targets are drawn: a line, or a curve (twice CHP's memory) where they follow the table.
    assert ("target", 5.0) in drawn["restart"].targets
    assert dict(drawn["cpu-per-add"].targets)["Gateway API target, grown"] == 1.5


def test_plots_are_drawn_or_skipped(results: Results, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    files = plots.draw(results, tmp_path / "plots")
    assert len(files) == 6 and all(f.read_bytes().startswith(b"\x89PNG") for f in files)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert plots.draw(results, tmp_path / "none") == []


def test_ab_compares_source_trees(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two trees (here the same sources twice) measured in turn: a ratio per round."""
    import shutil

    from bench import ab
    from bench.machine import REPO

    trees = []
    for name in ("a", "b"):
        shutil.copytree(REPO / "federation", tmp_path / name / "federation",
                        ignore=shutil.ignore_patterns("__pycache__"))
        trees.append(str(tmp_path / name))
    assert ab.main([*trees, "--rounds", "1", "--table", "20", "--adds", "10",
                    "--clients", "5"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "ratio to a 1.00" in out[0] and "ratio to a" in out[1]
    with pytest.raises(SystemExit):
        ab.main([str(tmp_path)])  # no federation/ there


def test_the_preloaded_routes_lead_to_services_that_exist() -> None:
    """As on a real hub, every user Service a route names exists (the spawner made it): the
    service's own destination check finds every one of them, none missing."""
    from bench.clusters import routes
    from federation.testing.harness import ServiceThread

    from ..conftest import TOKEN, fast_settings

    with World.create(3) as world:
        table = routes(0, 30, world.names)
        assert sum(len(v) for v in world.user_services(table).values()) == 20  # to the remotes
        world.preload(table)
        with ServiceThread(fast_settings(world.config_path)) as svc:
            svc.run(svc.federation.reconcile(grace=0))
            rows = httpx.get(svc.url + "/clusters",
                             headers={"Authorization": f"token {TOKEN}"}).json()["clusters"]
    found = {r["name"]: r["destinations"] for r in rows if r["name"] != "hub"}
    assert {n: (d["ok"], d["missing"]) for n, d in found.items()} == {"r1": (10, 0), "r2": (10, 0)}
