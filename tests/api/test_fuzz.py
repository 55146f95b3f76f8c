"""Property-based fuzz of the route API over HTTP: good and bad requests sent concurrently.

Each example is a batch of requests, each either good or bad by construction (the oracle is
the strategy that built it, not the service's own validation). The service runs against three
emulated clusters with one shard per depth, so routes of one depth share a shard write and a bad
request that got through would fail its neighbours. After each batch: no 5xx; every good POST
answered 201 and reads back with its data exactly; every bad one answered 400/413 and left
nothing; every stored object passes the Istio CRD schemas and webhook rules; then the good routes
are deleted (204) so the next example starts from an empty table.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ..conftest import CONTEXTS, ISTIO_CRDS, TOKEN, base_config, fast_settings, objects_in
from ..istio_schema import validate

pytestmark = pytest.mark.fuzz

HEADERS = {"Authorization": f"token {TOKEN}"}
INGRESS = ["https://east.hub.example.org", "https://east.hub.example.org:443",
           "http://west.hub.example.org:8080"]


@dataclass
class Call:
    path: str  # as sent, percent-encoded, after /api/routes
    body: bytes
    key: str | None  # the stored key of a good POST, None for a bad one or a DELETE
    sent: dict[str, Any] | None = None  # the good POST's JSON body
    statuses: tuple[int, ...] = (201,)
    method: str = "POST"  # or "DELETE" of a route added just before the batch (``body``)
    replaces: bool = False  # a second good POST to a key of the batch: either body may win


# -- strategies: good parts --------------------------------------------------------------------

JSON_LEAF = (st.none() | st.booleans() | st.integers()
             | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12))
JSON_VALUE = st.recursive(
    JSON_LEAF, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                             max_size=3),
    max_leaves=8,
)
DATA_KEY = st.text(max_size=10).filter(lambda k: k not in ("target", "last_activity", "cluster"))
LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?", fullmatch=True)
SEGMENT = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12).filter(
    lambda s: "/" not in s)
NAME = st.text("abcXYZ019@._-", min_size=1, max_size=10)  # escapes to at most 30 characters


def dns_name(labels: list[str], tld: str, upper: bool) -> str:
    name = ".".join([*labels, tld])
    return name.upper() if upper else name


TLD = st.from_regex(r"[a-z]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)  # never all-numeric
DNS = st.builds(dns_name, st.lists(LABEL, max_size=3), TLD, st.booleans()).filter(
    lambda h: not h.lower().endswith("hub.example.org"))  # not a cluster's ingress
HOST = (DNS | st.just("a" * 63 + ".example.org")
        | st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(lambda a: f"[{a}]"))


@st.composite
def plain_target(draw: st.DrawFn) -> str:
    port = draw(st.none() | st.integers(1, 65535))
    scheme = draw(st.sampled_from(["http", "https"]))
    tail = draw(st.sampled_from(["", "/", "/base/x?y=1"]))
    return f"{scheme}://{draw(HOST)}{'' if port is None else f':{port}'}{tail}"


@st.composite
def good_body(draw: st.DrawFn) -> dict[str, Any]:
    data = draw(st.dictionaries(DATA_KEY, JSON_VALUE, max_size=4))
    if draw(st.booleans()):  # MultiClusterKubeSpawner: names must be strings here
        data["user"] = draw(NAME)
        data["server_name"] = draw(st.none() | st.just("") | NAME.map(lambda n: n[:5]))
        target = draw(st.sampled_from(INGRESS))
    else:  # any JSON as names: nothing needs them
        data.update(draw(st.fixed_dictionaries({}, optional={"user": JSON_VALUE,
                                                             "server_name": JSON_VALUE})))
        target = draw(plain_target())
    if draw(st.integers(0, 4)) == 0:
        data["cluster"] = draw(st.sampled_from(sorted(CONTEXTS)))
    return {"target": target, **data}


@st.composite
def good_path(draw: st.DrawFn) -> tuple[str, str]:
    """(percent-encoded path as sent, the key it is stored under)."""
    segments = draw(st.lists(SEGMENT, max_size=4))
    if draw(st.booleans()):
        segments.insert(0, draw(LABEL) + ".hub.example.org")  # a host route
    key = "/" + "/".join(segments)
    return draw(spelling(key)), key


@st.composite
def spelling(draw: st.DrawFn, key: str) -> str:
    """One of the ways a client may send ``key`` in the URL."""
    safe = draw(st.sampled_from(["", "@~", "@~!$&'()*+,;=:"]))
    sent = "/".join(encode_segment(s, safe) for s in key.split("/"))
    if draw(st.booleans()):
        sent = re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), sent)
    if key != "/" and draw(st.booleans()):
        sent += "/"  # one trailing slash is not part of the key
    return sent


def encode_segment(segment: str, safe: str) -> str:
    if set(segment) == {"."}:
        return "%2E" * len(segment)  # so that no client resolves "." and ".." before sending
    return quote(segment, safe=safe)


# -- strategies: bad requests (each one rule broken, the rest good) ----------------------------

BAD_HOSTS = st.one_of(
    st.integers(64, 90).map(lambda n: "a" * n + ".example.org"),
    st.integers(254, 400).map(lambda n: ("abcdefghi." * 40)[: n - 4] + ".org"),
    st.integers(256, 999).map(lambda n: f"10.0.0.{n}"),
    st.sampled_from(["a_b.example.org", "-a.example.org", "a-.example.org", "a..example.org",
                     "bücher.de", "1.2", "[fe80::1%25eth0]", "example.org."]),
)
NON_STRING = JSON_VALUE.filter(lambda v: not isinstance(v, str) and v is not None)


def json_body(body: Any) -> bytes:
    return json.dumps(body).encode()


def with_good(change: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    """A good body (placed by its target) with one change that makes it bad."""
    base = good_body().map(lambda b: {k: v for k, v in b.items() if k != "cluster"})
    return st.builds(lambda b, c: json_body({**b, **c}), base, change)


def at_ingress(names: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[bytes]:
    return st.builds(lambda t, n: json_body({"target": t, **n}), st.sampled_from(INGRESS), names)


BAD_400 = st.one_of(
    with_good(BAD_HOSTS.map(lambda h: {"target": f"http://{h}:80"})),
    with_good(DNS.map(lambda h: {"target": f"http://{h}:0"})),
    with_good((NON_STRING | st.none()).map(lambda t: {"target": t})),
    good_body().map(lambda b: json_body({k: v for k, v in b.items() if k != "target"})),
    with_good((st.text(max_size=8).filter(lambda c: c not in CONTEXTS) | NON_STRING).map(
        lambda c: {"cluster": c})),
    with_good(st.integers(70, 200).map(lambda n: {"deep": nested(n)})),
    with_good(st.integers(17_000, 60_000).map(lambda n: {"pad": "x" * n})),
    at_ingress(NON_STRING.map(lambda u: {"user": u})),
    at_ingress(NON_STRING.map(lambda s: {"user": "u", "server_name": s})),
    at_ingress(st.sampled_from([{}, {"user": ""}, {"user": None}, {"user": "x" * 56}])),
    st.sampled_from([b"[1]", b'"x"', b"3", b"not json", b"\xff\xfe", b"{", b'{"target": NaN}',
                     b"[" * 100_000, b'{"target": "http://hub:8081", "x": "\\ud800"}',
                     b'{"target": "http://hub:8081", "n": 1e999}']),
)
BAD_413 = with_good(st.just({"pad": "x" * (1024 * 1024 + 10)}))


@st.composite
def bad_body(draw: st.DrawFn) -> tuple[bytes, tuple[int, ...]]:
    if draw(st.integers(0, 15)) == 0:  # over the body limit: rare, it costs a MiB each
        return draw(BAD_413), (413,)
    return draw(BAD_400), (400,)


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = {"k": value}
    return value


BAD_PATHS = st.one_of(
    st.integers(1, 31).map(lambda c: f"/user/a%{c:02X}b") | st.just("/user/%7F"),
    st.just("/" + "x" * 1100),
    st.just("/" + "%C3%A9" * 520),  # 1,040 bytes decoded
    st.integers(64, 80).map(lambda n: "/" + "a" * n + ".hub.example.org/user/a"),
)


@st.composite
def batch(draw: st.DrawFn) -> list[Call]:
    calls: list[Call] = []
    for _ in range(draw(st.integers(1, 6))):
        (path, key), body = draw(good_path()), draw(good_body())
        calls.append(Call(path, json_body(body), key, body))
    for _ in range(draw(st.integers(1, 5))):
        body, statuses = draw(bad_body())
        calls.append(Call(draw(good_path())[0], body, None, statuses=statuses))
    if draw(st.booleans()):
        calls.append(Call(draw(BAD_PATHS), json_body(draw(good_body())), None, statuses=(400,)))
    for _ in range(draw(st.integers(0, 2))):
        (path, _), body = draw(good_path()), draw(good_body())
        calls.append(Call(path, json_body(body), None, statuses=(204,), method="DELETE"))
    for first in draw(st.lists(st.sampled_from(calls[:1]), max_size=1)):  # a replacing POST
        body = draw(good_body())
        calls.append(Call(draw(spelling(first.key or "/")), json_body(body), first.key, body,
                          replaces=True))
    return draw(st.permutations(unique_keys(calls)))


def unique_keys(calls: list[Call]) -> list[Call]:
    """One request per key, but for a replacing POST: a bad one or a DELETE on a good one's key
    could not be told apart from it in the table."""
    seen: set[str] = set()
    out = []
    for call in calls:
        key = call.key if call.key is not None else encoded_key(call.path)
        if key not in seen or call.replaces:
            seen.add(key)
            out.append(call)
    return out


def encoded_key(path: str) -> str:
    from urllib.parse import unquote

    key = unquote(path)
    return key[:-1] if key.endswith("/") and key != "/" else key


# -- the service -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Any]]:
    from federation.testing import EmulatedClusters
    from federation.testing.harness import ServiceThread, write_clusters_yaml

    tmp = tmp_path_factory.mktemp("fuzz")
    crds = sorted(ISTIO_CRDS.glob("*-crd.yaml")) if ISTIO_CRDS.exists() else []
    with EmulatedClusters(list(CONTEXTS.values()), tmp, crd_files=crds) as clusters:
        doc = base_config(str(clusters.kubeconfig))
        # A fresh table has one shard per depth, so concurrent requests share shard writes.
        config = write_clusters_yaml(Path(tmp) / "clusters.yaml", doc)
        with ServiceThread(fast_settings(config)) as svc, client(svc.url) as api:
            yield api, clusters


def client(url: str) -> httpx.Client:
    # verify=False: plain HTTP, and loading the CA bundle for every client costs ~50 ms
    return httpx.Client(base_url=url, headers=HEADERS, timeout=10, verify=False)


async def send_all(url: str, calls: list[Call]) -> list[httpx.Response]:
    headers = {**HEADERS, "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10, verify=False) as api:
        return await asyncio.gather(*(
            api.request(c.method, "/api/routes" + c.path, content=c.body if c.method == "POST" else None)
            for c in calls))


def add_routes_to_delete(api: httpx.Client, calls: list[Call]) -> None:
    for call in calls:
        if call.method == "DELETE":
            assert api.post("/api/routes" + call.path, content=call.body).status_code == 201


async def delete_all(url: str, paths: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, headers=HEADERS, timeout=10, verify=False) as api:
        return await asyncio.gather(*(api.delete("/api/routes" + p) for p in paths))


def clear_table(api: httpx.Client) -> None:
    table = api.get("/api/routes").json()
    if table:
        asyncio.run(delete_all(str(api.base_url), [quote(key) for key in table]))


def canonical(value: Any) -> str:
    """JSON text that tells 1, 1.0 and true apart (== does not)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def check_answers(calls: list[Call], answers: list[httpx.Response]) -> None:
    for call, resp in zip(calls, answers, strict=True):
        what = (call.path[:80], call.body[:120], resp.status_code, resp.text[:200])
        assert resp.status_code < 500, what
        assert resp.status_code in call.statuses, what
        if resp.status_code >= 400:
            message = resp.json()["error"]
            assert message and "\n" not in message and "Traceback" not in message, what


