"""A model of how an Istio ingress gateway routes one HTTP request over VirtualServices.

Tests use it to check that the objects the proxy writes route correctly in *every* order Istio
may merge them in: Istio defines no order across VirtualServices (in practice creation time, then
name), so a design is only right if it is right for all permutations.

What ends up in the gateway's route table follows Istio's pilot: delegate rules spliced into the
root (a delegate rule whose match is not inside the root rule's match is dropped), one Envoy route
per match entry, a VirtualService's routes cut after its first catch-all, and catch-all routes moved
to the end across VirtualServices. How the table is evaluated follows Envoy: one virtual host per
request (the most specific host), first matching route wins, prefix rewrite, header mutations.

Not modelled: Gateway server hosts/ports/TLS, match ``port``/``sourceLabels``/``sourceNamespace``
(treated as matching), ``exportTo``, Envoy path normalisation (paths are taken as normalised),
retries, faults, mirrors, CORS.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

Obj = Mapping[str, Any]

# Kubernetes stores objects without a namespace in "default".
OBJECT_NAMESPACE_DEFAULT = "default"
# Where an ingress gateway usually lives; used for a bare `gateway` argument.
GATEWAY_NAMESPACE_DEFAULT = "istio-system"


@dataclass(frozen=True)
class Decision:
    """What the gateway does with one request."""

    # route[0].destination.host (weighted routes: the heaviest); None for 404/redirect/direct.
    destination_host: str | None
    destination_port: int | None
    # Path (with its query string) as sent upstream, after rewrite.uri / uriRegexRewrite.
    rewritten_path: str
    # Incoming headers (names lowercased) after headers.request remove/set/add.
    request_headers: dict[str, str] = field(hash=False)
    timeout: str | None
    # "namespace/name" of the object holding the matched rule (the delegate for delegate
    # rules); None when no rule matched (404).
    virtual_service: str | None
    rule_name: str | None
    redirect: dict[str, Any] | None = field(default=None, hash=False)
    direct_response: dict[str, Any] | None = field(default=None, hash=False)

    @property
    def matched(self) -> bool:
        return self.virtual_service is not None


@dataclass(frozen=True)
class RouteEntry:
    """One Envoy route of the gateway's table: a rule with one of its match entries."""

    virtual_service: str  # "namespace/name" the rule was written in
    rule: Obj  # after delegate merging (root defaults filled in)
    match: Obj | None  # None: the rule has no match, i.e. Envoy prefix "/"
    catch_all: bool
    rule_name: str | None


# --- object helpers ---------------------------------------------------------------------------


def _spec(vs: Obj) -> Obj:
    return vs.get("spec") or {}


def _namespace(vs: Obj) -> str:
    return (vs.get("metadata") or {}).get("namespace") or OBJECT_NAMESPACE_DEFAULT


def _key(vs: Obj) -> str:
    return f"{_namespace(vs)}/{(vs.get('metadata') or {}).get('name', '')}"


def _is_root(vs: Obj) -> bool:
    # Objects without hosts are delegates: never bound to a gateway directly.
    return bool(_spec(vs).get("hosts"))


def _resolve_gateway(ref: str, namespace: str) -> str:
    # "ns/name" is explicit; a bare name means the referring object's namespace.
    return ref if "/" in ref else f"{namespace}/{ref}"


def _bound(vs: Obj, gateway: str) -> bool:
    ns = _namespace(vs)
    # No gateways means "mesh" only (sidecars), never the ingress gateway.
    return any(
        g != "mesh" and _resolve_gateway(g, ns) == gateway for g in _spec(vs).get("gateways") or []
    )


# --- virtual host selection -------------------------------------------------------------------


def _normalise_host(host: str) -> str:
    host = host.strip().lower()
    if host.startswith("["):  # IPv6 literal, maybe with a port
        return host[: host.find("]") + 1]
    name, sep, port = host.rpartition(":")
    return name if sep and port.isdigit() else host


def _host_matches(pattern: str, host: str) -> bool:
    pattern = pattern.lower()
    if pattern == "*":
        return True
    if pattern.startswith("*"):
        suffix = pattern[1:]
        # Envoy suffix wildcards need at least one character in front: "*.a.org" != "a.org".
        return host.endswith(suffix) and len(host) > len(suffix)
    return pattern == host


def _specificity(pattern: str) -> tuple[int, int]:
    # Envoy: exact domains, then suffix wildcards longest first, then "*".
    if pattern == "*":
        return (0, 0)
    if pattern.startswith("*"):
        return (1, len(pattern))
    return (2, len(pattern))


