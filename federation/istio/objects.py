"""Pure builders of the Istio objects the service writes (no I/O, unit-tested without a cluster).

The object model, per cluster (see docs/design.md for why):

* **Shard VirtualServices** hold the route rules. A shard holds routes of one host key and one
  path depth; shards split in two as they grow (:mod:`federation.istio.layout`), leaving a rule-less
  *split marker*. Two different routes of the same depth can never both serve one request
  (matches are segment-exact), so rule order inside a shard does not matter. Shards have no
  ``hosts``: they are Istio *delegates*.
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

from typing import Any

from .. import _json
from ..config import Cluster, Registry
from ..errors import InvalidRoute
from ..mesh import API_VERSION, metadata, plural_of, support_objects
from ..model import (
    ANN_HOST,
    ANN_ROUTES,
    ANN_SPEC,
    ROUTE_HEADER,
    Entry,
    encode_fragment,
    entry_destination,
    role_of,
    route_id,
    short_hash,
)
from ..routespec import RouteKey, wire_forms
from .layout import DEFAULT_CAPACITY, ShardKey, grow, parse_key, root_order

ANN_SHARD = "federation.jupyter.org/shard"
ANN_SPLIT = "federation.jupyter.org/split"
# The hash of a shard's or root's spec as built (see spec_hash): a restart or reload compares
# it with the spec the current configuration builds, and rewrites only the objects that differ.
VS = "virtualservices"


def _metadata(name: str, cluster: Cluster, instance: str, role: str) -> dict[str, Any]:
    return metadata(name, cluster.namespace, instance, role)


def spec_hash(spec_text: str) -> str:
    """The hash of a spec's canonical JSON (keys sorted, compact): what the spec-hash
    annotation holds, and what :func:`stored_spec_hash` finds for an object written without
    one (the API server keeps an Istio spec as sent)."""
    return short_hash(spec_text, 16)


def stored_spec_hash(obj: dict[str, Any]) -> str:
    """The spec hash of a stored shard or root: its annotation, or (an object written before
    the annotation existed) the hash of its stored spec itself."""
    held = ((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_SPEC)
    if held:
        return str(held)
    return spec_hash(_json.dumps_sorted(obj.get("spec") or {}).decode())


# --------------------------------------------------------------------------------------------
# Shards and roots


def root_host_key(cluster: Cluster, host: str) -> str:
    """The root a shard of ``host`` belongs to: "" is the cluster's default root."""
    return "" if not host or host in cluster.hosts else host


def root_name(instance: str, host_key: str) -> str:
    return f"{instance}-root" if not host_key else f"{instance}-root-{short_hash(host_key)}"


def shard_key_of(obj: dict[str, Any]) -> ShardKey | None:
    """The key of a shard object (None for anything else)."""
    meta = obj.get("metadata") or {}
    if role_of(obj) != "shard":
        return None
    ann = meta.get("annotations") or {}
    return parse_key(meta.get("name", ""), ann.get(ANN_HOST, ""), ann.get(ANN_SHARD))


def is_split_marker(obj: dict[str, Any]) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(ANN_SPLIT) == "true"


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


# Kubernetes refuses an object whose annotations add up to more than 256 KiB; a shard whose
# routes would pass this splits before it is written (routes carry up to 16 KiB of data).
MAX_ROUTES_BYTES = 192 * 1024
# Past this a shard splits even below its route count (big route data).
SPLIT_ROUTES_BYTES = 64 * 1024


class ShardFull(Exception):  # noqa: N818 - a signal to split, not a failure
    """These routes do not fit on one object: split the shard, then write again."""


class ShardMemo:
    """The JSON text of unchanged entries' rules and annotation fragments, kept between writes
    of one shard.

    A write sends the whole shard; with this, only the entries that changed cost anything: the
    body is joined from kept text (:func:`shard_body`). Text is also what costs least to keep.
    Valid for one (registry, cluster) pair: make a new one when the configuration changes.
    """

    def __init__(self) -> None:
        self.rules: dict[str, tuple[Entry, str | None]] = {}
        self.fragments: dict[str, tuple[Entry, str]] = {}
        self.routes_size = 0  # characters of the routes annotation last rendered
        self.spec_hash = ""  # the spec hash last rendered

    @staticmethod
    def _same(held: Entry, entry: Entry) -> bool:
        # Identity is the common case; an equal entry arrives when a watch event of our own
        # write was applied before the write's response.
        return held is entry or held == entry

    def rule(self, registry: Registry, cluster: Cluster, entry: Entry) -> str | None:
        """The rule's JSON, or None for an entry this configuration cannot route (its cluster
        left the registry): it stays stored, so the table stays whole, with no rule."""
        held = self.rules.get(entry.path)
        if held is not None and self._same(held[0], entry):
            return held[1]
        try:
            # Canonical (keys sorted): the shard's spec hash is the hash of the joined rules.
            text: str | None = _json.dumps_sorted(route_rule(registry, cluster, entry)).decode()
        except (KeyError, InvalidRoute, ValueError):
            text = None
        self.rules[entry.path] = (entry, text)
        return text

    def fragment(self, entry: Entry) -> str:
        held = self.fragments.get(entry.path)
        if held is not None and self._same(held[0], entry):
            return held[1]
        text = encode_fragment(entry)
        self.fragments[entry.path] = (entry, text)
        return text

    def forget_others(self, paths: dict[str, Entry]) -> None:
        """Drop what routes that left the shard left behind (called now and then)."""
        if len(self.fragments) > 2 * len(paths) + 16:
            self.fragments = {p: v for p, v in self.fragments.items() if p in paths}
            self.rules = {p: v for p, v in self.rules.items() if p in paths}


