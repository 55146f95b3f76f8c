"""``python -m bench.census``: what the service's heap holds per route, by owner, by source file
and by type, on a table grown through the API as a hub grows it.

For each backend, emulated clusters are started here and one service process is started on
them: this module again (``--serve``), which runs the same app as ``federation serve`` under
uvicorn with ``tracemalloc`` on and one more endpoint, the census. The table is POSTed by
concurrent clients; the census is taken once the service is ready (the baseline) and once the
table is grown, and the difference is divided by the routes added:

* **by owner**: the objects reachable from each part of the service's state (the route table,
  its rendered GET body, each cluster's route index, the mirror's cache of support objects,
  the writers, the backend's helpers and memos, the activity monitor), each object counted for
  the first owner that reaches it, in that order (``sys.getsizeof``, so buffers such as bytes
  are included, allocator overhead is not);
* **by file**: ``tracemalloc``'s live allocations by the source file that made them (C
  extensions' allocations, orjson's for instance, count for the Python line that called them);
* **by type**: objects the cycle collector tracks (what a full collection walks), by type.

Resident memory (RSS) is read too. The service runs with production settings.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import BuiltinFunctionType, CodeType, FrameType, FunctionType, ModuleType
from typing import Any

TOP = 14  # rows per table
# Objects of these packages are the process's machinery, not route state: never walked into.
_FOREIGN = ("httpx", "httpcore", "aiohttp", "asyncio", "uvicorn", "starlette", "fastapi",
            "prometheus_client", "logging", "ssl", "concurrent", "threading", "anyio",
            "uvloop", "_asyncio")
_OPAQUE = (type, ModuleType, BuiltinFunctionType, CodeType, FrameType)


# -- the service side (``--serve``) -------------------------------------------------------------


def _walk(roots: Iterable[Any], seen: set[int], stop: set[int]) -> tuple[int, int]:
    """Bytes and objects reachable from ``roots`` not yet ``seen`` (marked seen as counted)."""
    size = count = 0
    todo = [r for r in roots if id(r) not in seen and id(r) not in stop]
    while todo:
        obj = todo.pop()
        if id(obj) in seen or id(obj) in stop or type(obj).__module__.split(".")[0] in _FOREIGN:
            continue
        if isinstance(obj, FunctionType):
            # A closure is state (a writer's callbacks hold theirs): its cells count, its
            # code and globals do not.
            referents: Iterable[Any] = obj.__closure__ or ()
        elif isinstance(obj, _OPAQUE):
            continue
        else:
            referents = gc.get_referents(obj)
        seen.add(id(obj))
        size += sys.getsizeof(obj)
        count += 1
        todo.extend(r for r in referents if id(r) not in seen)
    return size, count


def _owners(federation: Any) -> Iterator[tuple[str, list[Any]]]:
    """The parts of the service's state, in the order objects are attributed to them."""
    stores = list(federation.stores.values())
    table = federation.table
    yield "rendered GET /api/routes body", [table._rendered]
    yield "route table (the service's view)", [table]
    yield "route index (entries per cluster)", [s.backend.index for s in stores]
    yield "mirror cache (support objects, tombstones)", [s.mirror.cache for s in stores]
    # Before the writers: their callbacks reach the backend's helpers, which own the memos.
    yield "support objects built (the store's memo)", [s._support_memo for s in stores]
    yield "backend helpers and memos", [s.backend for s in stores]
    yield "writers (one per object written, kept)", [s.mirror._writers for s in stores]
    yield "own-write echoes, grace clocks", [
        (s.mirror.own, s.mirror._unused_since, s.mirror._elsewhere) for s in stores]
    yield "activity monitor", [federation.activity]
    yield "rest of the service object", [federation]


def _stops(federation: Any) -> set[int]:
    """Shared configuration and connections: reachable from everywhere, owned by none."""
    stop: list[Any] = [federation.registry, federation.settings]
    for store in federation.stores.values():
        stop += [store.client, store.scope, store.mirror, store.settings]
    return {id(o) for o in stop}


def _census(federation: Any) -> dict[str, Any]:
    gc.collect()
    rss = _rss()
    files, lines = _allocations()  # first: the census's own bookkeeping is not in it
    frozen = gc.get_freeze_count()
    gc.unfreeze()  # frozen objects are not in gc.get_objects(); frozen again below
    try:
        types = Counter(type(o).__name__ for o in gc.get_objects())
        seen: set[int] = set()
        stop = _stops(federation)
        owners = {}
        for name, roots in _owners(federation):
            size, count = _walk(roots, seen, stop)
            owners[name] = {"bytes": size, "objects": count}
    finally:
        if frozen:
            gc.freeze()
    return {"routes": len(federation.table), "rss": rss, "tracked": sum(types.values()),
            "frozen_before": frozen, "types": dict(types), "owners": owners,
            "files": files, "lines": lines}


def _allocations() -> tuple[dict[str, int], dict[str, int]]:
    """Live allocations by source file and by line (tracemalloc; empty when it is off)."""
    files: dict[str, int] = {}
    lines: dict[str, int] = {}
    if not tracemalloc.is_tracing():
        return files, lines
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, __file__)])
    for stat in snapshot.statistics("filename"):
        files[_short(stat.traceback[0].filename)] = stat.size
    for stat in snapshot.statistics("lineno")[:400]:
        frame = stat.traceback[0]
        lines[f"{_short(frame.filename)}:{frame.lineno}"] = stat.size
    return files, lines


