"""The cluster registry: ``clusters.yaml`` parsed, validated and resolved.

Every error names the file, the key and the fix, because an operator reads it in a crash-looping
pod's log. Loading is pure (no network); connecting happens in :mod:`federation.kube`.
"""

from __future__ import annotations

import difflib
import os
import re
import ssl
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DURATION = re.compile(r"^\d+(\.\d+)?(ms|s|m|h)$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
HOST_PATTERN = re.compile(r"^(\*|(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$")
SECTION_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class UserService(_Strict):
    """Where a cluster's user Services live: named as MultiClusterKubeSpawner names them, in a
    namespace the operator names. No default namespace: MultiClusterKubeSpawner 0.2 writes into
    the namespace of the hub's kubeconfig context, which only the operator knows, and a guessed
    one routes every user to a Service that does not exist."""

    name: str = "jupyter-{username}--{servername}"
    namespace: str | None = None
    port: int = Field(default=8888, ge=1, le=65535)

    @field_validator("name", "namespace")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        unknown = set(PLACEHOLDER.findall(value)) - {"username", "servername"}
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {sorted(unknown)}; only {{username}} and {{servername}}"
            )
        return value


class RequestHeaders(_Strict):
    set: dict[str, str] = Field(default_factory=dict)
    add: dict[str, str] = Field(default_factory=dict)
    remove: list[str] = Field(default_factory=list)

    @field_validator("set", "add")
    @classmethod
    def _values(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            unknown = set(PLACEHOLDER.findall(text)) - {"prefix"}
            if unknown:
                raise ValueError(f"header {name}: unknown placeholder(s) {sorted(unknown)}; only {{prefix}}")
        return value

    @field_validator("remove")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
        return value


class HttpOptions(_Strict):
    """Per-cluster HTTP options applied to every route rule written there."""

    stripPrefix: bool = False
    requestHeaders: RequestHeaders = Field(default_factory=RequestHeaders)
    timeout: str | None = None

    @field_validator("timeout")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not DURATION.match(value):
            raise ValueError(f"{value!r} is not a duration like '30s', '500ms', '5m'")
        return value


# -- traffic activity (federation/activity.py) --------------------------------------------------

ACTIVITY_PLACEHOLDERS = {"window", "cluster", "gateway_workload"}


class ActivityOptions(_Strict):
    """Where a cluster's traffic activity is read: its mesh's Prometheus (or Thanos, Mimir).

    Every key is optional here, so ``defaults`` can hold the shared ones; the cluster's own keys
    win key by key.
    """

    enabled: bool | None = None
    prometheusUrl: str | None = None
    query: str | None = None
    gatewayWorkload: str | None = None
    bearerTokenFile: str | None = None
    caFile: str | None = None
    timeout: float | None = Field(None, gt=0, le=300)
    headers: dict[str, str] | None = None

    @field_validator("prometheusUrl")
    @classmethod
    def _prom_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        origin_of(value)  # raises ValueError with a readable message
        parts = urlsplit(value)
        if parts.username or parts.password:
            # The URL is shown at /clusters and in logs: credentials belong in a file.
            raise ValueError("credentials in the URL are not allowed: use bearerTokenFile")
        if parts.query or parts.fragment:
            raise ValueError("give the base URL only (no ?query or #fragment); /api/v1/... is appended")
        return value

    @field_validator("query")
    @classmethod
    def _query(cls, value: str | None) -> str | None:
        if value is None:
            return value
        template = string.Template(value)
        if not template.is_valid():
            raise ValueError("a '$' that is not a placeholder: write '$$' for a literal '$'")
        used = set(template.get_identifiers())
        unknown = used - ACTIVITY_PLACEHOLDERS
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {sorted(unknown)}; only "
                + ", ".join("${" + p + "}" for p in sorted(ACTIVITY_PLACEHOLDERS))
            )
        if "window" not in used:
            raise ValueError("the query must use ${window} as its range, e.g. [${window}]")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name in value or {}:
            if not HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
            if name.lower() in ("authorization", "cookie"):
                raise ValueError(f"{name} would be shown in plain text: use bearerTokenFile")
        return value


@dataclass(frozen=True)
class Activity:
    """A cluster's resolved activity source (see :mod:`federation.activity`)."""

    prometheus_url: str
    query: str | None  # None: the default query
    gateway_workload: str
    bearer_token_file: str | None
    ca_file: str | None
    timeout: float
    headers: tuple[tuple[str, str], ...]


