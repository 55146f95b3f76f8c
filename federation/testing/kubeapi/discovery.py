"""Discovery: ``/version``, ``/api``, ``/apis`` and each group's resource list, built from the
resource types the store knows (built-in, from CRD files, or seen in a request).
"""

from __future__ import annotations

import re
from typing import Any

from .builtin import NAMES
from .common import _api_version
from .resources import _Resource
from .store import StoreMixin


class DiscoveryMixin(StoreMixin):
    """/version, /api, /apis: what kubectl and the clients discover before they call."""

    git_version: str


    def _version(self) -> dict[str, Any]:
        m = re.match(r"v?(\d+)\.(\d+)", self.git_version)
        major, minor = (m.group(1), m.group(2)) if m else ("1", "30")
        return {
            "major": major,
            "minor": minor,
            "gitVersion": self.git_version,
            "gitCommit": "0" * 40,
            "gitTreeState": "clean",
            "buildDate": "2024-01-01T00:00:00Z",
            "goVersion": "go1.22.0",
            "compiler": "gc",
            "platform": "linux/amd64",
        }

    def _served(self) -> dict[str, dict[str, list[_Resource]]]:
        groups: dict[str, dict[str, list[_Resource]]] = {}
        with self._lock:  # versions grow under this lock
            for res in self._resources.values():
                for version in sorted(set(res.schemas) | res.versions):
                    groups.setdefault(res.group, {}).setdefault(version, []).append(res)
        return groups

    def _group(self, group: str) -> dict[str, Any]:
        versions = sorted(self._served().get(group, {}))
        if not group or not versions:
            raise self._page_not_found()
        entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": entries,
            "preferredVersion": entries[-1],
        }

    def _group_list(self) -> dict[str, Any]:
        groups = [self._group(g) for g in sorted(self._served()) if g]
        for g in groups:
            g.pop("kind")
            g.pop("apiVersion")
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        found = self._served().get(group, {}).get(version)
        if not found:
            raise self._page_not_found()
        resources = []
        for res in sorted(found, key=lambda r: r.plural):
            verbs = [
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "create",
                "update",
                "watch",
            ]
            entry: dict[str, Any] = {
                "name": res.plural,
                "singularName": res.kind.lower(),
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": verbs,
            }
            short_names, categories = res.short_names, res.categories
            if not short_names and not categories:
                short_names, categories = NAMES.get((res.group, res.plural), ((), ()))
            if short_names:
                entry["shortNames"] = list(short_names)
            if categories:
                entry["categories"] = list(categories)
            resources.append(entry)
            if res.status_subresource:
                resources.append(
                    {
                        "name": f"{res.plural}/status",
                        "singularName": "",
                        "namespaced": res.namespaced,
                        "kind": res.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": _api_version(group, version),
            "resources": resources,
        }

