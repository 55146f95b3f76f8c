"""HostClaims (federation/claimer.py) against an in-memory Lease store with the API server's
rules (create-only, resourceVersion on replace): who wins a race, what a start, a write and a
housekeeping pass cost, and what happens when a claim is deleted or taken away."""

from __future__ import annotations

import asyncio
import copy
import logging
import random
from typing import Any

import pytest

from federation import metrics
from federation.claimer import HostClaims
from federation.claims import holder_of, wanted_claims
from federation.config import Registry, parse_registry
from federation.errors import ClusterUnavailable, ConfigError, Conflict, HostClaimed, NotFound
from federation.kube import Resource

from .conftest import base_config


class Leases:
    """One cluster's Leases, shared by every hub's client of that cluster."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.version = 0

    def stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = str(self.version)
        return obj


class Client:
    """A hub's client of one cluster: counts its calls, yields between them (a race)."""

    def __init__(self, store: Leases, cluster: str, rng: random.Random) -> None:
        self.store, self.cluster, self.rng = store, cluster, rng
        self.calls: list[str] = []

    async def _turn(self, verb: str) -> None:
        self.calls.append(verb)
        for _ in range(self.rng.randint(0, 3)):
            await asyncio.sleep(0)

    async def create(self, res: Resource, body: Any, name: str | None = None,
                     namespace: str | None = None) -> dict[str, Any]:
        await self._turn("create")
        key = (str(namespace), body["metadata"]["name"])
        if key in self.store.objects:
            raise Conflict("AlreadyExists", cluster=self.cluster, status=409)
        self.store.objects[key] = self.store.stamp(body)
        return copy.deepcopy(self.store.objects[key])

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any]:
        await self._turn("get")
        if (str(namespace), name) not in self.store.objects:
            raise NotFound("not found", cluster=self.cluster, status=404)
        return copy.deepcopy(self.store.objects[(str(namespace), name)])

    async def replace(self, res: Resource, body: Any, name: str | None = None,
                      namespace: str | None = None) -> dict[str, Any]:
        await self._turn("replace")
        key = (str(namespace), str(name))
        held = self.store.objects.get(key)
        if held is None:
            raise NotFound("not found", cluster=self.cluster, status=404)
        if held["metadata"]["resourceVersion"] != body["metadata"]["resourceVersion"]:
            raise Conflict("modified", cluster=self.cluster, status=409)
        self.store.objects[key] = self.store.stamp(body)
        return copy.deepcopy(self.store.objects[key])

    async def delete(self, res: Resource, name: str, resource_version: str | None = None,
                     namespace: str | None = None) -> None:
        await self._turn("delete")
        self.store.objects.pop((str(namespace), name), None)


def hub(instance: str, host: str, namespace: str = "jupyterhub") -> Registry:
    doc = base_config(instance=instance)
    doc["defaults"].update(hosts=[host], namespace=namespace)
    return parse_registry(doc, check_kubeconfig=False)


def clients(stores: dict[str, Leases], seed: int) -> dict[str, Client]:
    rng = random.Random(seed)
    return {name: Client(store, name, rng) for name, store in stores.items()}


def fresh_stores() -> dict[str, Leases]:
    return {name: Leases() for name in ("hub", "east", "west")}


def holders(stores: dict[str, Leases]) -> dict[tuple[str, str], str]:
    return {(name, lease["metadata"]["annotations"]["federation.jupyter.org/host"]):
            holder_of(lease) for name, store in stores.items() for lease in store.objects.values()}


@pytest.mark.parametrize("seed", range(12))
def test_of_two_hubs_starting_together_one_wins_every_contested_host(seed: int) -> None:
    stores = fresh_stores()
    hubs = [HostClaims(hub("jupyterhub", "hub.example.org"), 15),
            HostClaims(hub("jupyterhub", "hubb.example.org", namespace="hubb"), 15)]

    async def race() -> list[BaseException | None]:
        return await asyncio.gather(*(h.start(clients(stores, seed * 2 + i))
                                      for i, h in enumerate(hubs)), return_exceptions=True)

    results = asyncio.run(race())
    assert sorted(r is None for r in results) == [False, True], results
    winner = hubs[results.index(None)]
    loser = hubs[1 - results.index(None)]
    assert isinstance(results[hubs.index(loser)], ConfigError)
    found = holders(stores)
    assert found[("east", "east.hub.example.org")] == found[("west", "west.hub.example.org")] \
        == f"{winner.registry.clusters['hub'].namespace}/jupyterhub"
    loser_id = f"{loser.registry.clusters['hub'].namespace}/jupyterhub"
    assert loser_id not in found.values()  # what it took, it gave back
    assert winner.ready == {"hub", "east", "west"} and loser.ready == set()