def resolve_activity(
    source: str, cluster: str, defaults: ActivityOptions | None, own: ActivityOptions | None
) -> Activity | None:
    merged = {
        **(defaults.model_dump(exclude_none=True) if defaults else {}),
        **(own.model_dump(exclude_none=True) if own else {}),
    }
    if not merged.get("enabled", True):
        return None
    url = merged.get("prometheusUrl")
    if url is None:
        if own is None:
            return None  # defaults may hold shared keys for the clusters that name a Prometheus
        raise ConfigError(
            f"{source}: clusters[{cluster}].activity.prometheusUrl: missing; set it on the cluster "
            "or under defaults.activity (or enabled: false to read no activity for this cluster)"
        )
    return Activity(
        prometheus_url=url,
        query=merged.get("query"),
        gateway_workload=merged.get("gatewayWorkload", "istio-ingressgateway"),
        bearer_token_file=merged.get("bearerTokenFile"),
        ca_file=merged.get("caFile"),
        timeout=merged.get("timeout", 10.0),
        headers=tuple(sorted((merged.get("headers") or {}).items())),
    )


def check_activity_files(source: str, cluster: str, activity: Activity) -> None:
    """The token and CA files exist and the CA parses: refused at load, not at the first read."""
    where = f"{source}: clusters[{cluster}].activity"
    if activity.bearer_token_file is not None:
        path = Path(activity.bearer_token_file)
        if not os.access(path, os.R_OK) or not path.is_file():
            raise ConfigError(
                f"{where}.bearerTokenFile: {path} is not a readable file; mount the token there "
                "or remove the key"
            )
    if activity.ca_file is not None:
        try:
            ssl.create_default_context(cafile=activity.ca_file)
        except (OSError, ssl.SSLError):
            raise ConfigError(
                f"{where}.caFile: {activity.ca_file} is not a readable PEM CA bundle; "
                "point it at the CA that signed Prometheus's certificate or remove the key"
            ) from None


