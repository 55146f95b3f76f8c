"""The route model both backends store: an :class:`Entry` per route, the rule that decides
between two writes of one route, the labels every object carries, and the annotation codec
that keeps entries on objects (a shard holds many, an HTTPRoute one).

Pure: no I/O, no backend. Everything a backend writes is built from these.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from sys import intern
from typing import Any, TypeVar

from .config import Cluster, Registry
from .placement import Destination, destination_in, edge_destination

MANAGED_BY = "jupyterhub-federation-proxy"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "federation.jupyter.org/instance"
LABEL_ROLE = "federation.jupyter.org/role"
ANN_ROUTES = "federation.jupyter.org/routes"  # the entries an object holds (JSON)
ANN_HOST = "federation.jupyter.org/host"  # the host a host-routed object serves
# The hash of an object as built (each backend says of what): compared, where the API server
# stores an object with defaults added, instead of the object.
ANN_SPEC = "federation.jupyter.org/spec"
ROUTE_HEADER = "x-federation-route"  # response header naming the rule that served a request

Rank = tuple[str, str]  # (written at, owner): the order between two writes of one route
K = TypeVar("K")


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def dns_label(*parts: str) -> str:
    """Join parts into a DNS-1123 label of at most 63 characters, hashing when too long."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if len(name) > 63:
        name = name[:54].rstrip("-") + "-" + short_hash(name)
    return name


def selector(instance: str) -> str:
    """The label selector of every object one instance of the service owns."""
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_INSTANCE}={instance}"


def labels(instance: str, role: str) -> dict[str, str]:
    return {LABEL_MANAGED_BY: MANAGED_BY, LABEL_INSTANCE: instance, LABEL_ROLE: role}


def role_of(obj: dict[str, Any]) -> str | None:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_ROLE)


def route_id(path: str) -> str:
    return "r-" + short_hash(path, 12)


@dataclass(frozen=True, slots=True)
class Entry:
    """One route as stored in one cluster.

    Slotted: a table holds several per route (the table's, each index's, the edge rule), and
    without a per-instance dict each takes less than half the memory."""

    path: str
    target: str
    owner: str  # the cluster that holds the route (this cluster, or a remote for an edge rule)
    data: dict[str, Any]
    last_activity: str
    edge: bool = False  # a home-cluster rule forwarding to ``owner``'s ingress

    @property
    def rank(self) -> Rank:
        return (self.last_activity, self.owner)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target, "owner": self.owner, "at": self.last_activity}
        if self.edge:
            out["edge"] = True
        else:
            out["data"] = self.data
        return out

    @classmethod
    def from_json(cls, path: str, raw: dict[str, Any]) -> Entry:
        # Interned: the same route is read from several objects (its shard or HTTPRoute, the
        # edge rule, each replica's echo), and one copy of each string serves them all.
        return cls(
            path=intern(path),
            target=intern(str(raw["target"])),
            owner=intern(str(raw["owner"])),
            data=dict(raw.get("data") or {}),
            last_activity=intern(str(raw.get("at", ""))),
            edge=bool(raw.get("edge", False)),
        )


# --------------------------------------------------------------------------------------------
# Newest write wins: the one rule between two writes of a route (replicas, moves, the table)


def newest(held: Entry | None, entry: Entry) -> Entry:
    """What a put of ``entry`` leaves where ``held`` is stored: a write never replaces a newer
    one (written at, then owner name, so every replica decides alike)."""
    return entry if held is None or held.rank <= entry.rank else held


def loses_to(held: Entry, rank: Rank | None, inclusive: bool = False) -> bool:
    """Whether ``held`` gives way to a write of ``rank`` (None: to any removal). Inclusive: an
    equal rank gives way too (the same write's other copy)."""
    if rank is None:
        return True
    return held.rank <= rank if inclusive else held.rank < rank


def winner(entries: list[Entry]) -> Entry:
    return max(entries, key=lambda e: e.rank)


def newest_copy(copies: Iterable[tuple[K, Entry, bool]]) -> tuple[K, Entry] | None:
    """The copy that answers for a route held in several places at once, as (where, entry),
    from (where, entry, preferred) triples: the newest write; of two copies of the same write,
    a preferred one (Istio: one not in a legacy shard), then the first given."""
    best: tuple[K, Entry, bool] | None = None
    for where, entry, preferred in copies:
        if best is None or (entry.rank, preferred) > (best[1].rank, best[2]):
            best = (where, entry, preferred)
    return None if best is None else (best[0], best[1])


# --------------------------------------------------------------------------------------------
# The annotation codec


def encode_fragment(entry: Entry) -> str:
    """One entry as a member of the routes annotation's JSON object (``"path":{...}``)."""
    return json.dumps(entry.path, ensure_ascii=False) + ":" + json.dumps(
        entry.to_json(), separators=(",", ":"), ensure_ascii=False)


def encode_entries(entries: list[Entry]) -> str:
    return "{" + ",".join(encode_fragment(e) for e in entries) + "}"


def decode_entries(obj: dict[str, Any],
                   held: dict[str, Entry] | None = None) -> dict[str, Entry]:
    """The entries stored on an object (tolerant: a hand-edited object yields what it can).

    ``held``: the entries the object held before; an entry read unchanged is that very object
    again, so that an object read anew (a watch event, a relist) does not replace every entry
    of a shard by a copy: readers tell what changed by identity, and the old entries, long
    lived and frozen out of the collector's walk (heap.py), stay."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_ROUTES)
    if not raw:
        return {}
    try:
        # The standard library, not orjson: route data is any JSON the hub sent, and orjson
        # reads integers past 64 bits as floats, which would change the data handed back.
        data = json.loads(raw)
    except ValueError:
        return {}
    out: dict[str, Entry] = {}
    if isinstance(data, dict):
        before = held or {}
        for path, value in data.items():
            try:
                entry = Entry.from_json(path, value)
            except (KeyError, TypeError, ValueError):
                continue
            old = before.get(path)
            out[entry.path] = old if old is not None and _same_entry(old, entry) else entry
    return out


def _same_entry(a: Entry, b: Entry) -> bool:
    return (a.path == b.path and a.target == b.target and a.owner == b.owner
            and a.last_activity == b.last_activity and a.edge == b.edge
            and _same_json(a.data, b.data))


def _same_json(a: Any, b: Any) -> bool:
    """Equal and of the same types throughout: 1, 1.0 and true are equal in Python but not
    the same route data to hand back."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same_json(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def entry_destination(registry: Registry, cluster: Cluster, entry: Entry) -> Destination:
    """Where ``cluster`` sends the entry's traffic."""
    if entry.edge:
        return edge_destination(registry.clusters[entry.owner])
    return destination_in(cluster, entry.target, entry.data, registry.instance)