def test_a_hub_alone_pays_once_at_start_and_one_renewal_per_claim_per_pass() -> None:
    stores = fresh_stores()
    registry = hub("jupyterhub", "hub.example.org")
    calls = clients(stores, 1)
    claims = HostClaims(registry, 15)
    asyncio.run(claims.start(calls))
    count = len(wanted_claims(registry))
    assert sum(len(c.calls) for c in calls.values()) == count  # one create each
    for c in calls.values():
        c.calls.clear()

    async def writes() -> None:
        for name in registry.clusters:
            for _ in range(100):
                await claims.require(name, calls[name])

    asyncio.run(writes())
    assert all(c.calls == [] for c in calls.values())  # the write path reads memory only
    before = {k: v["spec"]["renewTime"] for k, v in stores["east"].objects.items()}
    asyncio.run(claims.keep(calls))
    assert sorted(v for c in calls.values() for v in c.calls) == ["replace"] * count
    assert all(stores["east"].objects[k]["spec"]["renewTime"] >= t for k, t in before.items())
    # A second start (a restart, another replica) finds its claims: a create and a read each.
    again = HostClaims(registry, 15)
    asyncio.run(again.start(clients(stores, 2)))
    assert again.ready == {"hub", "east", "west"}


def test_a_claim_taken_away_is_reported_and_refuses_writes_until_it_comes_back() -> None:
    stores = fresh_stores()
    registry = hub("jupyterhub", "hub.example.org")
    calls = clients(stores, 3)
    claims = HostClaims(registry, 15)
    asyncio.run(claims.start(calls))
    (key,) = [k for k, v in stores["east"].objects.items()
              if v["metadata"]["annotations"]["federation.jupyter.org/host"]
              == "east.hub.example.org"]
    # An operator's take-over hands it to another hub.
    stores["east"].objects[key]["spec"]["holderIdentity"] = "hubb/hubb"
    stores["east"].objects[key] = stores["east"].stamp(stores["east"].objects[key])
    asyncio.run(claims.keep(calls))
    assert not claims.holds("east") and claims.holds("west")
    assert metrics.HOST_CLAIM_CONFLICTS.labels("east")._value.get() == 1
    with pytest.raises(HostClaimed) as refused:
        asyncio.run(claims.require("east", calls["east"]))
    assert refused.value.status_code == 409 and refused.value.holder == "hubb/hubb"
    assert "east.hub.example.org" in str(refused.value)
    # The other hub releases it: the next pass takes it back.
    del stores["east"].objects[key]
    asyncio.run(claims.keep(calls))
    assert claims.holds("east") and claims.conflicts() == []
    assert metrics.HOST_CLAIM_CONFLICTS.labels("east")._value.get() == 0
    # Deleted by hand while held: taken again at the next pass.
    del stores["east"].objects[key]
    asyncio.run(claims.keep(calls))
    assert holders(stores)[("east", "east.hub.example.org")] == "jupyterhub/jupyterhub"