class ClusterSettings(_Strict):
    """Keys allowed both under ``defaults`` and on each cluster."""

    namespace: str | None = None
    gateway: str | None = None
    hosts: list[str] | None = None
    clusterDomain: str | None = None
    # The first release's fixed shard count: still accepted so that its files load, but
    # ignored (shards now split as they grow; FEDERATION_SHARD_ROUTES sizes them).
    shards: int | None = Field(None, ge=1, le=1024)
    http: HttpOptions | None = None
    activity: ActivityOptions | None = None
    # Which objects carry the routes: Istio VirtualServices, or one Gateway API HTTPRoute per
    # route attached to ``gateway`` (a gateway.networking.k8s.io Gateway), on ``sectionName``.
    backend: Literal["istio", "gateway-api"] | None = None
    sectionName: str | None = None
    # gateway-api: how HTTPRoutes reach hosts outside the cluster (other clusters' ingresses,
    # external targets): an ExternalName Service (portable where the implementation accepts
    # it), or Istio's Hostname backendRef with a ServiceEntry (Istio only).
    externalBackend: Literal["externalName", "istioHostname"] | None = None
    # Where the Leases that claim this cluster's gateway hosts live (federation/claims.py):
    # a namespace every hub bound to the gateway can reach; default: the gateway's namespace.
    claimNamespace: str | None = None

    @field_validator("sectionName")
    @classmethod
    def _section(cls, value: str | None) -> str | None:
        if value is not None and (len(value) > 253 or not SECTION_NAME.match(value)):
            raise ValueError(f"{value!r} is not a listener name (lower-case DNS subdomain)")
        return value

    @field_validator("namespace", "claimNamespace")
    @classmethod
    def _ns(cls, value: str | None) -> str | None:
        if value is not None and not DNS_LABEL.match(value):
            raise ValueError(f"{value!r} is not a valid namespace name (DNS-1123 label)")
        return value

    @field_validator("gateway")
    @classmethod
    def _gw(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^[a-z0-9][-a-z0-9.]*/[a-z0-9][-a-z0-9.]*$", value):
            raise ValueError(f"{value!r} must be '<namespace>/<gateway name>'")
        return value

    @field_validator("hosts")
    @classmethod
    def _hosts(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("give at least one host")
            for host in value:
                if not HOST_PATTERN.match(host):
                    raise ValueError(f"{host!r} is not a host name (lower case, no port, no scheme)")
        return value


class ClusterEntry(ClusterSettings):
    name: str
    context: str | None = None
    inCluster: bool = False
    ingressPublicUrl: str | None = None
    userService: UserService | None = None
    edge: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not DNS_LABEL.match(value) or len(value) > 40:
            raise ValueError(
                f"{value!r} must be a DNS-1123 label of at most 40 characters (it is used in object names)"
            )
        return value

    @field_validator("ingressPublicUrl")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            origin_of(value)  # raises ValueError with a readable message
        return value


class ClustersFile(_Strict):
    kubeconfig: str | None = None
    instance: str = "jupyterhub"
    home: str
    defaults: ClusterSettings = Field(default_factory=lambda: ClusterSettings())
    clusters: list[ClusterEntry] = Field(min_length=1)

    @field_validator("instance")
    @classmethod
    def _instance(cls, value: str) -> str:
        if not DNS_LABEL.match(value) or len(value) > 40:
            raise ValueError(f"{value!r} must be a DNS-1123 label of at most 40 characters")
        return value


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL with default ports filled in."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an absolute http(s) URL")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{url!r} has an invalid port") from exc
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.lower(), port


@dataclass(frozen=True)
class Cluster:
    """One cluster with defaults applied: everything the rest of the service needs."""

    name: str
    context: str | None
    in_cluster: bool
    namespace: str
    gateway: str
    hosts: tuple[str, ...]
    cluster_domain: str
    http: HttpOptions
    ingress_public_url: str | None
    ingress_origin: tuple[str, str, int] | None
    user_service: UserService
    edge: bool
    activity: Activity | None = None
    backend: str = "istio"  # "istio" | "gateway-api"
    section_name: str | None = None  # gateway-api: the Gateway listener routes attach to
    external_backend: str = "externalName"  # gateway-api: "externalName" | "istioHostname"
    claim_namespace: str = ""  # the host claims' namespace ("": the gateway's, see claims.py)


@dataclass(frozen=True)
class Registry:
    """The validated cluster registry."""

    path: Path | None
    kubeconfig: str | None
    instance: str
    home: str
    clusters: dict[str, Cluster] = field(default_factory=dict)

    @property
    def home_cluster(self) -> Cluster:
        return self.clusters[self.home]

    def by_origin(self, origin: tuple[str, str, int]) -> Cluster | None:
        for cluster in self.clusters.values():
            if cluster.ingress_origin == origin:
                return cluster
        return None


def _model_at(loc: list[Any]) -> type[BaseModel] | None:
    """The model that holds the key at ``loc`` (list indexes skipped), following the schema."""
    model: type[BaseModel] | None = ClustersFile
    for part in loc[:-1]:
        if isinstance(part, int) or model is None:
            continue
        field_ = model.model_fields.get(str(part))
        model = _nested_model(field_.annotation) if field_ else None
    return model


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):  # Optional[...], list[...]
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def unknown_key_hint(loc: list[Any]) -> str:
    """"unknown key", with the known key it most likely meant (a typo such as ``contxt``)."""
    model = _model_at(loc)
    known = sorted(model.model_fields) if model else []
    close = difflib.get_close_matches(str(loc[-1]), known, n=1, cutoff=0.6)
    if close:
        return f"unknown key: did you mean {close[0]!r}? (see clusters.example.yaml)"
    where = f"; known keys here: {', '.join(known)}" if known else ""
    return f"unknown key: remove it or check its spelling{where} (see clusters.example.yaml)"


def _format_validation(path: str, exc: ValidationError, raw: dict[str, Any]) -> str:
    lines = [f"{path}: invalid configuration"]
    for error in exc.errors():
        loc = list(error["loc"])
        # Name clusters by their name rather than their index where possible.
        where_parts: list[str] = []
        for i, part in enumerate(loc):
            if loc[:i] == ["clusters"] and isinstance(part, int):
                try:
                    where_parts.append(f"[{raw['clusters'][part].get('name', part)}]")
                    continue
                except (KeyError, IndexError, TypeError, AttributeError):
                    pass
            where_parts.append(f".{part}" if where_parts else str(part))
        where = "".join(where_parts) or "(top level)"
        kind = error["type"]
        if kind == "extra_forbidden":
            hint = unknown_key_hint(loc)
        elif kind == "missing":
            hint = "required key is missing: add it (see clusters.example.yaml)"
        else:
            hint = error["msg"].removeprefix("Value error, ")
        lines.append(f"  {where}: {hint}")
    return "\n".join(lines)


