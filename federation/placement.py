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
from .routespec import brief, host_problem, json_type

_DNS_SAFE = set(string.ascii_lowercase + string.digits)


def dns_safe(name: str) -> str:
    """MultiClusterKubeSpawner's escaping of user and server names."""
    return escapism.escape(name, safe=_DNS_SAFE, escape_char="-").lower()


def user_service_names(cluster: Cluster, username: str, servername: str) -> tuple[str, str]:
    """(Service name, namespace) of a user server in ``cluster``."""
    values = {"username": dns_safe(username), "servername": dns_safe(servername)}
    spec = cluster.user_service
    # Loading refuses an ingress cluster without it, and only ingress routes name user Services.
    assert spec.namespace is not None, f"cluster {cluster.name!r} has no userService.namespace"
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
                f"unknown cluster {brief(named)} in route data; known clusters: "
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
    if safe.endswith("-"):
        # "fd00::" and "::" end in ':'; a DNS label may not end in '-'. No other address
        # spells "...-0" here (a trailing zero group is always folded into "::").
        safe += "0"
    return f"ip-{safe}.{instance}.federation.internal"


def destination_in(
    cluster: Cluster, target: str, data: dict[str, Any], instance: str
) -> Destination:
    """Where traffic for ``target`` goes inside ``cluster``; InvalidRoute when that destination
    is one Istio would refuse (so no object is ever written with it)."""
    return _checked(_destination(cluster, target, data, instance))


def _destination(cluster: Cluster, target: str, data: dict[str, Any], instance: str) -> Destination:
    scheme, host, port = origin_of(target)
    tls = scheme == "https"
    if cluster.ingress_origin is not None and (scheme, host, port) == cluster.ingress_origin:
        name, namespace = user_service_names(cluster, *_user_and_server(cluster, target, data))
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


def _user_and_server(cluster: Cluster, target: str, data: dict[str, Any]) -> tuple[str, str]:
    """The user and server names that name a user's Service (a target at a cluster's ingress).

    Route data is any JSON; only here must these two be strings, as the spawner names the
    Service after them.
    """
    user = data.get("user")
    if user is None or user == "":
        raise InvalidRoute(
            f"target {brief(target)} is cluster {cluster.name!r}'s ingress, but the route data has "
            "no 'user' to find the user's Service by"
        )
    if not isinstance(user, str):
        raise InvalidRoute(
            f"'user' in route data must be a string to name the user's Service in cluster "
            f"{cluster.name!r}, not {json_type(user)} {brief(user, 40)}"
        )
    server = data.get("server_name")
    if server is not None and not isinstance(server, str):
        raise InvalidRoute(
            f"'server_name' in route data must be a string or null, not "
            f"{json_type(server)} {brief(server, 40)}"
        )
    return user, server or ""


def _checked(dest: Destination) -> Destination:
    problem = host_problem(dest.host)
    if problem:
        raise InvalidRoute(f"the route's destination host {brief(dest.host)} {problem}")
    if not 0 < dest.port <= 65535:
        raise InvalidRoute(f"the route's destination port {dest.port} is not in 1-65535")
    return dest


def edge_destination(remote: Cluster) -> Destination:
    """The home cluster's destination for routes placed in ``remote``: its public ingress."""
    assert remote.ingress_origin is not None
    scheme, host, port = remote.ingress_origin
    return Destination(host, port, "edge", tls=scheme == "https")