def test_a_reload_is_refused_only_for_hosts_it_adds() -> None:
    """A conflict the running configuration already has stays with housekeeping (an unrelated
    reload goes through); a host the new file adds, held by another hub, refuses the reload."""
    stores = fresh_stores()
    other = HostClaims(hub("hubb", "hubb.example.org"), 15)
    asyncio.run(other.start(clients(stores, 5)))  # holds the shared ingress hosts
    doc = base_config(instance="jupyterhub")
    doc["clusters"] = [c for c in doc["clusters"] if c["name"] != "west"]
    doc["clusters"][1]["ingressPublicUrl"] = "https://a-east.hub.example.org"
    claims = HostClaims(parse_registry(doc, check_kubeconfig=False), 15)
    calls = clients(stores, 6)
    asyncio.run(claims.start(calls))
    assert claims.ready == {"hub", "east"}
    # East's ingress host changes to the shared one while east was out of reach: a conflict.
    doc["clusters"][1]["ingressPublicUrl"] = "https://east.hub.example.org"
    shared_east = parse_registry(doc, check_kubeconfig=False)
    with pytest.raises(ConfigError, match="east.hub.example.org"):
        asyncio.run(claims.prepare(shared_east, calls))
    assert claims.registry.clusters["east"].ingress_public_url == "https://a-east.hub.example.org"
    assert ("east", "east.hub.example.org") not in {k for k in holders(stores)
                                                    if holders(stores)[k] == "jupyterhub/jupyterhub"}
    # Adding west with its shared ingress host: refused too.
    with_west = base_config(instance="jupyterhub")
    with_west["clusters"][1]["ingressPublicUrl"] = "https://a-east.hub.example.org"
    with pytest.raises(ConfigError, match="west.hub.example.org") as refused:
        asyncio.run(claims.prepare(parse_registry(with_west, check_kubeconfig=False), calls))
    assert "east" not in str(refused.value)
    # A conflict already there (east's own ingress host taken away) does not block a reload
    # that adds nothing contested.
    store = stores["east"]
    (key,) = [k for k, v in store.objects.items()
              if v["metadata"]["annotations"]["federation.jupyter.org/host"]
              == "a-east.hub.example.org"]
    store.objects[key]["spec"]["holderIdentity"] = "jupyterhub/hubb"
    store.objects[key] = store.stamp(store.objects[key])
    asyncio.run(claims.keep(calls))
    assert [c.holder for c in claims.conflicts("east")] == ["jupyterhub/hubb"]
    doc["clusters"][1]["ingressPublicUrl"] = "https://a-east.hub.example.org"
    doc["defaults"]["clusterDomain"] = "corp.local"
    asyncio.run(claims.prepare(parse_registry(doc, check_kubeconfig=False), calls))


def test_a_reload_claims_again_only_on_a_cluster_reached_anew() -> None:
    stores = fresh_stores()
    doc = base_config(instance="jupyterhub")
    claims = HostClaims(parse_registry(doc, check_kubeconfig=False), 15)
    calls = clients(stores, 7)
    asyncio.run(claims.start(calls))
    for c in calls.values():
        c.calls.clear()
    doc["defaults"]["namespace"] = "hub-a"  # the same clusters: nothing to take again
    for c in doc["clusters"]:
        c["backend"] = "gateway-api"
    asyncio.run(claims.prepare(parse_registry(doc, check_kubeconfig=False), calls))
    assert all(c.calls == [] for c in calls.values())
    doc["clusters"][1]["context"] = "another-east"  # the name now reaches another server
    asyncio.run(claims.prepare(parse_registry(doc, check_kubeconfig=False), calls))
    assert calls["east"].calls and calls["west"].calls == [] and calls["hub"].calls == []


class Down(Client):
    """A client of a cluster that cannot be reached."""

    async def _turn(self, verb: str) -> None:
        self.calls.append(verb)
        raise ClusterUnavailable("connection refused", cluster=self.cluster)


def test_a_cluster_repointed_while_out_of_reach_is_not_held_on_its_new_server() -> None:
    """The Leases of the server a cluster name used to reach say nothing of the server it
    reaches now: until they are taken there, its routes wait (HostClaims.require)."""
    stores = fresh_stores()
    doc = base_config(instance="jupyterhub")
    claims = HostClaims(parse_registry(doc, check_kubeconfig=False), 15)
    calls = clients(stores, 8)
    asyncio.run(claims.start(calls))
    assert claims.holds("east")
    doc["clusters"][1]["context"] = "another-east"  # another API server, down for now
    moved = parse_registry(doc, check_kubeconfig=False)
    elsewhere = Leases()
    down = {**calls, "east": Down(elsewhere, "east", random.Random(0))}
    asyncio.run(claims.prepare(moved, down))
    claims.adopt(moved)
    assert not claims.holds("east") and claims.holds("west") and claims.holds("hub")
    assert claims.describe("east")["held"] == []
    # Another hub holds the host there: the first write is refused, nothing is written.
    other = HostClaims(hub("hubb", "hubb.example.org"), 15)
    asyncio.run(other.start({"east": Client(elsewhere, "east", random.Random(1))}))
    with pytest.raises(HostClaimed):
        asyncio.run(claims.require("east", Client(elsewhere, "east", random.Random(2))))


