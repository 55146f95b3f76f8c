"""The loopback API server, exercised through the real `kubernetes` client and a kubeconfig."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from federation.testing import EmulatedClusters, KubeAPIServer, write_kubeconfig
from federation.testing.harness import wait_for

G, V, P = "networking.istio.io", "v1", "virtualservices"
NS = "jupyterhub"
EAST = "arn:aws:eks:us-east-1:1234:cluster/east"
WEST = "gke_proj_us-central1_west"
# A VirtualService CRD cut down to the schema features the emulator must enforce: types, a
# oneOf written as Istio writes its StringMatch, pruning, a status subresource, one version.
# (Validating the service's objects against Istio's real CRDs is tests/test_objects.py's job.)
STRING_MATCH = {
    "type": "object",
    "properties": {"exact": {"type": "string"}, "prefix": {"type": "string"}},
    "oneOf": [{"not": {"anyOf": [{"required": ["exact"]}, {"required": ["prefix"]}]}},
              {"required": ["exact"]}, {"required": ["prefix"]}],
}
VS_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {"type": "object", "properties": {
            "hosts": {"type": "array", "items": {"type": "string"}},
            "http": {"type": "array", "items": {"type": "object", "properties": {
                "match": {"type": "array", "items": {"type": "object",
                                                     "properties": {"uri": STRING_MATCH}}},
                "route": {"type": "array", "items": {
                    "type": "object", "x-kubernetes-preserve-unknown-fields": True}},
            }}},
        }},
        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    },
}
VS_CRD_DOC = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{P}.{G}"},
    "spec": {
        "group": G, "scope": "Namespaced",
        "names": {"kind": "VirtualService", "listKind": "VirtualServiceList", "plural": P,
                  "singular": "virtualservice", "shortNames": ["vs"]},
        "versions": [{"name": V, "served": True, "storage": True,
                      "subresources": {"status": {}},
                      "schema": {"openAPIV3Schema": VS_SCHEMA}}],
    },
}


def vs(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels is not None:
        meta["labels"] = labels
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "VirtualService",
        "metadata": meta,
        "spec": spec
        or {"hosts": ["hub.example.org"], "http": [{"route": [{"destination": {"host": "hub"}}]}]},
    }


_open_clients: list[Any] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _open_clients:
        _open_clients.pop().close()  # release pooled sockets now, not at garbage collection


def api_for(kubeconfig: Path, context: str, *, retries: Any = None) -> Any:
    configuration = client.Configuration()
    configuration.retries = retries  # must be set before the ApiClient builds its pool
    api_client = config.new_client_from_config(
        config_file=str(kubeconfig),
        context=context,
        persist_config=False,
        client_configuration=configuration,
    )
    _open_clients.append(api_client)
    return client.CustomObjectsApi(api_client)


def status_of(exc: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(exc.body or "")
    assert body["kind"] == "Status" and body["code"] == exc.status
    return body


@pytest.fixture
def clusters(tmp_path: Path) -> Iterator[EmulatedClusters]:
    with EmulatedClusters([EAST, WEST], tmp_path) as emulated:
        yield emulated


@pytest.fixture
def server(clusters: EmulatedClusters) -> KubeAPIServer:
    return clusters.servers[EAST]


@pytest.fixture
def api(clusters: EmulatedClusters) -> Any:
    return api_for(clusters.kubeconfig, EAST, retries=0)


def test_crud_round_trip(api: Any, server: KubeAPIServer) -> None:
    created = api.create_namespaced_custom_object(G, V, NS, P, vs("alice", {"app": "hub"}))
    meta = created["metadata"]
    assert meta["namespace"] == NS and meta["generation"] == 1 and meta["uid"]
    assert meta["creationTimestamp"].endswith("Z")
    assert api.get_namespaced_custom_object(G, V, NS, P, "alice") == created

    listed = api.list_namespaced_custom_object(G, V, NS, P)
    assert listed["kind"] == "VirtualServiceList" and listed["apiVersion"] == f"{G}/{V}"
    assert [i["metadata"]["name"] for i in listed["items"]] == ["alice"]
    assert int(listed["metadata"]["resourceVersion"]) >= int(meta["resourceVersion"])
    assert api.list_cluster_custom_object(G, V, P)["items"] == listed["items"]

    replaced_body = dict(created, spec={"hosts": ["other.example.org"]})
    replaced = api.replace_namespaced_custom_object(G, V, NS, P, "alice", replaced_body)
    assert replaced["metadata"]["generation"] == 2
    assert int(replaced["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert replaced["metadata"]["uid"] == meta["uid"]

    # Merge patch (the client's default for dict bodies): metadata only, generation unchanged.
    patched = api.patch_namespaced_custom_object(
        G, V, NS, P, "alice", {"metadata": {"labels": {"app": None, "x": "1"}}}
    )
    assert patched["metadata"]["labels"] == {"x": "1"} and patched["metadata"]["generation"] == 2
    # JSON patch (a list body with the JSON-patch content type).
    patched = api.patch_namespaced_custom_object(
        G,
        V,
        NS,
        P,
        "alice",
        [
            {"op": "test", "path": "/spec/hosts/0", "value": "other.example.org"},
            {"op": "add", "path": "/spec/hosts/-", "value": "more.example.org"},
        ],
        _content_type="application/json-patch+json",
    )
    assert patched["spec"]["hosts"] == ["other.example.org", "more.example.org"]
    assert patched["metadata"]["generation"] == 3

    deleted = api.delete_namespaced_custom_object(G, V, NS, P, "alice")
    assert deleted["metadata"]["name"] == "alice"
    assert server.objects(G, V, P) == []
    assert server.request_counts["create"] == 1 and server.request_counts["delete"] == 1


def test_json_patch_test_failure_is_422(api: Any) -> None:
    api.create_namespaced_custom_object(G, V, NS, P, vs("a"))
    with pytest.raises(ApiException) as info:
        api.patch_namespaced_custom_object(
            G,
            V,
            NS,
            P,
            "a",
            [{"op": "test", "path": "/spec/hosts/0", "value": "nope"}],
            _content_type="application/json-patch+json",
        )
    assert info.value.status == 422


def test_conflicts(api: Any) -> None:
    first = api.create_namespaced_custom_object(G, V, NS, P, vs("bob"))
    with pytest.raises(ApiException) as info:
        api.create_namespaced_custom_object(G, V, NS, P, vs("bob"))
    body = status_of(info.value)
    assert info.value.status == 409 and body["reason"] == "AlreadyExists"
    assert body["details"] == {"name": "bob", "group": G, "kind": P}

    api.patch_namespaced_custom_object(G, V, NS, P, "bob", {"spec": {"hosts": ["x"]}})
    with pytest.raises(ApiException) as info:
        api.replace_namespaced_custom_object(G, V, NS, P, "bob", first)  # stale resourceVersion
    body = status_of(info.value)
    assert info.value.status == 409 and body["reason"] == "Conflict"
    assert body["message"] == (
        'Operation cannot be fulfilled on virtualservices.networking.istio.io "bob": the object '
        "has been modified; please apply your changes to the latest version and try again"
    )

    stale = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(resource_version=first["metadata"]["resourceVersion"])
    )
    with pytest.raises(ApiException) as info:
        api.delete_namespaced_custom_object(G, V, NS, P, "bob", body=stale)
    assert info.value.status == 409 and status_of(info.value)["reason"] == "Conflict"

    current = api.get_namespaced_custom_object(G, V, NS, P, "bob")["metadata"]["resourceVersion"]
    fresh = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=current))
    api.delete_namespaced_custom_object(G, V, NS, P, "bob", body=fresh)


def test_not_found_and_invalid(api: Any) -> None:
    calls = [
        lambda: api.get_namespaced_custom_object(G, V, NS, P, "ghost"),
        lambda: api.replace_namespaced_custom_object(G, V, NS, P, "ghost", vs("ghost")),
        lambda: api.patch_namespaced_custom_object(G, V, NS, P, "ghost", {"spec": {}}),
        lambda: api.delete_namespaced_custom_object(G, V, NS, P, "ghost"),
        lambda: api.create_namespaced_custom_object(G, V, "nowhere", P, vs("x")),
    ]
    for call in calls:
        with pytest.raises(ApiException) as info:
            call()
        assert info.value.status == 404 and status_of(info.value)["reason"] == "NotFound"
    # Like the real API, listing an absent namespace is an empty list, not a 404.
    assert api.list_namespaced_custom_object(G, V, "nowhere", P)["items"] == []

    for bad in ["Upper", "under_score", "x" * 254, "-dash"]:
        with pytest.raises(ApiException) as info:
            api.create_namespaced_custom_object(G, V, NS, P, vs(bad))
        assert info.value.status == 422 and status_of(info.value)["reason"] == "Invalid"
    nameless = vs("x")
    nameless["metadata"] = {}
    with pytest.raises(ApiException) as info:
        api.create_namespaced_custom_object(G, V, NS, P, nameless)
    assert info.value.status == 422
    generated = vs("x")
    generated["metadata"] = {"generateName": "route-"}
    made = api.create_namespaced_custom_object(G, V, NS, P, generated)
    assert made["metadata"]["name"].startswith("route-") and len(made["metadata"]["name"]) == 11

    elsewhere = vs("y")
    elsewhere["metadata"]["namespace"] = "default"
    with pytest.raises(ApiException) as info:
        api.create_namespaced_custom_object(G, V, NS, P, elsewhere)
    assert info.value.status == 400  # what the apiserver answers for a namespace mismatch


def test_size_limits(api: Any) -> None:
    big_annotations = vs("ann")
    big_annotations["metadata"]["annotations"] = {"a": "x" * 262_145}
    with pytest.raises(ApiException) as info:
        api.create_namespaced_custom_object(G, V, NS, P, big_annotations)
    assert info.value.status == 422 and "262144" in status_of(info.value)["message"]

    huge = vs("huge", hosts=[f"h{i}.example.org" * 4 for i in range(30_000)])
    with pytest.raises(ApiException) as info:
        api.create_namespaced_custom_object(G, V, NS, P, huge)
    assert info.value.status == 413 and status_of(info.value)["reason"] == "RequestEntityTooLarge"


def test_label_selectors(api: Any) -> None:
    for name, labels in [("a", {"tier": "hub", "env": "prod"}), ("b", {"tier": "user"}), ("c", {})]:
        api.create_namespaced_custom_object(G, V, NS, P, vs(name, labels))

    def names(selector: str) -> list[str]:
        items = api.list_namespaced_custom_object(G, V, NS, P, label_selector=selector)["items"]
        return [i["metadata"]["name"] for i in items]

    assert names("tier=hub") == ["a"]
    assert names("tier==user") == ["b"]
    assert names("tier!=hub") == ["b", "c"]
    assert names("tier") == ["a", "b"]
    assert names("!tier") == ["c"]
    assert names("tier in (hub, user)") == ["a", "b"]
    assert names("tier notin (hub)") == ["b", "c"]
    assert names("tier in (hub,user),env=prod") == ["a"]
    with pytest.raises(ApiException) as info:
        names("tier in ()")
    assert info.value.status == 400


def test_resource_versions_increase_and_noop_updates_do_not_write(
    api: Any, server: KubeAPIServer
) -> None:
    versions = [
        int(
            api.create_namespaced_custom_object(G, V, NS, P, vs(f"r{i}"))["metadata"][
                "resourceVersion"
            ]
        )
        for i in range(3)
    ]
    assert versions == sorted(set(versions))
    current = api.get_namespaced_custom_object(G, V, NS, P, "r0")
    again = api.replace_namespaced_custom_object(G, V, NS, P, "r0", current)
    assert again["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
    assert server.resource_version == versions[-1]


def test_watch_resumes_with_exactly_the_later_events(api: Any) -> None:
    api.create_namespaced_custom_object(G, V, NS, P, vs("early"))
    mark = api.list_namespaced_custom_object(G, V, NS, P)["metadata"]["resourceVersion"]
    api.create_namespaced_custom_object(G, V, NS, P, vs("late"))
    api.patch_namespaced_custom_object(G, V, NS, P, "early", {"spec": {"hosts": ["changed"]}})
    api.delete_namespaced_custom_object(G, V, NS, P, "late")

    events = [
        (
            e["type"],
            e["object"]["metadata"]["name"],
            int(e["object"]["metadata"]["resourceVersion"]),
        )
        for e in watch.Watch().stream(
            api.list_namespaced_custom_object, G, V, NS, P, resource_version=mark, timeout_seconds=1
        )
    ]
    assert [(t, n) for t, n, _ in events] == [
        ("ADDED", "late"),
        ("MODIFIED", "early"),
        ("DELETED", "late"),
    ]
    rvs = [rv for _, _, rv in events]
    assert rvs == sorted(rvs) and rvs[0] > int(mark)


def test_watch_from_now_then_live_with_selector_transitions(api: Any) -> None:
    api.create_namespaced_custom_object(G, V, NS, P, vs("existing", {"shard": "1"}))
    api.create_namespaced_custom_object(G, V, NS, P, vs("other", {"shard": "2"}))
    w = watch.Watch()
    seen: list[tuple[str, str]] = []

    def writer() -> None:
        time.sleep(0.1)
        api.create_namespaced_custom_object(G, V, NS, P, vs("new", {"shard": "1"}))
        api.patch_namespaced_custom_object(
            G, V, NS, P, "other", {"metadata": {"labels": {"shard": "1"}}}
        )
        api.patch_namespaced_custom_object(
            G, V, NS, P, "existing", {"metadata": {"labels": {"shard": "3"}}}
        )

    thread = threading.Thread(target=writer)
    thread.start()
    for event in w.stream(
        api.list_namespaced_custom_object, G, V, NS, P, label_selector="shard=1", _request_timeout=5
    ):
        seen.append((event["type"], event["object"]["metadata"]["name"]))
        if len(seen) == 4:
            w.stop()
    thread.join()
    # Objects moving into or out of the selector are ADDED / DELETED for this watcher.
    assert seen == [
        ("ADDED", "existing"),
        ("ADDED", "new"),
        ("ADDED", "other"),
        ("DELETED", "existing"),
    ]


def test_watch_after_compaction_is_410(api: Any, server: KubeAPIServer) -> None:
    created = api.create_namespaced_custom_object(G, V, NS, P, vs("old"))
    api.patch_namespaced_custom_object(G, V, NS, P, "old", {"spec": {"hosts": ["x"]}})
    server.compact()
    old_rv = created["metadata"]["resourceVersion"]

    # With timeout_seconds the client does not retry: the ERROR event becomes ApiException(410).
    before = server.request_counts["watch"]
    with pytest.raises(ApiException) as info:
        list(
            watch.Watch().stream(
                api.list_namespaced_custom_object,
                G,
                V,
                NS,
                P,
                resource_version=old_rv,
                timeout_seconds=5,
            )
        )
    assert info.value.status == 410
    assert info.value.reason.startswith("Expired: too old resource version")
    assert server.request_counts["watch"] == before + 1

    # Without it, Watch silently re-watches once from the same version, then raises.
    before = server.request_counts["watch"]
    with pytest.raises(ApiException) as info:
        list(
            watch.Watch().stream(
                api.list_namespaced_custom_object, G, V, NS, P, resource_version=old_rv
            )
        )
    assert info.value.status == 410
    assert server.request_counts["watch"] == before + 2

    # A version at or after the compaction point still resumes.
    mark = api.list_namespaced_custom_object(G, V, NS, P)["metadata"]["resourceVersion"]
    api.create_namespaced_custom_object(G, V, NS, P, vs("after"))
    w = watch.Watch()
    stream = w.stream(
        api.list_namespaced_custom_object, G, V, NS, P, resource_version=mark, _request_timeout=5
    )
    first = next(stream)
    stream.close()  # runs the client's cleanup now; w.stop() alone leaves the response open
    assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "after")


def test_watch_history_overflow_is_410(tmp_path: Path) -> None:
    with KubeAPIServer("small", history_limit=3) as small:
        kubeconfig = write_kubeconfig(tmp_path / "kc", {"small": (small.url, small.token, NS)})
        api = api_for(kubeconfig, "small", retries=0)
        first = api.create_namespaced_custom_object(G, V, NS, P, vs("a"))
        for i in range(5):
            api.patch_namespaced_custom_object(
                G, V, NS, P, "a", {"metadata": {"labels": {"i": str(i)}}}
            )
        with pytest.raises(ApiException) as info:
            list(
                watch.Watch().stream(
                    api.list_namespaced_custom_object,
                    G,
                    V,
                    NS,
                    P,
                    resource_version=first["metadata"]["resourceVersion"],
                    timeout_seconds=1,
                )
            )
        assert info.value.status == 410


def test_break_watches_ends_streams_abruptly(api: Any, server: KubeAPIServer) -> None:
    outcome: list[BaseException | str] = []

    def consume() -> None:
        try:
            for _ in watch.Watch().stream(
                api.list_namespaced_custom_object, G, V, NS, P, _request_timeout=5
            ):
                pass
            outcome.append("ended")
        except BaseException as exc:  # recorded for the assertion
            outcome.append(exc)

    thread = threading.Thread(target=consume)
    thread.start()
    wait_for(lambda: server.open_watches, "a watch to open", timeout=2)
    assert server.open_watches == 1
    started = time.monotonic()
    server.break_watches()
    thread.join(timeout=2)
    assert not thread.is_alive() and time.monotonic() - started < 1
    # A dropped stream surfaces as urllib3's ProtocolError out of Watch.stream (no retry there).
    assert isinstance(outcome[0], urllib3.exceptions.ProtocolError), outcome


def test_graceful_break_lets_the_client_rewatch(api: Any, server: KubeAPIServer) -> None:
    api.create_namespaced_custom_object(G, V, NS, P, vs("a"))
    w = watch.Watch()
    seen = []
    for event in w.stream(api.list_namespaced_custom_object, G, V, NS, P, _request_timeout=5):
        seen.append(event["type"])
        if len(seen) == 1:
            server.break_watches(graceful=True)  # clean end: the client resumes from its last rv
            api.create_namespaced_custom_object(G, V, NS, P, vs("b"))
        else:
            w.stop()
    assert seen == ["ADDED", "ADDED"]
    assert server.request_counts["watch"] == 2


def test_wrong_token_is_401(clusters: EmulatedClusters, tmp_path: Path) -> None:
    east = clusters.servers[EAST]
    kubeconfig = write_kubeconfig(tmp_path / "bad", {"bad": (east.url, "wrong", NS)})
    with pytest.raises(ApiException) as info:
        api_for(kubeconfig, "bad", retries=0).list_namespaced_custom_object(G, V, NS, P)
    assert info.value.status == 401
    assert status_of(info.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }


def test_latency(api: Any, server: KubeAPIServer) -> None:
    server.latency = 0.2
    started = time.monotonic()
    api.list_namespaced_custom_object(G, V, NS, P)
    assert time.monotonic() - started >= 0.2
    server.latency = 0


def test_injected_errors(clusters: EmulatedClusters, api: Any, server: KubeAPIServer) -> None:
    server.inject_errors(1, 429, retry_after=1)
    with pytest.raises(ApiException) as info:
        api.list_namespaced_custom_object(G, V, NS, P)
    assert info.value.status == 429 and (info.value.headers or {})["Retry-After"] == "1"
    assert status_of(info.value)["reason"] == "TooManyRequests"
    api.list_namespaced_custom_object(G, V, NS, P)  # only one was injected

    server.inject_errors(2, 500, verbs=["create"])
    assert api.list_namespaced_custom_object(G, V, NS, P)["items"] == []  # other verbs pass
    for _ in range(2):
        with pytest.raises(ApiException) as info:
            api.create_namespaced_custom_object(G, V, NS, P, vs("a"))
        assert info.value.status == 500 and status_of(info.value)["reason"] == "InternalError"
    api.create_namespaced_custom_object(G, V, NS, P, vs("a"))

    # With the client's default retries, urllib3 itself retries 429 + Retry-After on GET.
    default_api = api_for(clusters.kubeconfig, EAST)
    before = server.request_counts["get"]
    server.inject_errors(1, 429, retry_after=0)
    assert default_api.get_namespaced_custom_object(G, V, NS, P, "a")["metadata"]["name"] == "a"
    assert server.request_counts["get"] == before + 2


def test_set_down_refuse_and_recover_on_the_same_port(api: Any, server: KubeAPIServer) -> None:
    api.create_namespaced_custom_object(G, V, NS, P, vs("kept"))
    url = server.url
    server.set_down(True)
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.MaxRetryError) as info:
        api.get_namespaced_custom_object(G, V, NS, P, "kept")
    assert time.monotonic() - started < 1
    assert isinstance(
        info.value.reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ProtocolError
    )
    server.set_down(False)
    assert server.url == url
    assert api.get_namespaced_custom_object(G, V, NS, P, "kept")["metadata"]["name"] == "kept"


def test_set_down_hang_times_out(api: Any, server: KubeAPIServer) -> None:
    server.set_down(True, "hang")
    started = time.monotonic()
    with pytest.raises(urllib3.exceptions.MaxRetryError) as info:
        api.list_namespaced_custom_object(G, V, NS, P, _request_timeout=0.3)
    assert isinstance(info.value.reason, urllib3.exceptions.ReadTimeoutError)
    assert 0.3 <= time.monotonic() - started < 2
    server.set_down(False)
    assert api.list_namespaced_custom_object(G, V, NS, P)["items"] == []


def test_two_contexts_reach_two_servers(clusters: EmulatedClusters) -> None:
    east, west = api_for(clusters.kubeconfig, EAST), api_for(clusters.kubeconfig, WEST)
    east.create_namespaced_custom_object(G, V, NS, P, vs("only-east"))
    assert [o["metadata"]["name"] for o in clusters.servers[EAST].objects(G, V, P, NS)] == [
        "only-east"
    ]
    assert west.list_namespaced_custom_object(G, V, NS, P)["items"] == []
    contexts, current = config.list_kube_config_contexts(str(clusters.kubeconfig))
    assert current["name"] == EAST
    assert [c["name"] for c in contexts] == [EAST, WEST]
    assert clusters.servers[EAST].url != clusters.servers[WEST].url
    assert clusters.servers[WEST].request_counts["list"] == 1


def test_namespaces_version_and_discovery(api: Any, server: KubeAPIServer) -> None:
    core: Any = client.CoreV1Api(api.api_client)  # models have Optional fields everywhere
    assert core.read_namespace(NS).status.phase == "Active"
    with pytest.raises(ApiException) as info:
        core.read_namespace("absent")
    assert info.value.status == 404
    server.add_namespace("team-a")
    assert "team-a" in [n.metadata.name for n in core.list_namespace().items]
    assert client.VersionApi(api.api_client).get_code().git_version == "v1.30.0"


def test_objects_are_snapshots(api: Any, server: KubeAPIServer) -> None:
    api.create_namespaced_custom_object(G, V, NS, P, vs("snap"))
    snapshot = server.objects(G, V, P, NS)
    snapshot[0]["spec"]["hosts"].append("mutated")
    assert server.objects(G, V, P, NS)[0]["spec"]["hosts"] == ["hub.example.org"]


def test_stop_is_prompt_with_open_watch(tmp_path: Path) -> None:
    server = KubeAPIServer("stopper").start()
    kubeconfig = write_kubeconfig(tmp_path / "kc", {"s": (server.url, server.token, NS)})
    api = api_for(kubeconfig, "s", retries=0)
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            list(watch.Watch().stream(api.list_namespaced_custom_object, G, V, NS, P))
        except Exception as exc:  # the stream is cut; recorded below
            errors.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    wait_for(lambda: server.open_watches, "a watch to open", timeout=2)
    started = time.monotonic()
    server.stop()
    thread.join(timeout=2)
    assert time.monotonic() - started < 1 and not thread.is_alive() and errors
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        api.list_namespaced_custom_object(G, V, NS, P)


def test_crd_validation(tmp_path: Path) -> None:
    crd = tmp_path / "virtualservices-crd.json"
    crd.write_text(json.dumps(VS_CRD_DOC))
    with EmulatedClusters(["c"], tmp_path, crd_files=[crd]) as emulated:
        api = api_for(emulated.kubeconfig, "c", retries=0)
        with pytest.raises(ApiException) as info:
            api.create_namespaced_custom_object(G, V, NS, P, vs("bad", hosts="not-a-list"))
        body = status_of(info.value)
        assert info.value.status == 422 and body["reason"] == "Invalid"
        assert "spec.hosts" in body["message"] and "is not of type 'array'" in body["message"]

        # Istio's StringMatch is a oneOf: exact and prefix together are invalid.
        both = vs("both", hosts=["a"], http=[{"match": [{"uri": {"exact": "/a", "prefix": "/a"}}]}])
        with pytest.raises(ApiException) as info:
            api.create_namespaced_custom_object(G, V, NS, P, both)
        assert (
            info.value.status == 422
            and "spec.http[0].match[0].uri" in status_of(info.value)["message"]
        )

        # Unknown fields are pruned with a warning by default, and rejected when Strict.
        unknown = vs("extra", hosts=["a"], bogus=True)
        data, code, headers = api.create_namespaced_custom_object_with_http_info(
            G, V, NS, P, unknown
        )
        assert code == 201 and "bogus" not in data["spec"]
        assert 'unknown field \\"spec.bogus\\"' in headers["Warning"]
        with pytest.raises(ApiException) as info:
            api.create_namespaced_custom_object(
                G, V, NS, P, vs("strict", hosts=["a"], bogus=True), field_validation="Strict"
            )
        assert (
            info.value.status == 400 and "strict decoding error" in status_of(info.value)["message"]
        )

        # Status is a subresource for Istio kinds: writes to the main resource ignore it.
        with_status = vs("st", hosts=["a"])
        with_status["status"] = {"observedGeneration": 1}
        assert "status" not in api.create_namespaced_custom_object(G, V, NS, P, with_status)

        # Versions the CRD does not serve are 404.
        with pytest.raises(ApiException) as info:
            api.list_namespaced_custom_object(G, "v2", NS, P)
        assert info.value.status == 404


def test_bookmarks(api: Any, server: KubeAPIServer) -> None:
    server.bookmark_interval = 0.05
    created = api.create_namespaced_custom_object(G, V, NS, P, vs("a"))
    w = watch.Watch()
    seen = []
    stream = w.stream(
        api.list_namespaced_custom_object,
        G,
        V,
        NS,
        P,
        allow_watch_bookmarks=True,
        _request_timeout=5,
    )
    for event in stream:
        seen.append(event["type"])
        if event["type"] == "BOOKMARK":
            w.stop()
    assert seen == ["ADDED", "BOOKMARK"]
    assert w.resource_version == created["metadata"]["resourceVersion"]


def test_finalizers_delay_deletion(api: Any, server: KubeAPIServer) -> None:
    held = vs("held")
    held["metadata"]["finalizers"] = ["example.org/cleanup"]
    api.create_namespaced_custom_object(G, V, NS, P, held)
    terminating = api.delete_namespaced_custom_object(G, V, NS, P, "held")
    assert terminating["metadata"]["deletionTimestamp"]
    assert server.objects(G, V, P, NS)[0]["metadata"]["deletionTimestamp"]
    api.patch_namespaced_custom_object(G, V, NS, P, "held", {"metadata": {"finalizers": None}})
    assert server.objects(G, V, P, NS) == []


def test_delete_collection_by_label(api: Any, server: KubeAPIServer) -> None:
    for name, owner in [("a", "x"), ("b", "x"), ("c", "y")]:
        api.create_namespaced_custom_object(G, V, NS, P, vs(name, {"owner": owner}))
    gone = api.delete_collection_namespaced_custom_object(G, V, NS, P, label_selector="owner=x")
    assert [i["metadata"]["name"] for i in gone["items"]] == ["a", "b"]
    assert [o["metadata"]["name"] for o in server.objects(G, V, P)] == ["c"]


def test_status_subresource(api: Any) -> None:
    created = api.create_namespaced_custom_object(G, V, NS, P, vs("s"))
    status = {"status": {"observedGeneration": 1}}
    updated = api.patch_namespaced_custom_object_status(G, V, NS, P, "s", status)
    assert updated["status"] == {"observedGeneration": 1}
    assert updated["metadata"]["generation"] == created["metadata"]["generation"]
    ignored = api.patch_namespaced_custom_object(G, V, NS, P, "s", {"status": {"x": 1}})
    assert ignored["status"] == {"observedGeneration": 1}
