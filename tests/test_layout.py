from __future__ import annotations

import random

from federation.istio.layout import (
    MAX_LEVEL,
    ShardKey,
    grow,
    locate,
    parse_key,
    partition,
    path_hash,
    root_order,
    top,
)
from federation.routespec import RouteKey


def keys(n: int, prefix: str = "/user/u") -> list[RouteKey]:
    return [RouteKey.parse(f"{prefix}{i}") for i in range(n)]


def test_a_fresh_tree_is_one_shard_per_host_and_depth() -> None:
    assert locate(RouteKey.parse("/user/alice"), lambda k: False) == ShardKey("", 2, 0, 0)
    host = RouteKey.parse("/alice.hub.example.org/user/alice")
    assert locate(host, lambda k: False) == ShardKey("alice.hub.example.org", 2, 0, 0)


def test_locate_follows_split_markers_by_the_low_bits_of_the_hash() -> None:
    split = {ShardKey("", 2, 0, 0), ShardKey("", 2, 1, 1)}
    for key in keys(200):
        h = path_hash(key.path)
        shard = locate(key, lambda k: k in split)
        if h & 1 == 0:
            assert shard == ShardKey("", 2, 1, 0)
        else:
            assert shard == ShardKey("", 2, 2, h & 3)
        assert shard.holds(key.path)


def test_partition_sends_each_route_to_the_child_that_holds_it() -> None:
    parent = ShardKey("", 2, 3, 5)
    entries = {k.path: k for k in keys(400) if parent.holds(k.path)}
    parts = partition(parent, entries)
    assert set(parts) == set(parent.children())
    assert sum(len(p) for p in parts.values()) == len(entries)
    for child, part in parts.items():
        assert child.parent() == parent
        assert all(child.holds(path) for path in part)
    assert all(len(p) > 0 for p in parts.values())  # both sides get routes from a fair hash


def test_grow_bounds_every_shard_and_keeps_every_route() -> None:
    routes = keys(5_000)
    leaves, markers = grow(((k, k.path) for k in routes), capacity=48)
    assert sum(len(v) for v in leaves.values()) == 5_000
    assert max(len(v) for v in leaves.values()) <= 48
    assert len(leaves) >= 5_000 // 48
    marked = set(markers)
    for leaf, held in leaves.items():
        # Every leaf is reached from the top through markers, and holds what locate says.
        for path in held:
            assert locate(RouteKey.parse(path), lambda k: k in marked) == leaf
        parent = leaf.parent()
        assert parent is None or parent in marked


def test_names_parse_back_and_sort_parent_first() -> None:
    rng = random.Random(7)
    for _ in range(200):
        key = ShardKey(rng.choice(["", "a.hub.example.org"]), rng.randint(0, 40),
                       rng.randint(0, MAX_LEVEL), 0)
        key = ShardKey(key.host, key.depth, key.level, rng.randrange(1 << key.level))
        assert parse_key(key.name("jupyterhub"), key.host, key.label) == key
        assert len(key.name("i" * 40)) <= 63
        assert root_order(key.name("jupyterhub"))[0] == key.sort_key()
    legacy = parse_key("jupyterhub-r2-017", "", None)
    assert legacy == ShardKey("", 2, 0, 17, legacy=True)
    assert legacy.name("jupyterhub") == "jupyterhub-r2-017"
    parent = ShardKey("", 2, 4, 9)
    for child in parent.children():
        assert root_order(parent.name("x")) < root_order(child.name("x"))
    assert root_order(top(RouteKey.parse("/a/b/c")).name("x")) < root_order(parent.name("x"))
