"""Resource types (group, plural, kind, scope, schemas) and the stored objects of each, with
the Status errors that name them.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .common import _api_version, _APIError, _dumps
from .schema import _Schema

# Kinds of well-known resources, so lists of empty collections carry the right kind without a CRD.
_KNOWN_KINDS: dict[tuple[str, str], tuple[str, bool]] = {
    ("networking.istio.io", "virtualservices"): ("VirtualService", True),
    ("networking.istio.io", "destinationrules"): ("DestinationRule", True),
    ("networking.istio.io", "gateways"): ("Gateway", True),
    ("networking.istio.io", "serviceentries"): ("ServiceEntry", True),
    ("networking.istio.io", "sidecars"): ("Sidecar", True),
    ("networking.istio.io", "envoyfilters"): ("EnvoyFilter", True),
    ("networking.istio.io", "workloadentries"): ("WorkloadEntry", True),
    ("security.istio.io", "authorizationpolicies"): ("AuthorizationPolicy", True),
    ("security.istio.io", "peerauthentications"): ("PeerAuthentication", True),
    ("gateway.networking.k8s.io", "httproutes"): ("HTTPRoute", True),
    ("gateway.networking.k8s.io", "gateways"): ("Gateway", True),
    ("gateway.networking.k8s.io", "backendtlspolicies"): ("BackendTLSPolicy", True),
    ("gateway.networking.k8s.io", "referencegrants"): ("ReferenceGrant", False),
    ("discovery.k8s.io", "endpointslices"): ("EndpointSlice", False),
    ("coordination.k8s.io", "leases"): ("Lease", False),
    ("", "configmaps"): ("ConfigMap", False),
    ("", "secrets"): ("Secret", False),
    ("", "services"): ("Service", True),
    ("", "endpoints"): ("Endpoints", False),
    ("", "pods"): ("Pod", True),
    ("", "events"): ("Event", False),
    ("", "serviceaccounts"): ("ServiceAccount", False),
    ("", "persistentvolumeclaims"): ("PersistentVolumeClaim", True),
    ("networking.k8s.io", "ingresses"): ("Ingress", True),
}


def _guess_kind(plural: str) -> str:
    # Best effort for resources we know nothing about; the first create teaches us the real kind.
    if plural.endswith("ies"):
        singular = plural[:-3] + "y"
    elif plural.endswith(("sses", "ches", "shes", "xes")):
        singular = plural[:-2]
    elif plural.endswith("s"):
        singular = plural[:-1]
    else:
        singular = plural
    return singular[:1].upper() + singular[1:]


@dataclass(frozen=True, slots=True)
class _Stored:
    """A stored object and its encoding; never mutated once stored, so readers need no lock."""

    obj: dict[str, Any]
    raw: bytes


@dataclass(eq=False)
class _Resource:
    group: str
    plural: str
    kind: str
    kind_known: bool = False
    namespaced: bool = True
    declared: bool = False  # from a CRD file (or built in): only its versions are served
    status_subresource: bool = False
    has_generation: bool = True
    schemas: dict[str, _Schema | None] = field(default_factory=dict)
    versions: set[str] = field(default_factory=set)
    short_names: tuple[str, ...] = ()
    strategic: bool = False  # accepts strategic merge patches (built-in kinds, not CRDs)
    categories: tuple[str, ...] = ()
    objects: dict[tuple[str, str], _Stored] = field(default_factory=dict)
    # The keys of ``objects`` in order, so that a page starts by a binary search and reads only
    # its own items, as the API server reads etcd by key range (a list pages in linear time).
    order: list[tuple[str, str]] = field(default_factory=list)

    def put(self, key: tuple[str, str], stored: _Stored) -> None:
        """Store an object under its key (the store's lock held)."""
        if key not in self.objects:
            insort(self.order, key)
        self.objects[key] = stored

    def drop(self, key: tuple[str, str]) -> None:
        """Forget the object under ``key``, if any (the store's lock held)."""
        if self.objects.pop(key, None) is not None:
            del self.order[bisect_left(self.order, key)]

    def _span(self, namespace: str | None, after: tuple[str, str] | None) -> tuple[int, int]:
        """The positions in ``order`` of the keys in ``namespace`` (None: all) past ``after``."""
        lo, hi = 0, len(self.order)
        if namespace is not None:
            lo = bisect_left(self.order, (namespace, ""))
            hi = bisect_left(self.order, (namespace + "\0",))  # past every key of namespace
        if after is not None:
            lo = max(lo, bisect_right(self.order, after))
        return lo, max(lo, hi)

    def walk(
        self, namespace: str | None, after: tuple[str, str] | None
    ) -> Iterator[tuple[tuple[str, str], _Stored]]:
        """The objects in key order from just past ``after`` (the store's lock held)."""
        lo, hi = self._span(namespace, after)
        for i in range(lo, hi):
            key = self.order[i]
            yield key, self.objects[key]

    def count_after(self, namespace: str | None, after: tuple[str, str] | None) -> int:
        """How many objects ``walk`` would yield, without walking them."""
        lo, hi = self._span(namespace, after)
        return hi - lo

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def details(self, name: str, *, kind: str | None = None) -> dict[str, Any]:
        details: dict[str, Any] = {"name": name}
        if self.group:
            details["group"] = self.group
        details["kind"] = kind or self.plural
        return details

    def not_found(self, name: str) -> _APIError:
        return _APIError(404, f'{self.qualified} "{name}" not found', details=self.details(name))

    def conflict(self, name: str, why: str) -> _APIError:
        return _APIError(
            409,
            f'Operation cannot be fulfilled on {self.qualified} "{name}": {why}',
            details=self.details(name),
        )

    def invalid(self, name: str, causes: list[tuple[str, str]]) -> _APIError:
        """causes: (field, message) pairs, rendered the way the apiserver renders them."""
        rendered = [f"{f}: {m}" if f else m for f, m in causes]
        text = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
        qualified_kind = f"{self.kind}.{self.group}" if self.group else self.kind
        details = self.details(name, kind=self.kind)
        details["causes"] = [
            {"reason": "FieldValueInvalid", "message": m, "field": f} for f, m in causes
        ]
        return _APIError(422, f'{qualified_kind} "{name}" is invalid: {text}', details=details)

    def render(self, stored: _Stored, version: str) -> bytes:
        wanted = _api_version(self.group, version)
        if stored.obj.get("apiVersion") == wanted:
            return stored.raw
        return _dumps({**stored.obj, "apiVersion": wanted})


_OBJECT_META_FIELDS = frozenset(
    {
        "name",
        "generateName",
        "namespace",
        "selfLink",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "labels",
        "annotations",
        "ownerReferences",
        "finalizers",
        "managedFields",
    }
)