def kubeconfig_paths(explicit: str | None) -> list[Path]:
    """Where the kubeconfig comes from: the file's key, then $KUBECONFIG, then ~/.kube/config."""
    if explicit:
        return [Path(os.path.expanduser(explicit))]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [Path(os.path.expanduser(p)) for p in env.split(os.pathsep) if p]
    default = Path(os.path.expanduser("~/.kube/config"))
    return [default] if default.exists() else []


def kubeconfig_contexts(paths: list[Path]) -> set[str]:
    names: set[str] = set()
    for path in paths:
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read kubeconfig ({exc.strerror})") from exc
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: kubeconfig is not UTF-8 text") from None
        except (yaml.YAMLError, RecursionError) as exc:
            raise ConfigError(f"{path}: kubeconfig is not valid YAML") from exc
        contexts = data.get("contexts") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(contexts, list | None):
            raise ConfigError(f"{path}: not a kubeconfig (a YAML mapping whose contexts is a "
                              "list)")
        for ctx in contexts or []:
            if isinstance(ctx, dict) and ctx.get("name"):
                names.add(str(ctx["name"]))
    return names


def parse_registry(raw: Any, *, source: str = "<config>", check_kubeconfig: bool = True) -> Registry:
    """Validate a parsed clusters.yaml document and apply the defaults.

    Every problem is reported at once (one line each), so that an operator fixes the file in
    one pass: the schema's, or, once the schema holds, every cross-check's."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the file must be a YAML mapping with keys home, defaults, clusters")
    try:
        doc = ClustersFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation(source, exc, raw)) from None

    problems = _entry_problems(source, doc)
    if check_kubeconfig and any(e.context for e in doc.clusters):
        problems += _context_problems(source, doc)
    clusters: dict[str, Cluster] = {}
    for entry in doc.clusters:
        try:
            clusters[entry.name] = _resolve(source, doc.defaults, entry)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return Registry(
        path=None,
        kubeconfig=doc.kubeconfig,
        instance=doc.instance,
        home=doc.home,
        clusters=clusters,
    )


def _entry_problems(source: str, doc: ClustersFile) -> list[str]:
    """Names unique, home one of them, each cluster reachable somehow and placed by its URL."""
    problems: list[str] = []
    seen: set[str] = set()
    for entry in doc.clusters:
        if entry.name in seen:
            problems.append(
                f"{source}: clusters[{entry.name}]: duplicate cluster name; every name must be unique"
            )
        seen.add(entry.name)
    if doc.home not in seen:
        problems.append(
            f"{source}: home: {doc.home!r} is not one of the clusters ({', '.join(sorted(seen))}); "
            "set home to the name of the hub's own cluster"
        )
    origins: dict[tuple[str, str, int], str] = {}
    for entry in doc.clusters:
        if entry.context is None and not entry.inCluster:
            problems.append(
                f"{source}: clusters[{entry.name}].context: missing; name the kubeconfig context "
                "(or set inCluster: true for the cluster this service runs in)"
            )
        if entry.context is not None and entry.inCluster:
            problems.append(
                f"{source}: clusters[{entry.name}]: give either context or inCluster: true, not both"
            )
        if entry.ingressPublicUrl:
            origin = origin_of(entry.ingressPublicUrl)
            if origin in origins:
                problems.append(
                    f"{source}: clusters[{entry.name}].ingressPublicUrl: same as cluster "
                    f"{origins[origin]!r}; each cluster needs its own ingress URL"
                )
            origins.setdefault(origin, entry.name)
            problems += _user_service_problems(source, entry)
        elif entry.name != doc.home and entry.edge:
            problems.append(
                f"{source}: clusters[{entry.name}].ingressPublicUrl: missing; a cluster other than "
                "home needs the public URL of its ingress (the spawner profile's ingress_public_url), "
                "or edge: false"
            )
    return problems


def _user_service_problems(source: str, entry: ClusterEntry) -> list[str]:
    """A cluster whose routes target its ingress needs the namespace of its users' Services."""
    if entry.userService is not None and entry.userService.namespace:
        return []
    return [
        f"{source}: clusters[{entry.name}].userService.namespace: missing; routes to this "
        "cluster's ingressPublicUrl go to each user's own Service, and MultiClusterKubeSpawner 0.2 "
        "creates it in the namespace of the hub's kubeconfig context for this cluster (not one "
        "namespace per user): set userService: {namespace: <that namespace>}, e.g. jupyter-users"
    ]


