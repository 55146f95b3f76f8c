"""Tests of the federation-proxy Helm chart: lint, schema and rendered objects."""

from __future__ import annotations

import base64
import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from federation import __version__

from .conftest import APP_VERSION, CHART_DIR, NAMESPACE, RELEASE, TEST_IMAGE, VALUES_DIR, Rendered

pytestmark = pytest.mark.chart

CHART = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())
DEFAULTS = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
VALUES_FILES = sorted(p.name for p in VALUES_DIR.glob("*.yaml"))

FULLNAME = f"{RELEASE}-federation-proxy"
OUTSIDE_PREFIX = f"{FULLNAME}-{NAMESPACE}"  # objects outside the release's namespace, cluster-wide ones
SELECTOR = {"app.kubernetes.io/name": "federation-proxy", "app.kubernetes.io/instance": RELEASE}
ISTIO_WRITE_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]
EXPECTED_RULES = [
    {
        "apiGroups": ["networking.istio.io"],
        "resources": ["virtualservices", "serviceentries", "destinationrules"],
        "verbs": ISTIO_WRITE_VERBS,
    },
    {
        "apiGroups": ["networking.istio.io"],
        "resources": ["gateways"],
        "verbs": ["get", "list"],
    },
]
DEFAULT_TOKEN_SECRET = ("hub", "hub.config.ConfigurableHTTPProxy.auth_token")


def load_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((VALUES_DIR / name).read_text())


def container(rendered: Rendered) -> dict[str, Any]:
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["federation-proxy"]
    return pod["containers"][0]