def check_table(api: httpx.Client, calls: list[Call]) -> None:
    table = api.get("/api/routes").json()
    good: dict[str, set[str]] = {}
    for call in calls:
        if call.key is not None:
            good.setdefault(call.key, set()).add(canonical(call.sent))
    assert set(table) == set(good)
    for key, bodies in good.items():
        got = dict(table[key])
        assert got.pop("last_activity").endswith("Z")
        assert canonical(got) in bodies, key  # a replaced route holds one whole body


def check_objects(clusters: Any) -> None:
    if not ISTIO_CRDS.exists():
        return
    for name in CONTEXTS:
        for plural in ("virtualservices", "serviceentries", "destinationrules"):
            for obj in objects_in(clusters, name, plural):
                validate(obj, ISTIO_CRDS)


# No shrinking: against a broken service each request may wait for its timeout, and the
# assertion already names the failing request and its answer.
@settings(max_examples=30, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(calls=batch())
def test_bad_requests_never_fail_good_ones(fuzz_service, calls: list[Call]) -> None:
    api, clusters = fuzz_service
    url = str(api.base_url)
    clear_table(api)  # an earlier failing example may have left routes behind
    add_routes_to_delete(api, calls)
    check_answers(calls, asyncio.run(send_all(url, calls)))
    check_table(api, calls)
    check_objects(clusters)
    good = list({c.key: c.path for c in calls if c.key is not None}.values())
    assert [r.status_code for r in asyncio.run(delete_all(url, good))] == [204] * len(good)
    assert api.get("/api/routes").json() == {}


def test_json_objects_as_names_among_concurrent_posts(fuzz_service) -> None:
    """The reported case: a JSON object as 'user' failed the shard write it was
    batched into, and every route in it answered 500."""
    api, _ = fuzz_service
    clear_table(api)
    calls = []
    for i in range(40):
        body = {"target": f"http://10.0.{i}.1:8888", "user": {"name": f"u{i}"} if i % 4 == 0 else f"u{i}",
                "server_name": [i] if i % 4 == 1 else "", "jupyterhub": True}
        calls.append(Call(f"/user/u{i}", json_body(body), f"/user/u{i}", body))
    for i in range(10):
        body = {"target": "https://east.hub.example.org", "user": {"name": f"b{i}"}}
        calls.append(Call(f"/user/b{i}", json_body(body), None, statuses=(400,)))
    check_answers(calls, asyncio.run(send_all(str(api.base_url), calls)))
    check_table(api, calls)


OFFSETS = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59),
                        max_value=timedelta(hours=23, minutes=59)).map(timezone)
