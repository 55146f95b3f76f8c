"""Placement: which cluster holds a route, and where its traffic goes there.

Rules, in order:

a. the route data names a cluster: ``{"cluster": "aws-east"}``;
b. the target's scheme, host and port equal a cluster's ``ingressPublicUrl`` (default ports
   filled in) — MultiClusterKubeSpawner's case, where every user on a cluster shares that
   target, so the destination is the user's own Service, named as that spawner names it;
c. otherwise the home cluster (the hub, services, kubespawner targets).

Pure functions of the registry and the route: no I/O.
"""

from __future__ import annotations

import ipaddress
import string
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import escapism

from .config import Cluster, Registry, origin_of
from .errors import InvalidRoute

_DNS_SAFE = set(string.ascii_lowercase + string.digits)


def dns_safe(name: str) -> str:
    """MultiClusterKubeSpawner's escaping of user and server names."""
    return escapism.escape(name, safe=_DNS_SAFE, escape_char="-").lower()


def user_service_names(cluster: Cluster, username: str, servername: str) -> tuple[str, str]:
    """(Service name, namespace) of a user server in ``cluster``."""
    values = {"username": dns_safe(username), "servername": dns_safe(servername)}
    spec = cluster.user_service
    # The spawner renders its key template and strips the trailing '-' left by an empty server name.
    return spec.name.format(**values).rstrip("-"), spec.namespace.format(**values).rstrip("-")


@dataclass(frozen=True)
class Destination:
    """Where a rule sends traffic inside one cluster."""

    host: str  # mesh host name (Service FQDN or a ServiceEntry host)
    port: int
    kind: str  # "service" | "ip" | "external" | "edge"
    tls: bool = False
    address: str | None = None  # the IP for kind "ip"


@dataclass(frozen=True)
class Placement:
    cluster: Cluster
    rule: str  # "data" | "ingress" | "home"


def place(registry: Registry, target: str, data: dict[str, Any]) -> Placement:
    named = data.get("cluster")
    if named is not None:
        if not isinstance(named, str) or named not in registry.clusters:
            raise InvalidRoute(
                f"unknown cluster {named!r} in route data; known clusters: "
                + ", ".join(sorted(registry.clusters))
            )
        return Placement(registry.clusters[named], "data")
    origin = origin_of(target)
    by_ingress = registry.by_origin(origin)
    if by_ingress is not None:
        return Placement(by_ingress, "ingress")
    return Placement(registry.home_cluster, "home")


def ip_host(address: str, instance: str) -> str:
    """The ServiceEntry host standing for a bare IP target (Istio cannot route to an IP)."""
    safe = address.replace(":", "-").replace(".", "-")
    return f"ip-{safe}.{instance}.federation.internal"


def destination_in(
    cluster: Cluster, target: str, data: dict[str, Any], instance: str
) -> Destination:
    """Where traffic for ``target`` goes inside ``cluster``."""
    scheme, host, port = origin_of(target)
    tls = scheme == "https"
    if cluster.ingress_origin is not None and (scheme, host, port) == cluster.ingress_origin:
        user = data.get("user")
        if not isinstance(user, str) or not user:
            raise InvalidRoute(
                f"target {target!r} is cluster {cluster.name!r}'s ingress, but the route data has "
                "no 'user' to find the user's Service by"
            )
        server = data.get("server_name") or ""
        if not isinstance(server, str):
            raise InvalidRoute("'server_name' in route data must be a string")
        name, namespace = user_service_names(cluster, user, server)
        return Destination(
            host=f"{name}.{namespace}.svc.{cluster.cluster_domain}",
            port=cluster.user_service.port,
            kind="service",
        )
    bare = urlsplit(target).hostname or host
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        address = None
    if address is not None:
        return Destination(
            host=ip_host(str(address), instance), port=port, kind="ip", tls=tls, address=str(address)
        )
    labels = host.split(".")
    domain = cluster.cluster_domain
    if len(labels) == 1:
        return Destination(f"{host}.{cluster.namespace}.svc.{domain}", port, "service")
    if len(labels) == 2 or host.endswith(".svc"):
        # "<service>.<namespace>" or "<service>.<namespace>.svc", as kubespawner writes them
        base = host if host.endswith(".svc") else f"{host}.svc"
        return Destination(f"{base}.{domain}", port, "service")
    if host.endswith(f".svc.{domain}"):
        return Destination(host, port, "service")
    return Destination(host, port, "external", tls=tls)


def edge_destination(remote: Cluster) -> Destination:
    """The home cluster's destination for routes placed in ``remote``: its public ingress."""
    assert remote.ingress_origin is not None
    scheme, host, port = remote.ingress_origin
    return Destination(host, port, "edge", tls=scheme == "https")