def test_a_holder_is_this_hub_only_by_its_identity_on_that_cluster() -> None:
    """A hub whose objects on east are in namespace hub-a (its home namespace is jupyterhub)
    is ``hub-a/jupyterhub`` there: a claim on east held by ``jupyterhub/jupyterhub`` is
    another hub's (a z2jh release in namespace jupyterhub of east), even though that is the
    name this hub goes by on its home cluster."""
    stores = fresh_stores()
    other = HostClaims(hub("jupyterhub", "other.example.org"), 15)
    asyncio.run(other.start(clients({"east": stores["east"]}, 9)))
    assert holders(stores)[("east", "east.hub.example.org")] == "jupyterhub/jupyterhub"
    doc = base_config(instance="jupyterhub")
    east = next(c for c in doc["clusters"] if c["name"] == "east")
    east["namespace"] = "hub-a"
    claims = HostClaims(parse_registry(doc, check_kubeconfig=False), 15)
    calls = clients(stores, 10)
    # East is out of reach at start: the home cluster's claims are taken first.
    asyncio.run(claims.start({**calls, "east": Down(stores["east"], "east",
                                                    random.Random(3))}))
    assert claims.holds("hub") and not claims.holds("east")
    asyncio.run(claims.keep(calls))
    assert not claims.holds("east")
    assert [c.holder for c in claims.conflicts("east")] == ["jupyterhub/jupyterhub"]
    with pytest.raises(HostClaimed):
        asyncio.run(claims.require("east", calls["east"]))


def test_replicas_renewing_after_a_namespace_change_never_see_each_other_as_another_hub(
        caplog: pytest.LogCaptureFixture) -> None:
    stores = fresh_stores()
    doc = base_config(instance="jupyterhub")
    replicas = [HostClaims(parse_registry(doc, check_kubeconfig=False), 15) for _ in range(2)]
    for i, replica in enumerate(replicas):
        asyncio.run(replica.start(clients(stores, 11 + i)))
    doc["defaults"]["namespace"] = "hub-a"  # the same clusters: claims stay, renamed
    moved = parse_registry(doc, check_kubeconfig=False)
    for i, replica in enumerate(replicas):
        asyncio.run(replica.prepare(moved, clients(stores, 13 + i)))
        replica.adopt(moved)
    with caplog.at_level(logging.INFO, logger="federation.claimer"):
        for i, replica in enumerate(replicas):
            asyncio.run(replica.keep(clients(stores, 15 + i)))
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert all(r.ready == {"hub", "east", "west"} for r in replicas)
    assert set(holders(stores).values()) == {"hub-a/jupyterhub"}


def test_a_cluster_removed_by_a_reload_leaves_no_conflict_in_the_metric() -> None:
    stores = fresh_stores()
    other = HostClaims(hub("hubb", "hubb.example.org"), 15)
    asyncio.run(other.start(clients({"west": stores["west"]}, 17)))
    doc = base_config(instance="jupyterhub")
    claims = HostClaims(parse_registry(doc, check_kubeconfig=False), 15)
    calls = clients(stores, 18)
    asyncio.run(claims.start({**calls, "west": Down(stores["west"], "west", random.Random(4))}))
    asyncio.run(claims.keep(calls))  # west is back: its ingress host is the other hub's
    assert metrics.HOST_CLAIM_CONFLICTS.labels("west")._value.get() == 1
    doc["clusters"] = [c for c in doc["clusters"] if c["name"] != "west"]
    without_west = parse_registry(doc, check_kubeconfig=False)
    asyncio.run(claims.prepare(without_west, calls))
    claims.adopt(without_west)
    assert claims.conflicts() == []
    samples = {s.labels.get("cluster") for m in metrics.HOST_CLAIM_CONFLICTS.collect()
               for s in m.samples}
    assert "west" not in samples and "east" in samples


def test_a_write_for_a_cluster_a_reload_removed_meanwhile_is_retried_not_a_500() -> None:
    stores = fresh_stores()
    doc = base_config(instance="jupyterhub")
    claims = HostClaims(parse_registry(doc, check_kubeconfig=False), 15)
    calls = clients(stores, 19)
    asyncio.run(claims.start({**calls, "west": Down(stores["west"], "west", random.Random(5))}))
    doc["clusters"] = [c for c in doc["clusters"] if c["name"] != "west"]
    without_west = parse_registry(doc, check_kubeconfig=False)
    asyncio.run(claims.prepare(without_west, calls))
    claims.adopt(without_west)  # while a write planned for west waited
    with pytest.raises(ClusterUnavailable, match="try again"):
        asyncio.run(claims.require("west", calls["west"]))
