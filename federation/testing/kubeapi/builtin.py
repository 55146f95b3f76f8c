"""The resource types a real cluster serves before anyone creates an object: the core kinds a
spawner writes (with schemas, so unknown fields are pruned and refused under
``fieldValidation=Strict``), and the Istio and Gateway API kinds, with the short names and
categories kubectl resolves (``kubectl get vs``, ``kubectl get all``).

The schemas of the core kinds are derived from the model classes of the official ``kubernetes``
Python client (generated from the apiserver's OpenAPI), so they list the fields a real server
knows.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class BuiltinKind:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    model: str | None = None  # the kubernetes client model: a schema, pruning, strict validation

    @property
    def crd(self) -> bool:
        """Defined by a CustomResourceDefinition in a real cluster (no strategic merge patch)."""
        return self.group in ("networking.istio.io", "gateway.networking.k8s.io")


_ISTIO = ("istio-io", "networking-istio-io")
_GATEWAY_API = ("gateway-api",)


BUILTIN_KINDS: tuple[BuiltinKind, ...] = (
    BuiltinKind("", "v1", "pods", "Pod", short_names=("po",), categories=("all",),
                status_subresource=True, model="V1Pod"),
    BuiltinKind("", "v1", "services", "Service", short_names=("svc",), categories=("all",),
                status_subresource=True, model="V1Service"),
    BuiltinKind("", "v1", "serviceaccounts", "ServiceAccount", short_names=("sa",),
                model="V1ServiceAccount"),
    BuiltinKind("", "v1", "configmaps", "ConfigMap", short_names=("cm",), model="V1ConfigMap"),
    BuiltinKind("", "v1", "secrets", "Secret", model="V1Secret"),
    BuiltinKind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim",
                short_names=("pvc",), status_subresource=True, model="V1PersistentVolumeClaim"),
    BuiltinKind("", "v1", "endpoints", "Endpoints", short_names=("ep",)),
    BuiltinKind("", "v1", "events", "Event", short_names=("ev",)),
    BuiltinKind("networking.k8s.io", "v1", "ingresses", "Ingress", short_names=("ing",),
                status_subresource=True, model="V1Ingress"),
    BuiltinKind("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice"),
    BuiltinKind("coordination.k8s.io", "v1", "leases", "Lease", model="V1Lease"),
    # Stored, not enforced (tokens get their rules through add_token): the guide's manifests
    # apply here as in a real cluster.
    BuiltinKind("rbac.authorization.k8s.io", "v1", "roles", "Role", model="V1Role"),
    BuiltinKind("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding",
                model="V1RoleBinding"),
    BuiltinKind("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole",
                namespaced=False, model="V1ClusterRole"),
    BuiltinKind("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding",
                namespaced=False, model="V1ClusterRoleBinding"),
    BuiltinKind("networking.istio.io", "v1", "virtualservices", "VirtualService",
                short_names=("vs",), categories=_ISTIO, status_subresource=True),
    BuiltinKind("networking.istio.io", "v1", "destinationrules", "DestinationRule",
                short_names=("dr",), categories=_ISTIO, status_subresource=True),
    BuiltinKind("networking.istio.io", "v1", "serviceentries", "ServiceEntry",
                short_names=("se",), categories=_ISTIO, status_subresource=True),
    BuiltinKind("networking.istio.io", "v1", "gateways", "Gateway", short_names=("gw",),
                categories=_ISTIO, status_subresource=True),
    BuiltinKind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute",
                categories=_GATEWAY_API, status_subresource=True),
    BuiltinKind("gateway.networking.k8s.io", "v1", "gateways", "Gateway", short_names=("gtw",),
                categories=_GATEWAY_API, status_subresource=True),
)


# Short names and categories of the CRD-defined kinds, for discovery when no CRD file was loaded.
NAMES: dict[tuple[str, str], tuple[tuple[str, ...], tuple[str, ...]]] = {
    (k.group, k.plural): (k.short_names, k.categories) for k in BUILTIN_KINDS
}


_LIST = re.compile(r"^(?:list|List)\[(.+)\]$")
_DICT = re.compile(r"^(?:dict\(str, (.+)\)|Dict\[str, (.+)\])$")
_SCALARS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean",
            "datetime": "string", "date": "string", "bytearray": "string",
            "bytes": "string"}


def _type_schema(type_name: str, seen: frozenset[str]) -> dict[str, Any]:
    if type_name in _SCALARS:
        return {"type": _SCALARS[type_name]}
    if type_name == "object":  # IntOrString, Quantity, RawExtension: any value
        return {"x-kubernetes-preserve-unknown-fields": True}
    m = _LIST.match(type_name)
    if m:
        return {"type": "array", "items": _type_schema(m.group(1), seen)}
    m = _DICT.match(type_name)
    if m:
        return {"type": "object",
                "additionalProperties": _type_schema(m.group(1) or m.group(2), seen)}
    return _model_schema(type_name, seen)


def _model_schema(name: str, seen: frozenset[str] = frozenset()) -> dict[str, Any]:
    from kubernetes.client import models

    if name in seen:  # a recursive type: accept what is there
        return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    model = getattr(models, name)
    seen = seen | {name}
    properties = {
        model.attribute_map[attr]: _type_schema(type_name, seen)
        for attr, type_name in model.openapi_types.items()
    }
    return {"type": "object", "properties": properties}


@functools.cache
def model_schema(name: str) -> dict[str, Any]:
    """The structural schema of a kubernetes client model (``"V1Pod"``), built once."""
    return _model_schema(name)


def schema_available() -> bool:
    try:
        import kubernetes.client.models  # noqa: F401
    except ImportError:
        return False
    return True
