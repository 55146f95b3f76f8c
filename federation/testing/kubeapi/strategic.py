"""Strategic merge patches (``application/strategic-merge-patch+json``) on built-in kinds, as
``kubectl apply`` and ``kubectl patch`` send them: lists of objects merged by their merge key
(containers by name, container ports by containerPort, ...), and the directives ``$patch``
(replace, delete, merge), ``$retainKeys``, ``$setElementOrder/<list>`` and
``$deleteFromPrimitiveList/<list>``.

The merge keys are those of the core API types' ``patchMergeKey`` tags, by field name; a list
with none is replaced whole, as the apiserver does for atomic lists.
"""

from __future__ import annotations

import copy
from typing import Any

from .patch import _PatchError

# field name -> the key its elements merge on (patchStrategy "merge" in the core API types)
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "imagePullSecrets": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}

_MERGED_PRIMITIVES = frozenset({"finalizers"})  # primitive lists merged as sets

_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":  # container ports merge on containerPort, Service ports on port
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def strategic_merge(original: Any, patch: Any) -> Any:
    """The document after the patch; never mutates its inputs."""
    if not isinstance(patch, dict):
        raise _PatchError("a strategic merge patch must be a JSON object")
    merged = _merge_map(original if isinstance(original, dict) else {}, patch)
    if merged is None:
        raise _PatchError("the patch deletes the whole object")
    return merged


def _merge_map(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if directive not in (None, "merge"):
        raise _PatchError(f"unknown patch type: {directive}")
    result = dict(original)
    for key, value in patch.items():
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE):]
            result[field] = [v for v in result.get(field) or [] if v not in value]
        elif not key.startswith("$"):
            _merge_field(result, key, value)
    for key, value in patch.items():
        if key.startswith(_ORDER):
            field = key[len(_ORDER):]
            if isinstance(result.get(field), list):
                result[field] = _ordered(field, result[field], value)
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_field(result: dict[str, Any], key: str, value: Any) -> None:
    current = result.get(key)
    if value is None:
        result.pop(key, None)
    elif isinstance(value, dict):
        merged = _merge_map(current if isinstance(current, dict) else {}, value)
        if merged is None:
            result.pop(key, None)
        else:
            result[key] = merged
    elif isinstance(value, list):
        result[key] = _merge_list(key, current if isinstance(current, list) else [], value)
    else:
        result[key] = copy.deepcopy(value)


def _merge_list(field: str, original: list[Any], patch: list[Any]) -> list[Any]:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and "$patch" in i)]
    if field in _MERGED_PRIMITIVES:
        return list(original) + [v for v in patch if v not in original]
    key = _merge_key(field, patch or original)
    if key is None or not all(isinstance(i, dict) for i in patch):
        return copy.deepcopy(patch)
    result = [copy.deepcopy(i) for i in original]
    for item in patch:
        if key not in item:
            raise _PatchError(f"map: {item} does not contain declared merge key: {key}")
        index = next((n for n, o in enumerate(result)
                      if isinstance(o, dict) and o.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
        elif index is None:
            result.append({k: copy.deepcopy(v) for k, v in item.items() if k != "$patch"})
        else:
            merged = _merge_map(result[index], item)
            if merged is not None:
                result[index] = merged
    return result


def _ordered(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    """Items in the order ``$setElementOrder`` gives; items it does not name keep their place
    after them."""
    key = _merge_key(field, items)

    def identity(item: Any) -> str | int | None:
        value = item.get(key) if key is not None and isinstance(item, dict) else item
        return value if isinstance(value, str | int) else None

    wanted = [identity(o) for o in order]
    rank: dict[str | int | None, int] = {w: n for n, w in enumerate(wanted) if w is not None}
    named = sorted((i for i in items if identity(i) in rank), key=lambda i: rank[identity(i)])
    return named + [i for i in items if identity(i) not in rank]
