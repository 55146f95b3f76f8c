"""Validation of the Gateway API objects the service writes: the CRD schemas in
../shared/gateway-api, plus the CRDs' CEL rules that matter here (which a JSON Schema validator
does not run), transcribed from the CRD text independently of federation/, so the two can
disagree and a test fail. Core kinds (Service, EndpointSlice) get the API server's field checks
that matter for them."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Any

import jsonschema

from .istio_schema import validators

_PATH = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def _fail(obj: dict[str, Any], why: str) -> None:
    raise jsonschema.ValidationError(f"{obj['kind']} {obj['metadata']['name']}: {why}")


def _path_errors(value: str) -> list[str]:
    """The CEL rules of HTTPPathMatch for Exact and PathPrefix."""
    out = []
    if not value.startswith("/"):
        out.append("must start with '/'")
    for bad in ("//", "/./", "/../", "%2f", "%2F", "#"):
        if bad in value:
            out.append(f"must not contain {bad!r}")
    if value.endswith(("/..", "/.")):
        out.append("must not end with '/..' or '/.'")
    if not _PATH.match(value):
        out.append("holds characters outside the pattern")
    return out


def _httproute_rules(obj: dict[str, Any]) -> None:
    rules = obj["spec"].get("rules") or []
    total = sum(len(r.get("matches") or []) for r in rules)
    if total > 128:
        _fail(obj, f"{total} matches in all (at most 128)")
    names = [r["name"] for r in rules if "name" in r]
    if len(names) != len(set(names)):
        _fail(obj, "rule names must be unique")
    for rule in rules:
        matches = rule.get("matches") or []
        for match in matches:
            path = match.get("path") or {}
            if path.get("type", "PathPrefix") in ("Exact", "PathPrefix"):
                errors = _path_errors(path.get("value", "/"))
                if errors:
                    _fail(obj, f"path {path.get('value')!r}: {errors[0]}")
        rewrites = [f for f in rule.get("filters") or [] if f.get("urlRewrite", {}).get("path", {})
                    .get("type") == "ReplacePrefixMatch"]
        one_prefix = len(matches) == 1 and (matches[0].get("path") or {}).get("type") == "PathPrefix"
        if rewrites and not one_prefix:
            _fail(obj, "URLRewrite ReplacePrefixMatch needs exactly one PathPrefix match")
        for host in obj["spec"].get("hostnames") or []:
            if _is_ip(host):
                _fail(obj, f"hostname {host!r} is an IP")


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _service(obj: dict[str, Any]) -> None:
    spec = obj["spec"]
    for port in spec.get("ports") or []:
        if not 0 < port["port"] <= 65535:
            _fail(obj, f"port {port['port']}")
    if spec.get("type") == "ExternalName":
        name = spec.get("externalName", "")
        if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
            _fail(obj, f"externalName {name!r} is not a DNS name")
    elif spec.get("externalName"):
        _fail(obj, "externalName without type ExternalName")


def _endpoint_slice(obj: dict[str, Any]) -> None:
    family = obj.get("addressType")
    if family not in ("IPv4", "IPv6", "FQDN"):
        _fail(obj, f"addressType {family!r}")
    for endpoint in obj.get("endpoints") or []:
        for address in endpoint["addresses"]:
            parsed = ipaddress.ip_address(address)
            if f"IPv{parsed.version}" != family:
                _fail(obj, f"address {address} is not {family}")
    if not obj["metadata"].get("labels", {}).get("kubernetes.io/service-name"):
        _fail(obj, "no kubernetes.io/service-name label: no Service would use it")


def _backend_tls(obj: dict[str, Any]) -> None:
    validation = obj["spec"]["validation"]
    has_refs = bool(validation.get("caCertificateRefs"))
    has_known = bool(validation.get("wellKnownCACertificates"))
    if has_refs == has_known:
        _fail(obj, "exactly one of caCertificateRefs and wellKnownCACertificates")


_CORE = {"Service": _service, "EndpointSlice": _endpoint_slice}
_CEL = {"HTTPRoute": _httproute_rules, "BackendTLSPolicy": _backend_tls}


def validate_gateway(obj: dict[str, Any], crd_dir: Path) -> None:
    """Raise jsonschema.ValidationError when the API server would refuse ``obj``."""
    name = obj["metadata"]["name"]
    if len(name) > 63 or not _LABEL.fullmatch(name):
        _fail(obj, "name is not a DNS label of at most 63 characters")
    kind = obj["kind"]
    if kind in _CORE:
        _CORE[kind](obj)
        return
    version = obj["apiVersion"].split("/")[1]
    validator = validators(str(crd_dir))[(kind, version)]
    top = validator.schema.get("properties", {})
    validator.validate({k: v for k, v in obj.items() if k in top})
    if kind in _CEL:
        _CEL[kind](obj)
