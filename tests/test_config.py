from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from federation.config import kubeconfig_paths, load_registry, parse_registry
from federation.errors import ConfigError

from .conftest import REPO, base_config


def write_kubeconfig(path: Path, contexts: list[str]) -> Path:
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": contexts[0],
        "clusters": [{"name": f"c{i}", "cluster": {"server": f"http://127.0.0.1:{1000 + i}"}}
                     for i in range(len(contexts))],
        "users": [{"name": f"u{i}", "user": {"token": "secret-token"}} for i in range(len(contexts))],
        "contexts": [{"name": c, "context": {"cluster": f"c{i}", "user": f"u{i}"}}
                     for i, c in enumerate(contexts)],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", [
        "hub", "arn:aws:eks:us-east-1:123456789012:cluster/jupyter-east",
        "gke_example_europe-west1_west"])


def load(tmp_path: Path, doc: dict) -> object:
    path = tmp_path / "clusters.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_registry(path)


def test_defaults_apply_and_clusters_resolve(tmp_path: Path, kubeconfig: Path) -> None:
    reg = load(tmp_path, base_config(str(kubeconfig)))
    east = reg.clusters["east"]
    assert reg.home == "hub"
    assert east.namespace == "jupyterhub"
    assert east.gateway == "istio-system/jupyterhub-gateway"
    assert east.hosts == ("hub.example.org",)
    assert east.ingress_origin == ("https", "east.hub.example.org", 443)
    assert reg.clusters["west"].ingress_origin == ("http", "west.hub.example.org", 8080)
    assert east.user_service.name == "jupyter-{username}--{servername}"
    assert east.user_service.port == 8888


def test_example_file_is_valid(tmp_path: Path) -> None:
    raw = yaml.safe_load((REPO / "clusters.example.yaml").read_text())
    reg = parse_registry(raw, source="clusters.example.yaml", check_kubeconfig=False)
    assert reg.home in reg.clusters


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d.update(colour="blue"), ["colour", "unknown key"]),
        (lambda d: d["clusters"][1].update(contxt="x"), ["clusters[east].contxt", "unknown key"]),
        (lambda d: d["clusters"][1].pop("context"), ["clusters[east].context", "missing"]),
        (lambda d: d["clusters"].append(dict(d["clusters"][0])), ["clusters[hub]", "duplicate"]),
        (lambda d: d.update(home="nowhere"), ["home", "'nowhere' is not one of the clusters"]),
        (lambda d: d["clusters"][2].update(context="not-there"),
         ["clusters[west].context", "'not-there' is not a context"]),
        (lambda d: d["clusters"][1].update(ingressPublicUrl="east.example.org"),
         ["ingressPublicUrl", "absolute http(s) URL"]),
        (lambda d: d["defaults"].update(gateway="jupyterhub-gateway"), ["defaults.gateway", "<namespace>/"]),
        (lambda d: d["clusters"][1].update(http={"timeout": "soon"}), ["timeout", "duration"]),
        (lambda d: d["clusters"][1].update(
            http={"requestHeaders": {"set": {"X-Prefix": "{path}"}}}), ["placeholder"]),
        (lambda d: d["clusters"][1].update(userService={"name": "{user}"}), ["placeholder"]),
    ],
)
def test_bad_file_is_refused_with_a_fix(tmp_path: Path, kubeconfig: Path, mutate, expected) -> None:
    doc = base_config(str(kubeconfig))
    mutate(doc)
    with pytest.raises(ConfigError) as info:
        load(tmp_path, doc)
    message = str(info.value)
    assert str(tmp_path / "clusters.yaml") in message
    for fragment in expected:
        assert fragment in message
    assert "secret-token" not in message


