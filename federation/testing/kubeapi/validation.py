"""Validation as the apiserver does it: names (DNS-1123, qualified names, label values),
metadata, the request body against the URL, object size, and the CRD schema.
"""

from __future__ import annotations

import re
from typing import Any

from .common import MAX_ANNOTATIONS_BYTES, MAX_OBJECT_BYTES, _api_version, _APIError, _dumps, _short
from .messages import _Request
from .resources import _OBJECT_META_FIELDS, _Resource
from .schema import _error_path, _prune, _Schema

_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")


_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # the apiserver's, avoids vowels and lookalikes


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


def _label_value_errors(value: str) -> list[str]:
    if len(value) > 63:
        return ["must be no more than 63 characters"]
    if not _LABEL_VALUE.fullmatch(value):
        return [
            "a valid label must be an empty string or consist of alphanumeric characters, '-', "
            "'_' or '.', and must start and end with an alphanumeric character"
        ]
    return []


Causes = list[tuple[str, str]]  # (field, message), as in a 422 Status's details.causes


def _check_type(res: _Resource, version: str, body: dict[str, Any]) -> None:
    """The decoder's checks: kind and apiVersion present and matching the URL."""
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


def _set_namespace(res: _Resource, meta: dict[str, Any], namespace: str) -> None:
    body_ns = meta.get("namespace")
    if not res.namespaced:
        meta.pop("namespace", None)
        return
    if body_ns and body_ns != namespace:
        raise _APIError(
            400,
            "the namespace of the provided object does not match the namespace sent on "
            "the request",
        )
    meta["namespace"] = namespace


def _field_validation(req: _Request) -> str:
    mode = req.query.get("fieldValidation") or "Warn"
    if mode not in ("Ignore", "Warn", "Strict"):
        raise _APIError(
            400,
            f'fieldValidation: Unsupported value: "{mode}": supported values: "Ignore", '
            '"Strict", "Warn"',
        )
    return mode


def _clean_metadata(meta: dict[str, Any], unknown: list[str]) -> None:
    """Drop unknown metadata fields (noting them); refuse labels, annotations or finalizers of
    the wrong shape (the decoder's 400, before any 422)."""
    for key in [k for k in meta if k not in _OBJECT_META_FIELDS]:
        unknown.append(f"metadata.{key}")
        del meta[key]
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is None:
            meta.pop(key, None)
        elif not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise _APIError(400, f"metadata.{key} must be a map of strings")
    finalizers = meta.get("finalizers")
    if finalizers is not None and (
        not isinstance(finalizers, list) or not all(isinstance(v, str) for v in finalizers)
    ):
        raise _APIError(400, "metadata.finalizers must be a list of strings")


def _metadata_causes(res: _Resource, meta: dict[str, Any]) -> Causes:
    name = meta.get("name") or ""
    is_namespace = res.plural == "namespaces" and not res.group
    name_errors = _label_errors(name) if is_namespace else _subdomain_errors(name)
    causes = [("metadata.name", f'Invalid value: "{name}": {e}') for e in name_errors]
    for key, value in (meta.get("labels") or {}).items():
        causes += [("metadata.labels", f'Invalid value: "{key}": {e}')
                   for e in _qualified_name_errors(key)]
        causes += [("metadata.labels", f'Invalid value: "{value}": {e}')
                   for e in _label_value_errors(value)]
    annotations = meta.get("annotations") or {}
    for key in annotations:
        causes += [("metadata.annotations", f'Invalid value: "{key}": {e}')
                   for e in _qualified_name_errors(key.lower())]
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        causes.append(
            ("metadata.annotations", f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes")
        )
    return causes


def _apply_schema(
    schema: _Schema, obj: dict[str, Any], unknown: list[str], causes: Causes
) -> dict[str, Any]:
    """Prune and default by the CRD schema; validate only when metadata was valid (the
    apiserver reports metadata first). Adds to ``unknown`` and ``causes``."""
    content = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
    pruned = _prune(content, schema.structural, "", unknown)
    obj = {"apiVersion": obj["apiVersion"], "kind": obj["kind"], "metadata": obj["metadata"],
           **pruned}
    if schema.validator is None or causes or (schema.quick is not None and schema.quick(pruned)):
        return obj
    errors = sorted(schema.validator.iter_errors(pruned),
                    key=lambda e: list(map(str, e.absolute_path)))
    for error in errors[:20]:
        where = _error_path(error.absolute_path)
        causes.append((where, f"Invalid value: {_short(error.instance)}: {error.message}"))
    return obj


def _unknown_field_warnings(mode: str, unknown: list[str]) -> list[tuple[str, str]]:
    if unknown and mode == "Strict":
        text = ", ".join(f'unknown field "{u}"' for u in unknown)
        raise _APIError(400, f"strict decoding error: {text}")
    if unknown and mode == "Warn":
        return [("Warning", f'299 - "unknown field \\"{u}\\""') for u in unknown]
    return []


class ValidationMixin:
    """Checks of a request body and of the object it would store, as the apiserver makes them."""

    def _check_body(
        self, res: _Resource, version: str, body: Any, namespace: str
    ) -> dict[str, Any]:
        """Checks that the apiserver's decoder and BeforeCreate/BeforeUpdate make."""
        if not isinstance(body, dict):
            raise _APIError(400, "the body of the request must be a JSON object")
        _check_type(res, version, body)
        meta = body.get("metadata")
        if meta is None:
            meta = body["metadata"] = {}
        if not isinstance(meta, dict):
            raise _APIError(400, "metadata must be an object")
        _set_namespace(res, meta, namespace)
        return body

    def _validate(
        self, req: _Request, res: _Resource, version: str, obj: dict[str, Any]
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Prune, default and validate a candidate object. Returns it and Warning headers."""
        mode = _field_validation(req)
        unknown: list[str] = []
        meta = obj["metadata"]
        _clean_metadata(meta, unknown)
        causes = _metadata_causes(res, meta)
        schema = res.schemas.get(version)
        if schema is not None:
            obj = _apply_schema(schema, obj, unknown, causes)
        warnings = _unknown_field_warnings(mode, unknown)
        if causes:
            raise res.invalid(meta.get("name") or "", causes)
        return obj, warnings

    def _check_size(self, res: _Resource, stored_obj: dict[str, Any]) -> None:
        if len(_dumps(stored_obj)) > MAX_OBJECT_BYTES:
            # etcd refuses values over 1.5 MiB; surfaced as RequestEntityTooLarge.
            raise _APIError(413, "etcdserver: request is too large")
