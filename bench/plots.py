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
    # Targets drawn as dashed lines: (label, value); curve targets are curves labelled
    # "... (target)".
    targets: tuple[tuple[str, float], ...] = ()


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
    grown = [r for r in results.grown if not r.point.gateway]
    grown_gateway = [r for r in results.grown if r.point.gateway]

    def per_backend(key: str, scale: float, grown_key: str | None = None) -> list[Curve]:
        curves = [_curve("Istio, loaded at start", istio, key, scale),
                  _curve("Gateway API, loaded at start", gateway, key, scale)]
        if grown_key:
            curves.append(_curve("Istio, grown through the API", grown, grown_key, scale))
            curves.append(_curve("Gateway API, grown through the API", grown_gateway,
                                 grown_key, scale))
        return curves

    def twice_chp() -> Curve:
        chp = _curve("", istio, "chp.rss", MIB)
        return Curve("2x configurable-http-proxy (target)", [(x, 2 * y) for x, y in chp.points])

    spec: list[tuple[str, str, str, Callable[[], list[Curve]], tuple[tuple[str, float], ...]]] = [
        ("cpu-per-add", "Service CPU per route add", "ms",
         lambda: per_backend("cpu.post", 1.0, "cpu.add"),
         (("Istio target, grown", 3.0), ("Gateway API target, grown", 1.5))),
        ("rss", "Resident memory after writes", "MiB",
         lambda: per_backend("rss.after", MIB, "rss.after")
         + [_curve("configurable-http-proxy", istio, "chp.rss", MIB), twice_chp()], ()),
        ("idle-stall", "Slowest /healthz while idle", "ms",
         lambda: per_backend("stall.max", 1000.0, "stall.max"), (("target", 50.0),)),
        ("idle-cpu", "CPU per idle minute", "s",
         lambda: per_backend("cpu.idle", 1.0) + [
             _curve("Istio, grown, production settings", grown, "idle.prod"),
             _curve("Gateway API, grown, production settings", grown_gateway, "idle.prod")],
         (("target (production settings, 50,000 routes)", 1.0),)),
        ("restart", "Restart to the whole table listed", "s",
         lambda: per_backend("listed", 1.0, "listed"), (("target", 5.0),)),
        ("bytes-per-write", "Bytes stored per route write", "KiB",
         lambda: per_backend("bytes.seq", 1 / 1024)
         + [_curve("Istio, unchanged re-POST (grown)", grown, "repost.bytes", 1 / 1024)],
         (("target", 40.0),)),
    ]
    out = []
    for name, title, unit, curves, targets in spec:
        drawn = [c for c in curves() if c.points]
        if drawn:
            out.append(Plot(name, title, unit, drawn, targets))
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
            target = curve.label.endswith("(target)")
            ax.plot(xs, ys, marker="" if target else "o", linestyle="--" if target else "-",
                    color="grey" if target else None, label=curve.label)
        for (label, value), color in zip(plot.targets, ("red", "purple"), strict=False):
            ax.axhline(value, linestyle="--", linewidth=1, color=color, label=label)
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