def bound_roots(
    virtual_services: Sequence[Obj],
    *,
    gateway: str,
    host: str,
    gateway_namespace_default: str = GATEWAY_NAMESPACE_DEFAULT,
) -> list[int]:
    """Indices (input order) of the root VirtualServices merged into the request's virtual host.

    Envoy picks one virtual host, so objects whose hosts match less specifically are not
    consulted at all, even if the chosen virtual host has no matching rule.
    """
    gw = _resolve_gateway(gateway, gateway_namespace_default)
    req = _normalise_host(host)
    candidates = [
        (i, h.lower())
        for i, vs in enumerate(virtual_services)
        if _is_root(vs) and _bound(vs, gw)
        for h in _spec(vs)["hosts"]
        if _host_matches(h, req)
    ]
    if not candidates:
        return []
    best = max((h for _, h in candidates), key=_specificity)
    return sorted({i for i, h in candidates if h == best})


# --- delegation (Istio's mergeHTTPRoute) ------------------------------------------------------

_STRING_MATCH_FIELDS = ("uri", "scheme", "method", "authority")
_MAP_MATCH_FIELDS = ("headers", "withoutHeaders", "queryParams")
# Rule fields a delegate rule inherits from the root rule when it has none of its own.
_INHERITED_RULE_FIELDS = (
    "rewrite",
    "directResponse",
    "timeout",
    "retries",
    "fault",
    "mirror",
    "mirrorPercent",
    "mirrorPercentage",
    "corsPolicy",
    "mirrors",
    "headers",
)


def _string_match_conflict(root: Obj | None, leaf: Obj | None) -> bool:
    """True when `leaf` is not provably inside `root` (Istio's stringMatchConflict)."""
    if root is None or leaf is None:
        return False
    # Istio never nests regexes: a regex on either side conflicts, even a regex whose literal
    # starts with the root prefix.
    if root.get("regex") or leaf.get("regex"):
        return True
    if root.get("exact"):
        return bool(leaf.get("prefix")) or leaf.get("exact") != root["exact"]
    if prefix := root.get("prefix"):
        if leaf.get("prefix"):
            return not leaf["prefix"].startswith(prefix)
        if leaf.get("exact"):
            return not leaf["exact"].startswith(prefix)
    return True


def _has_conflict(root: Obj, leaf: Obj) -> bool:
    for name in _STRING_MATCH_FIELDS:
        if _string_match_conflict(root.get(name), leaf.get(name)):
            return True
    for name in _MAP_MATCH_FIELDS:
        root_map = root.get(name) or {}
        for key, value in (leaf.get(name) or {}).items():
            if _string_match_conflict(root_map.get(key), value):
                return True
    if bool(root.get("ignoreUriCase")) != bool(leaf.get("ignoreUriCase")):
        return True
    root_port, leaf_port = root.get("port") or 0, leaf.get("port") or 0
    if root_port and leaf_port and root_port != leaf_port:
        return True
    root_gws, leaf_gws = root.get("gateways") or [], leaf.get("gateways") or []
    return bool(root_gws and leaf_gws and not set(leaf_gws) <= set(root_gws))


def _merge_match(root: Obj, leaf: Obj) -> dict[str, Any]:
    out = dict(leaf)
    for name in (*_STRING_MATCH_FIELDS, "port", "gateways"):
        if not out.get(name) and root.get(name):
            out[name] = root[name]
    for name in _MAP_MATCH_FIELDS:
        merged = {**(root.get(name) or {}), **(leaf.get(name) or {})}
        if merged:
            out[name] = merged
    return out


def _merge_matches(root: Sequence[Obj], leaf: Sequence[Obj]) -> list[dict[str, Any]] | None:
    """Merged match list, or None when some delegate match fits no root match."""
    if not root:
        return [dict(m) for m in leaf]
    if not leaf:
        return [dict(m) for m in root]
    out: list[dict[str, Any]] = []
    for sub in leaf:
        fitting = [_merge_match(r, sub) for r in root if not _has_conflict(r, sub)]
        if not fitting:
            return None
        out.extend(fitting)
    return out


def _merge_rule(root: Obj, leaf: Obj) -> dict[str, Any] | None:
    matches = _merge_matches(root.get("match") or [], leaf.get("match") or [])
    if matches is None:
        return None
    out = {k: v for k, v in leaf.items() if k != "match"}
    if matches:
        out["match"] = matches
    for name in _INHERITED_RULE_FIELDS:
        if out.get(name) is None and root.get(name) is not None:
            out[name] = root[name]
    return out


