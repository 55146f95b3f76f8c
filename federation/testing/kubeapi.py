"""A loopback Kubernetes API server for tests and demos.

It speaks the REST protocol of a real kube-apiserver closely enough for the official ``kubernetes``
Python client (CustomObjectsApi, CoreV1Api namespaces, VersionApi, ``kubernetes.watch.Watch``):
bearer auth, Status bodies, resourceVersion concurrency, merge and JSON patches, label and field
selectors, watches with a bounded event history (410 Expired when compacted), optional structural
CRD schemas (pruning, defaulting, validation), and fault injection (latency, error codes, outages,
broken watches).

Only the standard library is needed; PyYAML and jsonschema are used for ``crd_files`` when present.
"""

from __future__ import annotations

import base64
import copy
import functools
import hmac
import json
import math
import os
import queue
import random
import re
import select
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .tls import ServerTLS, make_tls

__all__ = ["EmulatedClusters", "KubeAPIServer", "write_kubeconfig"]

VERBS = ("list", "watch", "get", "create", "update", "patch", "delete", "deletecollection")

# Limits enforced by the real API server / etcd.
MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_OBJECT_BYTES = 1536 * 1024
MAX_REQUEST_BYTES = 3 * 1024 * 1024

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's, avoids vowels and lookalikes

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

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}

_INJECTED_MESSAGES = {
    429: "Too many requests, please try again later.",
    500: "Internal error occurred: injected fault",
    503: "the server is currently unable to handle the request",
    504: "Timeout: request did not complete within the allotted timeout",
}

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
    ("coordination.k8s.io", "leases"): ("Lease", False),
    ("", "configmaps"): ("ConfigMap", False),
    ("", "secrets"): ("Secret", False),
    ("", "services"): ("Service", True),
    ("", "endpoints"): ("Endpoints", False),
    ("", "pods"): ("Pod", True),
    ("", "events"): ("Event", False),
}


# --------------------------------------------------------------------------------------------
# Errors and small helpers


