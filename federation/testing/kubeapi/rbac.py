"""RBAC for the tokens a test adds: the rules of the Roles and ClusterRoles bound to one
ServiceAccount in a set of manifests, and the check the apiserver makes with them (403 with its
message when no rule allows a request).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Rule:
    namespace: str | None  # None: a ClusterRole bound cluster-wide
    groups: frozenset[str]
    resources: frozenset[str]
    verbs: frozenset[str]
    names: frozenset[str]  # resourceNames; empty: any

    def allows(self, verb: str, group: str, resource: str, namespace: str, name: str) -> bool:
        if self.namespace is not None and self.namespace != namespace:
            return False
        return (
            _matches(self.verbs, verb)
            and _matches(self.groups, group)
            and _matches(self.resources, resource)
            and (not self.names or name in self.names)
        )


def _matches(allowed: frozenset[str], value: str) -> bool:
    return "*" in allowed or value in allowed


def _rules(role: Mapping[str, Any], namespace: str | None) -> list[Rule]:
    return [
        Rule(namespace, frozenset(r.get("apiGroups") or ()), frozenset(r.get("resources") or ()),
             frozenset(r.get("verbs") or ()), frozenset(r.get("resourceNames") or ()))
        for r in role.get("rules") or []
    ]


def _binds(binding: Mapping[str, Any], account: str, account_namespace: str) -> bool:
    return any(
        s.get("kind") == "ServiceAccount" and s.get("name") == account
        and s.get("namespace", (binding.get("metadata") or {}).get("namespace")) == account_namespace
        for s in binding.get("subjects") or []
    )


def rules_for(documents: Iterable[Any], account: str, account_namespace: str) -> list[Rule]:
    """The rules the manifests grant ServiceAccount ``account_namespace/account``."""
    docs = [d for d in documents if isinstance(d, dict)]
    roles = {(d["metadata"].get("namespace"), d["metadata"]["name"]): d
             for d in docs if d.get("kind") == "Role"}
    cluster_roles = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ClusterRole"}
    rules: list[Rule] = []
    for binding in docs:
        kind = binding.get("kind")
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not _binds(binding, account, account_namespace):
            continue
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if kind == "RoleBinding" else None
        if ref["kind"] == "ClusterRole":
            role = cluster_roles.get(ref["name"])
        else:
            role = roles.get((scope, ref["name"]))
        if role is not None:
            rules += _rules(role, scope)
    return rules


def forbidden_message(user: str, verb: str, group: str, resource: str, namespace: str,
                      name: str) -> str:
    """The apiserver's text for a request no rule allows."""
    what = f'{resource} "{name}"' if name else resource
    where = f' in the namespace "{namespace}"' if namespace else " at the cluster scope"
    return (f'{what} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
            f'in API group "{group}"{where}')
