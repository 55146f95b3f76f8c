"""Validation of objects against the Istio CRD schemas in ../shared/istio (test support)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml


def _strip(schema: Any) -> Any:
    """The CRD schema as plain JSON Schema: drop Kubernetes' own x- keywords."""
    if isinstance(schema, dict):
        out = {k: _strip(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
        # The API server silently prunes unknown fields; a typo would vanish unnoticed, so here
        # an unknown field is an error.
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        if schema.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return out
    if isinstance(schema, list):
        return [_strip(v) for v in schema]
    return schema


@cache
def validators(crd_dir: str) -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    out = {}
    for path in Path(crd_dir).glob("*-crd.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            kind = doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schema = _strip(version["schema"]["openAPIV3Schema"])
                cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
                out[(kind, version["name"])] = cls(schema)
    return out


def validate(obj: dict[str, Any], crd_dir: Path) -> None:
    """Raise jsonschema.ValidationError when ``obj`` breaks its CRD's schema."""
    kind = obj["kind"]
    version = obj["apiVersion"].split("/")[1]
    validator = validators(str(crd_dir))[(kind, version)]
    top = validator.schema.get("properties", {})
    validator.validate({k: v for k, v in obj.items() if k in top})
    # DNS-1123 label names of at most 63 characters (object names double as Envoy stats names)
    import re

    name = obj["metadata"]["name"]
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        raise jsonschema.ValidationError(f"name {name!r} is not a DNS-1123 label")
