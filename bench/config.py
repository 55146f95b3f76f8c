"""What a benchmark run measures, and at which sizes: the full, quick and tiny presets."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# Route kinds timed one by one for the write overhead (see bench.clusters.user_route).
WRITE_KINDS = ("service", "ip", "remote")


@dataclass(frozen=True)
class ScalePoint:
    """One table held by one service: ``routes`` spread over ``clusters`` clusters."""

    routes: int
    clusters: int
    # A clusters.yaml `shards` override; None (every preset): the service's own layout.
    shards: int | None = None
    backend: str = "istio"  # or "gateway-api": every cluster's backend

    @property
    def label(self) -> str:
        text = f"{self.routes:,} routes, {self.clusters} cluster{'s' if self.clusters > 1 else ''}"
        text += f", shards {self.shards}" if self.shards else ""
        return text + (", Gateway API" if self.gateway else "")

    @property
    def gateway(self) -> bool:
        return self.backend == "gateway-api"


@dataclass(frozen=True)
class StormScenario:
    client: str  # "httpx" or "jupyterhub"
    concurrency: int  # httpx: concurrent clients; jupyterhub: its own semaphore (10)

    @property
    def label(self) -> str:
        if self.client == "jupyterhub":
            return f"JupyterHub client (gather, {self.concurrency} in flight)"
        return f"httpx, {self.concurrency} concurrent clients"


@dataclass(frozen=True)
class Plan:
    name: str
    latency: float  # seconds added by every emulated API server to every request
    runs: int
    # 1. write overhead
    write_table: int  # routes already stored while single writes are timed
    write_samples: int  # sequential POSTs (then DELETEs) per route kind and run
    # 2, 4, 5. table read and scale of state
    points: tuple[ScalePoint, ...]
    get_samples: int  # GET /api/routes per run, table unchanged
    changed_samples: int  # GET /api/routes per run, each right after a write
    post_samples: int  # sequential POSTs per run at each scale point
    cpu_writes: int  # POSTs (then DELETEs) per run for CPU per 1,000 writes
    cpu_writes_large: int  # the same above 10,000 routes, where each write costs more
    idle_seconds: float  # idle window (0: skip), at 4 clusters, default layout
    # FEDERATION_RECONCILE_INTERVAL of the service processes that have an idle window: short
    # enough that reconcile passes fall inside it.
    reconcile_interval: float
    # 6, 7. adds from many clients into a stored table (the scale point of that size, 4 clusters)
    adds_table: int
    adds: int
    adds_clients: int
    # 3. spawn storm
    storm_routes: int
    storms: tuple[StormScenario, ...]
    # 8. the largest object, at a table loaded only for it (0: skip)
    largest_routes: int = 0
    largest_writes: int = 0  # sequential POSTs (then DELETEs) through the service there
    # 10. tables grown through the API from empty clusters, as a hub grows its table (sizes)
    grown: tuple[int, ...] = ()
    grow_clients: int = 50  # concurrent clients writing the table
    grow_sample: int = 500  # the last adds of the growth, timed for CPU per add
    reposts: int = 50  # unchanged routes POSTed again (JupyterHub's route check)
    grown_runs: int = 1  # at most this many runs of fig. 10 (50,000 adds take ~10 min here)
    grown_backends: tuple[str, ...] = ("istio", "gateway-api")  # each size grown on each
    # CPU per idle minute with the production settings (housekeeping every 15 s), measured on
    # the restart of a grown table: seconds left after the table is listed (the passes that
    # follow a start), then the window (0: skip).
    prod_idle_settle: float = 20.0
    prod_idle_seconds: float = 60.0
    chp: bool = True
    install_chp: bool = True
    notes: tuple[str, ...] = field(default_factory=tuple)

    def cpu_writes_at(self, point: ScalePoint) -> int:
        return self.cpu_writes if point.routes <= 10_000 else self.cpu_writes_large

    def with_latency(self, seconds: float) -> Plan:
        return replace(self, latency=seconds)


STORMS = (
    StormScenario("httpx", 10),
    StormScenario("httpx", 100),
    StormScenario("jupyterhub", 10),
)


def full(latency: float = 0.005) -> Plan:
    return Plan(
        name="full",
        latency=latency,
        runs=3,
        write_table=1_000,
        write_samples=150,
        points=(
            ScalePoint(1_000, 4),
            ScalePoint(10_000, 4),
            ScalePoint(50_000, 4),
            ScalePoint(10_000, 1),
            ScalePoint(10_000, 8),
            ScalePoint(10_000, 4, backend="gateway-api"),
            ScalePoint(50_000, 4, backend="gateway-api"),
        ),
        get_samples=20,
        changed_samples=5,
        post_samples=20,
        cpu_writes=300,
        cpu_writes_large=60,
        idle_seconds=16.0,
        reconcile_interval=4.0,
        adds_table=10_000,
        adds=500,
        adds_clients=50,
        storm_routes=1_000,
        storms=STORMS,
        largest_routes=100_000,
        largest_writes=20,
        grown=(10_000, 50_000),
    )


def quick(latency: float = 0.005) -> Plan:
    """Every measurement, small: well under a minute, for CI after the tests."""
    return Plan(
        name="quick",
        latency=latency,
        runs=1,
        write_table=200,
        write_samples=30,
        # The Gateway API points and the grown tables are left to the tiny plan (the test
        # suite) and the full one: quick stays under a minute.
        points=(ScalePoint(400, 4), ScalePoint(400, 1)),
        get_samples=5,
        changed_samples=2,
        post_samples=10,
        cpu_writes=100,
        cpu_writes_large=100,
        idle_seconds=2.0,
        reconcile_interval=0.5,
        adds_table=400,
        adds=50,
        adds_clients=50,
        storm_routes=200,
        storms=STORMS,
        largest_routes=500,
        largest_writes=5,
        grown=(),
        notes=("Quick mode: small sizes and one run each; the figures show that every "
               "measurement works, not how the service performs.",),
    )


def tiny(latency: float = 0.001) -> Plan:
    """The smallest plan with every section, for the test suite (counts, not timings)."""
    return Plan(
        name="tiny",
        latency=latency,
        runs=1,
        write_table=20,
        write_samples=4,
        points=(ScalePoint(20, 4), ScalePoint(40, 4), ScalePoint(30, 1),
                ScalePoint(40, 4, backend="gateway-api")),
        get_samples=2,
        changed_samples=1,
        post_samples=3,
        cpu_writes=20,
        cpu_writes_large=20,
        idle_seconds=0.6,
        reconcile_interval=0.2,
        adds_table=40,
        adds=20,
        adds_clients=10,
        storm_routes=40,
        storms=(StormScenario("httpx", 10), StormScenario("jupyterhub", 10)),
        largest_routes=80,
        largest_writes=3,
        grown=(60,),
        prod_idle_settle=0.2,
        prod_idle_seconds=0.5,
        grow_clients=10,
        grow_sample=20,
        reposts=3,
        chp=False,
        install_chp=False,
    )
