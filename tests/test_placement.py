from __future__ import annotations

import pytest

from federation.config import parse_registry
from federation.errors import InvalidRoute
from federation.placement import destination_in, dns_safe, place, user_service_names

from .conftest import USER_NAMESPACE, base_config


@pytest.fixture
def registry():
    return parse_registry(base_config(), check_kubeconfig=False)


def test_names_match_multiclusterkubespawner(registry, mcks_vectors) -> None:
    """Every name as the installed MultiClusterKubeSpawner 0.2 computes it (tests/mcks_names.py),
    in the namespace clusters.yaml names (0.2 has no namespace of its own)."""
    east = registry.clusters["east"]
    assert len(mcks_vectors) >= 60
    for v in mcks_vectors:
        assert dns_safe(v["username"]) == v["safe_username"], v
        assert dns_safe(v["servername"]) == v["safe_servername"], v
        name, namespace = user_service_names(east, v["username"], v["servername"])
        assert name == v["key"], v
        assert namespace == USER_NAMESPACE, v


def test_spawner_vectors_come_from_the_spawner() -> None:
    """The vectors are the spawner's: a key template it would not render changes them."""
    from .mcks_names import spawner_key

    assert spawner_key("Alice", "") == "jupyter--41lice"
    assert spawner_key("bob", "gpu-1") == "jupyter-bob--gpu-2d1"


@pytest.mark.parametrize(
    ("target", "data", "cluster", "rule"),
    [
        ("https://east.hub.example.org", {"user": "alice"}, "east", "ingress"),
        ("https://east.hub.example.org:443/", {"user": "alice"}, "east", "ingress"),
        ("http://west.hub.example.org:8080", {"user": "bob"}, "west", "ingress"),
        ("http://west.hub.example.org", {"user": "bob"}, "hub", "home"),  # port 80 is not 8080
        ("http://east.hub.example.org", {"user": "bob"}, "hub", "home"),  # scheme differs
        ("http://hub:8081", {"hub": True}, "hub", "home"),
        ("http://10.12.3.4:8888", {"user": "carol"}, "hub", "home"),
        ("http://10.12.3.4:8888", {"user": "carol", "cluster": "west"}, "west", "data"),
    ],
)
def test_placement_rules_in_order(registry, target, data, cluster, rule) -> None:
    placement = place(registry, target, data)
    assert (placement.cluster.name, placement.rule) == (cluster, rule)


def test_unknown_cluster_in_data_is_refused(registry) -> None:
    with pytest.raises(InvalidRoute, match="unknown cluster 'mars'"):
        place(registry, "http://hub:8081", {"cluster": "mars"})


@pytest.mark.parametrize(
    ("target", "data", "host", "port", "kind"),
    [
        ("https://east.hub.example.org", {"user": "Alice", "server_name": "gpu-1"},
         "jupyter--41lice--gpu-2d1.jupyter-users.svc.cluster.local", 8888, "service"),
        ("https://east.hub.example.org", {"user": "bob", "server_name": ""},
         "jupyter-bob.jupyter-users.svc.cluster.local", 8888, "service"),
        ("http://hub:8081", {}, "hub.jupyterhub.svc.cluster.local", 8081, "service"),
        ("http://jupyter-alice.jhub:8888", {}, "jupyter-alice.jhub.svc.cluster.local", 8888, "service"),
        ("http://jupyter-alice.jhub.svc.cluster.local:8888", {},
         "jupyter-alice.jhub.svc.cluster.local", 8888, "service"),
        ("http://10.12.3.4:8888", {}, "ip-10-12-3-4.jupyterhub.federation.internal", 8888, "ip"),
        ("http://[fd00::1]:8888", {}, "ip-fd00--1.jupyterhub.federation.internal", 8888, "ip"),
        ("https://files.example.com", {}, "files.example.com", 443, "external"),
    ],
)
def test_destinations(registry, target, data, host, port, kind) -> None:
    east = registry.clusters["east"]
    dest = destination_in(east, target, data, registry.instance)
    assert (dest.host, dest.port, dest.kind) == (host, port, kind)


def test_ingress_target_without_user_is_refused(registry) -> None:
    with pytest.raises(InvalidRoute, match="no 'user'"):
        destination_in(registry.clusters["east"], "https://east.hub.example.org", {}, "jupyterhub")


@pytest.mark.parametrize("address", ["::", "fd00::", "fd00::1", "10.1.2.3", "::ffff:10.1.2.3"])
def test_ip_hosts_are_valid_dns_names(address) -> None:
    from federation.placement import ip_host
    from federation.routespec import host_problem

    assert host_problem(ip_host(address, "jupyterhub")) is None


def test_ip_hosts_of_different_addresses_differ() -> None:
    import ipaddress

    from federation.placement import ip_host

    addresses = ["::", "::0:0", "fd00::", "fd00::0:1", "fd00::1:0", "fd00:0:0:0:0:0:1:0"]
    distinct = {str(ipaddress.ip_address(a)) for a in addresses}
    assert len({ip_host(a, "j") for a in distinct}) == len(distinct)


def test_ingress_target_with_a_json_object_as_user_is_refused(registry) -> None:
    with pytest.raises(InvalidRoute, match="must be a string"):
        destination_in(registry.clusters["east"], "https://east.hub.example.org",
                       {"user": {"name": "alice"}}, "jupyterhub")
