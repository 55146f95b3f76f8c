"""Tests for the Istio gateway routing model in evaluator.py.

Each case pins a concrete outcome so a wrong model fails; cases that Istio leaves to merge order
are checked over all permutations.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from .evaluator import (
    Decision,
    all_orders,
    bound_roots,
    chp_route,
    effective_routes,
    route,
)

GW = "istio-system/ingress"
HOST = "hub.example.org"


def vs(
    name: str,
    http: list[dict[str, Any]],
    *,
    ns: str = "jhub",
    hosts: tuple[str, ...] = (HOST,),
    gateways: tuple[str, ...] = (GW,),
) -> dict[str, Any]:
    spec: dict[str, Any] = {"http": http}
    if hosts:
        spec["hosts"] = list(hosts)
    if gateways:
        spec["gateways"] = list(gateways)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }


def rule(
    dest: str, *matches: dict[str, Any], name: str | None = None, **extra: Any
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "route": [{"destination": {"host": dest, "port": {"number": 8888}}}],
        **extra,
    }
    if matches:
        out["match"] = list(matches)
    if name:
        out["name"] = name
    return out


def prefix(p: str, **extra: Any) -> dict[str, Any]:
    return {"uri": {"prefix": p}, **extra}


def exact(p: str) -> dict[str, Any]:
    return {"uri": {"exact": p}}


def regex(p: str) -> dict[str, Any]:
    return {"uri": {"regex": p}}


def go(vss: list[dict[str, Any]], path: str, **kw: Any) -> Decision:
    kw.setdefault("gateway", GW)
    kw.setdefault("host", HOST)
    return route(vss, path=path, **kw)


def dest(vss: list[dict[str, Any]], path: str, **kw: Any) -> str | None:
    return go(vss, path, **kw).destination_host


def dests_over_orders(vss: list[dict[str, Any]], path: str) -> set[str | None]:
    orders = all_orders(len(vss), 30, random.Random(7))
    return {dest(vss, path, order=o) for o in orders}


# --- virtual host selection and gateway binding -----------------------------------------------


def test_exact_host_beats_longest_wildcard_beats_star() -> None:
    vss = [
        vs("star", [rule("star")], hosts=("*",)),
        vs("wild", [rule("wild")], hosts=("*.example.org",)),
        vs("wild-b", [rule("wild-b")], hosts=("*.b.example.org",)),
        vs("exact", [rule("exact")], hosts=(HOST,)),
    ]
    assert dest(vss, "/", host=HOST) == "exact"
    assert dest(vss, "/", host="HUB.Example.org:443") == "exact"
    assert dest(vss, "/", host="other.example.org") == "wild"
    assert dest(vss, "/", host="x.b.example.org") == "wild-b"
    # "*.example.org" needs a label in front of it.
    assert dest(vss, "/", host="example.org") == "star"
    assert dest(vss, "/", host="elsewhere.net") == "star"
    assert bound_roots(vss, gateway=GW, host=HOST) == [3]


def test_only_the_chosen_virtual_host_is_consulted() -> None:
    # The exact host has no rule for /user/, and Envoy does not fall back to the wildcard host.
    vss = [
        vs("hub-only", [rule("hub", prefix("/hub/"))], hosts=(HOST,)),
        vs("wild", [rule("wild")], hosts=("*.example.org",)),
    ]
    d = go(vss, "/user/alice")
    assert d.destination_host is None
    assert not d.matched
    assert d.virtual_service is None
    assert dest(vss, "/hub/home") == "hub"


def test_gateway_binding_qualified_bare_and_mesh() -> None:
    vss = [
        vs("qualified", [rule("qualified", prefix("/q"))], ns="jhub", gateways=(GW,)),
        # Bare name: the VirtualService's own namespace, i.e. jhub/ingress.
        vs("bare", [rule("bare", prefix("/b"))], ns="jhub", gateways=("ingress",)),
        vs("bare-same-ns", [rule("same", prefix("/s"))], ns="istio-system", gateways=("ingress",)),
        vs("mesh-only", [rule("mesh", prefix("/m"))], gateways=()),
        vs("mesh-named", [rule("mesh2", prefix("/n"))], gateways=("mesh",)),
    ]
    assert dest(vss, "/q") == "qualified"
    assert dest(vss, "/b") is None
    assert dest(vss, "/s") == "same"
    assert dest(vss, "/m") is None
    assert dest(vss, "/n") is None
    assert dest(vss, "/b", gateway="jhub/ingress") == "bare"
    assert dest(vss, "/q", gateway="jhub/ingress") is None
    # A bare gateway argument is looked up in gateway_namespace_default.
    assert dest(vss, "/q", gateway="ingress") == "qualified"
    assert dest(vss, "/b", gateway="ingress", gateway_namespace_default="jhub") == "bare"


def test_match_level_gateways_restrict_the_entry() -> None:
    vss = [vs("hub", [rule("other-gw", prefix("/x", gateways=["other"])), rule("hub")])]
    assert dest(vss, "/x") == "hub"
    vss = [vs("hub", [rule("this-gw", prefix("/x", gateways=[GW])), rule("hub")])]
    assert dest(vss, "/x") == "this-gw"


# --- order --------------------------------------------------------------------------------------


def test_rule_order_within_one_virtual_service() -> None:
    longest_first = [
        vs("u", [rule("alice", prefix("/user/alice")), rule("users", prefix("/user"))])
    ]
    shortest_first = [
        vs("u", [rule("users", prefix("/user")), rule("alice", prefix("/user/alice"))])
    ]
    assert dest(longest_first, "/user/alice/tree") == "alice"
    assert dest(shortest_first, "/user/alice/tree") == "users"


def test_catch_all_truncates_its_own_virtual_service() -> None:
    # Within one object nothing is reordered: rules after a catch-all are never emitted.
    vss = [vs("hub", [rule("hub"), rule("late", prefix("/late"))])]
    assert dest(vss, "/late") == "hub"
    assert [e.rule_name for e in effective_routes(vss, gateway=GW, host=HOST)] == [None]
    # Same with an explicit "/" entry: later entries and rules of that object are dropped, so
    # moving catch-alls last does not revive them.
    vss = [
        vs(
            "hub",
            [rule("hub", prefix("/"), prefix("/x"), name="hub"), rule("late", prefix("/late"))],
        )
    ]
    assert dest(vss, "/late") == "hub"
    assert dest(vss, "/x") == "hub"
    assert [e.match for e in effective_routes(vss, gateway=GW, host=HOST)] == [prefix("/")]


def test_hub_catch_all_never_shadows_users_in_any_order() -> None:
    vss = [
        vs("hub", [rule("hub", prefix("/"))]),
        vs("alice", [rule("alice", prefix("/user/alice/"))]),
        vs("bob", [rule("bob")]),  # no match at all: also a catch-all
        vs("carol", [rule("carol", exact("/user/carol"))]),
    ]
    assert dests_over_orders(vss, "/user/alice/lab") == {"alice"}
    assert dests_over_orders(vss, "/user/carol") == {"carol"}
    # Two catch-alls: whichever comes first among them wins, so it depends on order.
    assert dests_over_orders(vss, "/hub/home") == {"hub", "bob"}
    assert dest(vss, "/hub/home", order=[0, 1, 2, 3]) == "hub"
    assert dest(vss, "/hub/home", order=[2, 1, 0, 3]) == "bob"


def test_catch_all_is_per_match_entry_and_literal() -> None:
    # The "/user/" entry keeps its place; only the "/" entry of the same rule moves last.
    hub = vs("hub", [rule("hub", prefix("/user/"), prefix("/"))])
    alice = vs("alice", [rule("alice", prefix("/user/alice"))])
    assert dest([hub, alice], "/user/alice") == "hub"
    assert dest([hub, alice], "/user/alice", order=[1, 0]) == "alice"
    assert dest([hub, alice], "/other") == "hub"

    # Regex ".*" and prefix "/" with a header condition are not catch-alls: they stay in place.
    dot_star = vs("hub", [rule("hub", regex(".*"))])
    assert dest([dot_star, alice], "/user/alice", order=[0, 1]) == "hub"
    assert dest([dot_star, alice], "/user/alice", order=[1, 0]) == "alice"
    with_header = vs("hub", [rule("hub", prefix("/", headers={"x-a": {"exact": "1"}}))])
    h = {"x-a": "1"}
    assert dest([with_header, alice], "/user/alice", order=[0, 1], headers=h) == "hub"
    assert dest([with_header, alice], "/user/alice", order=[1, 0], headers=h) == "alice"
    routes = effective_routes([hub, alice], gateway=GW, host=HOST)
    assert [(e.virtual_service, e.catch_all) for e in routes] == [
        ("jhub/hub", False),
        ("jhub/alice", False),
        ("jhub/hub", True),
    ]


def test_base_url_hub_is_not_a_catch_all() -> None:
    vss = [
        vs("hub", [rule("hub", prefix("/jupyter/"))]),
        vs("alice", [rule("alice", prefix("/jupyter/user/alice/"))]),
    ]
    assert dest(vss, "/jupyter/user/alice/lab", order=[0, 1]) == "hub"
    assert dest(vss, "/jupyter/user/alice/lab", order=[1, 0]) == "alice"


def test_plain_prefix_bug_depends_on_order() -> None:
    vss = [
        vs("alice", [rule("alice", prefix("/user/alice"))]),
        vs("alice2", [rule("alice2", prefix("/user/alice2"))]),
    ]
    assert dest(vss, "/user/alice2/tree", order=[0, 1]) == "alice"
    assert dest(vss, "/user/alice2/tree", order=[1, 0]) == "alice2"
    assert dests_over_orders(vss, "/user/alice2/tree") == {"alice", "alice2"}
    # Plain prefix also catches paths that are no server at all.
    assert dest(vss, "/user/alicex") == "alice"


def test_segment_exact_matching_is_order_independent() -> None:
    def user(name: str) -> dict[str, Any]:
        p = f"/user/{name}"
        return vs(name, [rule(name, exact(p), prefix(p + "/"))])

    vss = [user("alice"), user("alice2"), vs("hub", [rule("hub")])]
    expected = {
        "/user/alice": "alice",
        "/user/alice/": "alice",
        "/user/alice/lab?token=x": "alice",
        "/user/alice2": "alice2",
        "/user/alice2/tree": "alice2",
        "/user/alicex": "hub",
        "/user/alic": "hub",
    }
    for path, want in expected.items():
        assert dests_over_orders(vss, path) == {want}, path


def test_order_arguments() -> None:
    vss = [
        vs("delegate", [rule("d", prefix("/user/x"))], hosts=()),
        vs("a", [rule("a", prefix("/user/"))]),
        vs("unbound", [rule("u", prefix("/user/"))], gateways=("mesh",)),
        vs("b", [rule("b", prefix("/user/"))]),
    ]
    assert bound_roots(vss, gateway=GW, host=HOST) == [1, 3]
    assert dest(vss, "/user/x") == "a"
    # Indices into the bound roots ...
    assert dest(vss, "/user/x", order=[1, 0]) == "b"
    # ... or into all objects (non-roots are skipped).
    assert dest(vss, "/user/x", order=[3, 2, 1, 0]) == "b"
    assert dest(vss, "/user/x", order=[0, 1, 2, 3]) == "a"
    with pytest.raises(ValueError):
        go(vss, "/user/x", order=[0, 0])
    with pytest.raises(ValueError):
        go(vss, "/user/x", order=[0, 1, 2])


# --- delegation ---------------------------------------------------------------------------------


def _delegation_objects() -> list[dict[str, Any]]:
    root = vs(
        "root",
        [
            {"name": "users", "match": [prefix("/user/")], "delegate": {"name": "users"}},
            rule("hub", name="hub"),
        ],
    )
    users = vs(
        "users",
        [
            rule("alice2", exact("/user/alice2"), prefix("/user/alice2/"), name="alice2"),
            rule("alice", prefix("/user/alice"), name="alice"),
            rule("outside", prefix("/services/x"), name="outside"),
            {
                "name": "nested",
                "match": [prefix("/user/bob")],
                "delegate": {"name": "bob", "namespace": "jhub"},
            },
            rule("carol", regex("/user/carol(/.*)?"), name="carol"),
            rule("dave", prefix("/user/dave", headers={"x-a": {"exact": "1"}}), name="dave"),
        ],
        hosts=(),
        gateways=(),
    )
    bob = vs("bob", [rule("bob", prefix("/user/bob"))], hosts=(), gateways=())
    return [root, users, bob]


def test_delegate_rules_are_spliced_in_order() -> None:
    vss = _delegation_objects()
    d = go(vss, "/user/alice2/lab")
    assert (d.destination_host, d.virtual_service, d.rule_name) == (
        "alice2",
        "jhub/users",
        "alice2",
    )
    assert dest(vss, "/user/alice/lab") == "alice"
    # Delegate order is kept: the plain prefix "/user/alice" still catches alicex.
    assert dest(vss, "/user/alicex") == "alice"
    # The match is merged with the root's: headers from the delegate, uri from the delegate.
    assert dest(vss, "/user/dave/x", headers={"X-A": "1"}) == "dave"
    assert dest(vss, "/user/dave/x") == "hub"


def test_delegate_rules_outside_the_root_match_or_nested_are_dropped() -> None:
    vss = _delegation_objects()
    assert dest(vss, "/services/x") == "hub"  # outside /user/
    assert dest(vss, "/user/bob") == "hub"  # delegates may not delegate again
    assert dest(vss, "/user/carol") == "hub"  # Istio never nests a regex under a prefix
    names = [e.rule_name for e in effective_routes(vss, gateway=GW, host=HOST)]
    assert names == ["alice2", "alice2", "alice", "dave", "hub"]


def test_delegate_under_matchless_root_rule_and_inheritance() -> None:
    root = vs(
        "root",
        [
            {
                "name": "all",
                "delegate": {"name": "shard", "namespace": "shards"},
                "timeout": "30s",
                "rewrite": {"uri": "/r/"},
            },
        ],
    )
    shard = vs(
        "shard",
        [
            rule("svc", prefix("/services/x/"), name="svc"),
            rule("alice", prefix("/user/alice/"), name="alice", timeout="5s"),
        ],
        ns="shards",
        hosts=(),
        gateways=(),
    )
    vss = [root, shard]
    d = go(vss, "/services/x/api")
    assert (d.destination_host, d.virtual_service, d.rule_name) == ("svc", "shards/shard", "svc")
    assert d.timeout == "30s"  # inherited from the root rule
    assert d.rewritten_path == "/r/api"
    assert go(vss, "/user/alice/lab").timeout == "5s"
    assert dest(vss, "/other") is None


def test_delegate_without_match_inherits_root_match_and_missing_delegate_is_skipped() -> None:
    root = vs(
        "root",
        [
            {"match": [prefix("/missing/")], "delegate": {"name": "nope"}},
            {"match": [prefix("/user/zed/")], "delegate": {"name": "zed"}},
            rule("hub"),
        ],
    )
    zed = vs("zed", [rule("zed", name="zed")], hosts=(), gateways=())
    # A VirtualService with hosts cannot serve as a delegate.
    nope = vs("nope", [rule("nope")], gateways=())
    vss = [root, zed, nope]
    assert dest(vss, "/user/zed/lab") == "zed"
    assert dest(vss, "/user/zedd") == "hub"
    assert dest(vss, "/missing/x") == "hub"


def test_delegate_exact_under_exact_and_ignore_uri_case_must_agree() -> None:
    root = vs(
        "root",
        [
            {"match": [exact("/user/a")], "delegate": {"name": "d"}},
            rule("hub"),
        ],
    )
    d = vs(
        "d",
        [
            rule("same", exact("/user/a"), name="same"),
            rule("sub", prefix("/user/a"), name="sub"),
            rule("ci", {"uri": {"exact": "/user/a"}, "ignoreUriCase": True}, name="ci"),
        ],
        hosts=(),
        gateways=(),
    )
    routes = effective_routes([root, d], gateway=GW, host=HOST)
    assert [e.rule_name for e in routes] == ["same", None]


# --- match conditions ---------------------------------------------------------------------------


def test_regex_is_full_match() -> None:
    vss = [vs("u", [rule("user", regex("/user/[^/]+")), rule("hub")])]
    assert dest(vss, "/user/alice") == "user"
    assert dest(vss, "/user/alice?x=1") == "user"
    assert dest(vss, "/user/alice/tree") == "hub"
    assert dest(vss, "/x/user/alice") == "hub"


@pytest.mark.parametrize(
    "pattern",
    ["/user/(?!admin).*", "/user/(?=a).*", "(?<=/)x", "/user/(a)\\1", "/user/(?>a)"],
)
def test_regex_that_re2_cannot_run_is_rejected(pattern: str) -> None:
    vss = [vs("u", [rule("user", regex(pattern))])]
    with pytest.raises(ValueError):
        go(vss, "/user/alice")


def test_regex_in_class_and_escapes_are_accepted() -> None:
    vss = [vs("u", [rule("user", regex(r"/user/[a(?!]\(?=x"))])]
    assert dest(vss, "/user/!=x") == "user"


def test_headers_without_headers_case_and_query() -> None:
    vss = [
        vs(
            "u",
            [
                rule("exact", prefix("/a", headers={"x-user": {"exact": "alice"}})),
                rule("prefix", prefix("/a", headers={"x-user": {"prefix": "bo"}})),
                rule("regex", prefix("/a", headers={"x-user": {"regex": "c[a-z]+"}})),
                rule("present", prefix("/a", headers={"x-any": {}})),
                rule("without", prefix("/a", withoutHeaders={"cookie": {}})),
                rule("ci", {"uri": {"prefix": "/CI/"}, "ignoreUriCase": True}),
                rule("q", prefix("/q", queryParams={"v": {"exact": "1"}})),
                rule("cs", prefix("/cs/")),
            ],
        )
    ]
    cookie = {"Cookie": "c"}
    assert dest(vss, "/a", headers={"X-User": "alice", **cookie}) == "exact"
    assert dest(vss, "/a", headers={"x-user": "bob", **cookie}) == "prefix"
    assert dest(vss, "/a", headers={"x-user": "carol", **cookie}) == "regex"
    assert dest(vss, "/a", headers={"x-user": "carol1", **cookie}) is None
    assert dest(vss, "/a", headers={"x-any": "", **cookie}) == "present"
    assert dest(vss, "/a") == "without"
    assert dest(vss, "/ci/x") == "ci"
    assert dest(vss, "/Cs/x") is None
    assert dest(vss, "/q?v=1&v=2") == "q"
    assert dest(vss, "/q?v=2&v=1") is None
    # The query string never takes part in path matching.
    assert dest(vss, "/cs/?/a") == "cs"


def test_method_and_authority_matches() -> None:
    vss = [
        vs(
            "u",
            [
                rule("post", prefix("/", method={"exact": "POST"})),
                rule("auth", prefix("/", authority={"prefix": "hub."})),
            ],
        )
    ]
    assert dest(vss, "/x", headers={":method": "POST"}) == "post"
    assert dest(vss, "/x", headers={":method": "GET"}) == "auth"


# --- actions ------------------------------------------------------------------------------------


def test_rewrite_prefix_exact_and_regex() -> None:
    vss = [
        vs(
            "u",
            [
                rule("svc", prefix("/services/x/"), rewrite={"uri": "/"}),
                rule("old", exact("/old"), rewrite={"uri": "/new/home"}),
                rule(
                    "rx",
                    prefix("/user/"),
                    rewrite={
                        "uriRegexRewrite": {"match": "^/user/([^/]+)/(.*)$", "rewrite": "/\\2/\\1"}
                    },
                ),
                rule("none", prefix("/plain/")),
            ],
        )
    ]
    assert go(vss, "/services/x/api/v1?q=1").rewritten_path == "/api/v1?q=1"
    assert go(vss, "/old").rewritten_path == "/new/home"
    assert go(vss, "/user/alice/lab/tree").rewritten_path == "/lab/tree/alice"
    assert go(vss, "/plain/x?y").rewritten_path == "/plain/x?y"
    # No match: path unchanged.
    assert go(vss, "/elsewhere?a=b").rewritten_path == "/elsewhere?a=b"


def test_request_header_set_add_remove() -> None:
    ops = {
        "request": {
            "set": {"X-Forwarded-Prefix": "/user/alice", "cookie": "kept"},
            "add": {"x-extra": "1", "x-keep": "k2"},
            "remove": ["cookie", "x-drop"],
        }
    }
    vss = [vs("u", [rule("alice", prefix("/user/alice/"), headers=ops)])]
    d = go(
        vss,
        "/user/alice/lab",
        headers={"X-Forwarded-Prefix": "/old", "Cookie": "c", "X-Keep": "k", "X-Drop": "d"},
    )
    assert d.request_headers == {
        "x-forwarded-prefix": "/user/alice",
        "cookie": "kept",  # removed first, then set
        "x-keep": "k,k2",
        "x-extra": "1",
    }


def test_weighted_destination_port_timeout_and_names() -> None:
    weighted = {
        "name": "w",
        "match": [prefix("/w")],
        "timeout": "60s",
        "route": [
            {"destination": {"host": "light"}, "weight": 20},
            {"destination": {"host": "heavy", "port": {"number": 9000}}, "weight": 80},
        ],
    }
    vss = [vs("u", [weighted], ns="ns1")]
    d = go(vss, "/w")
    assert d == Decision(
        destination_host="heavy",
        destination_port=9000,
        rewritten_path="/w",
        request_headers={},
        timeout="60s",
        virtual_service="ns1/u",
        rule_name="w",
    )


def test_redirect_and_direct_response() -> None:
    vss = [
        vs(
            "u",
            [
                {"match": [exact("/r")], "redirect": {"uri": "/hub/"}, "name": "r"},
                {"match": [exact("/d")], "directResponse": {"status": 503}, "name": "d"},
            ],
        )
    ]
    r = go(vss, "/r")
    assert (r.destination_host, r.redirect, r.direct_response, r.rule_name) == (
        None,
        {"uri": "/hub/"},
        None,
        "r",
    )
    assert r.matched
    d = go(vss, "/d")
    assert (d.destination_host, d.redirect, d.direct_response) == (None, None, {"status": 503})


# --- helpers ------------------------------------------------------------------------------------


def test_all_orders() -> None:
    rng = random.Random(1)
    orders = all_orders(6, 10, rng)
    assert len(orders) == 10
    assert orders[0] == [0, 1, 2, 3, 4, 5]
    assert orders[1] == [5, 4, 3, 2, 1, 0]
    assert len({tuple(o) for o in orders}) == 10
    assert all(sorted(o) == list(range(6)) for o in orders)
    # Fewer permutations than asked for: all of them.
    assert sorted(map(tuple, all_orders(3, 50, rng))) == [
        (0, 1, 2),
        (0, 2, 1),
        (1, 0, 2),
        (1, 2, 0),
        (2, 0, 1),
        (2, 1, 0),
    ]
    assert all_orders(1, 5, rng) == [[0]]
    assert all_orders(0, 5, rng) == [[]]
    assert len(all_orders(40, 5, rng)) == 5


def test_chp_route() -> None:
    table = {"/": "hub", "/user/alice": 1, "/user/alice2": 2, "/user/alice/gpu": 3}
    assert chp_route(table, "/user/alice") == "/user/alice"
    assert chp_route(table, "/user/alice/") == "/user/alice"
    assert chp_route(table, "/user/alice2/tree") == "/user/alice2"
    assert chp_route(table, "/user/alice/gpu/lab") == "/user/alice/gpu"
    assert chp_route(table, "/user/alice/gpux") == "/user/alice"
    assert chp_route(table, "/user/alicex") == "/"
    assert chp_route(table, "/user/alice?x=/y") == "/user/alice"
    no_root = {k: v for k, v in table.items() if k != "/"}
    assert chp_route(no_root, "/user/alicex") is None
    assert chp_route(no_root, "/") is None
    assert chp_route({}, "/x") is None
    # Longest wins regardless of table order.
    reverse = dict(reversed(list(table.items())))
    assert chp_route(reverse, "/user/alice/gpu/lab") == "/user/alice/gpu"
    assert chp_route(reverse, "/user/alice/lab") == "/user/alice"


def test_per_user_objects_longest_first_agree_with_chp_in_every_order() -> None:
    # One object per user with nested routes longest first, segment-exact matches, hub at "/":
    # a design that must agree with CHP whatever order Istio merges the objects in.
    table = {
        "/": "hub",
        "/user/alice": "alice",
        "/user/alice/gpu": "alice-gpu",
        "/user/alice2": "alice2",
        "/services/x": "svc-x",
    }

    def seg(p: str) -> list[dict[str, Any]]:
        return [exact(p), prefix(p + "/")]

    vss = [
        vs("hub", [rule("hub", prefix("/"))]),
        vs(
            "alice",
            [rule("alice-gpu", *seg("/user/alice/gpu")), rule("alice", *seg("/user/alice"))],
        ),
        vs("alice2", [rule("alice2", *seg("/user/alice2"))]),
        vs("svc-x", [rule("svc-x", *seg("/services/x"))]),
    ]
    paths = [
        "/",
        "/hub/home",
        "/user/alice",
        "/user/alice/",
        "/user/alice/gpu",
        "/user/alice/gpu/lab",
        "/user/alice/gpux",
        "/user/alice2/tree",
        "/user/alicex",
        "/services/x/api",
        "/services/xy",
    ]
    for order in all_orders(len(vss), 24, random.Random(3)):
        for path in paths:
            key = chp_route(table, path)
            assert key is not None
            assert dest(vss, path, order=order) == table[key], (order, path)
