"""A model of how a Gateway API implementation routes one HTTP request over HTTPRoutes.

Follows the HTTPRoute specification's precedence across every rule of every route attached to
the Gateway (apis/v1/httproute_types.go): hostname (longest matching non-wildcard hostname,
then longest matching hostname), an Exact path match, the PathPrefix with the most characters
(whole path elements; a trailing '/' ignored), then the oldest route by creation time, then
"namespace/name", then rule order. Written from the specification, independently of
federation/, so the two can disagree and a test fail.

Two readings of hostnames, as implementations differ: ``spec`` (every route whose hostnames
match, or that has none, competes) and ``vhost`` (one virtual host per hostname: the request
picks the most specific hostname any route names, and only those routes compete; routes without
hostnames form the ``*`` host, consulted only when no named one matches).

Backends resolve through the objects given: an ExternalName Service to its name, a selector-less
Service to its EndpointSlice's address ("ip:<address>"), any other Service to its cluster DNS
name; a backendRef into another namespace needs a ReferenceGrant there, else it does not resolve.
Not modelled: method, header and query matches (refused), weights, mirrors, redirects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = Mapping[str, Any]
GROUP = "gateway.networking.k8s.io"


@dataclass(frozen=True)
class GatewayDecision:
    backend: str | None  # resolved as described above; None: no rule (404) or unresolved ref
    port: int | None
    path: str  # as sent upstream (after URLRewrite)
    host: str  # as sent upstream (after URLRewrite hostname)
    request_headers: dict[str, str] = field(hash=False)
    timeout: str | None
    route: str | None  # "namespace/name" of the winning HTTPRoute
    rule: str | None


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _ns_name(obj: Obj) -> str:
    return f"{_meta(obj).get('namespace', 'default')}/{_meta(obj)['name']}"


def _attached(route: Obj, gateway: str, section: str | None) -> bool:
    for ref in route["spec"].get("parentRefs") or []:
        ns = ref.get("namespace") or _meta(route).get("namespace", "default")
        if ref.get("kind", "Gateway") != "Gateway" or f"{ns}/{ref['name']}" != gateway:
            continue
        if ref.get("sectionName") in (None, section):
            return True
    return False


def _host_match(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return pattern == host


def _host_rank(route: Obj, host: str) -> tuple[int, int] | None:
    """(longest matching non-wildcard, longest matching) hostname; None: no match."""
    names = route["spec"].get("hostnames") or []
    if not names:
        return (0, 0)
    hits = [n for n in names if _host_match(n, host)]
    if not hits:
        return None
    exact = [len(n) for n in hits if not n.startswith("*")]
    return (max(exact, default=0), max(len(n) for n in hits))


def _vhost_routes(routes: list[Obj], host: str) -> list[Obj]:
    """The routes of the one virtual host a per-hostname implementation picks."""
    named = {n for r in routes for n in r["spec"].get("hostnames") or [] if _host_match(n, host)}
    if not named:
        return [r for r in routes if not r["spec"].get("hostnames")]
    best = max(named, key=lambda n: (not n.startswith("*"), len(n)))
    return [r for r in routes if best in (r["spec"].get("hostnames") or [])]


def _path_match(match: Obj, path: str) -> tuple[int, int, int] | None:
    """(exact, prefix characters, matched length) or None."""
    if set(match) - {"path"}:
        raise ValueError(f"unmodelled match fields: {sorted(set(match) - {'path'})}")
    spec = match.get("path") or {"type": "PathPrefix", "value": "/"}
    kind, value = spec.get("type", "PathPrefix"), spec.get("value", "/")
    if kind == "Exact":
        return (1, len(value), len(path)) if path == value else None
    if kind != "PathPrefix":
        raise ValueError(f"unmodelled path match {kind}")
    trimmed = value.rstrip("/") or "/"
    if trimmed == "/":
        return (0, 1, 0)
    if path == trimmed or path.startswith(trimmed + "/"):
        return (0, len(trimmed), len(trimmed))
    return None


def _created(route: Obj, created: Mapping[str, int] | None) -> Any:
    if created is not None:
        return created[_ns_name(route)]
    return _meta(route).get("creationTimestamp", "")


def route_gateway(objects: Sequence[Obj], *, gateway: str, host: str, path: str,
                  section: str | None = None, headers: Mapping[str, str] | None = None,
                  created: Mapping[str, int] | None = None, reading: str = "spec",
                  cluster_domain: str = "cluster.local") -> GatewayDecision:
    """Route one request; ``created`` maps "namespace/name" to a creation order (else the
    objects' creationTimestamp)."""
    host = host.lower().rsplit(":", 1)[0] if host.count(":") == 1 else host.lower()
    bare, sep, query = path.partition("?")
    routes = [o for o in objects if o.get("kind") == "HTTPRoute" and _attached(o, gateway, section)]
    if reading == "vhost":
        routes = _vhost_routes(routes, host)
    best: tuple[Any, ...] | None = None
    for route in routes:
        host_rank = _host_rank(route, host)
        if host_rank is None:
            continue
        if reading == "vhost":
            host_rank = (0, 0)
        for i, rule in enumerate(route["spec"].get("rules") or []):
            for match in rule.get("matches") or [{}]:
                hit = _path_match(match, bare)
                if hit is None:
                    continue
                # Higher is better for the first three; lower for creation, name, rule index.
                key = (host_rank, hit[0], hit[1], _neg(_created(route, created)),
                       _neg(_ns_name(route)), -i)
                if best is None or key > best[0]:
                    best = (key, route, rule, hit[2])
    incoming = {k.lower(): v for k, v in (headers or {}).items()}
    if best is None:
        return GatewayDecision(None, None, path, host, incoming, None, None, None)
    _, route, rule, matched = best
    return _decide(objects, route, rule, bare, sep + query, matched, host, incoming,
                   cluster_domain)


class _neg:  # noqa: N801 - a sort key that inverts the order of any comparable value
    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _neg) -> bool:
        return bool(self.value > other.value)

    def __gt__(self, other: _neg) -> bool:
        return bool(self.value < other.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _neg) and self.value == other.value