@dataclass(frozen=True)
class _Rule:
    owner: str
    rule: Obj
    name: str | None


def _expand(vs: Obj, delegates: Mapping[tuple[str, str], Obj]) -> list[_Rule]:
    ns, key = _namespace(vs), _key(vs)
    out: list[_Rule] = []
    for rule in _spec(vs).get("http") or []:
        ref = rule.get("delegate")
        if not ref:
            out.append(_Rule(key, rule, rule.get("name")))
            continue
        target = delegates.get((ref.get("namespace") or ns, ref.get("name", "")))
        if target is None:
            continue  # Istio drops just this rule when the delegate is missing
        for sub in _spec(target).get("http") or []:
            if sub.get("delegate"):
                continue  # only one level of delegation
            merged = _merge_rule(rule, sub)
            if merged is not None:
                out.append(_Rule(_key(target), merged, sub.get("name") or rule.get("name")))
    return out


# --- route table ------------------------------------------------------------------------------


def _uri_kind(uri: Obj | None) -> tuple[str, str]:
    # Istio emits prefix "/" when the match has no uri.
    uri = uri or {}
    for kind in ("exact", "prefix", "regex"):
        if uri.get(kind) is not None:
            return kind, uri[kind]
    return "prefix", "/"


def _is_catch_all(match: Obj | None) -> bool:
    if match is None:
        return True
    # method/scheme/authority become Envoy header matchers, so they count as conditions.
    conditions = (*_MAP_MATCH_FIELDS, "method", "scheme", "authority")
    if any(match.get(name) for name in conditions):
        return False
    # Istio's check is literal: regex ".*" is NOT a catch-all and stays where it is.
    return _uri_kind(match.get("uri")) in {("prefix", "/"), ("regex", "*")}


def _match_applies(match: Obj, gateway: str, namespace: str) -> bool:
    gws = match.get("gateways") or []
    return not gws or any(_resolve_gateway(g, namespace) == gateway for g in gws)


def _translate(rules: Sequence[_Rule], gateway: str, namespace: str) -> list[RouteEntry]:
    out: list[RouteEntry] = []
    for r in rules:
        matches = r.rule.get("match") or []
        if not matches:
            out.append(RouteEntry(r.owner, r.rule, None, True, r.name))
            break  # Istio stops a VirtualService after a catch-all: the rest is unreachable
        hit_catch_all = False
        for m in matches:
            if not _match_applies(m, gateway, namespace):
                continue
            hit_catch_all = _is_catch_all(m)
            out.append(RouteEntry(r.owner, r.rule, m, hit_catch_all, r.name))
            if hit_catch_all:
                break
        if hit_catch_all:
            break
    return out


def _apply_order(roots: list[int], order: Sequence[int] | None, total: int) -> list[int]:
    if order is None:
        return roots
    ordered = list(order)
    if sorted(ordered) == list(range(total)):
        # A permutation of all input objects: keep the roots, in that order.
        chosen = set(roots)
        return [i for i in ordered if i in chosen]
    if sorted(ordered) == list(range(len(roots))):
        return [roots[i] for i in ordered]
    raise ValueError(
        f"order must permute range({len(roots)}) (bound roots) or range({total}) (all objects): "
        f"{ordered}"
    )


def effective_routes(
    virtual_services: Sequence[Obj],
    *,
    gateway: str,
    host: str,
    order: Sequence[int] | None = None,
    gateway_namespace_default: str = GATEWAY_NAMESPACE_DEFAULT,
) -> list[RouteEntry]:
    """The gateway's ordered route table for `host`, as `route()` evaluates it."""
    gw = _resolve_gateway(gateway, gateway_namespace_default)
    roots = bound_roots(
        virtual_services,
        gateway=gateway,
        host=host,
        gateway_namespace_default=gateway_namespace_default,
    )
    delegates = {
        (_namespace(vs), (vs.get("metadata") or {}).get("name", "")): vs
        for vs in virtual_services
        if not _is_root(vs)
    }
    table: list[RouteEntry] = []
    for i in _apply_order(roots, order, len(virtual_services)):
        vs = virtual_services[i]
        table.extend(_translate(_expand(vs, delegates), gw, _namespace(vs)))
    # Only catch-all routes move to the end; everything else keeps the concatenation order.
    return [r for r in table if not r.catch_all] + [r for r in table if r.catch_all]


