"""``python -m bench [--quick] [--output docs/performance.md] [--latency-ms 5]``.

Exits 1 when something is functionally wrong (a failed request, a route count that does not
match); never because of a timing: targets are reported, not asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from . import config, plots, report
from .results import Results
from .run import Runner, log


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run, < 1 minute")
    parser.add_argument("--output", type=Path, help="markdown file to write (default: stdout)")
    parser.add_argument("--latency-ms", type=float, default=5.0,
                        help="added to every emulated Kubernetes API request (default 5)")
    parser.add_argument("--runs", type=int, help="repetitions per figure (default 3, quick 1)")
    parser.add_argument("--no-chp", action="store_true", help="leave configurable-http-proxy out")
    parser.add_argument("--only", metavar="FIGURES",
                        help="comma-separated subset of: writes (1), scale (2, 4-7), "
                             "storm (3), largest (8), grown (10)")
    parser.add_argument("--routes", metavar="SIZES",
                        help="comma-separated table sizes: keep only the scale points and grown "
                             "tables of these sizes (e.g. 1000,10000)")
    parser.add_argument("--plots", type=Path, metavar="DIR",
                        help="draw the growth curves as PNG files into DIR (default with "
                             "--output, except --quick: plots/ beside it; needs matplotlib)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="run every service process under cProfile, stats into DIR "
                             "(timings are then inflated)")
    args = parser.parse_args(argv)

    plan = (config.quick if args.quick else config.full)(args.latency_ms / 1000)
    if args.runs:
        plan = dataclasses.replace(plan, runs=args.runs)
    if args.no_chp:
        plan = dataclasses.replace(plan, chp=False)
    if args.only:
        only = {f.strip() for f in args.only.split(",")}
        unknown = only - {"writes", "scale", "storm", "largest", "grown"}
        if unknown:
            parser.error(f"unknown figures: {', '.join(sorted(unknown))}")
        plan = dataclasses.replace(
            plan,
            write_samples=plan.write_samples if "writes" in only else 0,
            points=plan.points if "scale" in only else (),
            storms=plan.storms if "storm" in only else (),
            largest_routes=plan.largest_routes if "largest" in only else 0,
            grown=plan.grown if "grown" in only else (),
            notes=plan.notes + (f"Only these figures were measured: {args.only}.",),
        )
    if args.routes:
        try:
            sizes = {int(size.replace("_", "")) for size in args.routes.split(",")}
        except ValueError:
            parser.error(f"--routes: not a list of numbers: {args.routes}")
        plan = dataclasses.replace(
            plan, points=tuple(p for p in plan.points if p.routes in sizes),
            grown=tuple(size for size in plan.grown if size in sizes),
            notes=plan.notes + (f"Only the scale points of these sizes: {args.routes}.",),
        )
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        plan = dataclasses.replace(plan, notes=plan.notes + (
            "Profiled run (cProfile): timings are inflated and not comparable.",))

    results = Runner(plan, profile_dir=args.profile).run()
    _draw_plots(results, args.plots or (args.output.parent / "plots"
                                        if args.output and not args.quick else None),
                args.output)
    body = report.render(results)
    if args.output:
        report.write(args.output, body)
        log(f"report written to {args.output}")
    else:
        sys.stdout.write(body)
    if results.failures:
        log(f"{len(results.failures)} functional check(s) failed")
        return 1
    log(f"done in {results.duration / 60:.1f} min")
    return 0


def _draw_plots(results: Results, directory: Path | None, output: Path | None) -> None:
    if directory is None:
        return
    drawn = plots.draw(results, directory)
    if not drawn:
        log("plots skipped: matplotlib is not installed (pip install -e '.[bench]')")
        return
    base = output.parent if output else Path.cwd()
    results.plots = [os.path.relpath(path, base) for path in drawn]
    log(f"{len(drawn)} plots drawn into {directory}")


if __name__ == "__main__":
    sys.exit(main())
