"""The benchmark harness, run in-process at its tiniest: every section is reported, the
counts are right, and a functional failure makes ``python -m bench`` exit non-zero. Timings
are never asserted."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench import __main__ as bench_main
from bench import config, report
from bench.clusters import World
from bench.run import Results, Runner
from bench.stats import Spread, percentile

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def results() -> Results:
    return Runner(config.tiny()).run()


def test_every_section_is_reported(results: Results) -> None:
    text = report.render(results)
    for heading in ("### Targets", "### 1. Write overhead", "### 2. Table read",
                    "### 3. Spawn storm", "### 4. Scale of state", "### 5. Growth", "### 6. Write cost by backend",
                    "### Functional checks", "### How it was measured"):
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


def test_a_wrong_count_fails_the_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tiny = dataclasses.replace(config.tiny(), points=(), storms=config.tiny().storms[:1])
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