# --- matching ---------------------------------------------------------------------------------

# Constructs Python's re runs but RE2 rejects.
_RE2_UNSUPPORTED_GROUPS = ("(?=", "(?!", "(?<=", "(?<!", "(?>", "(?P=")


def _re2_problem(pattern: str) -> str | None:
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            nxt = pattern[i + 1 : i + 2]
            if not in_class and nxt in set("123456789"):
                return "backreference"
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            j = i + 1
            # A "]" right after "[" or "[^" is a literal, not the end of the class.
            if pattern[j : j + 1] == "^":
                j += 1
            if pattern[j : j + 1] == "]":
                j += 1
            i = j
            continue
        elif pattern.startswith(_RE2_UNSUPPORTED_GROUPS, i):
            return "look-around, atomic group or named backreference"
        i += 1
    return None


@lru_cache(maxsize=4096)
def _compile(pattern: str) -> re.Pattern[str]:
    problem = _re2_problem(pattern)
    if problem:
        raise ValueError(f"RE2 cannot run {pattern!r}: {problem}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regex {pattern!r}: {exc}") from exc


def _string_matches(sm: Obj, value: str | None) -> bool:
    if value is None:
        return False
    if sm.get("exact"):
        return bool(value == sm["exact"])
    if sm.get("prefix"):
        return value.startswith(sm["prefix"])
    if sm.get("regex"):
        return _compile(sm["regex"]).fullmatch(value) is not None
    return True  # empty StringMatch: header present


def _match_uri(uri: Obj | None, path: str, ignore_case: bool) -> int | None:
    """Length of the matched path prefix (what a prefix rewrite replaces), or None."""
    kind, value = _uri_kind(uri)
    if kind == "regex":
        # Envoy applies ignore_case to exact and prefix path matches only.
        return len(path) if _compile(value).fullmatch(path) else None
    subject, wanted = (path.lower(), value.lower()) if ignore_case else (path, value)
    if kind == "exact":
        return len(path) if subject == wanted else None
    return len(value) if subject.startswith(wanted) else None


def _entry_matches(
    match: Obj | None, path: str, query: str, headers: Mapping[str, str]
) -> int | None:
    if match is None:
        return 1  # prefix "/"
    matched = _match_uri(match.get("uri"), path, bool(match.get("ignoreUriCase")))
    if matched is None:
        return None
    for name, pseudo in (("method", ":method"), ("scheme", ":scheme"), ("authority", ":authority")):
        if match.get(name) is not None and not _string_matches(match[name], headers.get(pseudo)):
            return None
    for name, sm in (match.get("headers") or {}).items():
        if not _string_matches(sm, headers.get(name.lower())):
            return None
    for name, sm in (match.get("withoutHeaders") or {}).items():
        # Envoy's inverted matcher also matches when the header is absent.
        if _string_matches(sm, headers.get(name.lower())):
            return None
    if match.get("queryParams"):
        params: dict[str, str] = {}
        for k, v in parse_qsl(query, keep_blank_values=True):
            params.setdefault(k, v)  # Envoy looks at the first value
        for name, sm in match["queryParams"].items():
            if not _string_matches(sm, params.get(name)):
                return None
    return matched


# --- actions ----------------------------------------------------------------------------------


def _heaviest(destinations: Sequence[Obj]) -> Obj | None:
    if not destinations:
        return None
    if len(destinations) == 1:
        return destinations[0]
    return max(destinations, key=lambda d: d.get("weight") or 0)  # first one on ties


def _substitution(template: str) -> Callable[[re.Match[str]], str]:
    # RE2 substitutions use \1..\9; expand them ourselves so Python's template escapes don't apply.
    def expand(m: re.Match[str]) -> str:
        return re.sub(r"\\(\d)", lambda g: m.group(int(g.group(1))) or "", template)

    return expand


def _rewrite(rewrite: Obj | None, path: str, matched_len: int) -> str:
    if not rewrite:
        return path
    regex_rewrite = rewrite.get("uriRegexRewrite") or {}
    if regex_rewrite.get("match"):
        pattern = _compile(regex_rewrite["match"])
        return pattern.sub(_substitution(regex_rewrite.get("rewrite", "")), path)
    if rewrite.get("uri"):
        # Envoy prefix_rewrite swaps the matched prefix (the whole path for exact and regex).
        return str(rewrite["uri"]) + path[matched_len:]
    return path


