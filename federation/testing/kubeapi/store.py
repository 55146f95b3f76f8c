"""The object store: resource types and their objects, resourceVersions, create, replace, patch,
delete, delete-collection and lists (paging, selectors), each change published as an event.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .builtin import BUILTIN_KINDS, BuiltinKind, model_schema, schema_available
from .common import _api_version, _APIError, _dumps, _now
from .events import _Event, _Watcher
from .messages import _Request, _Response
from .patch import _json_patch, _merge_patch, _PatchError
from .resources import _KNOWN_KINDS, _guess_kind, _Resource, _Stored
from .schema import _load_crds, _Schema
from .selectors import (
    _FieldReq,
    _fields_match,
    _labels_match,
    _parse_field_selector,
    _parse_label_selector,
    _Requirement,
)
from .strategic import strategic_merge
from .validation import _GENERATE_ALPHABET, ValidationMixin


def _strip_volatile(obj: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k != "apiVersion"}
    meta = dict(out.get("metadata") or {})
    meta.pop("resourceVersion", None)
    meta.pop("managedFields", None)
    out["metadata"] = meta
    return out


def _same_content(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return _strip_volatile(old) == _strip_volatile(new)


def _spec_changed(old: Mapping[str, Any], new: Mapping[str, Any], status_separate: bool) -> bool:
    # Custom resources bump generation on any change outside metadata (and status, if separate).
    skip = {"metadata", "apiVersion", "kind"} | ({"status"} if status_separate else set())
    return {k: v for k, v in old.items() if k not in skip} != {
        k: v for k, v in new.items() if k not in skip
    }


def _builtin_resource(kind: BuiltinKind) -> _Resource:
    """A kind a real cluster serves from the start; core kinds with a model get its schema and
    only their own version (the core group is closed), the others stay open to any version."""
    schemas: dict[str, _Schema | None] = {}
    if kind.model is not None and schema_available():
        schemas[kind.version] = _Schema(model_schema(kind.model), None, None)
    return _Resource(
        kind.group, kind.plural, kind.kind, kind_known=True, namespaced=kind.namespaced,
        declared=bool(schemas), status_subresource=kind.status_subresource,
        has_generation=bool(kind.group), schemas=schemas, versions={kind.version},
        short_names=kind.short_names, categories=kind.categories, strategic=not kind.crd,
    )


def _name_new_object(res: _Resource, meta: dict[str, Any]) -> str | None:
    """Fill in a generated name; returns the generateName prefix when the name was generated."""
    if meta.get("name"):
        return None
    generate = meta.get("generateName")
    if not generate:
        raise res.invalid(
            "", [("metadata.name", "Required value: name or generateName is required")]
        )
    meta["name"] = generate + "".join(random.choices(_GENERATE_ALPHABET, k=5))
    return str(generate)


def _stamp_new(res: _Resource, meta: dict[str, Any]) -> None:
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = _now()
    if res.has_generation:
        meta["generation"] = 1


# Fields only the server sets: an update keeps the stored ones, whatever the client sent.
_SERVER_FIELDS = (
    "uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds",
)


def _updated(
    res: _Resource, old: dict[str, Any], candidate: dict[str, Any], sub: str | None
) -> dict[str, Any]:
    """The object an update would store: the status only for /status, else everything but the
    server's fields (and the status, when it has its own subresource)."""
    old_meta = old["metadata"]
    if sub == "status":
        new = {**old, "apiVersion": candidate["apiVersion"], "metadata": dict(old_meta)}
        _copy_key(candidate, new, "status")
        return new
    meta = candidate["metadata"]
    for k in _SERVER_FIELDS:
        _copy_key(old_meta, meta, k)
    for k in ("managedFields", "selfLink"):
        meta.pop(k, None)
    if res.status_subresource:
        _copy_key(old, candidate, "status")
    return candidate


def _copy_key(source: dict[str, Any], target: dict[str, Any], key: str) -> None:
    if key in source:
        target[key] = source[key]
    else:
        target.pop(key, None)


def _bump_generation(
    res: _Resource, old: dict[str, Any], new: dict[str, Any], sub: str | None
) -> None:
    if res.has_generation and sub != "status" and _spec_changed(old, new, res.status_subresource):
        new["metadata"]["generation"] = int(old["metadata"].get("generation") or 0) + 1


