"""Paged lists of the loopback API server: every object exactly once, in key order, and in
linear time, as a real API server pages by key range (a restart's figure depends on it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from federation.testing import KubeAPIServer
from federation.testing.kubeapi import store as store_module

G, V, P = "gateway.networking.k8s.io", "v1", "httproutes"
TOKEN = "paging-token"
LABEL = "app.kubernetes.io/managed-by"


def route(name: str, managed: bool = True) -> dict[str, Any]:
    labels = {LABEL: "federation" if managed else "someone-else"}
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "labels": labels},
        "spec": {"hostnames": ["hub.example.org"]},
    }


@pytest.fixture
def server() -> Iterator[KubeAPIServer]:
    with KubeAPIServer("paging", token=TOKEN, kubelet=False) as api:
        yield api


@pytest.fixture
def http(server: KubeAPIServer) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as client:
        yield client


def collection(namespace: str | None) -> str:
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"/apis/{G}/{V}{where}/{P}"


def fill(http: httpx.Client, namespace: str, names: list[str], **kw: Any) -> None:
    for name in names:
        http.post(collection(namespace), json=route(name, **kw)).raise_for_status()


def pages(http: httpx.Client, path: str, limit: int, **params: str) -> list[dict[str, Any]]:
    """Every page of a list, following the continue tokens."""
    out: list[dict[str, Any]] = []
    token = ""
    while True:
        query = {"limit": str(limit), **params, **({"continue": token} if token else {})}
        body = http.get(path, params=query).raise_for_status().json()
        out.append(body)
        token = body["metadata"].get("continue", "")
        if not token:
            return out


def names_of(listed: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (item["metadata"]["namespace"], item["metadata"]["name"])
        for page in listed
        for item in page["items"]
    ]


def test_pages_cover_every_object_once_in_key_order(http: httpx.Client) -> None:
    fill(http, "jupyterhub", [f"r{i:03d}" for i in range(23)])
    fill(http, "default", [f"d{i}" for i in range(4)])
    listed = pages(http, collection(None), 5)
    seen = names_of(listed)
    assert seen == sorted(seen) and len(seen) == 27
    # The count left after each page, as the API server gives it when no selector filters.
    assert [p["metadata"].get("remainingItemCount") for p in listed] == [22, 17, 12, 7, 2, None]
    in_namespace = pages(http, collection("jupyterhub"), 10)
    assert names_of(in_namespace) == [("jupyterhub", f"r{i:03d}") for i in range(23)]
    assert [p["metadata"].get("remainingItemCount") for p in in_namespace] == [13, 3, None]


def test_pages_with_a_selector_hold_only_selected_objects(http: httpx.Client) -> None:
    fill(http, "jupyterhub", [f"m{i:02d}" for i in range(12)])
    fill(http, "jupyterhub", [f"o{i:02d}" for i in range(7)], managed=False)
    listed = pages(http, collection("jupyterhub"), 4, labelSelector=f"{LABEL}=federation")
    assert names_of(listed) == [("jupyterhub", f"m{i:02d}") for i in range(12)]
    # Exactly full pages: the last one says nothing follows, and no count is given with a
    # selector (the API server leaves it out: it would have to read the rest).
    assert [len(p["items"]) for p in listed] == [4, 4, 4]
    assert all("remainingItemCount" not in p["metadata"] for p in listed)


def test_a_page_continues_after_objects_written_meanwhile(http: httpx.Client) -> None:
    fill(http, "jupyterhub", ["a", "c", "e"])
    first = http.get(collection(None), params={"limit": "2"}).json()
    assert names_of([first]) == [("jupyterhub", "a"), ("jupyterhub", "c")]
    fill(http, "jupyterhub", ["b", "d"])  # b sorts before the token, d after it
    http.delete(collection("jupyterhub") + "/e").raise_for_status()
    rest = http.get(
        collection(None), params={"limit": "2", "continue": first["metadata"]["continue"]}
    ).json()
    assert names_of([rest]) == [("jupyterhub", "d")]
    assert "continue" not in rest["metadata"]


def test_a_bad_continue_token_is_refused(http: httpx.Client) -> None:
    answer = http.get(collection(None), params={"limit": "2", "continue": "not-a-token"})
    assert answer.status_code == 400 and "continue" in answer.json()["message"]


class _CountingDict(dict):  # type: ignore[type-arg]
    """The store's objects, counting every object a whole-collection read goes through."""

    read = 0

    def items(self):  # type: ignore[no-untyped-def,override]
        for pair in super().items():
            _CountingDict.read += 1
            yield pair

    def values(self):  # type: ignore[no-untyped-def,override]
        return [v for _, v in self.items()]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return (k for k, _ in self.items())


def test_paging_through_a_collection_reads_each_object_about_once(
    server: KubeAPIServer, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Work counted, not timed: reading the whole collection for every page (sorting it, or
    matching selectors from its start) makes a list of n objects in pages of k cost n²/k."""
    total, limit = 1200, 20
    fill(http, "jupyterhub", [f"u{i:05d}" for i in range(total)])
    res = server._resources[(G, P)]
    res.objects = _CountingDict(res.objects)
    _CountingDict.read = 0
    matched = 0
    real_selected = store_module._selected

    def counted(*args: Any) -> bool:
        nonlocal matched
        matched += 1
        return real_selected(*args)

    monkeypatch.setattr(store_module, "_selected", counted)
    listed = pages(http, collection("jupyterhub"), limit, labelSelector=f"{LABEL}=federation")
    assert len(names_of(listed)) == total and len(listed) == total // limit
    # Linear: each object matched once, plus one look past each page; quadratic paging would
    # read ~n²/2k = 36,000 here.
    assert matched <= total + len(listed)
    assert _CountingDict.read == 0
