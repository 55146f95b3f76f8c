"""The guide's MultiClusterKubeSpawner setup (docs/operations.md section 12, the examples) and the
stack the end-to-end test and `federation demo --hub` run agree."""

from __future__ import annotations

from typing import Any

import yaml

from federation.testing import mcks

from .conftest import REPO

EXAMPLES = REPO / "docs" / "examples"


def load(name: str) -> Any:
    return yaml.safe_load((EXAMPLES / name).read_text(encoding="utf-8"))


def test_profiles_slugs_and_namespaces_agree_with_the_clusters() -> None:
    clusters = load("federation-values.yaml")["config"]["clusters"]
    hub = load("z2jh-values.yaml")["hub"]
    profiles = hub["config"]["MultiClusterKubeSpawner"]["profile_list"]
    assert [p["slug"] for p in profiles] == [c["name"] for c in clusters]
    role_namespaces = {d["metadata"]["namespace"] for d in yaml.safe_load_all(
        (EXAMPLES / "spawner-rbac.yaml").read_text()) if d["kind"] in ("Role", "RoleBinding")}
    assert role_namespaces == {mcks.USER_NAMESPACE}
    assert {c["userService"]["namespace"] for c in clusters} == {mcks.USER_NAMESPACE}
    # the stack under test is configured the same way
    spec = mcks.ClusterSpec("east", "ctx", "https://east.example.org")
    (profile,) = mcks.profile_list([spec], home="hub")
    assert set(profile) <= set().union(*profiles) and set(profile["spawner_override"]) == set(
        profiles[0]["spawner_override"])
    (entry,) = mcks.clusters_yaml([spec], "hub", REPO / "kubeconfig", ["h.example.org"])["clusters"]
    assert entry["userService"] == clusters[0]["userService"]


def test_the_hub_mounts_its_own_kubeconfig_not_the_services() -> None:
    hub = load("z2jh-values.yaml")["hub"]
    (volume,) = hub["extraVolumes"]
    secret = volume["secret"]["secretName"]
    assert secret != load("federation-values.yaml")["kubeconfig"]["existingSecret"]
    assert hub["extraEnv"]["KUBECONFIG"].startswith(hub["extraVolumeMounts"][0]["mountPath"])
    guide = (REPO / "docs" / "operations.md").read_text(encoding="utf-8")
    assert f"`{secret}`" in guide and "examples/spawner-rbac.yaml" in guide