def env_of(rendered: Rendered) -> dict[str, dict[str, Any]]:
    env = container(rendered)["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names)), f"duplicate env vars: {names}"
    return {e["name"]: e for e in env}


def token_ref(rendered: Rendered) -> tuple[str, str]:
    ref = env_of(rendered)["CONFIGPROXY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
    return ref["name"], ref["key"]


def clusters_yaml(rendered: Rendered) -> dict[str, Any]:
    cm = rendered.one("ConfigMap", FULLNAME)
    assert set(cm["data"]) == {"clusters.yaml"}
    return yaml.safe_load(cm["data"]["clusters.yaml"])


def named_port(rendered: Rendered, name: str) -> int:
    ports = {p["name"]: p["containerPort"] for p in container(rendered)["ports"]}
    return ports[name]


def assert_no_wildcards(value: Any) -> None:
    if isinstance(value, dict):
        for v in value.values():
            assert_no_wildcards(v)
    elif isinstance(value, list):
        for v in value:
            assert_no_wildcards(v)
    else:
        assert value != "*", "wildcard in RBAC rules"


# --------------------------------------------------------------------------- lint


def test_values_files_present() -> None:
    assert VALUES_FILES == [
        "existing-secret.yaml",
        "multi-cluster.yaml",
        "rbac-off.yaml",
        "servicemonitor.yaml",
        "token-value.yaml",
    ]


@pytest.mark.parametrize("values_name", [None, *VALUES_FILES])
def test_lint_strict(run_helm, values_name: str | None) -> None:
    args = ["lint", "--strict", str(CHART_DIR), "--namespace", NAMESPACE]
    if values_name:
        args += ["-f", str(VALUES_DIR / values_name)]
    result = run_helm(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_lint_strict_fails_on_schema_violation(run_helm, values_file) -> None:
    bad = values_file({"replicaCount": "two"})
    result = run_helm("lint", "--strict", str(CHART_DIR), "-f", str(bad))
    assert result.returncode != 0
    assert "replicaCount" in result.stdout + result.stderr


def test_chart_metadata() -> None:
    assert CHART["apiVersion"] == "v2"
    assert CHART["name"] == "federation-proxy"
    assert CHART["appVersion"] == APP_VERSION == __version__
    # none is published: no default that would end in ImagePullBackOff
    assert DEFAULTS["image"]["repository"] == ""
    assert DEFAULTS["image"]["tag"] == ""


# ------------------------------------------------------------------- defaults


def test_default_objects(render) -> None:
    rendered = render()
    assert rendered.kinds() == sorted(
        [
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "Role",  # the host claims', in the gateway's namespace
            "Role",  # reading Services, for the destination checks
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    )
    for doc in rendered.docs:
        meta = doc["metadata"]
        claims = meta["name"] == f"{OUTSIDE_PREFIX}-host-claims"
        assert meta["namespace"] == ("istio-system" if claims else NAMESPACE), doc["kind"]
        labels = meta["labels"]
        assert labels["app.kubernetes.io/name"] == "federation-proxy"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == __version__
        assert labels["helm.sh/chart"] == f"federation-proxy-{__version__}"


def test_default_deployment(render) -> None:
    rendered = render()
    deploy = rendered.one("Deployment", FULLNAME)
    spec = deploy["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert spec["selector"]["matchLabels"] == SELECTOR
    pod_labels = spec["template"]["metadata"]["labels"]
    assert SELECTOR.items() <= pod_labels.items()

    c = container(rendered)
    assert c["image"] == f"{TEST_IMAGE['repository']}:{APP_VERSION}"
    assert c["args"] == [
        "serve",
        "--config",
        "/etc/federation/clusters.yaml",
        "--host",
        "0.0.0.0",
        "--port",
        "8001",
    ]
    assert "command" not in c, "the image ENTRYPOINT (federation) must be kept"
    assert c["ports"] == [{"name": "http", "containerPort": 8001, "protocol": "TCP"}]
    # the figures behind them: test_chart_sizing.py
    assert c["resources"] == {
        "requests": {"cpu": "100m", "memory": "192Mi"},
        "limits": {"memory": "768Mi"},
    }


def test_probes(render) -> None:
    rendered = render()
    c = container(rendered)
    live = c["livenessProbe"]["httpGet"]
    ready = c["readinessProbe"]["httpGet"]
    assert live["path"] == "/healthz"
    assert ready["path"] == "/readyz"
    for probe in (live, ready):
        port = probe["port"]
        resolved = named_port(rendered, port) if isinstance(port, str) else port
        assert resolved == 8001
        assert probe.get("scheme", "HTTP") == "HTTP"
    assert c["readinessProbe"]["periodSeconds"] == 5
    assert c["livenessProbe"]["failureThreshold"] == 3


def test_security_context(render) -> None:
    rendered = render()
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    psc = pod["securityContext"]
    assert psc["runAsNonRoot"] is True
    assert psc["runAsUser"] == 10001
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    csc = container(rendered)["securityContext"]
    assert csc["runAsNonRoot"] is True
    assert csc["runAsUser"] == 10001
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert csc.get("privileged", False) is False


def test_default_volumes_and_mounts(render) -> None:
    rendered = render()
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes) == {"config", "tmp"}
    assert volumes["config"]["configMap"]["name"] == FULLNAME
    assert volumes["config"]["configMap"]["items"] == [
        {"key": "clusters.yaml", "path": "clusters.yaml"}
    ]
    assert "emptyDir" in volumes["tmp"]
    mounts = {m["name"]: m for m in container(rendered)["volumeMounts"]}
    assert set(mounts) == {"config", "tmp"}
    assert mounts["config"]["mountPath"] == "/etc/federation"
    assert mounts["config"]["readOnly"] is True
    # A subPath mount would never see ConfigMap updates (the service reloads the file).
    assert all("subPath" not in m for m in mounts.values())
    assert mounts["tmp"]["mountPath"] == "/tmp"
    assert not mounts["tmp"].get("readOnly", False)


def test_default_env(render) -> None:
    rendered = render()
    env = env_of(rendered)
    assert token_ref(rendered) == DEFAULT_TOKEN_SECRET
    assert env["FEDERATION_LOG_LEVEL"]["value"] == "info"
    assert env["FEDERATION_METRICS_AUTH"]["value"] == "true"
    assert "KUBECONFIG" not in env
    assert not rendered.has("Secret"), "no token Secret without auth.token"


def test_default_scheduling(render) -> None:
    pod = render().one("Deployment")["spec"]["template"]["spec"]
    anti = pod["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    (preferred,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    term = preferred["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == SELECTOR
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"
    assert spread["labelSelector"]["matchLabels"] == SELECTOR


@pytest.mark.parametrize(
    ("preset", "key"),
    [("hard", "requiredDuringSchedulingIgnoredDuringExecution"), ("none", None)],
)
def test_anti_affinity_presets(render, preset: str, key: str | None) -> None:
    rendered = render(
        values={"podAntiAffinityPreset": preset, "topologySpread": {"enabled": False}}
    )
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert "topologySpreadConstraints" not in pod
    if key is None:
        assert "affinity" not in pod
    else:
        assert list(pod["affinity"]["podAntiAffinity"]) == [key]


def test_default_service(render) -> None:
    rendered = render()
    svc = rendered.one("Service")
    # not z2jh's own proxy-api Service
    assert svc["metadata"]["name"] == "federation-proxy-api"
    assert svc["spec"]["type"] == "ClusterIP"
    (port,) = svc["spec"]["ports"]
    assert port["port"] == 8001
    assert named_port(rendered, port["targetPort"]) == 8001
    pod_labels = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert svc["spec"]["selector"] == SELECTOR


def test_rbac_rules_exact(render) -> None:
    rendered = render()
    role = rendered.one("Role", FULLNAME)
    assert role["rules"] == EXPECTED_RULES
    assert_no_wildcards(role["rules"])
    assert not rendered.has("ClusterRole")
    assert not rendered.has("ClusterRoleBinding")
    binding = rendered.one("RoleBinding", FULLNAME)
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": FULLNAME,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}
    ]
    sa = rendered.one("ServiceAccount", FULLNAME)
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_default_pdb(render) -> None:
    rendered = render()
    pdb = rendered.one("PodDisruptionBudget", FULLNAME)
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == SELECTOR


def test_default_config(render) -> None:
    expected = copy.deepcopy(DEFAULTS["config"])
    expected["defaults"]["namespace"] = NAMESPACE
    assert clusters_yaml(render()) == expected
    # Outside the hub's namespace, the release namespace is still the default.
    assert clusters_yaml(render(namespace="federation"))["defaults"]["namespace"] == "federation"


# --------------------------------------------------------------- values files


def test_multi_cluster(render) -> None:
    values = load_values("multi-cluster.yaml")
    rendered = render("multi-cluster.yaml", namespace="federation")

    expected = copy.deepcopy(values["config"])
    expected["kubeconfig"] = "/etc/federation-kubeconfig/config"
    config = clusters_yaml(rendered)
    assert config == expected
    assert set(config) == {"kubeconfig", "instance", "home", "defaults", "clusters"}
    assert config["defaults"]["namespace"] == "jupyterhub", "explicit namespace is kept"
    east = config["clusters"][1]
    assert east["userService"] == {
        "name": "jupyter-{username}--{servername}",
        "namespace": "jupyter-users",
        "port": 8888,
    }

    env = env_of(rendered)
    assert env["KUBECONFIG"]["value"] == "/etc/federation-kubeconfig/config"
    assert env["FEDERATION_LOG_LEVEL"]["value"] == "debug"

    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes) == {"config", "kubeconfig", "tmp"}
    secret = volumes["kubeconfig"]["secret"]
    assert secret["secretName"] == "federation-kubeconfig"
    assert secret["items"] == [{"key": "kubeconfig.yaml", "path": "config"}]
    assert secret["defaultMode"] == 0o440
    mounts = {m["name"]: m for m in container(rendered)["volumeMounts"]}
    assert mounts["kubeconfig"]["mountPath"] == "/etc/federation-kubeconfig"
    # its own directory, not nested inside the read-only ConfigMap mount
    assert not mounts["kubeconfig"]["mountPath"].startswith(mounts["config"]["mountPath"] + "/")
    assert mounts["kubeconfig"]["readOnly"] is True
    assert "subPath" not in mounts["kubeconfig"]
    assert mounts["config"]["mountPath"] == "/etc/federation"


def test_kubeconfig_default_key(render) -> None:
    rendered = render(values={"kubeconfig": {"existingSecret": "kc"}})
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    (secret_volume,) = [v["secret"] for v in pod["volumes"] if "secret" in v]
    assert secret_volume["secretName"] == "kc"
    assert secret_volume["items"] == [{"key": "config", "path": "config"}]
    assert clusters_yaml(rendered)["kubeconfig"] == "/etc/federation-kubeconfig/config"


def test_activity_secret_is_mounted_read_only(render) -> None:
    rendered = render(values={
        "activitySecret": {"name": "prometheus-reader"},
        "config": {"defaults": {"activity": {
            "prometheusUrl": "https://prometheus.istio-system:9090",
            "bearerTokenFile": "/etc/federation-activity/token"}}},
    })
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["activity"]["secret"]["secretName"] == "prometheus-reader"
    mounts = {m["name"]: m for m in container(rendered)["volumeMounts"]}
    assert mounts["activity"] == {"name": "activity", "mountPath": "/etc/federation-activity",
                                  "readOnly": True}
    assert clusters_yaml(rendered)["defaults"]["activity"]["bearerTokenFile"] == (
        "/etc/federation-activity/token")


def test_existing_token_secret(render) -> None:
    rendered = render("existing-secret.yaml")
    assert token_ref(rendered) == ("federation-proxy-token", "proxy-token")
    assert not rendered.has("Secret")


def test_token_value_creates_secret(render) -> None:
    token = load_values("token-value.yaml")["auth"]["token"]
    rendered = render("token-value.yaml")
    secret = rendered.one("Secret")
    name, key = token_ref(rendered)
    assert secret["metadata"]["name"] == name == f"{FULLNAME}-auth"
    assert key == "token"
    assert base64.b64decode(secret["data"][key]).decode() == token
    assert set(secret["data"]) == {key}

    annotations = rendered.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    checksum = annotations["checksum/auth-token"]
    other = render("token-value.yaml", values={"auth": {"token": "another-token"}})
    other_annotations = other.one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert other_annotations["checksum/auth-token"] != checksum


def test_service_monitor(render) -> None:
    rendered = render("servicemonitor.yaml")
    sm = rendered.one("ServiceMonitor", FULLNAME)
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    svc = rendered.one("Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
    assert endpoint["bearerTokenSecret"] == {
        "name": DEFAULT_TOKEN_SECRET[0],
        "key": DEFAULT_TOKEN_SECRET[1],
    }


def test_service_monitor_uses_chart_secret(render) -> None:
    rendered = render("servicemonitor.yaml", "token-value.yaml")
    (endpoint,) = rendered.one("ServiceMonitor")["spec"]["endpoints"]
    secret = rendered.one("Secret")
    assert endpoint["bearerTokenSecret"] == {"name": secret["metadata"]["name"], "key": "token"}
    assert (endpoint["bearerTokenSecret"]["name"], "token") == token_ref(rendered)


def test_metrics_without_auth(render) -> None:
    rendered = render("servicemonitor.yaml", values={"metrics": {"requireAuth": False}})
    assert env_of(rendered)["FEDERATION_METRICS_AUTH"]["value"] == "false"
    (endpoint,) = rendered.one("ServiceMonitor")["spec"]["endpoints"]
    assert "bearerTokenSecret" not in endpoint


def test_rbac_off(render) -> None:
    rendered = render("rbac-off.yaml")
    assert rendered.kinds() == ["ConfigMap", "Deployment", "Service"]
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "federation-proxy"
    assert rendered.one("Deployment")["spec"]["replicas"] == 3
    svc = rendered.one("Service")
    assert svc["metadata"]["name"] == "federation-proxy-api"
    assert svc["spec"]["ports"][0]["port"] == 9001
    assert named_port(rendered, svc["spec"]["ports"][0]["targetPort"]) == 8001


def test_image_overrides(render) -> None:
    c = container(render(values={"image": {"tag": "1.2.3", "pullPolicy": "Always"}}))
    assert c["image"] == f"{TEST_IMAGE['repository']}:1.2.3"
    assert c["imagePullPolicy"] == "Always"
    digest = "sha256:" + "a" * 64
    c = container(render(values={"image": {"digest": digest}}))
    assert c["image"] == f"{TEST_IMAGE['repository']}@{digest}"
    only_digest = {"image": {"repository": "r.example.org/fp", "digest": digest}}
    assert container(render(values=only_digest, image=False))["image"] == f"r.example.org/fp@{digest}"


@pytest.mark.parametrize(("image", "unset"), [
    (None, "image.repository is not set"),
    ({"repository": "r.example.org/fp"}, "image.tag is not set (nor image.digest)"),
], ids=["nothing", "no-tag"])
def test_without_an_image_rendering_stops_and_says_how_to_build_one(
        template, run_helm, image: dict[str, str] | None, unset: str) -> None:
    """The chart as installed, with no image of the operator's: helm template (and so helm
    install) fails with what to do, instead of a pod that never pulls."""
    result = template(values={"image": image} if image else None, image=False)
    assert result.returncode != 0 and result.stdout == ""
    assert unset in result.stderr
    for hint in ("Dockerfile", "docker build", "push it to a registry",
                 "docs/operations.md, section 0", "set image.repository and image.tag"):
        assert hint in result.stderr, hint
    # the guide's section 0 is where the message sends the operator, and builds the image there
    guide = (CHART_DIR.parents[1] / "docs" / "operations.md").read_text()
    assert "## 0. The container image" in guide and "docker build -t" in guide
    # helm lint does not stop at `required` (its lint mode): CI's lint of the defaults passes
    lint = run_helm("lint", "--strict", str(CHART_DIR), "--namespace", NAMESPACE)
    assert lint.returncode == 0, lint.stdout + lint.stderr


# ---------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicas": 2}, "replicas"),
        ({"service": {"name": "proxy-api", "port": 8001, "nmae": "x"}}, "nmae"),
        ({"containerSecurityContext": {"runAsRoot": True}}, "runAsRoot"),
        ({"auth": {"existingSecret": {"name": "hub", "keys": "x"}}}, "keys"),
        ({"serviceMonitor": {"enabled": True, "bearer": "x"}}, "bearer"),
        ({"config": {"cluster": [{"name": "hub", "inCluster": True}]}}, "cluster"),
        ({"config": {"kubeconfigPath": "/x"}}, "kubeconfigPath"),
        ({"config": {"defaults": {"gatway": "istio-system/gw"}}}, "gatway"),
        (
            {"config": {"home": "hub", "clusters": [{"name": "hub", "inCluster": True, "x": 1}]}},
            "Additional property x",
        ),
        (
            {"config": {"defaults": {"http": {"requestHeaders": {"rename": {}}}}}},
            "rename",
        ),
    ],
    ids=[
        "top-level",
        "service",
        "securityContext",
        "auth",
        "serviceMonitor",
        "clusters.yaml-typo",
        "clusters.yaml-unknown",
        "clusters.yaml-defaults",
        "clusters.yaml-cluster",
        "clusters.yaml-http",
    ],
)
def test_schema_rejects_unknown_keys(template, values: dict[str, Any], message: str) -> None:
    result = template(values=values)
    assert result.returncode != 0, f"helm template accepted {values}"
    assert "Additional property" in result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    "values",
    [
        {"replicaCount": "two"},
        {"service": {"name": "Proxy_API"}},
        {"logLevel": "loud"},
        {"podAntiAffinityPreset": "sometimes"},
        {"config": {"home": "hub", "clusters": []}},
        {"config": {"clusters": [{"name": "hub", "inCluster": True}], "home": None}},
        {"config": {"home": "hub", "clusters": [{"inCluster": True}]}},
        {"config": {"home": "hub", "clusters": [{"name": "hub", "userService": {"port": "x"}}]}},
        {"config": {"home": "hub", "clusters": [
            {"name": "hub", "inCluster": True},
            {"name": "east", "context": "east", "ingressPublicUrl": "https://east.example.org"}]}},
        {"config": {"home": "hub", "clusters": [
            {"name": "hub", "inCluster": True},
            {"name": "east", "context": "east", "ingressPublicUrl": "https://east.example.org",
             "userService": {"port": 8888}}]}},
        {"config": {"defaults": {"gateway": "jupyterhub-gateway"}}},
        {"config": {"defaults": {"hosts": ["https://hub.example.org"]}}},
        {"config": {"defaults": {"hosts": []}}},
        {"config": {"home": "hub", "clusters": [{"name": "h" * 41, "inCluster": True}]}},
        {"config": {"instance": "Not_A_Label"}},
        {"rbac": {"gatewayNamespaces": ["Istio System"]}},
    ],
    ids=[
        "replicaCount-type",
        "service-name",
        "logLevel",
        "antiAffinity",
        "no-clusters",
        "no-home",
        "cluster-without-name",
        "userService-port",
        "ingress-without-userService",
        "ingress-without-userService-namespace",
        "gateway-without-namespace",
        "host-with-scheme",
        "no-hosts",
        "cluster-name-too-long",
        "instance",
        "gatewayNamespaces",
    ],
)
def test_schema_rejects_invalid_values(template, values: dict[str, Any]) -> None:
    result = template(values=values)
    assert result.returncode != 0, f"helm template accepted {values}"


def test_config_optional_keys_pass_through(render) -> None:
    config = {
        "instance": "staging",
        "home": "hub",
        "defaults": {"namespace": "other", "shards": 8, "hosts": ["*.hub.example.org"]},
        "clusters": [{"name": "hub", "inCluster": True, "edge": False}],
    }
    assert clusters_yaml(render(values={"config": config})) == {
        **config,
        "defaults": {**DEFAULTS["config"]["defaults"], **config["defaults"]},
    }


def test_home_must_name_a_cluster(template) -> None:
    result = template(values={"config": {"home": "nope"}})
    assert result.returncode != 0
    assert 'config.home "nope"' in result.stderr


def test_cluster_names_unique(template) -> None:
    clusters = [{"name": "hub", "inCluster": True}, {"name": "hub", "context": "x"}]
    result = template(values={"config": {"home": "hub", "clusters": clusters}})
    assert result.returncode != 0
    assert "more than once" in result.stderr


def test_conflicting_kubeconfig_path(template) -> None:
    values = {"kubeconfig": {"existingSecret": "kc"}, "config": {"kubeconfig": "/elsewhere"}}
    result = template(values=values)
    assert result.returncode != 0
    assert "config.kubeconfig" in result.stderr


def test_token_secret_name_required(template) -> None:
    result = template(values={"auth": {"existingSecret": {"name": ""}}})
    assert result.returncode != 0
    assert "auth.existingSecret.name" in result.stderr


def test_service_namespaces_rbac(render) -> None:
    """Reading Services (for the destination checks): the release namespace always, and each
    of rbac.serviceNamespaces once; read-only; rbac.create: false drops them."""
    rendered = render(values={"rbac": {"serviceNamespaces": ["jupyter-users", NAMESPACE]}})
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in rendered.all("Role")
             if r["metadata"]["name"].endswith("-services")}
    assert set(roles) == {(NAMESPACE, f"{OUTSIDE_PREFIX}-services"),
                          ("jupyter-users", f"{OUTSIDE_PREFIX}-services")}
    for role in roles.values():
        assert role["rules"] == [{"apiGroups": [""], "resources": ["services"],
                                  "verbs": ["get", "list", "watch"]}]
    bindings = {(b["metadata"]["namespace"], b["metadata"]["name"]): b
                for b in rendered.all("RoleBinding")}
    for key in roles:
        assert bindings[key]["roleRef"]["name"] == f"{OUTSIDE_PREFIX}-services"
        assert bindings[key]["subjects"] == [
            {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    off = render(values={"rbac": {"create": False, "serviceNamespaces": ["jupyter-users"]}})
    assert not off.has("Role") and not off.has("RoleBinding")


def test_gateway_namespaces_rbac(render) -> None:
    rendered = render("multi-cluster.yaml", namespace="federation")
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in rendered.all("Role")}
    assert set(roles) == {
        ("federation", FULLNAME),
        ("istio-system", f"{FULLNAME}-federation-gateways"),
        ("istio-system", f"{FULLNAME}-federation-host-claims"),
        ("federation", f"{FULLNAME}-federation-services"),
    }
    gateway_role = roles[("istio-system", f"{FULLNAME}-federation-gateways")]
    assert gateway_role["rules"] == [EXPECTED_RULES[1]]
    assert roles[("federation", FULLNAME)]["rules"] == EXPECTED_RULES
    bindings = {
        (b["metadata"]["namespace"], b["metadata"]["name"]): b for b in rendered.all("RoleBinding")
    }
    binding = bindings[("istio-system", f"{FULLNAME}-federation-gateways")]
    assert binding["roleRef"]["name"] == f"{FULLNAME}-federation-gateways"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": "federation"}
    ]
    # The release namespace is already covered by the main Role; rbac off drops them all.
    same_ns = render(values={"rbac": {"gatewayNamespaces": [NAMESPACE]}})
    assert sorted(r["metadata"]["name"] for r in same_ns.all("Role")) == [
        FULLNAME, f"{OUTSIDE_PREFIX}-host-claims", f"{OUTSIDE_PREFIX}-services"]
    off = render(values={"rbac": {"create": False, "gatewayNamespaces": ["istio-system"]}})
    assert not off.has("Role") and not off.has("RoleBinding")