def _decide(objects: Sequence[Obj], route: Obj, rule: Obj, path: str, tail: str, matched: int,
            host: str, headers: dict[str, str], domain: str) -> GatewayDecision:
    for f in rule.get("filters") or []:
        if f["type"] == "URLRewrite":
            rewrite = f["urlRewrite"]
            host = rewrite.get("hostname", host)
            if "path" in rewrite:
                path = _replace_prefix(path, matched, rewrite["path"]["replacePrefixMatch"])
        elif f["type"] == "RequestHeaderModifier":
            _mutate(headers, f["requestHeaderModifier"])
    refs = rule.get("backendRefs") or []
    backend, port = (None, None)
    if refs:
        backend, port = _resolve(objects, route, refs[0], domain)
    return GatewayDecision(backend, port, path + tail, host, headers,
                           (rule.get("timeouts") or {}).get("request"), _ns_name(route),
                           rule.get("name"))


def _replace_prefix(path: str, matched: int, replacement: str) -> str:
    rest = path[matched:]
    if replacement.endswith("/") and rest.startswith("/"):
        replacement = replacement[:-1]
    return (replacement + rest) or "/"


def _mutate(headers: dict[str, str], ops: Obj) -> None:
    for item in ops.get("set") or []:
        headers[item["name"].lower()] = item["value"]
    for item in ops.get("add") or []:
        key = item["name"].lower()
        headers[key] = f"{headers[key]},{item['value']}" if key in headers else item["value"]
    for name in ops.get("remove") or []:
        headers.pop(name.lower(), None)


def _find(objects: Sequence[Obj], kind: str, namespace: str, name: str) -> Obj | None:
    for obj in objects:
        meta = _meta(obj)
        if obj.get("kind") == kind and meta.get("namespace") == namespace and meta["name"] == name:
            return obj
    return None


def _granted(objects: Sequence[Obj], route: Obj, namespace: str) -> bool:
    for obj in objects:
        if obj.get("kind") != "ReferenceGrant" or _meta(obj).get("namespace") != namespace:
            continue
        sources = [f for f in obj["spec"]["from"] if f["kind"] == "HTTPRoute" and f["group"] == GROUP
                   and f["namespace"] == _meta(route).get("namespace")]
        targets = [t for t in obj["spec"]["to"] if t["kind"] == "Service" and t["group"] == ""]
        if sources and targets:
            return True
    return False


def _resolve(objects: Sequence[Obj], route: Obj, ref: Obj, domain: str) -> tuple[str | None, int | None]:
    if (ref.get("group"), ref.get("kind")) == ("networking.istio.io", "Hostname"):
        # Istio: a host the mesh knows, from a ServiceEntry; unknown hosts do not resolve.
        known = any(o.get("kind") == "ServiceEntry" and ref["name"] in o["spec"]["hosts"]
                    for o in objects)
        return (ref["name"], ref.get("port")) if known else (None, None)
    if ref.get("kind", "Service") != "Service" or ref.get("group", "") != "":
        return f"{ref.get('group')}/{ref.get('kind')}/{ref['name']}", ref.get("port")
    own = _meta(route).get("namespace", "default")
    namespace = ref.get("namespace") or own
    if namespace != own and not _granted(objects, route, namespace):
        return None, None
    service = _find(objects, "Service", namespace, ref["name"])
    if service is None:
        return f"{ref['name']}.{namespace}.svc.{domain}", ref.get("port")
    spec = service["spec"]
    if spec.get("type") == "ExternalName":
        return spec["externalName"], ref.get("port")
    if not spec.get("selector"):
        for obj in objects:
            labels = _meta(obj).get("labels") or {}
            if obj.get("kind") == "EndpointSlice" and labels.get(
                    "kubernetes.io/service-name") == ref["name"]:
                return "ip:" + obj["endpoints"][0]["addresses"][0], ref.get("port")
        return None, None
    return f"{ref['name']}.{namespace}.svc.{domain}", ref.get("port")
