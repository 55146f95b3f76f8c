"""Pure builders of the Istio objects the service writes (no I/O, unit-tested without a cluster).

The object model, per cluster (see docs/design.md for why):

* **Shard VirtualServices** hold the route rules. A shard holds routes of one host key and one
  path depth, split into ``shards`` buckets by a hash of the path. Two different routes of the
  same depth can never both serve one request (matches are segment-exact), so rule order inside a
  shard does not matter. Shards have no ``hosts``: they are Istio *delegates*.
* **Root VirtualServices**, one per host (the cluster's hosts, and one per host-routed host),
  bound to the gateway, list their shards as ordered ``delegate`` rules: deepest first. That
  order is the whole of configurable-http-proxy's longest-prefix rule, and it lives inside one
  object, so Istio's undefined order across VirtualServices never matters.
* **Support objects**: a ServiceEntry (and DestinationRule for https) per remote cluster ingress
  in the home cluster, and a STATIC ServiceEntry per pod-IP target.

Each route is stored on its shard as an entry in the ``federation.jupyter.org/routes``
annotation: the exact target, the POSTed data, when it was written, and which cluster owns it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from .config import Cluster, Registry
from .errors import InvalidRoute
from .placement import Destination, destination_in, edge_destination
from .routespec import RouteKey, wire_forms

GROUP = "networking.istio.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
MANAGED_BY = "jupyterhub-federation-proxy"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "federation.jupyter.org/instance"
LABEL_ROLE = "federation.jupyter.org/role"
ANN_ROUTES = "federation.jupyter.org/routes"
ANN_HOST = "federation.jupyter.org/host"
ANN_USED_BY = "federation.jupyter.org/used-by"
ROUTE_HEADER = "x-federation-route"

KINDS = {
    "virtualservices": "VirtualService",
    "serviceentries": "ServiceEntry",
    "destinationrules": "DestinationRule",
}

_NAME_TAIL = re.compile(r"-(?:h([0-9a-f]{8})-)?r(\d+)-(\d{3})$")


def short_hash(text: str, length: int = 8) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def dns_label(*parts: str) -> str:
    """Join parts into a DNS-1123 label of at most 63 characters, hashing when too long."""
    name = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    if len(name) > 63:
        name = name[:54].rstrip("-") + "-" + short_hash(name)
    return name


def selector(instance: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_INSTANCE}={instance}"


def _metadata(name: str, cluster: Cluster, instance: str, role: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": cluster.namespace,
        "labels": {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_INSTANCE: instance,
            LABEL_ROLE: role,
        },
        "annotations": {},
    }


# --------------------------------------------------------------------------------------------
# Shards and roots


@dataclass(frozen=True, order=True)
class ShardKey:
    host: str  # "" for routes without a host segment
    depth: int
    bucket: int

    def name(self, instance: str) -> str:
        host = f"h{short_hash(self.host)}-" if self.host else ""
        return f"{instance}-{host}r{self.depth}-{self.bucket:03d}"

    def sort_key(self) -> tuple[int, int, int]:
        """Root order: deepest first; at equal depth a host route before a plain one."""
        return (-self.depth, 0 if self.host else 1, self.bucket)


def shard_key(key: RouteKey, shards: int) -> ShardKey:
    bucket = int(short_hash(key.path, 8), 16) % shards
    return ShardKey(host=key.host or "", depth=key.depth, bucket=bucket)


def root_host_key(cluster: Cluster, host: str) -> str:
    """The root a shard of ``host`` belongs to: "" is the cluster's default root."""
    return "" if not host or host in cluster.hosts else host


def root_name(instance: str, host_key: str) -> str:
    return f"{instance}-root" if not host_key else f"{instance}-root-{short_hash(host_key)}"


def shard_key_of(obj: dict[str, Any]) -> ShardKey | None:
    """The key of a shard object (None for anything else)."""
    meta = obj.get("metadata") or {}
    if (meta.get("labels") or {}).get(LABEL_ROLE) != "shard":
        return None
    m = _NAME_TAIL.search(meta.get("name", ""))
    if not m:
        return None
    host = (meta.get("annotations") or {}).get(ANN_HOST, "")
    return ShardKey(host=host, depth=int(m.group(2)), bucket=int(m.group(3)))


def sort_key_of_shard_name(name: str) -> tuple[int, int, int]:
    m = _NAME_TAIL.search(name)
    if not m:
        return (0, 1, 0)
    return (-int(m.group(2)), 0 if m.group(1) else 1, int(m.group(3)))


def depth_of_shard_name(name: str) -> int | None:
    m = _NAME_TAIL.search(name)
    return int(m.group(2)) if m else None


def route_id(path: str) -> str:
    return "r-" + short_hash(path, 12)