def _context_problems(source: str, doc: ClustersFile) -> list[str]:
    """Every named context exists in the kubeconfig (the file's key, $KUBECONFIG, ~/.kube/config)."""
    paths = kubeconfig_paths(doc.kubeconfig)
    if not paths:
        return [f"{source}: kubeconfig: no kubeconfig found (looked at the kubeconfig key, "
                "$KUBECONFIG and ~/.kube/config); set one of them"]
    try:
        known = kubeconfig_contexts(paths)
    except ConfigError as exc:
        return [str(exc)]
    return [
        f"{source}: clusters[{entry.name}].context: {entry.context!r} is not a context in "
        f"{os.pathsep.join(map(str, paths))}; use one of: {', '.join(sorted(known)) or '(none)'}"
        for entry in doc.clusters if entry.context and entry.context not in known
    ]


def _resolve(source: str, d: ClusterSettings, entry: ClusterEntry) -> Cluster:
    """One cluster with the defaults applied; ConfigError names the first key that is wrong."""

    def pick(key: str, fallback: Any) -> Any:
        value = getattr(entry, key)
        if value is None:
            value = getattr(d, key)
        return fallback if value is None else value

    gateway = pick("gateway", None)
    hosts = pick("hosts", None)
    for key, value in (("gateway", gateway), ("hosts", hosts)):
        if value is None:
            raise ConfigError(
                f"{source}: clusters[{entry.name}].{key}: missing; set it on the cluster or under defaults"
            )
    backend = pick("backend", "istio")
    return Cluster(
        name=entry.name,
        context=entry.context,
        in_cluster=entry.inCluster,
        namespace=pick("namespace", "jupyterhub"),
        gateway=gateway,
        hosts=tuple(hosts),
        cluster_domain=pick("clusterDomain", "cluster.local"),
        http=pick("http", HttpOptions()),
        ingress_public_url=entry.ingressPublicUrl,
        ingress_origin=origin_of(entry.ingressPublicUrl) if entry.ingressPublicUrl else None,
        user_service=entry.userService or UserService(),
        edge=entry.edge,
        activity=resolve_activity(source, entry.name, d.activity, entry.activity),
        backend=backend,
        section_name=_section_name(source, entry.name, backend, pick("sectionName", None)),
        external_backend=_gateway_only(source, entry.name, backend, "externalBackend",
                                       pick("externalBackend", "externalName"), "externalName"),
        claim_namespace=pick("claimNamespace", gateway.split("/", 1)[0]),
    )


def _section_name(source: str, cluster: str, backend: str, section: str | None) -> str | None:
    if section is not None and backend != "gateway-api":
        raise ConfigError(
            f"{source}: clusters[{cluster}].sectionName: only for backend: gateway-api (a listener "
            "of the Gateway named by gateway); remove it or set backend: gateway-api"
        )
    return section


def _gateway_only(source: str, cluster: str, backend: str, key: str, value: str,
                  default: str) -> str:
    if value != default and backend != "gateway-api":
        raise ConfigError(
            f"{source}: clusters[{cluster}].{key}: only for backend: gateway-api; remove it or "
            "set backend: gateway-api"
        )
    return value


def load_registry(path: str | Path, *, check_kubeconfig: bool = True) -> Registry:
    """Read and validate clusters.yaml; raise ConfigError with a fix-it message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a clusters.yaml") from None
    registry = parse_registry(raw, source=str(path), check_kubeconfig=check_kubeconfig)
    problems = []
    for cluster in registry.clusters.values():
        if cluster.activity is not None:
            # Files it names are checked here (parse_registry stays pure), not at the first read.
            try:
                check_activity_files(str(path), cluster.name, cluster.activity)
            except ConfigError as exc:
                problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    return Registry(
        path=path,
        kubeconfig=registry.kubeconfig,
        instance=registry.instance,
        home=registry.home,
        clusters=registry.clusters,
    )


