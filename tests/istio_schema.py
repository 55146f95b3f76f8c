"""Validation of objects against the Istio CRD schemas in ../shared/istio, and against the host
and port rules Istio's admission webhook adds on top of them (test support)."""

from __future__ import annotations

import ipaddress
import re
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
    name = obj["metadata"]["name"]
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        raise jsonschema.ValidationError(f"name {name!r} is not a DNS-1123 label")
    validate_webhook_rules(obj)


# ---------------------------------------------------------------------------------------------
# What the CRD schemas leave to Istio's validating webhook (pkg/config/validation), transcribed
# from its Go code independently of federation/, so the two can disagree and a test fail.

_ISTIO_LABEL = re.compile(r"[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?")


def istio_domain_error(domain: str, wildcard: bool = True) -> str | None:
    """ValidateWildcardDomain (``wildcard``) or ValidateFQDN: None when Istio accepts."""
    if not domain:
        return "empty domain name"
    if len(domain) > 255:
        return f"domain name {domain!r} too long (max 255)"
    labels = domain.split(".")
    if wildcard and labels[0] == "*":
        labels = labels[1:]
    if labels and re.fullmatch(r"[+-]?[0-9]+", labels[-1]):
        return f"domain name {domain!r}: top level domain cannot be all-numeric"
    for i, label in enumerate(labels):
        if i == len(labels) - 1 and label == "":
            break  # a trailing dot ("istio.io.") is allowed
        if len(label) > 63 or not _ISTIO_LABEL.fullmatch(label):
            return f"domain name {domain!r} invalid (label {label!r} invalid)"
    return None


def _port_error(number: object) -> str | None:
    ok = isinstance(number, int) and 0 < number <= 65535
    return None if ok else f"port number {number!r} must be in 1-65535"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _virtual_service_errors(spec: dict[str, Any]) -> list[str | None]:
    out = [None if _is_ip(h) else istio_domain_error(h) for h in spec.get("hosts") or []]
    for rule in spec.get("http") or []:
        for route in rule.get("route") or []:
            dest = route["destination"]
            out.append(istio_domain_error(dest["host"]) if dest["host"] != "*" else "host '*'")
            if "port" in dest:
                out.append(_port_error(dest["port"].get("number")))
    return out


def _service_entry_errors(spec: dict[str, Any]) -> list[str | None]:
    dns = spec.get("resolution") in ("DNS", "DNS_ROUND_ROBIN") and not spec.get("endpoints")
    out = [istio_domain_error(h, wildcard=not dns) if h != "*" else "host '*'" for h in spec["hosts"]]
    out += [_port_error(p.get("number")) for p in spec.get("ports") or []]
    if spec.get("resolution") == "STATIC":
        out += [None if _is_ip(e.get("address", "")) else f"endpoint {e!r} is not an IP"
                for e in spec.get("endpoints") or []]
    return out


def _destination_rule_errors(spec: dict[str, Any]) -> list[str | None]:
    out = [istio_domain_error(spec["host"])]
    for setting in (spec.get("trafficPolicy") or {}).get("portLevelSettings") or []:
        out.append(_port_error(setting["port"].get("number")))
    return out


_WEBHOOK_RULES = {
    "VirtualService": _virtual_service_errors,
    "ServiceEntry": _service_entry_errors,
    "DestinationRule": _destination_rule_errors,
}


def validate_webhook_rules(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError where Istio's webhook would refuse ``obj``."""
    rules = _WEBHOOK_RULES.get(obj["kind"])
    errors = [e for e in rules(obj.get("spec") or {}) if e] if rules else []
    if errors:
        raise jsonschema.ValidationError(f"{obj['metadata']['name']}: {errors[0]}")
