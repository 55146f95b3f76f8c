"""The growth curves as PNG plots: each figure against the routes held, per backend, for
tables loaded at start and grown through the API, CHP beside where it applies.

Needs matplotlib (``pip install -e '.[bench]'``); without it no plot is drawn and the report
says so."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .results import Results, ScaleResult

MIB = 1 / 2**20


@dataclass(frozen=True)
class Curve:
    label: str
    points: list[tuple[int, float]]  # (routes, median)


@dataclass(frozen=True)
class Plot:
    name: str  # file name without .png
    title: str
    unit: str
    curves: list[Curve]


def _median(result: ScaleResult, key: str, scale: float) -> float:
    spread = result.series.spread(key)
    return spread.median * scale if spread.n else math.nan


def _curve(label: str, results: list[ScaleResult], key: str, scale: float = 1.0) -> Curve:
    points = [(r.point.routes, _median(r, key, scale)) for r in results]
    return Curve(label, sorted((x, y) for x, y in points if not math.isnan(y)))


def plots(results: Results) -> list[Plot]:
    """What to draw: the scale points of 4 clusters (default layout) per backend, and the
    tables grown through the API."""
    main = [r for r in results.scale if r.point.clusters == 4 and not r.point.shards]
    istio = [r for r in main if not r.point.gateway]
    gateway = [r for r in main if r.point.gateway]
    grown = results.grown

    def per_backend(key: str, scale: float, grown_key: str | None = None) -> list[Curve]:
        curves = [_curve("Istio, loaded at start", istio, key, scale),
                  _curve("Gateway API, loaded at start", gateway, key, scale)]
        if grown_key:
            curves.append(_curve("Istio, grown through the API", grown, grown_key, scale))
        return curves

    spec: list[tuple[str, str, str, Callable[[], list[Curve]]]] = [
        ("cpu-per-add", "Service CPU per route add", "ms",
         lambda: per_backend("cpu.post", 1.0, "cpu.add")),
        ("rss", "Resident memory after writes", "MiB",
         lambda: per_backend("rss.after", MIB, "rss.after")
         + [_curve("configurable-http-proxy", istio, "chp.rss", MIB)]),
        ("idle-stall", "Slowest /healthz while idle", "ms",
         lambda: per_backend("stall.max", 1000.0, "stall.max")),
        ("restart", "Restart to the whole table listed", "s",
         lambda: per_backend("listed", 1.0, "listed")),
        ("bytes-per-write", "Bytes stored per route write", "KiB",
         lambda: per_backend("bytes.seq", 1 / 1024)
         + [_curve("Istio, unchanged re-POST (grown)", grown, "repost.bytes", 1 / 1024)]),
    ]
    out = []
    for name, title, unit, curves in spec:
        drawn = [c for c in curves() if c.points]
        if drawn:
            out.append(Plot(name, title, unit, drawn))
    return out


def draw(results: Results, directory: Path) -> list[Path]:
    """PNG files of :func:`plots` in ``directory``; [] when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for plot in plots(results):
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
        for curve in plot.curves:
            xs, ys = zip(*curve.points, strict=True)
            ax.plot(xs, ys, marker="o", label=curve.label)
        ax.set_xscale("log")
        ax.set_xlabel("routes in the table")
        ax.set_ylabel(plot.unit)
        ax.set_title(plot.title)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize="small")
        fig.tight_layout()
        path = directory / f"{plot.name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
