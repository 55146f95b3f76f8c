"""Percentiles within one run, and medians with spread across runs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), interpolating linearly between order statistics."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def ratio(a: float, b: float) -> float:
    return a / b if b else math.nan


@dataclass(frozen=True)
class Spread:
    """One figure over several runs: the median of the per-run values and their min-max."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        finite = [v for v in values if not math.isnan(v)]
        if not finite:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(percentile(finite, 50), min(finite), max(finite), len(finite))

    def fmt(self, scale: float = 1.0, unit: str = "", digits: int | None = None) -> str:
        """``12.3 ms (11.8-13.1)``; one run shows no range."""
        if self.n == 0:
            return "n/a"
        d = _digits(self.median * scale) if digits is None else digits
        sep = "" if unit in ("x", "%", "") else " "
        text = f"{self.median * scale:,.{d}f}{sep}{unit}"
        if self.n > 1:
            text += f" ({self.low * scale:,.{d}f}–{self.high * scale:,.{d}f})"
        return text


def _digits(value: float) -> int:
    magnitude = abs(value)
    if magnitude >= 100:
        return 0
    if magnitude >= 10:
        return 1
    return 2
