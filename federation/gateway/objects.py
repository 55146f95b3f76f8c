"""Pure builders of the Gateway API objects (no I/O).

One HTTPRoute per route and cluster. The Gateway API ranks rules *across* routes: an Exact
match, then the PathPrefix with the most characters, matched by whole path elements
(``/user/al`` never serves ``/user/alice``). Every PathPrefix that matches a request is a
whole-segment ancestor of it, so the longest is the deepest: configurable-http-proxy's rule, by
specification, in any creation order. No shards, no roots: a write touches one small object.

Objects, per cluster:

* an **HTTPRoute** per route (``<instance>-rt-<hash>``): one rule per wire spelling of the path
  (URLRewrite ReplacePrefixMatch allows exactly one PathPrefix match per rule), the route's
  hostnames, a backendRef to the destination Service, and the route's state in the same
  ``federation.jupyter.org/routes`` annotation as a shard (one entry);
* a **host default** HTTPRoute per host-routed host (``<instance>-hd-<hash>``): ``/`` on that
  host to the ``/`` route's backend. configurable-http-proxy's ``/`` serves every host; a
  gateway that builds one virtual host per name would not consult the ``/`` route there;
* **support objects**: a selector-less Service and an EndpointSlice per pod-IP target, an
  ExternalName Service per external host or remote ingress (with a BackendTLSPolicy for https),
  and a ReferenceGrant in a user's namespace (a backendRef across namespaces needs one).
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from .. import mesh
from ..config import Cluster, Registry
from ..errors import InvalidRoute
from ..model import (
    ANN_HOST,
    ANN_ROUTES,
    ANN_SPEC,
    ROUTE_HEADER,
    Entry,
    dns_label,
    entry_destination,
    labels,
    route_id,
    short_hash,
)
from ..placement import Destination
from ..routespec import RouteKey, brief, wire_forms

GROUP = "gateway.networking.k8s.io"
API_VERSION = f"{GROUP}/v1"
# plural -> (group, version, kind) of every kind this backend writes
KINDS: dict[str, tuple[str, str, str]] = {
    "httproutes": (GROUP, "v1", "HTTPRoute"),
    "services": ("", "v1", "Service"),
    "endpointslices": ("discovery.k8s.io", "v1", "EndpointSlice"),
    "backendtlspolicies": (GROUP, "v1", "BackendTLSPolicy"),
    "referencegrants": (GROUP, "v1beta1", "ReferenceGrant"),
    # externalBackend: istioHostname
    "serviceentries": ("networking.istio.io", "v1", "ServiceEntry"),
    "destinationrules": ("networking.istio.io", "v1", "DestinationRule"),
}
ISTIO_HOSTNAME = {"group": "networking.istio.io", "kind": "Hostname"}
MAX_PATH = 1024
MAX_MATCHES = 64  # per rule
MAX_HOSTNAMES = 16
# The CRD's pattern for Exact and PathPrefix values, and the sequences its rules forbid.
PATH_PATTERN = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")
FORBIDDEN = ("//", "/./", "/../", "%2f", "%2F", "#")
DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def spec_hash(obj: dict[str, Any]) -> str:
    """What an object is as built, apart from its name and labels: the store compares this,
    not the stored object, which the API server fills with defaults."""
    body = {k: v for k, v in obj.items() if k not in ("metadata", "status")}
    body["annotations"] = {k: v for k, v in obj["metadata"].get("annotations", {}).items()
                           if k != ANN_SPEC}
    return short_hash(json.dumps(body, sort_keys=True, ensure_ascii=False), 16)


def with_spec_hash(obj: dict[str, Any]) -> dict[str, Any]:
    meta = {**obj["metadata"], "annotations": {**obj["metadata"].get("annotations", {}),
                                               ANN_SPEC: spec_hash(obj)}}
    return {**obj, "metadata": meta}


def api_version(plural: str) -> str:
    group, version, _ = KINDS[plural]
    return f"{group}/{version}" if group else version


def plural_of(obj: dict[str, Any]) -> str:
    for plural, (_, _, kind) in KINDS.items():
        if kind == obj["kind"]:
            return plural
    raise KeyError(obj["kind"])


def route_name(instance: str, path: str) -> str:
    """At most 40 + 20 characters: a DNS label, like every name this service writes."""
    return f"{instance}-rt-{short_hash(path, 16)}"


def host_default_name(instance: str, host: str) -> str:
    return f"{instance}-hd-{short_hash(host, 16)}"


def _metadata(name: str, namespace: str, instance: str, role: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": labels(instance, role),
        "annotations": {},
    }


# --------------------------------------------------------------------------------------------
# Checks the CRDs make, done before anything is queued (a refused write fails one request)


def path_problem(value: str) -> str | None:
    """Why the HTTPRoute CRD would refuse ``value`` as a PathPrefix, or None."""
    if len(value) > MAX_PATH:
        return f"is longer than {MAX_PATH} characters once percent-encoded"
    if not value.startswith("/") or not PATH_PATTERN.match(value):
        return "holds characters a Gateway API path match cannot"
    bad = [s for s in FORBIDDEN if s in value]
    if bad or value.endswith(("/..", "/.")):
        return f"holds {brief(bad[0] if bad else value[-3:])}, which a Gateway API path may not"
    return None


def check_route(registry: Registry, cluster: Cluster, entry: Entry) -> None:
    """InvalidRoute when the HTTPRoute of ``entry`` would be refused by the API server."""
    key = RouteKey.parse(entry.path)
    for form in wire_forms(key.rest):
        problem = path_problem(form)
        if problem:
            raise InvalidRoute(f"the route path {brief(entry.path)} {problem} "
                               f"(cluster {cluster.name!r} uses the Gateway API)")
    if key.host is not None and _is_ip(key.host):
        raise InvalidRoute(f"host {brief(key.host)} of the route path is an IP address, which "
                           f"a Gateway API hostname cannot be (cluster {cluster.name!r})")
    hostnames(registry, cluster, key)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------------------------
# HTTPRoutes


def parent_ref(cluster: Cluster) -> dict[str, Any]:
    namespace, name = cluster.gateway.split("/", 1)
    ref: dict[str, Any] = {"group": GROUP, "kind": "Gateway", "namespace": namespace, "name": name}
    if cluster.section_name:
        ref["sectionName"] = cluster.section_name
    return ref


def hostnames(registry: Registry, cluster: Cluster, key: RouteKey) -> list[str]:
    """The hub's public hosts (plus this cluster's ingress host, where the edge hop sends plain
    routes), or the route's own host for host routing."""
    if key.host is not None:
        return [key.host]
    hosts = list(cluster.hosts)
    if cluster.name != registry.home and cluster.ingress_origin is not None:
        if cluster.ingress_origin[1] not in hosts:
            hosts.append(cluster.ingress_origin[1])
    if len(hosts) > MAX_HOSTNAMES:
        raise InvalidRoute(f"cluster {cluster.name!r} has {len(hosts)} hosts; an HTTPRoute "
                           f"takes at most {MAX_HOSTNAMES}")
    return hosts