@dataclass(frozen=True)
class Entry:
    """One route as stored on a shard in one cluster."""

    path: str
    target: str
    owner: str  # the cluster that holds the route (this cluster, or a remote for an edge rule)
    data: dict[str, Any]
    last_activity: str
    edge: bool = False  # a home-cluster rule forwarding to ``owner``'s ingress

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target, "owner": self.owner, "at": self.last_activity}
        if self.edge:
            out["edge"] = True
        else:
            out["data"] = self.data
        return out

    @classmethod
    def from_json(cls, path: str, raw: dict[str, Any]) -> Entry:
        return cls(
            path=path,
            target=str(raw["target"]),
            owner=str(raw["owner"]),
            data=dict(raw.get("data") or {}),
            last_activity=str(raw.get("at", "")),
            edge=bool(raw.get("edge", False)),
        )


def entry_destination(registry: Registry, cluster: Cluster, entry: Entry) -> Destination:
    if entry.edge:
        return edge_destination(registry.clusters[entry.owner])
    return destination_in(cluster, entry.target, entry.data, registry.instance)


def route_rule(registry: Registry, cluster: Cluster, entry: Entry) -> dict[str, Any]:
    """The http rule serving one route: segment-exact, so /user/al never serves /user/alice."""
    key = RouteKey.parse(entry.path)
    dest = entry_destination(registry, cluster, entry)
    if key.rest == "/":
        match: list[dict[str, Any]] = [{"uri": {"prefix": "/"}}]
    else:
        match = []
        for form in wire_forms(key.rest):
            match += [{"uri": {"exact": form}}, {"uri": {"prefix": form + "/"}}]
    rule: dict[str, Any] = {
        "name": route_id(entry.path),
        "match": match,
        "route": [{"destination": {"host": dest.host, "port": {"number": dest.port}}}],
        "headers": {"response": {"set": {ROUTE_HEADER: route_id(entry.path)}}},
    }
    if entry.edge:
        # Hop one of two: the path is kept. A plain route addresses the remote gateway by its
        # own name; a host route keeps its Host, which selects its root over there.
        if key.host is None:
            rule["rewrite"] = {"authority": dest.host}
        return rule
    opts = cluster.http
    if opts.stripPrefix and key.rest != "/":
        rule["rewrite"] = {"uri": "/"}
    request: dict[str, Any] = {}
    hdrs = opts.requestHeaders
    if hdrs.set:
        request["set"] = {k: v.replace("{prefix}", key.rest) for k, v in hdrs.set.items()}
    if hdrs.add:
        request["add"] = {k: v.replace("{prefix}", key.rest) for k, v in hdrs.add.items()}
    if hdrs.remove:
        request["remove"] = list(hdrs.remove)
    if request:
        rule["headers"]["request"] = request
    if opts.timeout:
        rule["timeout"] = opts.timeout
    return rule


class ShardMemo:
    """Rules and annotation fragments of unchanged entries, kept between writes of a shard.

    A write re-renders the whole shard; with this, only the entries that changed cost anything.
    Valid for one (registry, cluster) pair: make a new one when the configuration changes.
    """

    def __init__(self) -> None:
        self.rules: dict[tuple[Any, ...], dict[str, Any]] = {}
        self.fragments: dict[str, tuple[Entry, str]] = {}

    def rule(self, registry: Registry, cluster: Cluster, entry: Entry) -> dict[str, Any]:
        key = (entry.path, entry.target, entry.owner, entry.edge,
               _memo_part(entry.data.get("user")), _memo_part(entry.data.get("server_name")))
        rule = self.rules.get(key)
        if rule is None:
            if len(self.rules) > 200_000:
                self.rules.clear()
            rule = self.rules[key] = route_rule(registry, cluster, entry)
        return rule

    def fragment(self, entry: Entry) -> str:
        held = self.fragments.get(entry.path)
        if held is not None and held[0] is entry:
            return held[1]
        text = json.dumps(entry.path, ensure_ascii=False) + ":" + json.dumps(
            entry.to_json(), separators=(",", ":"), ensure_ascii=False
        )
        self.fragments[entry.path] = (entry, text)
        return text


def _memo_part(value: Any) -> Any:
    """A hashable stand-in for a route data value: data is any JSON, and an object or an array
    cannot be part of a dict key (a str is never a tuple, so the two kinds never collide)."""
    return value if isinstance(value, str) else ("repr", repr(value))


def build_shard(
    registry: Registry,
    cluster: Cluster,
    key: ShardKey,
    entries: dict[str, Entry],
    memo: ShardMemo | None = None,
) -> dict[str, Any]:
    memo = memo if memo is not None else ShardMemo()
    name = key.name(registry.instance)
    meta = _metadata(name, cluster, registry.instance, "shard")
    meta["labels"]["federation.jupyter.org/depth"] = str(key.depth)
    if key.host:
        meta["annotations"][ANN_HOST] = key.host
    ordered = sorted(entries)
    meta["annotations"][ANN_ROUTES] = "{" + ",".join(memo.fragment(entries[p]) for p in ordered) + "}"
    rules = []
    for p in ordered:
        try:
            rules.append(memo.rule(registry, cluster, entries[p]))
        except (KeyError, InvalidRoute, ValueError):
            # An entry this configuration cannot route (its cluster was removed from the
            # registry): keep it stored, so the table stays whole, but write no rule for it.
            continue
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualService",
        "metadata": meta,
        "spec": {"http": rules},
    }


