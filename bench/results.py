"""What a run measured: every figure kept per run, so the report can give medians with their
spread and ratios taken within one run."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .config import Plan, ScalePoint, StormScenario
from .stats import Spread


class Series(dict[str, list[float]]):
    """Named figures, one value per run."""

    def add(self, key: str, value: float) -> None:
        self.setdefault(key, []).append(value)

    def spread(self, key: str) -> Spread:
        return Spread.of(self.get(key, []))


@dataclass
class ScaleResult:
    point: ScalePoint
    series: Series = field(default_factory=Series)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class StormResult:
    scenario: StormScenario
    series: Series = field(default_factory=Series)
    stored: list[int] = field(default_factory=list)  # routes found in the clusters, per run


@dataclass
class Results:
    plan: Plan
    machine: dict[str, str]
    started: datetime
    duration: float = 0.0
    writes: Series = field(default_factory=Series)
    write_info: dict[str, Any] = field(default_factory=dict)
    scale: list[ScaleResult] = field(default_factory=list)
    storms: list[StormResult] = field(default_factory=list)
    largest: Series = field(default_factory=Series)  # 8. the table loaded for its largest object
    largest_info: dict[str, Any] = field(default_factory=dict)
    # routes in the table -> backend -> {"objects", "bytes"} per remote route write (backends.py)
    grown: list[ScaleResult] = field(default_factory=list)  # 10. tables grown through the API
    backends: dict[int, dict[str, dict[str, float]]] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)  # PNG paths, relative to the report
    chp: str = ""  # the CHP version used, or why it was left out
    failures: list[str] = field(default_factory=list)
