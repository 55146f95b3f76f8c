"""Housekeeping across clusters, every ``FEDERATION_RECONCILE_INTERVAL`` seconds on each replica.

It uses only the stores' public surface: a route owned twice keeps its newest copy, the home
cluster's edge rules follow the table, and each store tidies its own objects. Every pass yields
to the event loop as it goes, so requests never wait behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from typing import Protocol

from .config import Registry
from .errors import KubeError
from .mirror import Pacer
from .model import Entry
from .store import FULL_PASS_EVERY
from .store import ClusterStore as Store
from .table import RouteTable


class Federation(Protocol):
    """What housekeeping reads and writes of the federation (federation.service)."""

    registry: Registry
    stores: dict[str, Store]
    table: RouteTable
    orphans: dict[str, float]  # edge rules without a route, since when

    async def write_entry(self, store: Store, entry: Entry) -> None: ...

    def may_write(self, cluster: str) -> bool: ...


log = logging.getLogger(__name__)


class _Quiet:
    """What the last pass across clusters that found everything in order saw, and how many
    passes were skipped since (each cluster's own pass: ClusterStore.tidy)."""

    def __init__(self) -> None:
        self.marks: tuple[object, ...] | None = None
        self.skipped = 0


_quiet: weakref.WeakKeyDictionary[Federation, _Quiet] = weakref.WeakKeyDictionary()


def _marks(fed: Federation) -> tuple[object, ...]:
    """Changes heard from every cluster, failed calls, whether each cluster's cache is synced
    (a pass while one was not skipped work there), and the configuration (the object itself,
    held: a reload makes a new one): the table and the edge rules cannot have changed while
    these did not."""
    return (fed.registry,) + tuple(
        (name, s.mirror.cache.changes, s.client.failed_calls, fed.may_write(name), s.synced)
        for name, s in fed.stores.items())


async def reconcile(fed: Federation, grace: float) -> None:
    pace = Pacer()
    quiet = _quiet.setdefault(fed, _Quiet())
    before = _marks(fed)
    # Duplicates and edge rules visit the whole table: only when something changed since a
    # pass that found them in order, no orphan waits out its grace period, or now and then.
    if quiet.marks != before or fed.orphans or quiet.skipped >= FULL_PASS_EVERY:
        await _resolve_duplicates(fed, pace)
        await _repair_edges(fed, grace, pace)
        quiet.skipped = 0
    else:
        quiet.skipped += 1
    # A cluster whose host claims are not held gets no writes from its tidy-up either: it
    # renders the current configuration's hosts (a reload may have added one another hub
    # holds there), and routing objects for a host this hub does not hold mix two hubs' users.
    tidied = [s for s in list(fed.stores.values()) if s.synced and fed.may_write(s.name)]
    results = await asyncio.gather(*(s.tidy(grace) for s in tidied), return_exceptions=True)
    for store, result in zip(tidied, results, strict=True):
        if isinstance(result, Exception):
            log.warning("cluster %s: housekeeping stopped early: %s", store.name, result,
                        extra={"cluster": store.name})
    after = _marks(fed)
    quiet.marks = after if after == before else None


async def _resolve_duplicates(fed: Federation, pace: Pacer) -> None:
    """A route owned by two clusters (a move whose old side was unreachable): the newest wins."""
    for path, entries in fed.table.duplicates():
        await pace()
        winner = fed.table.get(path)
        if winner is None:
            continue
        for entry in entries:
            store = fed.stores.get(entry.owner)
            if entry is winner or store is None or store.client.circuit.is_open:
                continue
            try:
                await store.backend.remove(path, winner.rank)
            except KubeError as exc:
                log.info("cluster %s: cannot remove stale %s yet: %s", store.name, path, exc,
                         extra={"cluster": store.name})


def _edge_of(fed: Federation, winner: Entry) -> Entry | None:
    owner = fed.registry.clusters.get(winner.owner)
    if owner is None or not owner.edge or winner.owner == fed.registry.home:
        return None
    if not fed.may_write(winner.owner):
        return None  # its hosts there are not this hub's: no edge rule sends users to them
    return Entry(winner.path, winner.target, winner.owner, {}, winner.last_activity, edge=True)


async def _repair_edges(fed: Federation, grace: float, pace: Pacer) -> None:
    """The home cluster's edge rules follow the table: right owner, no orphans, none missing."""
    home = fed.stores.get(fed.registry.home)
    if home is None or not home.synced or home.client.circuit.is_open:
        return
    for path in home.paths():
        await pace()
        try:
            await _repair_edge(fed, home, path, grace)
        except KubeError as exc:
            log.info("cluster %s: cannot repair the edge rule of %s yet: %s", home.name, path,
                     exc, extra={"cluster": home.name})
    for path in list(fed.table.owned):
        await pace()
        winner = fed.table.get(path)
        edge = None if winner is None or home.holds(path) else _edge_of(fed, winner)
        if edge is not None:
            try:
                await fed.write_entry(home, edge)
            except KubeError as exc:
                log.info("cluster %s: cannot restore the edge rule of %s yet: %s", home.name,
                         path, exc, extra={"cluster": home.name})


async def _repair_edge(fed: Federation, home: Store, path: str, grace: float) -> None:
    held = home.entry(path)
    if held is None:
        return
    winner = fed.table.get(path)
    orphans = fed.orphans
    if winner is None and held.edge:
        # An edge rule with no route behind it: removed once it has stayed orphaned for the
        # grace period (another replica's owner write may be in flight).
        owner = fed.stores.get(held.owner)
        first = orphans.setdefault(path, time.monotonic())
        if owner is not None and owner.synced and time.monotonic() - first >= grace:
            await home.backend.remove(path)
            orphans.pop(path, None)
        return
    orphans.pop(path, None)
    if winner is None or winner.owner == home.name:
        return
    if not held.edge or held.owner != winner.owner or held.target != winner.target:
        edge = _edge_of(fed, winner)
        if edge is not None:
            await fed.write_entry(home, edge)