def shard_body(
    registry: Registry,
    cluster: Cluster,
    key: ShardKey,
    entries: dict[str, Entry],
    memo: ShardMemo,
) -> bytes:
    """A shard object as the JSON the API server receives, joined from the memo's text (its
    writer's mirror adds the resourceVersion it replaces)."""
    meta = _shard_metadata(registry, cluster, key)
    ordered = sorted(entries)
    routes = "{" + ",".join(memo.fragment(entries[p]) for p in ordered) + "}"
    if len(ordered) > 1 and len(routes.encode()) > MAX_ROUTES_BYTES:
        raise ShardFull(key)
    meta["annotations"][ANN_ROUTES] = routes
    memo.routes_size = len(routes)
    spec = shard_spec_text(registry, cluster, entries, memo)
    memo.spec_hash = meta["annotations"][ANN_SPEC] = spec_hash(spec)
    memo.forget_others(entries)
    head = _json.dumps({"apiVersion": API_VERSION, "kind": "VirtualService", "metadata": meta})
    return head[:-1] + b',"spec":' + spec.encode() + b"}"


def shard_spec_text(registry: Registry, cluster: Cluster, entries: dict[str, Entry],
                    memo: ShardMemo) -> str:
    """A shard's spec as canonical JSON, joined from the memo's rule text."""
    rules = [r for r in (memo.rule(registry, cluster, entries[p]) for p in sorted(entries))
             if r is not None]
    return '{"http":[' + ",".join(rules) + "]}"


def build_shard(
    registry: Registry,
    cluster: Cluster,
    key: ShardKey,
    entries: dict[str, Entry],
    memo: ShardMemo | None = None,
) -> dict[str, Any]:
    """A shard object (the same as :func:`shard_body`, as a dict: docs, tests, splits)."""
    body: dict[str, Any] = _json.loads(
        shard_body(registry, cluster, key, entries, memo if memo is not None else ShardMemo()))
    return body


def _shard_metadata(registry: Registry, cluster: Cluster, key: ShardKey) -> dict[str, Any]:
    meta = _metadata(key.name(registry.instance), cluster, registry.instance, "shard")
    meta["labels"]["federation.jupyter.org/depth"] = str(key.depth)
    if key.host:
        meta["annotations"][ANN_HOST] = key.host
    if not key.legacy:
        meta["annotations"][ANN_SHARD] = key.label
    return meta


def build_split_marker(registry: Registry, cluster: Cluster, key: ShardKey) -> dict[str, Any]:
    """What a shard becomes once its routes live in its two children: no rules, and a mark
    that tells every replica to look one level down. Never delegated to by a root."""
    meta = _shard_metadata(registry, cluster, key)
    meta["annotations"][ANN_SPLIT] = "true"
    meta["annotations"][ANN_ROUTES] = "{}"
    return {"apiVersion": API_VERSION, "kind": "VirtualService", "metadata": meta,
            "spec": {"http": []}}


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
        # No rule name and no namespace (the root's by default): a root lists every shard of
        # its host and is rewritten whenever one appears or goes, so each byte counts.
        {"delegate": {"name": shard}}
        for shard in sorted(set(shard_names), key=root_order)
    ]
    spec = {"hosts": hosts, "gateways": [cluster.gateway], "http": rules}
    meta["annotations"][ANN_SPEC] = spec_hash(_json.dumps_sorted(spec).decode())
    return {"apiVersion": API_VERSION, "kind": "VirtualService", "metadata": meta, "spec": spec}


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
# A whole cluster


def render_cluster(registry: Registry, cluster: Cluster, entries: list[Entry],
                   capacity: int = DEFAULT_CAPACITY) -> list[dict[str, Any]]:
    """Every object one cluster holds for these entries (docs, tests, preloading), in the
    layout the service reaches by splitting shards of ``capacity`` routes."""
    leaves, markers = grow(((RouteKey.parse(e.path), e) for e in entries), capacity)
    objects = [build_shard(registry, cluster, k, leaves[k]) for k in sorted(leaves)]
    objects += [build_split_marker(registry, cluster, k) for k in markers]
    host_roots = {root_host_key(cluster, k.host) for k in leaves} - {""}
    roots: dict[str, list[str]] = {}
    for k in leaves:
        for host_key in roots_for_shard(cluster, k.host, k.depth, host_roots):
            roots.setdefault(host_key, []).append(k.name(registry.instance))
    objects += [build_root(registry, cluster, hk, names) for hk, names in sorted(roots.items())]
    support: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in entries:
        for obj in support_objects(registry, cluster, entry_destination(registry, cluster, entry)):
            support[(plural_of(obj), obj["metadata"]["name"])] = obj
    return objects + [support[k] for k in sorted(support)]
