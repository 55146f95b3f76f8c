"""CRD structural schemas: loading CRD files, compiling OpenAPI v3 schemas into fast checks
(jsonschema for the rest), defaulting and pruning unknown fields.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(slots=True)
class _Schema:
    structural: dict[str, Any]
    validator: Any  # a jsonschema validator, or None when jsonschema is not installed
    quick: Callable[[Any], bool] | None = None  # compiled pre-check; None when not compilable


@dataclass(slots=True)
class _CRDVersion:
    name: str
    schema: _Schema | None
    status_subresource: bool


@dataclass(slots=True)
class _CRD:
    group: str
    plural: str
    kind: str
    namespaced: bool
    versions: list[_CRDVersion]
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()


_crd_cache: dict[tuple[str, int], list[_CRD]] = {}


_crd_cache_lock = threading.Lock()


def _to_json_schema(schema: Any) -> Any:
    """Translate a Kubernetes structural OpenAPI v3 schema to a JSON Schema (draft 4)."""
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key.startswith("x-kubernetes-") or key in (
            "description",
            "example",
            "externalDocs",
            "nullable",
            "format",  # Kubernetes formats (int32, byte...) are not JSON Schema formats
            "default",
        ):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [_to_json_schema(sub) for sub in value]
        else:
            out[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if schema.get("nullable"):
        out = {"anyOf": [{"type": "null"}, out]}
    return out


_Check = Callable[[Any], bool]


_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    # Draft 4 semantics, as jsonschema.Draft4Validator applies them (bool is not a number).
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "null": lambda v: v is None,
}


class _Uncompilable(Exception):
    pass


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)  # 1 == 1.0, as in jsonschema


def _compile(schema: Any) -> _Check:
    """Compile a (translated) JSON Schema to a yes/no predicate.

    jsonschema walks the schema afresh for every value, which costs milliseconds on Istio's
    oneOf/not-heavy schemas; this predicate is several times faster. It only says valid or not:
    jsonschema still produces the messages. Keywords it does not know raise _Uncompilable.
    """
    if schema is True or schema == {}:
        return lambda v: True
    if schema is False:
        return lambda v: False
    if not isinstance(schema, dict):
        raise _Uncompilable(repr(schema))
    checks: list[_Check] = []
    for key, arg in schema.items():
        checks.append(_compile_keyword(key, arg, schema))
    checks = [c for c in checks if c is not _always]
    if not checks:
        return _always
    if len(checks) == 1:
        return checks[0]
    return lambda v: all(c(v) for c in checks)


def _always(v: Any) -> bool:
    return True


def _compile_keyword(key: str, arg: Any, schema: Mapping[str, Any]) -> _Check:
    for family in (_compile_shape, _compile_objects, _compile_logic, _compile_bounds):
        check = family(key, arg, schema)
        if check is not None:
            return check
    if key == "pattern":
        pattern = re.compile(arg)
        return lambda v: not isinstance(v, str) or pattern.search(v) is not None
    if key in ("title", "$schema", "id"):
        return _always
    raise _Uncompilable(key)


def _compile_shape(key: str, arg: Any, schema: Mapping[str, Any]) -> _Check | None:
    if key == "type":
        tests = [_TYPE_TESTS[t] for t in ([arg] if isinstance(arg, str) else arg)]
        return lambda v: any(t(v) for t in tests)
    if key == "enum":
        return lambda v: any(_json_equal(v, e) for e in arg)
    if key == "items":
        if not isinstance(arg, dict):
            raise _Uncompilable("items as a list")
        item = _compile(arg)
        return lambda v: not isinstance(v, list) or all(item(x) for x in v)
    return None


def _compile_objects(key: str, arg: Any, schema: Mapping[str, Any]) -> _Check | None:
    if key == "required":
        names = list(arg)
        return lambda v: not isinstance(v, dict) or all(n in v for n in names)
    if key == "properties":
        props = {name: _compile(sub) for name, sub in arg.items()}
        return lambda v: not isinstance(v, dict) or all(c(v[n]) for n, c in props.items() if n in v)
    if key != "additionalProperties":
        return None
    if "patternProperties" in schema:
        raise _Uncompilable(key)
    known = set(schema.get("properties") or ())
    extra = _compile(arg) if isinstance(arg, dict) else None
    if arg is True:
        return _always
    if extra is None:  # false: no keys beyond properties
        return lambda v: not isinstance(v, dict) or all(k in known for k in v)
    return lambda v: (
        not isinstance(v, dict) or all(extra(x) for k, x in v.items() if k not in known)
    )


def _compile_logic(key: str, arg: Any, schema: Mapping[str, Any]) -> _Check | None:
    if key == "not":
        negated = _compile(arg)
        return lambda v: not negated(v)
    if key not in ("allOf", "anyOf", "oneOf"):
        return None
    subs = [_compile(sub) for sub in arg]
    if key == "allOf":
        return lambda v: all(c(v) for c in subs)
    if key == "anyOf":
        return lambda v: any(c(v) for c in subs)
    return lambda v: sum(1 for c in subs if c(v)) == 1


def _compile_bounds(key: str, arg: Any, schema: Mapping[str, Any]) -> _Check | None:
    if key in ("maxLength", "minLength"):
        bound, longest = int(arg), key == "maxLength"
        return lambda v: not isinstance(v, str) or (len(v) <= bound if longest else len(v) >= bound)
    if key in ("maxItems", "minItems", "maxProperties", "minProperties"):
        bound, kind = int(arg), list if key.endswith("Items") else dict
        most = key.startswith("max")
        return lambda v: not isinstance(v, kind) or (len(v) <= bound if most else len(v) >= bound)
    if key in ("minimum", "maximum"):
        exclusive = bool(schema.get("exclusiveMinimum" if key == "minimum" else "exclusiveMaximum"))
        is_number = _TYPE_TESTS["number"]
        if key == "minimum":
            return lambda v: not is_number(v) or (v > arg if exclusive else v >= arg)
        return lambda v: not is_number(v) or (v < arg if exclusive else v <= arg)
    if key in ("exclusiveMinimum", "exclusiveMaximum") and isinstance(arg, bool):
        return _always  # handled with minimum/maximum (draft 4)
    return None


def _make_quick(schema: dict[str, Any]) -> _Check | None:
    try:
        return _compile(_to_json_schema(schema))
    except (_Uncompilable, KeyError, TypeError, ValueError, re.error):
        return None


def _make_validator(schema: dict[str, Any]) -> Any:
    try:
        import jsonschema
    except ImportError:  # validation is an optional extra; pruning still works without it
        return None
    return jsonschema.Draft4Validator(_to_json_schema(schema))


def _load_documents(path: Path) -> list[Any]:
    text = path.read_text(encoding="utf-8")
    try:
        import yaml
    except ImportError:  # JSON CRDs still work without PyYAML
        return [json.loads(text)]
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml is ~10x faster
    return list(yaml.load_all(text, Loader=loader))


def _load_crds(path: str | Path) -> list[_CRD]:
    resolved = Path(path).resolve()
    key = (str(resolved), resolved.stat().st_mtime_ns)
    with _crd_cache_lock:
        cached = _crd_cache.get(key)
        if cached is not None:
            return cached
    crds = []
    for doc in _load_documents(resolved):
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        top_status = "status" in (spec.get("subresources") or {})  # v1beta1 CRD layout
        top_schema = (spec.get("validation") or {}).get("openAPIV3Schema")
        versions = []
        for v in spec.get("versions") or [{"name": spec.get("version"), "served": True}]:
            if not v.get("served", True):
                continue
            raw = ((v.get("schema") or {}).get("openAPIV3Schema")) or top_schema
            schema = _Schema(raw, _make_validator(raw), _make_quick(raw)) if raw else None
            status = top_status or "status" in (v.get("subresources") or {})
            versions.append(_CRDVersion(v["name"], schema, status))
        crds.append(
            _CRD(
                group=spec["group"],
                plural=spec["names"]["plural"],
                kind=spec["names"]["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                versions=versions,
                short_names=tuple(spec["names"].get("shortNames") or ()),
                categories=tuple(spec["names"].get("categories") or ()),
            )
        )
    with _crd_cache_lock:
        _crd_cache[key] = crds
    return crds


def _prune(value: Any, schema: Mapping[str, Any], path: str, unknown: list[str]) -> Any:
    """Structural pruning and defaulting as the apiserver does it; returns new containers."""
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        out: dict[str, Any] = {}
        for key, item in value.items():
            sub = props.get(key)
            if sub is None and isinstance(extra, dict):
                sub = extra
            if sub is not None:
                if item is None and not sub.get("nullable"):
                    continue  # null on a non-nullable field is dropped, not rejected
                out[key] = _prune(item, sub, f"{path}.{key}" if path else key, unknown)
            elif preserve or extra is True:
                out[key] = item
            else:
                unknown.append(f"{path}.{key}" if path else key)
        for key, sub in props.items():
            if key not in out and isinstance(sub, dict) and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        return [_prune(v, items, f"{path}[{i}]", unknown) for i, v in enumerate(value)]
    return value


def _error_path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text