def backend_ref(cluster: Cluster, dest: Destination, instance: str) -> dict[str, Any]:
    """The Service a rule sends traffic to (support objects stand in for IPs and outside hosts)."""
    if dest.kind == "service":
        name, namespace = service_of(cluster, dest)
        ref: dict[str, Any] = {"group": "", "kind": "Service", "name": name, "port": dest.port}
        if namespace != cluster.namespace:
            ref["namespace"] = namespace
        return ref
    if _istio_hostname(cluster, dest):
        return {**ISTIO_HOSTNAME, "name": dest.host, "port": dest.port}
    return {"group": "", "kind": "Service", "name": support_name(instance, dest), "port": dest.port}


def _istio_hostname(cluster: Cluster, dest: Destination) -> bool:
    """An outside host reached through Istio's Hostname backendRef (and a ServiceEntry)."""
    return dest.kind in ("edge", "external") and cluster.external_backend == "istioHostname"


def mesh_host(registry: Registry, cluster: Cluster, dest: Destination) -> str:
    """The host a mesh's metrics name as ``destination_service`` for ``dest``: on the Gateway
    API a pod IP is reached through its selector-less Service, not a ServiceEntry host."""
    if dest.kind == "ip":
        return f"{support_name(registry.instance, dest)}.{cluster.namespace}.svc.{cluster.cluster_domain}"
    return dest.host