def test_two_hubs_with_the_same_release_name_share_no_rbac_object(render) -> None:
    """Two hubs on the same clusters, each installed as release "fed" in its own namespace: the
    objects they keep in shared namespaces (the gateway's, the claims') and cluster-wide must
    not be the same objects, or the second install fails (or its binding replaces the first's
    subject)."""
    values = {"rbac": {"gatewayNamespaces": ["istio-system"], "serviceNamespaces": ["jupyter-users"]}}

    def names(namespace: str) -> set[tuple[str, str, str]]:
        rendered = render("multi-cluster.yaml", namespace=namespace, values=values)
        return {(d["kind"], d["metadata"].get("namespace", namespace), d["metadata"]["name"])
                for d in rendered.docs if d["kind"] in
                ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")}

    first, second = names("hub-a"), names("hub-b")
    assert any(ns == "istio-system" for _, ns, _ in first)  # the case this is about
    assert first.isdisjoint(second), sorted(first & second)


# ------------------------------------------------- agreement with the service


@pytest.mark.parametrize("values_name", [None, *VALUES_FILES])
def test_rendered_config_is_accepted_by_the_service(render, values_name: str | None) -> None:
    """The ConfigMap's clusters.yaml passes the service's own validation."""
    config_module = pytest.importorskip("federation.config")
    rendered = render(*([values_name] if values_name else []))
    registry = config_module.parse_registry(
        clusters_yaml(rendered), source="clusters.yaml", check_kubeconfig=False
    )
    config = clusters_yaml(rendered)
    assert registry.home == config["home"]
    assert set(registry.clusters) == {c["name"] for c in config["clusters"]}
    home = registry.clusters[registry.home]
    # The chart's Role covers where the home cluster's objects go.
    assert home.namespace == config["defaults"]["namespace"]


def _schema_of_model(schema: dict[str, Any], model: Any) -> None:
    fields = set(model.model_fields)
    assert set(schema["properties"]) == fields, model.__name__
    if model.model_config.get("extra") == "forbid":
        assert schema["additionalProperties"] is False, model.__name__


def test_schema_matches_the_service_config_model() -> None:
    """values.schema.json's `config` mirrors federation.config: same keys at every level."""
    config_module = pytest.importorskip("federation.config")
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    config = schema["properties"]["config"]
    _schema_of_model(config, config_module.ClustersFile)
    _schema_of_model(config["properties"]["defaults"], config_module.ClusterSettings)
    cluster = config["properties"]["clusters"]["items"]
    _schema_of_model(cluster, config_module.ClusterEntry)
    _schema_of_model(cluster["properties"]["userService"], config_module.UserService)
    http = cluster["properties"]["http"]
    _schema_of_model(http, config_module.HttpOptions)
    _schema_of_model(http["properties"]["requestHeaders"], config_module.RequestHeaders)
    for activity in (cluster, config["properties"]["defaults"]):
        _schema_of_model(activity["properties"]["activity"], config_module.ActivityOptions)
    required = {n for n, f in config_module.ClustersFile.model_fields.items() if f.is_required()}
    assert set(config["required"]) == required


def test_schema_closed_everywhere() -> None:
    """Every object of the schema rejects unknown keys, except pass-through k8s fragments."""
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    open_paths = []

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                if node.get("additionalProperties") is not False:
                    open_paths.append(path)
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{path}/{i}")

    walk(schema, "")
    assert schema["additionalProperties"] is False
    assert open_paths == []


# ---------------------------------------------------------------------- NOTES


def render_notes(render, tmp_path: Path, **kwargs: Any) -> str:
    """Render NOTES.txt by wrapping it in a ConfigMap of a copy of the chart."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART_DIR, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    (chart / "templates" / "NOTES.txt").unlink()
    (chart / "templates" / "_notes_under_test.tpl").write_text(
        '{{- define "notes-under-test" -}}\n' + notes + "\n{{- end }}\n"
    )
    (chart / "templates" / "notes-under-test.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-under-test\n"
        'data:\n  notes: {{ include "notes-under-test" . | quote }}\n'
    )
    rendered = render(chart=chart, **kwargs)
    return rendered.one("ConfigMap", "notes-under-test")["data"]["notes"]


def test_notes_tell_the_hub_settings(render, tmp_path: Path) -> None:
    notes = render_notes(render, tmp_path)
    assert "should_start: false" in notes
    assert f"api_url: http://federation-proxy-api.{NAMESPACE}.svc:8001" in notes
    assert "hub.config.ConfigurableHTTPProxy.should_start: false" in notes
    assert (
        f"hub.config.ConfigurableHTTPProxy.api_url: http://federation-proxy-api.{NAMESPACE}.svc:8001" in notes
    )
    assert "proxy.chp" in notes
    assert "WARNING" not in notes


def test_notes_keep_configurable_http_proxy_running_as_the_guide_does(render,
                                                                      tmp_path: Path) -> None:
    """The guide keeps z2jh's proxy running (its rollback points the hub back at it): NOTES.txt
    must not tell the operator to turn it off."""
    notes = " ".join(render_notes(render, tmp_path).split())
    guide = " ".join((CHART_DIR.parents[1] / "docs" / "operations.md").read_text().split())
    assert "Keep z2jh's configurable-http-proxy (proxy.chp) running" in notes
    assert "rolling back needs it (docs/operations.md, section 9" in notes
    assert "disable" not in notes.lower() and "turn proxy.chp off" not in notes
    assert "z2jh's own proxy pod keeps running but carries no traffic" in guide
    assert "## 9. Uninstall, or roll back to configurable-http-proxy" in guide
    assert "put back z2jh's proxy and KubeSpawner" in guide


def test_notes_follow_service_and_replicas(render, tmp_path: Path) -> None:
    notes = render_notes(
        render,
        tmp_path,
        namespace="hubns",
        values={"service": {"name": "federation-proxy-api", "port": 9001}, "replicaCount": 1},
    )
    assert "api_url: http://federation-proxy-api.hubns.svc:9001" in notes
    assert "WARNING: replicaCount is 1" in notes


def test_notes_warn_when_home_objects_leave_the_role(render, tmp_path: Path) -> None:
    values = {"config": {"defaults": {"namespace": "elsewhere"}}}
    notes = render_notes(render, tmp_path, values=values)
    assert "namespace elsewhere, but the chart's Role" in notes
    assert "federation check --config /etc/federation/clusters.yaml" in notes


def test_values_file_has_no_duplicate_keys() -> None:
    """PyYAML keeps the last of two equal keys silently; a duplicate block hides settings."""
    from pathlib import Path

    import yaml

    class Strict(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        keys = [loader.construct_object(k) for k, _ in node.value]
        dupes = {k for k in keys if keys.count(k) > 1}
        assert not dupes, f"duplicate keys {dupes} at line {node.start_mark.line + 1}"
        return loader.construct_mapping(node)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    chart = Path(__file__).resolve().parents[2] / "charts" / "federation-proxy"
    for path in [chart / "values.yaml", *sorted((Path(__file__).parent / "values").glob("*.yaml"))]:
        yaml.load(path.read_text(), Loader=Strict)  # noqa: S506 - a SafeLoader subclass


LEASE_RULES = [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["get", "create", "update", "delete"]}]


@pytest.mark.parametrize(("home", "namespace"), [
    ({}, "istio-system"),  # the gateway's namespace
    ({"gateway": "ingress/gw"}, "ingress"),  # the home cluster's own gateway
    ({"claimNamespace": "claims"}, "claims"),
])
def test_host_claims_rbac_in_the_claim_namespace(render, home: dict[str, Any],
                                                 namespace: str) -> None:
    """The Leases that claim the home cluster's gateway hosts: get, create, renew, release,
    in the home cluster's claim namespace, bound to the release's account."""
    values = {"config": {"home": "hub", "defaults": {"gateway": "istio-system/jupyterhub-gateway",
                                                      "hosts": ["hub.example.org"]},
                         "clusters": [{"name": "hub", "inCluster": True, **home}]}}
    rendered = render(values=values)
    role = rendered.one("Role", f"{OUTSIDE_PREFIX}-host-claims")
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == LEASE_RULES
    binding = rendered.one("RoleBinding", f"{OUTSIDE_PREFIX}-host-claims")
    assert binding["metadata"]["namespace"] == namespace
    assert binding["roleRef"]["name"] == f"{OUTSIDE_PREFIX}-host-claims"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": FULLNAME, "namespace": NAMESPACE}]
    from federation.config import parse_registry

    registry = parse_registry(clusters_yaml(rendered), check_kubeconfig=False)
    assert registry.clusters["hub"].claim_namespace == namespace  # where the service looks
