"""``python -m bench.ab DIR DIR [...]``: service CPU per route add of several source trees,
interleaved (A/B/A/B), with each round's ratio to the first tree.

Each DIR holds a ``federation/`` package (a checkout, or a copy with one change). A round
starts one service per tree, in turn, on the same stored table, sends the same number of adds
from concurrent clients, and reads the process's CPU time; the adds are deleted again before
the next service starts. On a shared machine only ratios within a round are comparable.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .clusters import World, routes
from .measure import concurrent
from .service import ServiceProcess

WARM_UP = 20  # untimed adds first: connections, writers, support objects
SETTLE = 20.0  # seconds before an idle window: the housekeeping passes after the writes


@dataclass
class Tree:
    path: Path
    cpu_add: list[float] = field(default_factory=list)  # ms of service CPU per add, per round
    cpu_delete: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)  # MiB once the adds are in
    idle: list[float] = field(default_factory=list)  # CPU seconds per idle minute (--idle)


def measure(tree: Tree, world: World, table: int, adds: int, clients: int, first: int,
            idle: float = 0.0, backend: str = "istio") -> None:
    svc = ServiceProcess(world.config_path, sources=tree.path, expect_routes=table,
                         log=world.directory / f"ab-{tree.path.name}-{backend}.log")
    svc.start()
    try:
        warm = routes(first, WARM_UP, world.names)
        batch = routes(first + WARM_UP, adds, world.names)
        _check(concurrent(svc.url, "POST", warm, clients).unexpected(201))
        cpu0 = svc.cpu_seconds()
        _check(concurrent(svc.url, "POST", batch, clients).unexpected(201))
        tree.cpu_add.append((svc.cpu_seconds() - cpu0) / adds * 1000)
        tree.rss.append(svc.rss() / 2**20)
        cpu0 = svc.cpu_seconds()
        gone = [(path, None) for path, _ in warm + batch]
        _check(concurrent(svc.url, "DELETE", gone, clients).unexpected(204))
        tree.cpu_delete.append((svc.cpu_seconds() - cpu0) / len(gone) * 1000)
        if idle:
            tree.idle.append(idle_cpu(svc, idle))
    finally:
        svc.stop()


def idle_cpu(svc: ServiceProcess, seconds: float) -> float:
    """CPU seconds per minute of a service left alone (production settings: housekeeping
    every 15 s), after one housekeeping interval for the passes that follow the writes."""
    time.sleep(SETTLE)
    cpu0 = svc.cpu_seconds()
    time.sleep(seconds)
    return (svc.cpu_seconds() - cpu0) / seconds * 60


def _check(failed: int) -> None:
    if failed:
        raise RuntimeError(f"{failed} requests failed")


def run(trees: list[Tree], rounds: int, table: int, adds: int, clients: int,
        clusters: int = 3, latency: float = 0.005, idle: float = 0.0,
        backend: str = "istio") -> None:
    with World.create(clusters, backend=backend) as world:
        world.preload(routes(0, table, world.names))
        world.set_latency(latency)
        first = 1_000_000
        for number in range(rounds):
            for tree in trees:
                measure(tree, world, table, adds, clients, first, idle, backend)
                first += 100_000
            print(f"round {number + 1}: " + ", ".join(
                f"{t.path.name} {t.cpu_add[-1]:.2f} ms/add {t.cpu_delete[-1]:.2f} ms/delete "
                f"{t.rss[-1]:.0f} MiB" + (f" {t.idle[-1]:.2f} CPU s/idle min" if t.idle else "")
                for t in trees), file=sys.stderr, flush=True)


def summary(trees: list[Tree]) -> list[str]:
    base = trees[0]
    lines = []
    for tree in trees:
        adds = [a / b for a, b in zip(tree.cpu_add, base.cpu_add, strict=True)]
        deletes = [a / b for a, b in zip(tree.cpu_delete, base.cpu_delete, strict=True)]
        line = (f"{tree.path}: CPU per add {statistics.median(tree.cpu_add):.2f} ms, "
                f"ratio to {base.path.name} {statistics.median(adds):.2f} (rounds: "
                f"{', '.join(f'{r:.2f}' for r in adds)}); per delete "
                f"{statistics.median(deletes):.2f}; RSS {statistics.median(tree.rss):.0f} MiB")
        if tree.idle:
            idle = [a / b if b else float("nan")
                    for a, b in zip(tree.idle, base.idle, strict=True)]
            line += (f"; idle {statistics.median(tree.idle):.2f} CPU s/min, ratio "
                     f"{statistics.median(idle):.2f} (rounds: "
                     f"{', '.join(f'{r:.2f}' for r in idle)})")
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="+", type=Path, help="directories holding federation/")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--table", type=int, default=10_000, help="routes stored (default 10k)")
    parser.add_argument("--adds", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--idle", type=float, default=0.0, metavar="SECONDS",
                        help="also CPU per idle minute, over a window this long")
    parser.add_argument("--backend", default="istio", choices=("istio", "gateway-api"))
    args = parser.parse_args(argv)
    for path in args.trees:
        if not (path / "federation" / "__init__.py").exists():
            parser.error(f"{path}: no federation/ package there")
    trees = [Tree(path.resolve()) for path in args.trees]
    run(trees, args.rounds, args.table, args.adds, args.clients, idle=args.idle,
        backend=args.backend)
    print("\n".join(summary(trees)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