def test_unreadable_and_broken_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_registry(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("home: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_registry(bad)


def test_kubeconfig_env_is_used(tmp_path: Path, kubeconfig: Path, monkeypatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    reg = load(tmp_path, base_config())
    assert set(reg.clusters) == {"hub", "east", "west"}


def test_remote_cluster_needs_ingress_unless_edge_off(tmp_path: Path, kubeconfig: Path) -> None:
    doc = base_config(str(kubeconfig))
    del doc["clusters"][1]["ingressPublicUrl"]
    with pytest.raises(ConfigError, match="ingressPublicUrl: missing"):
        load(tmp_path, doc)
    doc["clusters"][1]["edge"] = False
    assert load(tmp_path, doc).clusters["east"].edge is False


@pytest.mark.parametrize("user_service", [None, {}, {"name": "nb-{username}", "port": 8000},
                                          {"namespace": ""}])
def test_an_ingress_cluster_needs_its_user_service_namespace(
        tmp_path: Path, kubeconfig: Path, user_service: dict | None) -> None:
    """No default namespace: MultiClusterKubeSpawner 0.2 writes users' Services into the hub
    context's namespace, which only the operator knows; a guess routes every user nowhere."""
    doc = base_config(str(kubeconfig))
    doc["clusters"][1].pop("userService")
    if user_service is not None:
        doc["clusters"][1]["userService"] = user_service
    with pytest.raises(ConfigError) as info:
        load(tmp_path, doc)
    message = str(info.value)
    assert "clusters[east].userService.namespace: missing" in message
    assert "MultiClusterKubeSpawner 0.2" in message and "kubeconfig context" in message
    assert "west" not in message
    # A cluster without ingressPublicUrl names no user Service and needs none.
    doc["clusters"][1].pop("ingressPublicUrl")
    doc["clusters"][1]["edge"] = False
    assert load(tmp_path, doc).clusters["east"].user_service.namespace in (None, "")


def test_example_leaves_the_kubeconfig_to_the_environment() -> None:
    text = (REPO / "clusters.example.yaml").read_text()
    assert "kubeconfig" not in yaml.safe_load(text), "a kubeconfig key would override $KUBECONFIG"
    assert "# kubeconfig:" in text and "$KUBECONFIG" in text


def test_kubeconfig_precedence(tmp_path: Path, monkeypatch) -> None:
    """The file's key, else $KUBECONFIG, else ~/.kube/config; each level with its own contexts."""
    contexts = ["hub", "arn:aws:eks:us-east-1:123456789012:cluster/jupyter-east",
                "gke_example_europe-west1_west"]
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    write_kubeconfig(home / ".kube" / "config", contexts)
    from_env = write_kubeconfig(tmp_path / "env-kubeconfig", contexts)
    from_key = write_kubeconfig(tmp_path / "key-kubeconfig", contexts)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    assert load(tmp_path, base_config()).kubeconfig is None  # found in ~/.kube/config
    assert kubeconfig_paths(None) == [home / ".kube" / "config"]
    monkeypatch.setenv("KUBECONFIG", str(from_env))
    assert kubeconfig_paths(None) == [from_env]
    assert kubeconfig_paths(str(from_key)) == [from_key]
    # the env names a file without the contexts: the key still wins and the file loads
    write_kubeconfig(from_env, ["other"])
    assert set(load(tmp_path, base_config(str(from_key))).clusters) == {"hub", "east", "west"}
    with pytest.raises(ConfigError, match="context"):
        load(tmp_path, base_config())


def test_a_typo_gets_the_likely_key(tmp_path: Path, kubeconfig: Path) -> None:
    doc = base_config(str(kubeconfig))
    doc["clusters"][1]["contxt"] = "x"
    doc["defaults"]["activty"] = {}
    doc["clusters"][2]["http"] = {"requestHeaders": {"sett": {}}}
    doc["colour"] = "blue"
    with pytest.raises(ConfigError) as info:
        load(tmp_path, doc)
    lines = str(info.value).splitlines()
    assert any("clusters[east].contxt" in line and "did you mean 'context'?" in line
               for line in lines)
    assert any("defaults.activty" in line and "did you mean 'activity'?" in line for line in lines)
    assert any("requestHeaders.sett" in line and "did you mean 'set'?" in line for line in lines)
    # nothing close: the keys known at that level instead
    (colour,) = [line for line in lines if "colour" in line]
    assert "did you mean" not in colour and "known keys here: clusters, defaults, home" in colour


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path, kubeconfig: Path) -> None:
    doc = base_config(str(kubeconfig))
    doc["home"] = "nowhere"
    doc["clusters"][1]["context"] = "not-there"
    doc["clusters"][2].pop("ingressPublicUrl")
    doc["clusters"].append({"name": "north", "inCluster": True, "context": "hub",
                            "ingressPublicUrl": "https://north.example.org"})
    with pytest.raises(ConfigError) as info:
        load(tmp_path, doc)
    lines = str(info.value).splitlines()
    source = str(tmp_path / "clusters.yaml")
    assert all(line.startswith(source + ": ") for line in lines)
    for fragment in ("home: 'nowhere' is not one of the clusters",
                     "clusters[east].context: 'not-there' is not a context",
                     "clusters[west].ingressPublicUrl: missing",
                     "clusters[hub].ingressPublicUrl: missing",  # no longer home
                     "clusters[north]: give either context or inCluster",
                     "clusters[north].userService.namespace: missing"):
        assert sum(fragment in line for line in lines) == 1, (fragment, lines)
    assert len(lines) == 6


def test_files_that_are_not_utf8_yaml_or_kubeconfigs_are_one_line_each(
        tmp_path: Path, kubeconfig: Path) -> None:
    """Saved in another encoding, nested without end, a kubeconfig that is no mapping: a
    ConfigError naming the file (the command line prints it; a reload keeps running), never
    a traceback."""
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(yaml.safe_dump(base_config(str(kubeconfig))).encode()
                      + "# café\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_registry(latin)
    deep = tmp_path / "deep.yaml"
    deep.write_text("home: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_registry(deep)
    for name, text in (("list", b"- a\n"), ("int", b"contexts: 5\n"),
                       ("latin", "contexts:\n- name: caf\xe9\n".encode("latin-1"))):
        bad = tmp_path / f"kubeconfig-{name}"
        bad.write_bytes(text)
        with pytest.raises(ConfigError, match=str(bad)):
            load(tmp_path, base_config(str(bad)))
