"""OpenAPI v3 (``/openapi/v3`` and one document per group-version), built from the served
resource types.

kubectl fetches it before ``apply``, ``create`` and ``replace``: when the PATCH operation of a
kind lists the ``fieldValidation`` query parameter, kubectl leaves validation to the server and
sends ``fieldValidation=Strict`` (the store then refuses unknown fields by the kind's schema);
without the document it refuses to apply unless run with ``--validate=false``. The documents
advertise only JSON and merge patches, so for built-in kinds kubectl computes strategic merge
patches from its own compiled-in types, as it does against many real servers.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .common import _dumps
from .discovery import DiscoveryMixin
from .resources import _Resource

_PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json")


def _query(name: str, text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": text, "schema": {"type": "string"}}


def _path_param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


_WRITE_PARAMS = [
    _query("dryRun", "All: do not persist the change"),
    _query("fieldManager", "the actor making the change"),
    _query("fieldValidation", "Ignore, Warn or Strict handling of unknown fields"),
]


def schema_name(group: str, version: str, kind: str) -> str:
    """The component name the apiserver uses: io.k8s.api.core.v1.Pod, or the reversed group."""
    if not group:
        return f"io.k8s.api.core.{version}.{kind}"
    if group.endswith(".k8s.io"):
        return f"io.k8s.api.{group.removesuffix('.k8s.io')}.{version}.{kind}"
    return ".".join(reversed(group.split("."))) + f".{version}.{kind}"


def _operation(res: _Resource, version: str, action: str, body: str | None,
               params: list[dict[str, Any]]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema_name(res.group, version, res.kind)}"}
    op: dict[str, Any] = {
        "operationId": f"{action}{res.kind}",
        "parameters": params,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": res.group, "version": version, "kind": res.kind},
    }
    if body is not None:
        types = _PATCH_TYPES if action == "patch" else ("application/json",)
        schema = {"type": "object"} if action == "patch" else ref
        op["requestBody"] = {"content": {t: {"schema": schema} for t in types}, "required": True}
    return op


def _paths(res: _Resource, version: str) -> dict[str, Any]:
    base = "/api/v1" if not res.group else f"/apis/{res.group}/{version}"
    scope = [_path_param("namespace")] if res.namespaced else []
    collection = f"{base}/namespaces/{{namespace}}/{res.plural}" if res.namespaced else (
        f"{base}/{res.plural}")
    item = collection + "/{name}"
    named = [*scope, _path_param("name")]
    return {
        collection: {
            "get": _operation(res, version, "list", None, scope),
            "post": _operation(res, version, "post", "object", [*scope, *_WRITE_PARAMS]),
        },
        item: {
            "get": _operation(res, version, "get", None, named),
            "put": _operation(res, version, "put", "object", [*named, *_WRITE_PARAMS]),
            "patch": _operation(res, version, "patch", "patch",
                                [*named, *_WRITE_PARAMS, _query("force", "apply only")]),
            "delete": _operation(res, version, "delete", None, [*named, _query("dryRun", "")]),
        },
    }


def _schema(res: _Resource, version: str) -> dict[str, Any]:
    found = res.schemas.get(version)
    if found is not None:
        schema = dict(found.structural)
        properties = dict(schema.get("properties") or {})
        properties.setdefault("apiVersion", {"type": "string"})
        properties.setdefault("kind", {"type": "string"})
        properties["metadata"] = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        schema["properties"] = properties
    else:
        schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema["x-kubernetes-group-version-kind"] = [
        {"group": res.group, "version": version, "kind": res.kind}]
    return schema


class OpenAPIMixin(DiscoveryMixin):
    """/openapi/v3 and /openapi/v3/<api/v1 | apis/group/version>."""

    def _openapi_index(self) -> dict[str, Any]:
        paths = {}
        for group, versions in sorted(self._served().items()):
            for version in sorted(versions):
                key = f"apis/{group}/{version}" if group else "api/v1"
                digest = hashlib.sha256(_dumps(self._openapi_document(group, version))).hexdigest()
                paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest[:32].upper()}"}
        return {"paths": paths}

    def _openapi_document(self, group: str, version: str) -> dict[str, Any]:
        found = self._served().get(group, {}).get(version)
        if not found or (not group and version != "v1"):
            raise self._page_not_found()
        paths: dict[str, Any] = {}
        schemas: dict[str, Any] = {}
        for res in sorted(found, key=lambda r: r.plural):
            paths.update(_paths(res, version))
            schemas[schema_name(group, version, res.kind)] = _schema(res, version)
        return {
            "openapi": "3.0.0",
            "info": {"title": "Kubernetes", "version": self.git_version},
            "paths": paths,
            "components": {"schemas": schemas},
        }

    def _openapi(self, segs: list[str]) -> dict[str, Any]:
        """segs after "openapi": ["v3"], ["v3", "api", "v1"], ["v3", "apis", g, v]."""
        if segs[:1] != ["v3"]:
            raise self._page_not_found()  # no v2: kubectl reads v3 first and uses it
        rest = segs[1:]
        if not rest:
            return self._openapi_index()
        if rest == ["api", "v1"]:
            return self._openapi_document("", "v1")
        if len(rest) == 3 and rest[0] == "apis":
            return self._openapi_document(rest[1], rest[2])
        raise self._page_not_found()