def _mutate(headers: dict[str, str], ops: Obj) -> None:
    # Envoy removes before it adds, so a header both removed and set ends up set.
    for name in ops.get("remove") or []:
        headers.pop(name.lower(), None)
    for name, value in (ops.get("set") or {}).items():
        headers[name.lower()] = value
    for name, value in (ops.get("add") or {}).items():
        key = name.lower()
        # An appended header line is equivalent to a comma-joined value.
        headers[key] = f"{headers[key]},{value}" if key in headers else value


def _decide(
    entry: RouteEntry,
    path: str,
    sep: str,
    query: str,
    matched_len: int,
    incoming: Mapping[str, str],
) -> Decision:
    rule = entry.rule
    redirect = dict(rule["redirect"]) if rule.get("redirect") else None
    direct = dict(rule["directResponse"]) if rule.get("directResponse") and not redirect else None
    dest = None if redirect or direct else _heaviest(rule.get("route") or [])
    destination: Obj = (dest or {}).get("destination") or {}
    port = (destination.get("port") or {}).get("number")

    headers = dict(incoming)
    # Envoy applies the more specific (destination) level first, so rule-level values win.
    for level in ((dest or {}).get("headers"), rule.get("headers")):
        _mutate(headers, (level or {}).get("request") or {})

    return Decision(
        destination_host=destination.get("host"),
        destination_port=int(port) if port is not None else None,
        rewritten_path=_rewrite(rule.get("rewrite"), path, matched_len) + sep + query,
        request_headers=headers,
        timeout=rule.get("timeout"),
        virtual_service=entry.virtual_service,
        rule_name=entry.rule_name,
        redirect=redirect,
        direct_response=direct,
    )


def route(
    virtual_services: Sequence[Obj],
    *,
    gateway: str,
    host: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    order: Sequence[int] | None = None,
    gateway_namespace_default: str = GATEWAY_NAMESPACE_DEFAULT,
) -> Decision:
    """Route one request through the gateway `gateway` ("ns/name", or a bare name in
    `gateway_namespace_default`).

    `order` permutes the merge order of root VirtualServices: either indices into the roots
    merged for this host (`bound_roots()`, input order) or indices into `virtual_services`.
    `headers` may carry ":method" / ":scheme" for method/scheme matches.
    """
    incoming = {k.lower(): v for k, v in (headers or {}).items()}
    bare, sep, query = path.partition("?")
    lookup = {":authority": host, **incoming}
    table = effective_routes(
        virtual_services,
        gateway=gateway,
        host=host,
        order=order,
        gateway_namespace_default=gateway_namespace_default,
    )
    for entry in table:
        matched_len = _entry_matches(entry.match, bare, query, lookup)
        if matched_len is not None:
            return _decide(entry, bare, sep, query, matched_len, incoming)
    return Decision(None, None, path, incoming, None, None, None)


# --- property-test helpers --------------------------------------------------------------------


def all_orders(n: int, k: int, rng: random.Random) -> list[list[int]]:
    """Up to `k` distinct permutations of range(n): identity, reverse, then random ones.

    Returns every permutation when there are no more than `k`.
    """
    if n < 0 or k < 1:
        raise ValueError("need n >= 0 and k >= 1")
    identity = list(range(n))
    firsts = [identity, identity[::-1]]
    # Only compute n! when small; beyond that it is effectively unbounded.
    total = math.factorial(n) if n <= 12 else None
    if total is not None and total <= 2 * k:
        rest = [list(p) for p in itertools.permutations(identity)]
        rng.shuffle(rest)
        candidates = firsts + rest
    else:
        candidates = firsts
    out: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    want = min(k, total) if total is not None else k

    def take(p: list[int]) -> None:
        if len(out) < want and tuple(p) not in seen:
            seen.add(tuple(p))
            out.append(p)

    for p in candidates:
        take(p)
    while len(out) < want:
        p = identity[:]
        rng.shuffle(p)
        take(p)
    return out


def chp_route(table: Mapping[str, object], path: str) -> str | None:
    """configurable-http-proxy's lookup: the longest key K with path == K or path under K + "/".

    "/" matches every path. Returns the key as given, or None.
    """
    path = path.partition("?")[0]
    best: str | None = None
    best_len = -1
    for key in table:
        k = key.rstrip("/") or "/"
        if (k == "/" or path == k or path.startswith(k + "/")) and len(k) > best_len:
            best, best_len = key, len(k)
    return best