def service_of(cluster: Cluster, dest: Destination) -> tuple[str, str]:
    """(name, namespace) of a Service destination (``<name>.<namespace>.svc.<domain>``)."""
    name, namespace, _ = dest.host.split(".", 2)
    return name, namespace


def support_name(instance: str, dest: Destination) -> str:
    kind = "ip" if dest.kind == "ip" else "ext"
    where = f"{dest.address}:{dest.port}" if dest.kind == "ip" else f"{dest.host}:{dest.port}"
    return dns_label(instance, kind, short_hash(where, 10))


def _rule_filters(registry: Registry, cluster: Cluster, entry: Entry, key: RouteKey,
                  dest: Destination) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = [{
        "type": "ResponseHeaderModifier",
        "responseHeaderModifier": {"set": [{"name": ROUTE_HEADER, "value": route_id(entry.path)}]},
    }]
    if entry.edge:
        # Hop one of two, path kept: a plain route addresses the remote gateway by its own
        # name; a host route keeps its Host, which selects its routes over there.
        if key.host is None:
            filters.append({"type": "URLRewrite", "urlRewrite": {"hostname": dest.host}})
        return filters
    opts = cluster.http
    if opts.stripPrefix and key.rest != "/":
        filters.append({"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}})
    headers = _header_modifier(cluster, key)
    if headers:
        filters.append({"type": "RequestHeaderModifier", "requestHeaderModifier": headers})
    return filters


def _header_modifier(cluster: Cluster, key: RouteKey) -> dict[str, Any]:
    hdrs = cluster.http.requestHeaders
    out: dict[str, Any] = {}
    for field in ("set", "add"):
        values = getattr(hdrs, field)
        if values:
            out[field] = [{"name": n, "value": v.replace("{prefix}", key.rest)}
                          for n, v in values.items()]
    if hdrs.remove:
        out["remove"] = list(hdrs.remove)
    return out


def gateway_duration(text: str) -> str:
    """A clusters.yaml duration ('1.5s', '2m') as a Gateway API Duration (GEP-2257: integers
    of at most five digits per unit, e.g. '1s500ms')."""
    match = DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration")
    scale = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}[match.group(2)]
    millis = round(float(match.group(1)) * scale)
    parts = []
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        count, millis = divmod(millis, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def route_rules(registry: Registry, cluster: Cluster, entry: Entry) -> list[dict[str, Any]]:
    """One rule per wire spelling of the path, each a single PathPrefix match (whole path
    elements: ``/user/al`` never serves ``/user/alice``)."""
    key = RouteKey.parse(entry.path)
    dest = entry_destination(registry, cluster, entry)
    base: dict[str, Any] = {
        "backendRefs": [backend_ref(cluster, dest, registry.instance)],
        "filters": _rule_filters(registry, cluster, entry, key, dest),
    }
    if cluster.http.timeout and not entry.edge:
        base["timeouts"] = {"request": gateway_duration(cluster.http.timeout)}
    forms = ["/"] if key.rest == "/" else wire_forms(key.rest)
    return [{"name": f"p{i}", "matches": [{"path": {"type": "PathPrefix", "value": form}}], **base}
            for i, form in enumerate(forms)]


def build_route(registry: Registry, cluster: Cluster, entry: Entry) -> dict[str, Any]:
    """The HTTPRoute of one route in one cluster, carrying the route's state."""
    key = RouteKey.parse(entry.path)
    meta = _metadata(route_name(registry.instance, entry.path), cluster.namespace,
                     registry.instance, "route")
    meta["annotations"][ANN_ROUTES] = json.dumps(
        {entry.path: entry.to_json()}, separators=(",", ":"), ensure_ascii=False)
    if key.host:
        meta["annotations"][ANN_HOST] = key.host
    return {
        "apiVersion": API_VERSION,
        "kind": "HTTPRoute",
        "metadata": meta,
        "spec": {
            "parentRefs": [parent_ref(cluster)],
            "hostnames": hostnames(registry, cluster, key),
            "rules": route_rules(registry, cluster, entry),
        },
    }


def host_default_hosts(cluster: Cluster, entries: dict[str, Entry]) -> set[str]:
    """Host-routed hosts (other than the hub's own) that need ``/`` of their own."""
    out = set()
    for path in entries:
        host = RouteKey.parse(path).host
        if host and host not in cluster.hosts:
            out.add(host)
    return out


def build_host_default(registry: Registry, cluster: Cluster, host: str,
                       root: Entry) -> dict[str, Any]:
    """``/`` on a host-routed host, to the ``/`` route's backend: CHP's ``/`` serves every
    host, whether or not the gateway consults hostname-less routes for a named host."""
    meta = _metadata(host_default_name(registry.instance, host), cluster.namespace,
                     registry.instance, "host-default")
    meta["annotations"][ANN_HOST] = host
    rules = route_rules(registry, cluster, root)
    return {
        "apiVersion": API_VERSION,
        "kind": "HTTPRoute",
        "metadata": meta,
        "spec": {"parentRefs": [parent_ref(cluster)], "hostnames": [host], "rules": rules},
    }


# --------------------------------------------------------------------------------------------
# Support objects


def _support(plural: str, name: str, namespace: str, instance: str,
             body: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api_version(plural), "kind": KINDS[plural][2],
            "metadata": _metadata(name, namespace, instance, "support"), **body}


def support_objects(registry: Registry, cluster: Cluster, dest: Destination) -> list[dict[str, Any]]:
    """What makes ``dest`` a Service a backendRef can name, in ``cluster``."""
    inst = registry.instance
    if dest.kind == "service":
        name, namespace = service_of(cluster, dest)
        return [] if namespace == cluster.namespace else [_reference_grant(cluster, namespace, inst)]
    if _istio_hostname(cluster, dest):
        return mesh.support_objects(registry, cluster, dest)
    name = support_name(inst, dest)
    ns = cluster.namespace
    port = {"name": "http", "port": dest.port, "protocol": "TCP", "targetPort": dest.port}
    if dest.kind == "ip":
        assert dest.address is not None
        service = _support("services", name, ns, inst, {"spec": {"ports": [port]}})
        family = "IPv6" if ":" in dest.address else "IPv4"
        slice_ = _support("endpointslices", name, ns, inst, {
            "addressType": family,
            "endpoints": [{"addresses": [dest.address], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": dest.port, "protocol": "TCP"}],
        })
        slice_["metadata"]["labels"]["kubernetes.io/service-name"] = name
        return [service, slice_]
    # "edge" (a remote ingress) or "external": a DNS name outside the cluster.
    out = [_support("services", name, ns, inst, {"spec": {
        "type": "ExternalName", "externalName": dest.host, "ports": [port]}})]
    if dest.tls:
        out.append(_support("backendtlspolicies", name, ns, inst, {"spec": {
            "targetRefs": [{"group": "", "kind": "Service", "name": name}],
            "validation": {"hostname": dest.host, "wellKnownCACertificates": "System"},
        }}))
    return out


def _reference_grant(cluster: Cluster, namespace: str, instance: str) -> dict[str, Any]:
    """Lets this service's HTTPRoutes name Services in a user's namespace."""
    name = dns_label(instance, "from", cluster.namespace)
    return _support("referencegrants", name, namespace, instance, {"spec": {
        "from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": cluster.namespace}],
        "to": [{"group": "", "kind": "Service"}],
    }})


def render_cluster(registry: Registry, cluster: Cluster,
                   entries: list[Entry]) -> list[dict[str, Any]]:
    """Every object one gateway-api cluster holds for these entries (docs, tests, tables
    stored before a service starts), as the service writes them: hashed as built, so that
    the service takes them as its own and writes none of them again."""
    by_path = {e.path: e for e in entries}
    objects = [build_route(registry, cluster, by_path[p]) for p in sorted(by_path)]
    root = by_path.get("/")
    if root is not None:
        objects += [build_host_default(registry, cluster, h, root)
                    for h in sorted(host_default_hosts(cluster, by_path))]
    support: dict[tuple[str, str, str], dict[str, Any]] = {}
    for entry in entries:
        for obj in support_objects(registry, cluster, entry_destination(registry, cluster, entry)):
            meta = obj["metadata"]
            support[(plural_of(obj), meta["namespace"], meta["name"])] = obj
    return [with_spec_hash(o) for o in objects + [support[k] for k in sorted(support)]]