def _short(filename: str) -> str:
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename.split("/federation/", 1)[-1] if "/federation/" in filename else filename


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def serve(config: str, port: int, frames: int) -> None:
    """The service as ``federation serve`` runs it, plus GET /census (no token: loopback)."""
    import uvicorn
    from fastapi.responses import Response

    from federation import logs
    from federation.app import create_app
    from federation.cli import load_settings
    from federation.config import load_registry

    if frames:
        tracemalloc.start(frames)
    settings = load_settings(config)
    logs.setup_logging("warning", settings.log_format)
    app = create_app(settings, registry=load_registry(settings.config))

    @app.get("/census")
    async def census() -> Response:
        await asyncio.sleep(0)
        body = json.dumps(_census(app.state.federation))
        return Response(body, media_type="application/json")

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False,
                log_config=None, timeout_keep_alive=75)


# -- the harness side ---------------------------------------------------------------------------


def _start(config: Path, port: int, frames: int, log: Path) -> subprocess.Popen[bytes]:
    from .service import TOKEN

    env = {**os.environ, "CONFIGPROXY_AUTH_TOKEN": TOKEN, "FEDERATION_LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "bench.census", "--serve", str(config), "--port", str(port),
           "--frames", str(frames)]
    return subprocess.Popen(cmd, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            cwd=Path(__file__).resolve().parents[1])


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode}")
        try:
            if httpx.get(url + "/readyz", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the service did not become ready")


def take(backend: str, size: int, clients: int, frames: int) -> dict[str, Any]:
    """Grow a table of ``size`` routes through the API on ``backend``; both censuses."""
    import httpx

    from federation.testing.harness import free_port

    from .clusters import World, routes
    from .measure import concurrent

    with World.create(4, backend=backend) as world:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = _start(world.config_path, port, frames, world.directory / "census.log")
        try:
            _wait_ready(url, proc)
            with httpx.Client(base_url=url, timeout=600) as client:
                before = client.get("/census").json()
                started = time.perf_counter()
                for first in range(0, size, 2_000):
                    batch = routes(first, min(2_000, size - first), world.names)
                    failed = concurrent(url, "POST", batch, clients).unexpected(201)
                    if failed:
                        raise RuntimeError(f"{failed} adds failed")
                    print(f"{backend}: {first + len(batch):,} routes "
                          f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
                after = client.get("/census").json()
        finally:
            proc.terminate()
            proc.wait(30)
    return {"backend": backend, "size": size, "before": before, "after": after}


def _per_route(after: dict[str, int], before: dict[str, int], routes: int) -> list[tuple[str, float]]:
    rows = [(k, (v - before.get(k, 0)) / routes) for k, v in after.items()]
    return sorted(rows, key=lambda r: -r[1])


def report(result: dict[str, Any]) -> list[str]:
    """Markdown tables of one backend's census."""
    before, after = result["before"], result["after"]
    routes = max(1, after["routes"] - before["routes"])
    out = [f"#### {result['backend']}: {after['routes']:,} routes grown through the API", ""]
    rss = (after["rss"] - before["rss"]) / routes
    tracked = (after["tracked"] - before["tracked"]) / routes
    traced = (sum(after["files"].values()) - sum(before["files"].values())) / routes
    out += [f"RSS {after['rss'] / 2**20:.0f} MiB ({before['rss'] / 2**20:.0f} MiB at ready): "
            f"{rss:,.0f} bytes per route; live Python allocations (tracemalloc) {traced:,.0f} "
            f"bytes per route; {tracked:.1f} objects per route tracked by the cycle collector "
            f"({after['tracked']:,} in all).", ""]
    out += ["| owner | bytes / route | objects / route |", "| :--- | ---: | ---: |"]
    for name, fig in after["owners"].items():
        out.append(f"| {name} | {fig['bytes'] / routes:,.0f} | {fig['objects'] / routes:.1f} |")
    out += ["", "| allocated in (file) | bytes / route |", "| :--- | ---: |"]
    for name, value in _per_route(after["files"], before["files"], routes)[:TOP]:
        out.append(f"| `{name}` | {value:,.0f} |")
    out += ["", "| allocated at (line) | bytes / route |", "| :--- | ---: |"]
    for name, value in _per_route(after["lines"], before["lines"], routes)[:TOP]:
        out.append(f"| `{name}` | {value:,.0f} |")
    out += ["", "| type (tracked by the collector) | objects / route |", "| :--- | ---: |"]
    for name, value in _per_route(after["types"], before["types"], routes)[:TOP]:
        out.append(f"| `{name}` | {value:.2f} |")
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.census",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--backend", default="istio,gateway-api",
                        help="comma-separated: istio, gateway-api")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--frames", type=int, default=1,
                        help="tracemalloc frames kept per allocation (0: off)")
    parser.add_argument("--json", type=Path, help="also write the raw census here")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.frames)
        return 0
    results = [take(b.strip(), args.routes, args.clients, args.frames)
               for b in args.backend.split(",")]
    if args.json:
        args.json.write_text(json.dumps(results))
    for result in results:
        print("\n".join(report(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