def _check_preconditions(
    res: _Resource, name: str, meta: dict[str, Any], pre: dict[str, Any]
) -> None:
    if pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise res.conflict(
            name,
            f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
            f"{meta.get('uid')}",
        )
    if pre.get("resourceVersion") and pre["resourceVersion"] != meta["resourceVersion"]:
        raise res.conflict(
            name,
            f"the ResourceVersion in the precondition ({pre['resourceVersion']}) does not "
            f"match the ResourceVersion in record ({meta['resourceVersion']}). The object "
            "might have been modified",
        )


def _selected(obj: dict[str, Any], labels: tuple[_Requirement, ...],
              fields: tuple[_FieldReq, ...]) -> bool:
    if labels and not _labels_match(labels, obj["metadata"].get("labels") or {}):
        return False
    return not fields or _fields_match(fields, obj)


def _continue_token(last: tuple[str, str], rv: int) -> str:
    token = json.dumps({"start": list(last), "rv": rv})
    return base64.urlsafe_b64encode(token.encode()).decode()


class StoreMixin(ValidationMixin):
    """The objects of every resource type, their resourceVersions and the event history."""

    # Set up by KubeAPIServer.__init__; the lock guards all of them.
    _lock: threading.Lock
    _rv: int
    _resources: dict[tuple[str, str], _Resource]
    _history: deque[_Event]
    _floor: int  # every event after this resourceVersion is still in the history
    _watchers: set[_Watcher]
    _crds_loaded: bool
    crd_files: list[Path]
    history_limit: int


    def _init_store(self, history_limit: int, crd_files: Iterable[str | Path]) -> None:
        self.history_limit = max(1, history_limit)
        self.crd_files = [Path(p) for p in crd_files]
        self._lock = threading.Lock()
        self._rv = 0
        self._history = deque()
        self._floor = 0
        self._watchers = set()
        self._crds_loaded = False
        # Namespaces are built in; every other resource type is declared by a CRD file or
        # comes into being at its first request.
        self._resources = {("", "namespaces"): _Resource(
            "", "namespaces", "Namespace", kind_known=True, namespaced=False, declared=True,
            has_generation=False, schemas={"v1": None}, versions={"v1"}, short_names=("ns",),
            strategic=True,  # a built-in kind: `kubectl apply` over `create namespace` patches it
        )}
        for kind in BUILTIN_KINDS:
            self._resources[(kind.group, kind.plural)] = _builtin_resource(kind)

    def _load_crds(self) -> None:
        if self._crds_loaded:
            return
        for path in self.crd_files:
            for crd in _load_crds(path):
                self._resources[(crd.group, crd.plural)] = _Resource(
                    crd.group,
                    crd.plural,
                    crd.kind,
                    kind_known=True,
                    namespaced=crd.namespaced,
                    declared=True,
                    status_subresource=any(v.status_subresource for v in crd.versions),
                    schemas={v.name: v.schema for v in crd.versions},
                    short_names=crd.short_names,
                    categories=crd.categories,
                )
        self._crds_loaded = True

    def objects(
        self, group: str, version: str, plural: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        res = self._resources.get((group, plural))
        if res is None:
            return []
        with self._lock:
            items = sorted(res.objects.items())
        return [
            json.loads(res.render(s, version))
            for (ns, _), s in items
            if namespace is None or ns == namespace
        ]

    def add_namespace(self, ns: str) -> None:
        res = self._resources[("", "namespaces")]
        with self._lock:
            if ("", ns) in res.objects:
                return
            self._commit_locked(res, "ADDED", ("", ns), self._namespace_object(ns), None)

    @property
    def namespaces(self) -> list[str]:
        return sorted(name for _, name in self._resources[("", "namespaces")].objects)

    @property
    def resource_version(self) -> int:
        return self._rv

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: older watches get 410 Expired."""
        with self._lock:
            self._history.clear()
            self._floor = self._rv

    @staticmethod
    def _page_not_found() -> _APIError:
        return _APIError(404, "the server could not find the requested resource")

    def _resource(self, group: str, version: str, plural: str) -> _Resource:
        res = self._resources.get((group, plural))
        if res is None:
            if not group and version == "v1" and (group, plural) not in _KNOWN_KINDS:
                raise self._page_not_found()  # the core group is closed; custom groups are open
            kind, status = _KNOWN_KINDS.get((group, plural), (_guess_kind(plural), False))
            with self._lock:
                res = self._resources.setdefault(
                    (group, plural),
                    _Resource(
                        group,
                        plural,
                        kind,
                        kind_known=(group, plural) in _KNOWN_KINDS,
                        status_subresource=status,
                        has_generation=bool(group),
                    ),
                )
        if res.declared and version not in res.schemas:
            raise self._page_not_found()
        if version not in res.versions:
            with self._lock:
                res.versions.add(version)
        return res

    @staticmethod
    def _selectors(req: _Request) -> tuple[tuple[_Requirement, ...], tuple[_FieldReq, ...]]:
        try:
            labels = _parse_label_selector(req.query.get("labelSelector", ""))
            fields = _parse_field_selector(req.query.get("fieldSelector", ""))
        except ValueError as exc:
            raise _APIError(400, str(exc)) from None
        return labels, fields

    def _list(
        self, req: _Request, res: _Resource, version: str, namespace: str | None
    ) -> _Response:
        labels, fields = self._selectors(req)
        start = self._continue_from(req)
        limit = req.int_param("limit")
        with self._lock:
            rv = self._rv
            chosen, more = self._chosen_locked(res, namespace, start, labels, fields, limit)
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if more:
                meta["continue"] = _continue_token(chosen[-1][0], rv)
                if not labels and not fields:
                    # Like the API server: counted only when no selector filters the rest.
                    meta["remainingItemCount"] = res.count_after(namespace, chosen[-1][0])
        head = _dumps(
            {"apiVersion": _api_version(res.group, version), "kind": f"{res.kind}List", "metadata": meta}
        )
        # Items are spliced in already rendered: no re-serialisation of every object per list.
        items_json = b",".join(res.render(s, version) for _, s in chosen)
        return _Response(200, b"".join([head[:-1], b',"items":[', items_json, b"]}"]))

    @staticmethod
    def _chosen_locked(
        res: _Resource,
        namespace: str | None,
        start: tuple[str, str] | None,
        labels: tuple[_Requirement, ...],
        fields: tuple[_FieldReq, ...],
        limit: int | None,
    ) -> tuple[list[tuple[tuple[str, str], _Stored]], bool]:
        """One page: the selected objects in key order past ``start``, at most ``limit`` of
        them, and whether more follow. Reads only up to the first selected object past the
        page, so paging through a collection reads each object about once. Lock held."""
        page: list[tuple[tuple[str, str], _Stored]] = []
        for key, stored in res.walk(namespace, start):
            if not _selected(stored.obj, labels, fields):
                continue
            if limit is not None and 0 < limit <= len(page):
                return page, True
            page.append((key, stored))
        return page, False

    @staticmethod
    def _continue_from(req: _Request) -> tuple[str, str] | None:
        token = req.query.get("continue")
        if not token:
            return None
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            return (str(data["start"][0]), str(data["start"][1]))
        except (ValueError, KeyError, IndexError, TypeError):
            raise _APIError(400, "continue key is not valid: invalid token") from None

    def _commit_locked(
        self,
        res: _Resource,
        event_type: str,
        key: tuple[str, str],
        obj: dict[str, Any],
        prev: dict[str, Any] | None,
    ) -> _Stored:
        """Store (or delete) with a fresh resourceVersion and publish the event. Lock held."""
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        stored = _Stored(obj, _dumps(obj))
        if event_type == "DELETED":
            res.drop(key)
        else:
            res.put(key, stored)
        event = _Event(self._rv, event_type, res, key[0], stored, prev)
        self._history.append(event)
        if len(self._history) > self.history_limit:
            self._floor = self._history.popleft().rv
        for watcher in self._watchers:
            if watcher.res is res:
                watcher.queue.put(event)
        return stored

    def _create(self, req: _Request, res: _Resource, version: str, namespace: str) -> _Response:
        body = self._check_body(res, version, req.json(), namespace)
        if res.namespaced and ("", namespace) not in self._resources[("", "namespaces")].objects:
            raise _APIError(
                404,
                f'namespaces "{namespace}" not found',
                details={"name": namespace, "kind": "namespaces"},
            )
        generate = _name_new_object(res, body["metadata"])
        self._prepare_new(res, body)
        obj, warnings = self._validate(req, res, version, body)
        self._set_defaults(res, obj)
        self._check_size(res, obj)
        with self._lock:
            key = self._free_key_locked(res, namespace, obj["metadata"], generate)
            _stamp_new(res, obj["metadata"])
            if req.query.get("dryRun"):
                return _Response(201, res.render(_Stored(obj, _dumps(obj)), version), warnings)
            stored = self._commit_locked(res, "ADDED", key, obj, None)
        self._after_create(res, key, stored)
        return _Response(201, res.render(stored, version), warnings)

    # Hooks for what a cluster's own components do (kubelet.py); the bare store does nothing.

    def _set_defaults(self, res: _Resource, obj: dict[str, Any]) -> None:
        """Fill in what the apiserver defaults on a new object."""

    def _after_create(self, res: _Resource, key: tuple[str, str], stored: _Stored) -> None:
        """React to a stored new object (outside the lock)."""

    def _graceful_delete_locked(self, res: _Resource, key: tuple[str, str], cur: _Stored,
                                options: dict[str, Any]) -> _Stored | None:
        """The object as marked for a graceful deletion, or None to delete it now."""
        return None

    def _prepare_new(self, res: _Resource, body: dict[str, Any]) -> None:
        """What the apiserver sets or clears on an object to be created, before validation."""
        meta = body["metadata"]
        if meta.get("resourceVersion"):
            raise _APIError(
                500,
                "Internal error occurred: resourceVersion should not be set on objects to be "
                "created",
            )
        if res.plural == "namespaces" and not res.group:
            defaults = self._namespace_object(meta["name"])
            body.update(spec=defaults["spec"], status=defaults["status"])
            meta["labels"] = {**(meta.get("labels") or {}), **defaults["metadata"]["labels"]}
        if not res.kind_known:
            res.kind, res.kind_known = body["kind"], True
        for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields", "selfLink"):
            meta.pop(k, None)
        if res.status_subresource:
            body.pop("status", None)  # reset before validation; status is written via /status

    def _free_key_locked(
        self, res: _Resource, namespace: str, meta: dict[str, Any], generate: str | None
    ) -> tuple[str, str]:
        """The new object's key; a generated name is drawn again while taken. Lock held."""
        key = (namespace if res.namespaced else "", meta["name"])
        if generate is not None and key in res.objects:
            for _ in range(16):  # retry generated names like the apiserver
                meta["name"] = generate + "".join(random.choices(_GENERATE_ALPHABET, k=5))
                key = (key[0], meta["name"])
                if key not in res.objects:
                    break
        if key in res.objects:
            raise _APIError(
                409,
                f'{res.qualified} "{meta["name"]}" already exists',
                reason="AlreadyExists",
                details=res.details(meta["name"]),
            )
        return key

    def _replace(
        self,
        req: _Request,
        res: _Resource,
        version: str,
        key: tuple[str, str],
        sub: str | None,
    ) -> _Response:
        body = self._check_body(res, version, req.json(), key[0])
        body_name = body["metadata"].get("name")
        if body_name != key[1]:
            raise _APIError(
                400,
                f"the name of the object ({body_name or ''}) does not match the name on the URL "
                f"({key[1]})",
            )
        wanted_rv = body["metadata"].get("resourceVersion")
        return self._update(req, res, version, key, sub, lambda cur: copy.deepcopy(body), wanted_rv)

    def _patch(
        self,
        req: _Request,
        res: _Resource,
        version: str,
        key: tuple[str, str],
        sub: str | None,
    ) -> _Response:
        media = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        patch = req.json()
        if media == "application/merge-patch+json":
            if not isinstance(patch, dict):
                raise _APIError(400, "merge patch must be a JSON object")

            def apply(cur: _Stored) -> dict[str, Any]:
                base = json.loads(res.render(cur, version))
                return _merge_patch(base, patch)  # type: ignore[no-any-return]

        elif media == "application/json-patch+json":
            if not isinstance(patch, list):
                raise _APIError(400, "json patch must be a JSON array of operations")

            def apply(cur: _Stored) -> dict[str, Any]:
                try:
                    result = _json_patch(json.loads(res.render(cur, version)), patch)
                except _PatchError as exc:
                    raise _APIError(422, str(exc)) from None
                if not isinstance(result, dict):
                    raise _APIError(422, "the patched document must be a JSON object")
                return result

        elif media == "application/strategic-merge-patch+json" and res.strategic:

            def apply(cur: _Stored) -> dict[str, Any]:
                try:
                    return strategic_merge(json.loads(res.render(cur, version)), patch)  # type: ignore[no-any-return]
                except _PatchError as exc:
                    raise _APIError(422, str(exc)) from None

        else:
            accepted = "application/json-patch+json, application/merge-patch+json"
            if res.strategic:
                accepted += ", application/strategic-merge-patch+json"
            raise _APIError(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                + accepted,
            )
        return self._update(req, res, version, key, sub, apply, None)

    def _update(
        self,
        req: _Request,
        res: _Resource,
        version: str,
        key: tuple[str, str],
        sub: str | None,
        candidate_of: Callable[[_Stored], dict[str, Any]],
        wanted_rv: str | None,
    ) -> _Response:
        """Optimistic read-modify-write, retried when the object moved, like GuaranteedUpdate."""
        while True:
            cur = res.objects.get(key)
            if cur is None:
                raise res.not_found(key[1])
            candidate = self._checked_candidate(res, version, key, cur, candidate_of(cur), wanted_rv)
            new, warnings = self._validate(req, res, version, _updated(res, cur.obj, candidate, sub))
            if _same_content(cur.obj, new):
                return _Response(200, res.render(cur, version), warnings)  # no write, no event
            _bump_generation(res, cur.obj, new, sub)
            self._check_size(res, new)
            with self._lock:
                if res.objects.get(key) is not cur:
                    continue  # lost a race: recompute from the new state
                if req.query.get("dryRun"):
                    return _Response(200, res.render(_Stored(new, _dumps(new)), version), warnings)
                finished = bool(cur.obj["metadata"].get("deletionTimestamp")) and not new[
                    "metadata"
                ].get("finalizers")
                event = "DELETED" if finished else "MODIFIED"
                stored = self._commit_locked(res, event, key, new, cur.obj)
            return _Response(200, res.render(stored, version), warnings)

    def _checked_candidate(
        self,
        res: _Resource,
        version: str,
        key: tuple[str, str],
        cur: _Stored,
        candidate: dict[str, Any],
        wanted_rv: str | None,
    ) -> dict[str, Any]:
        """The client's new object, checked: resourceVersion precondition, body, same name."""
        name = key[1]
        if not isinstance(candidate.get("metadata"), dict):
            candidate["metadata"] = {}
        rv = wanted_rv if wanted_rv is not None else candidate["metadata"].get("resourceVersion")
        if rv and rv != cur.obj["metadata"]["resourceVersion"]:
            raise res.conflict(
                name,
                "the object has been modified; please apply your changes to the latest "
                "version and try again",
            )
        candidate = self._check_body(res, version, candidate, key[0])
        if candidate["metadata"].get("name") != name:
            raise res.invalid(name, [("metadata.name", "Invalid value: field is immutable")])
        return candidate

    def _delete(
        self, req: _Request, res: _Resource, version: str, key: tuple[str, str]
    ) -> _Response:
        options = req.json(allow_empty=True) or {}
        if not isinstance(options, dict):
            raise _APIError(400, "DeleteOptions must be a JSON object")
        dry_run = bool(req.query.get("dryRun") or options.get("dryRun"))
        with self._lock:
            cur = res.objects.get(key)
            if cur is None:
                raise res.not_found(key[1])
            meta = cur.obj["metadata"]
            _check_preconditions(res, key[1], meta, options.get("preconditions") or {})
            if dry_run or (meta.get("finalizers") and meta.get("deletionTimestamp")):
                return _Response(200, res.render(cur, version))
            marked = self._graceful_delete_locked(res, key, cur, options)
            if marked is not None:
                return _Response(200, res.render(marked, version))
            if meta.get("finalizers"):
                # Finalizers hold the object: deleting only marks it.
                new = json.loads(cur.raw)
                new["metadata"]["deletionTimestamp"] = _now()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                stored = self._commit_locked(res, "MODIFIED", key, new, cur.obj)
                return _Response(200, res.render(stored, version))
            self._commit_locked(res, "DELETED", key, json.loads(cur.raw), cur.obj)
        # The response carries the last stored state; the DELETED event carries a new version.
        return _Response(200, res.render(cur, version))

    def _delete_collection(
        self, req: _Request, res: _Resource, version: str, namespace: str | None
    ) -> _Response:
        labels, fields = self._selectors(req)
        deleted = []
        with self._lock:
            for key, cur in sorted(res.objects.items()):
                if namespace is not None and key[0] != namespace:
                    continue
                if labels and not _labels_match(labels, cur.obj["metadata"].get("labels") or {}):
                    continue
                if fields and not _fields_match(fields, cur.obj):
                    continue
                deleted.append(res.render(cur, version))
                if not req.query.get("dryRun"):
                    self._commit_locked(res, "DELETED", key, json.loads(cur.raw), cur.obj)
            rv = self._rv
        head = _dumps(
            {
                "apiVersion": _api_version(res.group, version),
                "kind": f"{res.kind}List",
                "metadata": {"resourceVersion": str(rv)},
            }
        )
        return _Response(200, head[:-1] + b',"items":[' + b",".join(deleted) + b"]}")

    @staticmethod
    def _namespace_object(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