def decode_entries(obj: dict[str, Any]) -> dict[str, Entry]:
    """The entries stored on a shard object (tolerant: a hand-edited object yields what it can)."""
    raw = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_ROUTES)
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    out: dict[str, Entry] = {}
    if isinstance(data, dict):
        for path, value in data.items():
            try:
                out[path] = Entry.from_json(path, value)
            except (KeyError, TypeError, ValueError):
                continue
    return out


def root_delegates(obj: dict[str, Any]) -> list[str]:
    return [
        rule["delegate"]["name"]
        for rule in (obj.get("spec") or {}).get("http") or []
        if isinstance(rule, dict) and isinstance(rule.get("delegate"), dict)
    ]


def build_root(
    registry: Registry, cluster: Cluster, host_key: str, shard_names: list[str]
) -> dict[str, Any]:
    """The gateway-bound root for one host: delegates to shards, deepest first."""
    name = root_name(registry.instance, host_key)
    meta = _metadata(name, cluster, registry.instance, "root")
    hosts = list(cluster.hosts) if not host_key else [host_key]
    if not host_key and cluster.name != registry.home and cluster.ingress_origin is not None:
        # Edge traffic from the home cluster arrives addressed to this cluster's ingress host.
        if cluster.ingress_origin[1] not in hosts:
            hosts.append(cluster.ingress_origin[1])
    if host_key:
        meta["annotations"][ANN_HOST] = host_key
    rules = [
        {"name": shard, "delegate": {"name": shard, "namespace": cluster.namespace}}
        for shard in sorted(set(shard_names), key=lambda s: (sort_key_of_shard_name(s), s))
    ]
    return {
        "apiVersion": API_VERSION,
        "kind": "VirtualService",
        "metadata": meta,
        "spec": {"hosts": hosts, "gateways": [cluster.gateway], "http": rules},
    }


def roots_for_shard(cluster: Cluster, key_host: str, depth: int, host_roots: set[str]) -> set[str]:
    """Host keys of the roots that must delegate to a shard.

    A plain shard belongs to the default root; the depth-0 plain shard (the ``/`` route, e.g. the
    hub) also to every host root, as configurable-http-proxy's ``/`` serves every host.
    """
    own = root_host_key(cluster, key_host)
    roots = {own}
    if not key_host and depth == 0:
        roots |= host_roots
    return roots


# --------------------------------------------------------------------------------------------
# Support objects


def _support(kind: str, name: str, cluster: Cluster, inst: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": kind,
        "metadata": _metadata(name, cluster, inst, "support"),
        "spec": spec,
    }


def support_objects(registry: Registry, cluster: Cluster, dest: Destination) -> list[dict[str, Any]]:
    """Objects that make ``dest`` routable in ``cluster`` (none for a plain Service).

    No ``exportTo``: the ingress gateway runs in its own namespace and must see them.
    """
    inst = registry.instance
    if dest.kind == "service":
        return []
    if dest.kind == "ip":
        name = dns_label(inst, "ip", short_hash(f"{dest.address}:{dest.port}", 10))
        proto = "HTTPS" if dest.tls else "HTTP"
        return [_support("ServiceEntry", name, cluster, inst, {
            "hosts": [dest.host],
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": [{"number": dest.port, "name": f"{proto.lower()}-{dest.port}", "protocol": proto}],
            "endpoints": [{"address": dest.address}],
        })]
    # "edge" (a remote ingress) or "external": a DNS host outside the mesh.
    name = dns_label(inst, dest.kind, short_hash(f"{dest.host}:{dest.port}", 10))
    out = [_support("ServiceEntry", name, cluster, inst, {
        "hosts": [dest.host],
        "location": "MESH_EXTERNAL",
        "resolution": "DNS",
        # Plain HTTP on the wire to the port; TLS is originated by the DestinationRule.
        "ports": [{"number": dest.port, "name": f"http-{dest.port}", "protocol": "HTTP"}],
    })]
    if dest.tls:
        out.append(_support("DestinationRule", name, cluster, inst, {
            "host": dest.host,
            "trafficPolicy": {
                "portLevelSettings": [
                    {"port": {"number": dest.port}, "tls": {"mode": "SIMPLE", "sni": dest.host}}
                ]
            },
        }))
    return out


def plural_of(obj: dict[str, Any]) -> str:
    kind = obj["kind"]
    for plural, k in KINDS.items():
        if k == kind:
            return plural
    raise KeyError(kind)