class _APIError(Exception):
    """An error answered as a Kubernetes Status body."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason if reason is not None else _REASONS.get(code, "")
        self.details = details
        self.headers = list(headers)

    def status(self) -> dict[str, Any]:
        return _status(self.code, self.reason, self.message, self.details)


def _status(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
    }
    if details:
        body["details"] = details
    body["code"] = code
    return body


_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps(value: Any) -> bytes:
    return _encoder.encode(value).encode("utf-8")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _api_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


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


def _subdomain_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 253:
        errors.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        errors.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
            "'-' or '.', and must start and end with an alphanumeric character (e.g. "
            "'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        )
    return errors


def _label_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _DNS1123_LABEL.fullmatch(value):
        errors.append(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or "
            "'-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
            "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        )
    return errors


def _qualified_name_errors(key: str) -> list[str]:
    prefix, _, name = key.rpartition("/")
    errors = []
    if "/" in key and not prefix:
        errors.append("prefix part must be non-empty")
    elif prefix:
        errors.extend("prefix part " + e for e in _subdomain_errors(prefix))
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    elif not _QUALIFIED_NAME.fullmatch(name):
        errors.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
            "and end with an alphanumeric character"
        )
    return errors


# --------------------------------------------------------------------------------------------
# Selectors

_Requirement = tuple[str, str, frozenset[str]]  # (key, operator, values)


def _split_terms(text: str) -> list[str]:
    # Commas separate requirements, except inside the value set of `in (a,b)`.
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t.strip() for t in terms]


_SET_TERM = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")


@functools.lru_cache(maxsize=512)
def _parse_label_selector(text: str) -> tuple[_Requirement, ...]:
    if not text.strip():
        return ()
    reqs: list[_Requirement] = []
    for term in _split_terms(text):
        values: frozenset[str] = frozenset()
        if not term:
            raise ValueError("found '', expected: identifier")
        m = _SET_TERM.match(term)
        if m:
            key, op = m.group(1), m.group(2)
            values = frozenset(v.strip() for v in m.group(3).split(","))
            if not m.group(3).strip():
                raise ValueError(f"for '{op}', 'notin' operators, values set can't be empty")
        elif term.startswith("!"):
            key, op = term[1:].strip(), "!"
        elif "!=" in term:
            key, _, value = term.partition("!=")
            op, values = "!=", frozenset({value.strip()})
        elif "==" in term:
            key, _, value = term.partition("==")
            op, values = "=", frozenset({value.strip()})
        elif "=" in term:
            key, _, value = term.partition("=")
            op, values = "=", frozenset({value.strip()})
        else:
            key, op = term, "exists"
        key = key.strip()
        problems = _qualified_name_errors(key)
        problems += [e for v in values for e in _label_value_errors(v)]
        if problems:
            raise ValueError(f"unable to parse requirement: {term!r}: {'; '.join(problems)}")
        reqs.append((key, op, values))
    return tuple(reqs)


def _label_value_errors(value: str) -> list[str]:
    if len(value) > 63:
        return ["must be no more than 63 characters"]
    if not _LABEL_VALUE.fullmatch(value):
        return [
            "a valid label must be an empty string or consist of alphanumeric characters, '-', "
            "'_' or '.', and must start and end with an alphanumeric character"
        ]
    return []


def _labels_match(reqs: tuple[_Requirement, ...], labels: Mapping[str, str]) -> bool:
    for key, op, values in reqs:
        present = key in labels
        if op == "exists":
            ok = present
        elif op == "!":
            ok = not present
        elif op in ("=", "in"):
            ok = present and labels[key] in values
        else:  # "!=" and "notin" also match objects without the label, as in Kubernetes
            ok = not present or labels[key] not in values
        if not ok:
            return False
    return True


_FieldReq = tuple[str, bool, str]  # (field, equal?, value)


@functools.lru_cache(maxsize=256)
def _parse_field_selector(text: str) -> tuple[_FieldReq, ...]:
    reqs: list[_FieldReq] = []
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        op = next((o for o in ("!=", "==", "=") if o in term), None)
        if op is None:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{term}'")
        name, _, value = term.partition(op)
        equal = op != "!="
        name = name.strip()
        if name not in ("metadata.name", "metadata.namespace"):
            raise ValueError(
                f'"{name}" is not a known field selector: only "metadata.name", '
                '"metadata.namespace"'
            )
        reqs.append((name, equal, value.strip()))
    return tuple(reqs)


def _fields_match(reqs: tuple[_FieldReq, ...], obj: Mapping[str, Any]) -> bool:
    meta = obj.get("metadata") or {}
    for name, equal, value in reqs:
        actual = meta.get(name.partition(".")[2]) or ""
        if (actual == value) != equal:
            return False
    return True


# --------------------------------------------------------------------------------------------
# Patches


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch; never mutates its inputs."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value)
    return result


class _PatchError(Exception):
    pass


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise _PatchError(f"invalid JSON pointer: {path!r}")
    if path == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _index(container: list[Any], token: str, *, append_ok: bool = False) -> int:
    if append_ok and token == "-":
        return len(container)
    if not token.isdigit() or (token != "0" and token.startswith("0")):
        raise _PatchError(f"invalid array index: {token!r}")
    i = int(token)
    if i > len(container) or (i == len(container) and not append_ok):
        raise _PatchError(f"array index out of bounds: {i}")
    return i


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise _PatchError(f"missing path component: {token!r}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token)]
        else:
            raise _PatchError(f"cannot traverse into a scalar at {token!r}")
    return node


def _pointer_get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _PatchError(f"path does not exist: {last!r}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last)]
    raise _PatchError("cannot index a scalar")


def _pointer_add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, append_ok=True), value)
    else:
        raise _PatchError("cannot add to a scalar")
    return doc


def _pointer_remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise _PatchError("cannot remove the whole document")
    parent, last = _parent(doc, tokens), tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise _PatchError(f"unable to remove nonexistent key: {last}")
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last))
    raise _PatchError("cannot remove from a scalar")


def _json_patch(doc: Any, operations: list[Any]) -> Any:
    """RFC 6902 JSON patch on a private copy of the document."""
    for op in operations:
        if not isinstance(op, dict) or not isinstance(op.get("op"), str):
            raise _PatchError(f"invalid operation: {_short(op)}")
        kind, tokens = op["op"], _pointer(op.get("path"))
        if kind in ("add", "replace", "test") and "value" not in op:
            raise _PatchError(f"{kind} operation does not apply: value is missing")
        if kind == "add":
            doc = _pointer_add(doc, tokens, copy.deepcopy(op["value"]))
        elif kind == "remove":
            _pointer_remove(doc, tokens)
        elif kind == "replace":
            if tokens:
                _pointer_get(doc, tokens)  # must exist
                parent = _parent(doc, tokens)
                if isinstance(parent, list):
                    parent[_index(parent, tokens[-1])] = copy.deepcopy(op["value"])
                else:
                    parent[tokens[-1]] = copy.deepcopy(op["value"])
            else:
                doc = copy.deepcopy(op["value"])
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from"))
            value = _pointer_get(doc, source)
            if kind == "move":
                if op.get("path", "").startswith(op["from"] + "/"):
                    raise _PatchError("cannot move a value into one of its children")
                _pointer_remove(doc, source)
            else:
                value = copy.deepcopy(value)
            doc = _pointer_add(doc, tokens, value)
        elif kind == "test":
            if _pointer_get(doc, tokens) != op["value"]:
                raise _PatchError(f"testing value {op['path']} failed")
        else:
            raise _PatchError(f"unexpected kind of operation: {kind!r}")
    return doc


# --------------------------------------------------------------------------------------------
# CRD schemas


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
    if key == "type":
        tests = [_TYPE_TESTS[t] for t in ([arg] if isinstance(arg, str) else arg)]
        return lambda v: any(t(v) for t in tests)
    if key == "enum":
        return lambda v: any(_json_equal(v, e) for e in arg)
    if key == "required":
        names = list(arg)
        return lambda v: not isinstance(v, dict) or all(n in v for n in names)
    if key == "properties":
        props = {name: _compile(sub) for name, sub in arg.items()}
        return lambda v: not isinstance(v, dict) or all(c(v[n]) for n, c in props.items() if n in v)
    if key == "additionalProperties":
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
    if key == "items":
        if not isinstance(arg, dict):
            raise _Uncompilable("items as a list")
        item = _compile(arg)
        return lambda v: not isinstance(v, list) or all(item(x) for x in v)
    if key in ("allOf", "anyOf", "oneOf"):
        subs = [_compile(sub) for sub in arg]
        if key == "allOf":
            return lambda v: all(c(v) for c in subs)
        if key == "anyOf":
            return lambda v: any(c(v) for c in subs)
        return lambda v: sum(1 for c in subs if c(v)) == 1
    if key == "not":
        negated = _compile(arg)
        return lambda v: not negated(v)
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
    if key == "pattern":
        pattern = re.compile(arg)
        return lambda v: not isinstance(v, str) or pattern.search(v) is not None
    if key in ("title", "$schema", "id"):
        return _always
    raise _Uncompilable(key)


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


# --------------------------------------------------------------------------------------------
# Storage


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
    objects: dict[tuple[str, str], _Stored] = field(default_factory=dict)

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


@dataclass(frozen=True, slots=True)
class _Event:
    rv: int
    type: str
    res: _Resource
    namespace: str
    stored: _Stored
    prev: dict[str, Any] | None  # previous state, for selector transitions on MODIFIED


_BREAK = object()  # watcher sentinel: end the stream abruptly
_CLOSE = object()  # watcher sentinel: end the stream cleanly


@dataclass(eq=False)
class _Watcher:
    res: _Resource
    version: str
    namespace: str | None
    labels: tuple[_Requirement, ...]
    fields: tuple[_FieldReq, ...]
    queue: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    last_rv: int = 0  # every change up to here has been delivered (or filtered out)

    def selects(self, obj: Mapping[str, Any]) -> bool:
        if self.labels and not _labels_match(
            self.labels, (obj.get("metadata") or {}).get("labels") or {}
        ):
            return False
        return not self.fields or _fields_match(self.fields, obj)

    def translate(self, event: _Event) -> str | None:
        """The event type this watcher sees, following selector transitions like the apiserver."""
        if self.namespace is not None and event.namespace != self.namespace:
            return None
        if not self.labels and not self.fields:
            return event.type
        now = self.selects(event.stored.obj)
        if event.type == "MODIFIED" and event.prev is not None:
            before = self.selects(event.prev)
            if now and before:
                return "MODIFIED"
            if now:
                return "ADDED"
            return "DELETED" if before else None
        return event.type if now else None


@dataclass(slots=True)
class _Fault:
    remaining: int
    status: int
    retry_after: float | None
    verbs: frozenset[str] | None


# --------------------------------------------------------------------------------------------
# HTTP plumbing


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and small bodies must not wait for delayed ACKs
    server: _HTTPServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            # The TLS handshake runs here, in the connection's own thread, not in accept():
            # a slow or failing client then holds up only itself.
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        self.server.api._track(self.connection, True)

    def finish(self) -> None:
        self.server.api._track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # the base class names it so
        pass  # thousands of requests per test; the request counters are the useful record

    def do_GET(self) -> None:
        self.server.api._serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never join idle keep-alive connections on close
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: KubeAPIServer) -> None:
        self.api = api
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # dropped connections are routine here (outages, stop, client timeouts)
        super().handle_error(request, client_address)


@dataclass(slots=True)
class _Request:
    method: str
    query: dict[str, str]
    headers: Any
    body: bytes

    def flag(self, name: str) -> bool:
        return self.query.get(name, "").lower() in ("1", "true")

    def json(self, *, allow_empty: bool = False) -> Any:
        if not self.body.strip():
            if allow_empty:
                return None
            raise _APIError(400, "the body of the request was empty")
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise _APIError(400, f"couldn't get version/kind; json parse error: {exc}") from None

    def int_param(self, name: str) -> int | None:
        text = self.query.get(name)
        if text in (None, ""):
            return None
        try:
            return int(text)
        except ValueError:
            raise _APIError(400, f"invalid {name}: {text!r}") from None


@dataclass(slots=True)
class _Response:
    code: int
    body: bytes
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/json"


# --------------------------------------------------------------------------------------------
# The server


class KubeAPIServer:
    """One emulated cluster's API server on loopback. Thread-safe; usable as a context manager."""

    def __init__(
        self,
        name: str,
        *,
        token: str = "test-token",
        host: str = "127.0.0.1",
        port: int = 0,
        namespaces: Iterable[str] = ("jupyterhub", "default", "istio-system"),
        crd_files: Iterable[str | Path] = (),
        history_limit: int = 5000,
        git_version: str = "v1.30.0",
        tls: ServerTLS | None = None,
    ) -> None:
        self.name = name
        self.tls = tls  # HTTPS with this certificate; plain HTTP when None
        self.token = token
        self.host = host
        self.port = port
        self.url = ""
        self.git_version = git_version
        self.history_limit = max(1, history_limit)
        self.crd_files = [Path(p) for p in crd_files]
        self.latency: float = 0.0
        # Seconds between BOOKMARK events on watches that allow them (the apiserver uses ~1 min).
        self.bookmark_interval: float = 60.0
        self.request_counts: dict[str, int] = dict.fromkeys(VERBS, 0)

        self._lock = threading.Lock()  # the store: resources, objects, history, watchers, rv
        self._rv = 0
        self._resources: dict[tuple[str, str], _Resource] = {}
        self._history: deque[_Event] = deque()
        self._floor = 0  # every event after this resourceVersion is still in the history
        self._watchers: set[_Watcher] = set()
        self._crds_loaded = False

        self._state = threading.Condition()  # outage mode, faults, lifecycle
        self._down: str | None = None
        self._faults: deque[_Fault] = deque()
        self._started = False
        self._stopping = False
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conn_lock = threading.Lock()
        self._conns: set[socket.socket] = set()

        ns_res = _Resource(
            "",
            "namespaces",
            "Namespace",
            kind_known=True,
            namespaced=False,
            declared=True,
            has_generation=False,
            schemas={"v1": None},
            versions={"v1"},
        )
        self._resources[("", "namespaces")] = ns_res
        for ns in namespaces:
            self.add_namespace(ns)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> KubeAPIServer:
        with self._state:
            if self._started and not self._stopping:
                return self
            self._load_crds()
            self._stopping = False
            self._down = None
            self._started = True
        self._open_listener()
        return self

    def stop(self) -> None:
        with self._state:
            if not self._started or self._stopping:
                return
            self._stopping = True
            self._state.notify_all()
        self._close_listener()
        self._broadcast(_BREAK)
        self._drop_connections()

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"KubeAPIServer({self.name!r}, url={self.url!r})"

    def _open_listener(self) -> None:
        httpd = _HTTPServer((self.host, self.port), self)
        if self.tls is not None:
            httpd.socket = self.tls.server_context().wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = httpd.server_address[1]
        self.url = f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits for one poll
            name=f"kubeapi-{self.name}",
            daemon=True,
        )
        self._httpd, self._thread = httpd, thread
        thread.start()

    def _close_listener(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _drop_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

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
                )
        self._crds_loaded = True

    # -- fault injection and inspection -----------------------------------------------------

    def inject_errors(
        self,
        count: int,
        status: int = 500,
        *,
        retry_after: float | None = None,
        verbs: Iterable[str] | None = None,
    ) -> None:
        """Fail the next `count` resource requests (of `verbs`, default all) with `status`."""
        if count <= 0:
            return
        chosen = frozenset(verbs) if verbs is not None else None
        if chosen is not None and not chosen <= set(VERBS):
            raise ValueError(f"unknown verbs: {sorted(chosen - set(VERBS))}")
        if status == 429 and retry_after is None:
            retry_after = 1  # the apiserver always tells throttled clients when to come back
        with self._state:
            self._faults.append(_Fault(count, status, retry_after, chosen))

    def clear_errors(self) -> None:
        with self._state:
            self._faults.clear()

    def set_down(self, down: bool, mode: str = "refuse") -> None:
        """Simulate an outage: "refuse" closes the port and drops connections; "hang" stalls."""
        if mode not in ("refuse", "hang"):
            raise ValueError(f"mode must be 'refuse' or 'hang', not {mode!r}")
        with self._state:
            if not self._started or self._stopping:
                raise RuntimeError("the server is not running")
            previous = self._down
            self._down = mode if down else None
            self._state.notify_all()
        if self._down == "refuse":
            if previous != "refuse":
                self._close_listener()
            self._broadcast(_BREAK)
            self._drop_connections()
        elif previous == "refuse":
            self._open_listener()  # same port: the client's URL keeps working

    @property
    def down(self) -> str | None:
        return self._down

    def break_watches(self, *, graceful: bool = False) -> None:
        """End every open watch: abruptly (connection dropped) or, if graceful, cleanly."""
        self._broadcast(_CLOSE if graceful else _BREAK)

    def compact(self) -> None:
        """Forget the event history, as etcd compaction does: older watches get 410 Expired."""
        with self._lock:
            self._history.clear()
            self._floor = self._rv

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

    def reset_counts(self) -> None:
        with self._state:
            for verb in VERBS:
                self.request_counts[verb] = 0

    @property
    def open_watches(self) -> int:
        with self._lock:
            return len(self._watchers)

    # -- request handling --------------------------------------------------------------------

    def _serve(self, h: _Handler) -> None:
        if self._down is not None or self._stopping:
            self._stall_or_drop(h)
            return
        try:
            body = self._read_body(h)
        except _APIError as exc:
            h.close_connection = True  # the unread body would poison the next request
            self._send(h, _Response(exc.code, _dumps(exc.status()), exc.headers))
            return
        except (OSError, ValueError):
            h.close_connection = True
            return
        latency = self.latency
        if latency > 0:
            time.sleep(latency)
        if self._down is not None or self._stopping:
            self._stall_or_drop(h)
            return
        split = urlsplit(h.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        req = _Request(h.command, query, h.headers, body)
        try:
            if not self._authorized(h.headers.get("Authorization")):
                raise _APIError(401, "Unauthorized")
            response = self._route(h, req, [unquote(s) for s in split.path.split("/") if s])
        except _APIError as exc:
            response = _Response(exc.code, _dumps(exc.status()), exc.headers)
        except Exception as exc:  # a bug here must reach the client, not kill the connection
            message = f"Internal error occurred: {type(exc).__name__}: {exc}"
            response = _Response(500, _dumps(_status(500, "InternalError", message)))
        if response is not None:
            self._send(h, response)

    def _stall_or_drop(self, h: _Handler) -> None:
        with self._state:
            while self._down == "hang" and not self._stopping:
                self._state.wait()
        # Whatever happened meanwhile, this request is never answered (the client gave up).
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _read_body(self, h: _Handler) -> bytes:
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_REQUEST_BYTES:
                    raise _APIError(413, f"Request entity too large: limit is {MAX_REQUEST_BYTES}")
                parts.append(h.rfile.read(size))
                h.rfile.readline()
        length = int(h.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            raise _APIError(413, f"Request entity too large: limit is {MAX_REQUEST_BYTES}")
        return h.rfile.read(length) if length > 0 else b""

    def _authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[7:].strip().encode(), self.token.encode())

    def _send(self, h: _Handler, response: _Response) -> None:
        try:
            phrase = HTTPStatus(response.code).phrase
        except ValueError:
            phrase = ""
        lines = [
            f"HTTP/1.1 {response.code} {phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-cache, private",
        ]
        lines += [f"{k}: {v}" for k, v in response.headers]
        if h.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        try:
            h.wfile.write(head + response.body)  # one write: no Nagle/delayed-ACK stalls
        except OSError:
            h.close_connection = True

    def _admit(self, verb: str) -> None:
        """Count a resource request and apply any injected fault."""
        with self._state:
            self.request_counts[verb] = self.request_counts.get(verb, 0) + 1
            fault = next((f for f in self._faults if f.verbs is None or verb in f.verbs), None)
            if fault is None:
                return
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
        headers: list[tuple[str, str]] = []
        details: dict[str, Any] | None = None
        if fault.retry_after is not None:
            seconds = max(0, math.ceil(fault.retry_after))  # urllib3 only parses whole seconds
            headers.append(("Retry-After", str(seconds)))
            details = {"causes": [{"message": "injected fault"}], "retryAfterSeconds": seconds}
        message = _INJECTED_MESSAGES.get(fault.status, f"injected fault ({fault.status})")
        raise _APIError(fault.status, message, details=details, headers=headers)

    # -- routing -----------------------------------------------------------------------------

    def _route(self, h: _Handler, req: _Request, segs: list[str]) -> _Response | None:
        if not segs:
            return self._json(200, {"paths": ["/api", "/api/v1", "/apis", "/version"]})
        head = segs[0]
        if len(segs) == 1 and head in ("healthz", "readyz", "livez"):
            return _Response(200, b"ok", content_type="text/plain; charset=utf-8")
        if segs == ["version"]:
            return self._json(200, self._version())
        if head == "api":
            if len(segs) == 1:
                return self._json(
                    200,
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}
                        ],
                    },
                )
            if segs[1] != "v1":
                raise self._page_not_found()
            if len(segs) == 2:
                return self._json(200, self._resource_list("", "v1"))
            group, version, rest = "", "v1", segs[2:]
        elif head == "apis":
            if len(segs) == 1:
                return self._json(200, self._group_list())
            if len(segs) == 2:
                return self._json(200, self._group(segs[1]))
            if len(segs) == 3:
                return self._json(200, self._resource_list(segs[1], segs[2]))
            group, version, rest = segs[1], segs[2], segs[3:]
        else:
            raise self._page_not_found()

        watch_path = rest[0] == "watch"  # the deprecated /watch/ prefix
        if watch_path:
            rest = rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise self._page_not_found()
        plural = rest[0]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        res = self._resource(group, version, plural)
        if sub is not None and sub != "status":
            raise self._page_not_found()
        if res.namespaced and namespace is None and name is not None:
            raise self._page_not_found()
        if not res.namespaced and namespace is not None:
            raise self._page_not_found()

        method = req.method
        if name is None:
            if method == "GET":
                watching = watch_path or req.flag("watch")
                self._admit("watch" if watching else "list")
                if watching:
                    self._watch(h, req, res, version, namespace)
                    return None
                return self._list(req, res, version, namespace)
            if method == "POST" and (namespace is not None or not res.namespaced):
                self._admit("create")
                return self._create(req, res, version, namespace or "")
            if method == "DELETE" and (namespace is not None or not res.namespaced):
                self._admit("deletecollection")
                return self._delete_collection(req, res, version, namespace)
            raise _APIError(405, "the server does not allow this method on the requested resource")
        key = (namespace or "", name)
        if method == "GET":
            self._admit("get")
            stored = res.objects.get(key)
            if stored is None:
                raise res.not_found(name)
            return _Response(200, res.render(stored, version))
        if method == "PUT":
            self._admit("update")
            return self._replace(req, res, version, key, sub)
        if method == "PATCH":
            self._admit("patch")
            return self._patch(req, res, version, key, sub)
        if method == "DELETE" and sub is None:
            if res.plural == "namespaces" and not res.group:
                raise _APIError(405, "deleting namespaces is not supported by this emulator")
            self._admit("delete")
            return self._delete(req, res, version, key)
        raise _APIError(405, "the server does not allow this method on the requested resource")

    @staticmethod
    def _json(code: int, value: Any) -> _Response:
        return _Response(code, _dumps(value))

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
            resources.append(
                {
                    "name": res.plural,
                    "singularName": res.kind.lower(),
                    "namespaced": res.namespaced,
                    "kind": res.kind,
                    "verbs": verbs,
                }
            )
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

    # -- reads ---------------------------------------------------------------------------------

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
        with self._lock:
            rv = self._rv
            items = sorted(res.objects.items())
        start = self._continue_from(req)
        chosen: list[tuple[tuple[str, str], _Stored]] = []
        for key, stored in items:
            if namespace is not None and key[0] != namespace:
                continue
            if start is not None and key <= start:
                continue
            obj = stored.obj
            if labels and not _labels_match(labels, obj["metadata"].get("labels") or {}):
                continue
            if fields and not _fields_match(fields, obj):
                continue
            chosen.append((key, stored))
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        limit = req.int_param("limit")
        if limit is not None and limit > 0 and len(chosen) > limit:
            remaining = len(chosen) - limit
            chosen = chosen[:limit]
            token = json.dumps({"start": list(chosen[-1][0]), "rv": rv})
            meta["continue"] = base64.urlsafe_b64encode(token.encode()).decode()
            meta["remainingItemCount"] = remaining
        head = _dumps(
            {
                "apiVersion": _api_version(res.group, version),
                "kind": f"{res.kind}List",
                "metadata": meta,
            }
        )
        body = b"".join(
            [
                head[:-1],
                b',"items":[',
                b",".join(res.render(s, version) for _, s in chosen),
                b"]}",
            ]
        )
        return _Response(200, body)

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

    # -- writes --------------------------------------------------------------------------------

    def _check_body(
        self, res: _Resource, version: str, body: Any, namespace: str
    ) -> dict[str, Any]:
        """Checks that the apiserver's decoder and BeforeCreate/BeforeUpdate make."""
        if not isinstance(body, dict):
            raise _APIError(400, "the body of the request must be a JSON object")
        kind = body.get("kind")
        api_version = body.get("apiVersion")
        if not kind:
            raise _APIError(400, f"Object 'Kind' is missing in '{_short(body, 200)}'")
        if not api_version:
            raise _APIError(400, f"Object 'apiVersion' is missing in '{_short(body, 200)}'")
        expected = _api_version(res.group, version)
        if api_version != expected:
            raise _APIError(
                400,
                f"the API version in the data ({api_version}) does not match the expected API "
                f"version ({expected})",
            )
        if res.kind_known and kind != res.kind:
            raise _APIError(
                400, f"the kind in the data ({kind}) does not match the expected kind ({res.kind})"
            )
        meta = body.get("metadata")
        if meta is None:
            meta = body["metadata"] = {}
        if not isinstance(meta, dict):
            raise _APIError(400, "metadata must be an object")
        body_ns = meta.get("namespace")
        if res.namespaced:
            if body_ns and body_ns != namespace:
                raise _APIError(
                    400,
                    "the namespace of the provided object does not match the namespace sent on "
                    "the request",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        return body

    def _validate(
        self, req: _Request, res: _Resource, version: str, obj: dict[str, Any]
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Prune, default and validate a candidate object. Returns it and Warning headers."""
        mode = req.query.get("fieldValidation") or "Warn"
        if mode not in ("Ignore", "Warn", "Strict"):
            raise _APIError(
                400,
                f'fieldValidation: Unsupported value: "{mode}": supported values: "Ignore", '
                '"Strict", "Warn"',
            )
        unknown: list[str] = []
        meta = obj["metadata"]
        for key in [k for k in meta if k not in _OBJECT_META_FIELDS]:
            unknown.append(f"metadata.{key}")
            del meta[key]
        for key in ("labels", "annotations"):
            value = meta.get(key)
            if value is None:
                meta.pop(key, None)
            elif not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise _APIError(400, f"metadata.{key} must be a map of strings")
        for key in ("finalizers",):
            value = meta.get(key)
            if value is not None and (
                not isinstance(value, list) or not all(isinstance(v, str) for v in value)
            ):
                raise _APIError(400, f"metadata.{key} must be a list of strings")

        name = meta.get("name") or ""
        causes: list[tuple[str, str]] = []
        name_errors = (
            _label_errors(name)
            if res.plural == "namespaces" and not res.group
            else (_subdomain_errors(name))
        )
        causes += [("metadata.name", f'Invalid value: "{name}": {e}') for e in name_errors]
        for key, value in (meta.get("labels") or {}).items():
            for e in _qualified_name_errors(key):
                causes.append(("metadata.labels", f'Invalid value: "{key}": {e}'))
            for e in _label_value_errors(value):
                causes.append(("metadata.labels", f'Invalid value: "{value}": {e}'))
        annotations = meta.get("annotations") or {}
        for key in annotations:
            for e in _qualified_name_errors(key.lower()):
                causes.append(("metadata.annotations", f'Invalid value: "{key}": {e}'))
        size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
        if size > MAX_ANNOTATIONS_BYTES:
            causes.append(
                (
                    "metadata.annotations",
                    f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes",
                )
            )

        schema = res.schemas.get(version)
        if schema is not None:
            content = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
            pruned = _prune(content, schema.structural, "", unknown)
            obj = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": meta, **pruned}
            if (
                schema.validator is not None
                and not causes
                and (schema.quick is None or not schema.quick(pruned))
            ):
                errors = sorted(
                    schema.validator.iter_errors(pruned),
                    key=lambda e: list(map(str, e.absolute_path)),
                )
                for error in errors[:20]:
                    where = _error_path(error.absolute_path)
                    causes.append(
                        (where, f"Invalid value: {_short(error.instance)}: {error.message}")
                    )

        warnings: list[tuple[str, str]] = []
        if unknown and mode == "Strict":
            text = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise _APIError(400, f"strict decoding error: {text}")
        if unknown and mode == "Warn":
            warnings = [("Warning", f'299 - "unknown field \\"{u}\\""') for u in unknown]
        if causes:
            raise res.invalid(name, causes)
        return obj, warnings

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
            res.objects.pop(key, None)
        else:
            res.objects[key] = stored
        event = _Event(self._rv, event_type, res, key[0], stored, prev)
        self._history.append(event)
        if len(self._history) > self.history_limit:
            self._floor = self._history.popleft().rv
        for watcher in self._watchers:
            if watcher.res is res:
                watcher.queue.put(event)
        return stored

    def _check_size(self, res: _Resource, stored_obj: dict[str, Any]) -> None:
        if len(_dumps(stored_obj)) > MAX_OBJECT_BYTES:
            # etcd refuses values over 1.5 MiB; surfaced as RequestEntityTooLarge.
            raise _APIError(413, "etcdserver: request is too large")

    def _create(self, req: _Request, res: _Resource, version: str, namespace: str) -> _Response:
        body = self._check_body(res, version, req.json(), namespace)
        meta = body["metadata"]
        if res.namespaced and ("", namespace) not in self._resources[("", "namespaces")].objects:
            raise _APIError(
                404,
                f'namespaces "{namespace}" not found',
                details={"name": namespace, "kind": "namespaces"},
            )
        generate = meta.get("generateName")
        generated = not meta.get("name")
        if generated:
            if not generate:
                raise res.invalid(
                    "", [("metadata.name", "Required value: name or generateName is required")]
                )
            meta["name"] = generate + "".join(random.choices(_GENERATE_ALPHABET, k=5))
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
        obj, warnings = self._validate(req, res, version, body)
        meta = obj["metadata"]
        self._check_size(res, obj)
        dry_run = bool(req.query.get("dryRun"))
        with self._lock:
            key = (namespace if res.namespaced else "", meta["name"])
            if generated and key in res.objects:
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
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            if res.has_generation:
                meta["generation"] = 1
            if dry_run:
                return _Response(201, res.render(_Stored(obj, _dumps(obj)), version), warnings)
            stored = self._commit_locked(res, "ADDED", key, obj, None)
        return _Response(201, res.render(stored, version), warnings)

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

        else:
            raise _APIError(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json",
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
        name = key[1]
        while True:
            cur = res.objects.get(key)
            if cur is None:
                raise res.not_found(name)
            old = cur.obj
            old_meta = old["metadata"]
            candidate = candidate_of(cur)
            if not isinstance(candidate.get("metadata"), dict):
                candidate["metadata"] = {}
            rv = (
                wanted_rv if wanted_rv is not None else candidate["metadata"].get("resourceVersion")
            )
            if rv and rv != old_meta["resourceVersion"]:
                raise res.conflict(
                    name,
                    "the object has been modified; please apply your changes to the latest "
                    "version and try again",
                )
            candidate = self._check_body(res, version, candidate, key[0])
            meta = candidate["metadata"]
            if meta.get("name") != name:
                raise res.invalid(name, [("metadata.name", "Invalid value: field is immutable")])
            if sub == "status":
                new = {**old, "apiVersion": candidate["apiVersion"], "metadata": dict(old_meta)}
                if "status" in candidate:
                    new["status"] = candidate["status"]
                else:
                    new.pop("status", None)
            else:
                new = candidate
                for k in (
                    "uid",
                    "creationTimestamp",
                    "generation",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                ):
                    if k in old_meta:
                        meta[k] = old_meta[k]
                    else:
                        meta.pop(k, None)
                for k in ("managedFields", "selfLink"):
                    meta.pop(k, None)
                if res.status_subresource:
                    if "status" in old:
                        new["status"] = old["status"]
                    else:
                        new.pop("status", None)
            new, warnings = self._validate(req, res, version, new)
            if _same_content(old, new):
                return _Response(200, res.render(cur, version), warnings)  # no write, no event
            if (
                res.has_generation
                and sub != "status"
                and _spec_changed(old, new, res.status_subresource)
            ):
                new["metadata"]["generation"] = int(old_meta.get("generation") or 0) + 1
            finished = bool(old_meta.get("deletionTimestamp")) and not new["metadata"].get(
                "finalizers"
            )
            self._check_size(res, new)
            with self._lock:
                if res.objects.get(key) is not cur:
                    continue  # lost a race: recompute from the new state
                if req.query.get("dryRun"):
                    return _Response(200, res.render(_Stored(new, _dumps(new)), version), warnings)
                event = "DELETED" if finished else "MODIFIED"
                stored = self._commit_locked(res, event, key, new, old)
            return _Response(200, res.render(stored, version), warnings)

    def _delete(
        self, req: _Request, res: _Resource, version: str, key: tuple[str, str]
    ) -> _Response:
        options = req.json(allow_empty=True) or {}
        if not isinstance(options, dict):
            raise _APIError(400, "DeleteOptions must be a JSON object")
        pre = options.get("preconditions") or {}
        dry_run = bool(req.query.get("dryRun") or options.get("dryRun"))
        name = key[1]
        with self._lock:
            cur = res.objects.get(key)
            if cur is None:
                raise res.not_found(name)
            meta = cur.obj["metadata"]
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
            if dry_run:
                return _Response(200, res.render(cur, version))
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return _Response(200, res.render(cur, version))
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

    # -- watch ---------------------------------------------------------------------------------

    def _broadcast(self, sentinel: object) -> None:
        with self._lock:
            for watcher in self._watchers:
                watcher.queue.put(sentinel)

    def _watch(
        self, h: _Handler, req: _Request, res: _Resource, version: str, namespace: str | None
    ) -> None:
        labels, fields = self._selectors(req)
        timeout = req.int_param("timeoutSeconds")
        bookmarks = req.flag("allowWatchBookmarks")
        since_text = req.query.get("resourceVersion") or "0"
        try:
            since = int(since_text)
        except ValueError:
            raise _APIError(400, f'resourceVersion: Invalid value: "{since_text}"') from None
        watcher = _Watcher(res, version, namespace, labels, fields)
        initial: list[tuple[str, _Stored]] = []
        expired = False
        with self._lock:
            if since == 0:
                # "Get state and start at most recent": synthetic ADDED for what exists now.
                for key, stored in sorted(res.objects.items()):
                    if (namespace is None or key[0] == namespace) and watcher.selects(stored.obj):
                        initial.append(("ADDED", stored))
            elif since < self._floor:
                expired = True
            else:
                for event in self._history:
                    if event.rv > since and event.res is res:
                        seen = watcher.translate(event)
                        if seen is not None:
                            initial.append((seen, event.stored))
            if not expired:
                watcher.last_rv = self._rv
                self._watchers.add(watcher)
            floor = self._floor
        try:
            self._stream(h, watcher, initial, expired, since, floor, timeout, bookmarks)
        finally:
            with self._lock:
                self._watchers.discard(watcher)

    def _stream(
        self,
        h: _Handler,
        watcher: _Watcher,
        initial: list[tuple[str, _Stored]],
        expired: bool,
        since: int,
        floor: int,
        timeout: int | None,
        bookmarks: bool,
    ) -> None:
        res, version = watcher.res, watcher.version

        def emit(event_type: str, obj_raw: bytes) -> None:
            line = b'{"type":"' + event_type.encode() + b'","object":' + obj_raw + b"}\n"
            h.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))

        def end() -> None:
            h.wfile.write(b"0\r\n\r\n")

        def drop() -> None:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        try:
            h.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Cache-Control: no-cache, private\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            if expired:
                status = _status(410, "Expired", f"too old resource version: {since} ({floor})")
                emit("ERROR", _dumps(status))
                end()
                return
            for event_type, stored in initial:
                emit(event_type, res.render(stored, version))
            deadline = time.monotonic() + timeout if timeout and timeout > 0 else None
            next_bookmark = time.monotonic() + self.bookmark_interval if bookmarks else None
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    end()
                    return
                wait = 0.5  # also how often a vanished client is noticed
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if next_bookmark is not None:
                    wait = min(wait, max(0.0, next_bookmark - now))
                try:
                    item = watcher.queue.get(timeout=max(wait, 0.001))
                except queue.Empty:
                    if _peer_closed(h.connection):
                        drop()
                        return
                    if next_bookmark is not None and time.monotonic() >= next_bookmark:
                        emit("BOOKMARK", self._bookmark(watcher))
                        next_bookmark = time.monotonic() + self.bookmark_interval
                    continue
                if item is _BREAK or self._stopping:
                    drop()
                    return
                if item is _CLOSE:
                    end()
                    return
                if self._down == "hang":
                    self._hold_while_hung()
                    if self._down is not None or self._stopping:
                        drop()
                        return
                seen = watcher.translate(item)
                if seen is not None:
                    emit(seen, res.render(item.stored, version))
                watcher.last_rv = item.rv
        except Exception:  # headers are out: a Status body is no longer possible, so hang up
            drop()

    def _bookmark(self, watcher: _Watcher) -> bytes:
        with self._lock:
            # Only claim versions this watcher has been sent: nothing queued means caught up.
            rv = self._rv if watcher.queue.empty() else watcher.last_rv
        return _dumps(
            {
                "kind": watcher.res.kind,
                "apiVersion": _api_version(watcher.res.group, watcher.version),
                "metadata": {"resourceVersion": str(rv)},
            }
        )

    def _hold_while_hung(self) -> None:
        with self._state:
            while self._down == "hang" and not self._stopping:
                self._state.wait()


def _peer_closed(conn: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


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


# --------------------------------------------------------------------------------------------
# Kubeconfig and several clusters


def write_kubeconfig(
    path: str | Path, contexts: Mapping[str, tuple[str, str, str]], *, ca_pem: bytes | None = None
) -> Path:
    """Write a kubeconfig: context name -> (server url, bearer token, default namespace).

    One cluster and one user entry per context, named like the context; current-context is the
    first; ``ca_pem`` becomes every cluster's certificate-authority-data. Written as JSON, which
    every kubeconfig reader accepts as YAML, with mode 0600.
    """
    if not contexts:
        raise ValueError("at least one context is needed")
    clusters: list[dict[str, Any]] = []
    users: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for name, (server, token, namespace) in contexts.items():
        cluster: dict[str, str] = {"server": server}
        if ca_pem is not None:
            cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
        clusters.append({"name": name, "cluster": cluster})
        users.append({"name": name, "user": {"token": token}})
        entries.append(
            {"name": name, "context": {"cluster": name, "user": name, "namespace": namespace}}
        )
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": clusters,
        "users": users,
        "contexts": entries,
        "current-context": next(iter(contexts)),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds tokens
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")
    return target


class EmulatedClusters:
    """Several emulated API servers and one kubeconfig with a context for each."""

    def __init__(
        self,
        names: Sequence[str],
        directory: str | Path,
        *,
        token_prefix: str = "token-",
        crd_files: Iterable[str | Path] = (),
        default_namespace: str | None = None,
        tls: bool = False,
        **server_kwargs: Any,
    ) -> None:
        names = list(names)
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate cluster names: {names}")
        crds = list(crd_files)
        # One CA per run, in the kubeconfig; every server shares the loopback certificate.
        self.tls = make_tls() if tls else None
        self.servers: dict[str, KubeAPIServer] = {
            name: KubeAPIServer(
                name, token=f"{token_prefix}{name}", crd_files=crds, tls=self.tls, **server_kwargs
            )
            for name in names
        }
        namespaces = list(server_kwargs.get("namespaces", ("jupyterhub",)))
        self.default_namespace = default_namespace or (namespaces[0] if namespaces else "default")
        self.directory = Path(directory)
        self.kubeconfig = self.directory / "kubeconfig"

    def start(self) -> EmulatedClusters:
        started = []
        try:
            for server in self.servers.values():
                started.append(server.start())
        except BaseException:
            for server in started:
                server.stop()
            raise
        write_kubeconfig(
            self.kubeconfig,
            {
                name: (server.url, server.token, self.default_namespace)
                for name, server in self.servers.items()
            },
            ca_pem=self.tls.ca_pem if self.tls else None,
        )
        return self

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def __getitem__(self, name: str) -> KubeAPIServer:
        return self.servers[name]

    def __enter__(self) -> EmulatedClusters:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
