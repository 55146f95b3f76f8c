"""The chart's requests and limits follow the sizing table in values.yaml's comment, and the
defaults hold the sizes the comment says they hold (the table parsed, the Deployment rendered)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import pytest

from .conftest import CHART_DIR

pytestmark = pytest.mark.chart

VALUES_TEXT = (CHART_DIR / "values.yaml").read_text()
MIB = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}


@dataclass(frozen=True)
class Row:
    backend: str
    routes: int
    loaded_mib: float
    grown_mib: float
    idle_cpu_seconds: float
    request_mib: float
    limit_mib: float
    request_millicores: int


def mib(quantity: str) -> float:
    """A Kubernetes memory quantity (Ki, Mi, Gi) or a figure in MiB, in MiB."""
    found = re.fullmatch(r"([\d.]+)\s*(Ki|Mi|Gi|MiB)", quantity.strip())
    assert found, f"not a memory quantity: {quantity!r}"
    return float(found.group(1)) * MIB.get(found.group(2), 1)


def millicores(quantity: str) -> int:
    text = str(quantity).strip()
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def sizing_table() -> list[Row]:
    rows = []
    for line in VALUES_TEXT.splitlines():
        cells = [c.strip() for c in line.removeprefix("#").strip().strip("|").split("|")]
        if len(cells) != 8 or cells[0] not in ("istio", "gateway-api"):
            continue
        rows.append(Row(cells[0], int(cells[1].replace(",", "")), mib(cells[2]), mib(cells[3]),
                        float(cells[4].removesuffix(" s")), mib(cells[5]), mib(cells[6]),
                        millicores(cells[7])))
    return rows


def documented_sizes() -> tuple[int, int]:
    """The sizes the comment says the default requests and the default limit hold."""
    found = re.search(r"The defaults: requests for ([\d,]+) routes and limits\.memory for "
                      r"([\d,]+) routes, on either backend", " ".join(
                          line.removeprefix("#").strip() for line in VALUES_TEXT.splitlines()))
    assert found, "values.yaml no longer says which size the defaults hold"
    requests_size, limit_size = (int(g.replace(",", "")) for g in found.groups())
    return requests_size, limit_size


def test_the_table_has_both_backends_at_both_sizes() -> None:
    assert sorted((r.backend, r.routes) for r in sizing_table()) == [
        ("gateway-api", 10_000), ("gateway-api", 50_000), ("istio", 10_000), ("istio", 50_000)]


@pytest.mark.parametrize("row", sizing_table(), ids=lambda r: f"{r.backend}-{r.routes}")
def test_each_row_follows_the_stated_rule(row: Row) -> None:
    assert row.grown_mib >= row.loaded_mib
    assert row.request_mib == math.ceil(row.grown_mib / 64) * 64
    assert row.limit_mib == math.ceil(row.grown_mib * 1.5 / 128) * 128
    assert row.request_millicores == math.ceil(row.idle_cpu_seconds / 60 * 1000 / 100) * 100


def test_the_istio_rows_carry_performance_md_figures() -> None:
    """The Istio figures are fig. 10's (grown) and fig. 11's (loaded) as published."""
    text = (CHART_DIR.parents[1] / "docs" / "performance.md").read_text()
    grown = dict(re.findall(r"^\| ([\d,]+) \| [\d.]+ /s \|(?:[^|]*\|){5} (\d+) MiB \|", text, re.M))
    for row in (r for r in sizing_table() if r.backend == "istio"):
        assert float(grown[f"{row.routes:,}"]) == row.grown_mib, row


def test_the_default_resources_hold_the_sizes_the_comment_names(render) -> None:
    requests_size, limit_size = documented_sizes()
    rows = sizing_table()
    for_requests = [r for r in rows if r.routes == requests_size]
    for_limit = [r for r in rows if r.routes == limit_size]
    assert {r.backend for r in for_requests} == {r.backend for r in for_limit} == {
        "istio", "gateway-api"}, "either backend"
    (container,) = render().one("Deployment")["spec"]["template"]["spec"]["containers"]
    resources = container["resources"]
    limit = mib(resources["limits"]["memory"])
    assert limit >= max(r.grown_mib for r in for_limit)
    assert limit >= max(r.limit_mib for r in for_limit)
    assert mib(resources["requests"]["memory"]) >= max(r.request_mib for r in for_requests)
    assert millicores(resources["requests"]["cpu"]) >= max(
        r.request_millicores for r in for_requests)
    assert "cpu" not in resources["limits"], "a spawn storm must not be throttled"
    assert mib(resources["requests"]["memory"]) <= limit