CUTOFFS = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31),
                       timezones=st.none() | OFFSETS)
ODD_QUERIES = (st.text(max_size=30) | st.sampled_from(
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "0999-01-01T00:00:00Z", "Z", "+"]))
READ_PATHS = good_path().map(lambda p: p[0]) | BAD_PATHS | st.sampled_from(
    ["/%ZZ", "/%", "/%E7%A7", "/%ED%A0%80", "/user/%00", "//", "/%2F%2F"])


def utc_ms(when: datetime) -> datetime:
    """As the proxy compares: UTC, millisecond precision (configurable-http-proxy's Dates)."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cutoff=CUTOFFS, query=ODD_QUERIES, path=READ_PATHS, param=st.sampled_from(
    ["inactive_since", "inactiveSince"]))
def test_reads_and_deletes_never_fail(fuzz_service, cutoff, query, path, param) -> None:
    """GET with any inactive_since, GET and DELETE of any path: never a 5xx, and the filter
    returns exactly the routes last active strictly before the cutoff."""
    api, _ = fuzz_service
    if "/user/kept" not in api.get("/api/routes").json():
        assert api.post("/api/routes/user/kept", json={"target": "http://10.0.0.1:80"}).status_code == 201
    table = api.get("/api/routes").json()
    got = api.get("/api/routes", params={param: cutoff.isoformat()})
    assert got.status_code == 200, got.text
    assert set(got.json()) == {
        k for k, r in table.items()
        if datetime.fromisoformat(r["last_activity"].replace("Z", "")) < utc_ms(cutoff)}
    odd = api.get("/api/routes", params={param: query})
    assert odd.status_code in (200, 400), (query, odd.text)
    for method in ("GET", "DELETE"):
        resp = api.request(method, "/api/routes" + path)
        assert resp.status_code in (200, 204, 400, 404), (method, path, resp.status_code, resp.text)
