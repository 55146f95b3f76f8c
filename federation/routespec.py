"""Route paths as the proxy API knows them: normalising, validating and taking them apart.

A route key is what configurable-http-proxy stores: decoded, starting with ``/``, without one
trailing ``/`` (except ``/`` itself). With JupyterHub's ``subdomain_host`` the first segment is a
host name (``/alice.hub.example.org/user/alice``); such a key is a *host route*.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from .errors import InvalidRoute

MAX_PATH_BYTES = 1024
MAX_HOST = 253  # DNS: a name is at most 253 characters, a label at most 63
MAX_LABEL = 63
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A lone UTF-16 surrogate (JSON allows "\ud800") has no UTF-8 form: it cannot be stored.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?")
# A host segment: a DNS name with at least one dot (a base_url segment like "jupyter" has none).
_HOST_SEGMENT = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def normalize_path(raw: str) -> str:
    """The stored key for an API path, or InvalidRoute."""
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidRoute(f"route path is longer than {MAX_PATH_BYTES} bytes")
    if has_control(raw):
        raise InvalidRoute("route path contains control characters")
    if has_surrogate(raw):
        raise InvalidRoute("route path contains a lone UTF-16 surrogate")
    path = raw if raw.startswith("/") else "/" + raw
    if path != "/" and path.endswith("/"):
        path = path[:-1]
    return path


@dataclass(frozen=True)
class RouteKey:
    """A route key split into the parts routing needs."""

    path: str  # the key as stored, e.g. "/alice.hub.example.org/user/alice"
    host: str | None  # "alice.hub.example.org" for a host route, else None
    rest: str  # the path to match on that host, e.g. "/user/alice"

    @property
    def depth(self) -> int:
        """Number of path segments matched below the host; "/" is 0."""
        return 0 if self.rest == "/" else self.rest.count("/")

    @classmethod
    def parse(cls, path: str) -> RouteKey:
        first, _, rest = path[1:].partition("/")
        if _is_host_segment(first):
            return cls(path=path, host=first.lower(), rest="/" + rest if rest else "/")
        return cls(path=path, host=None, rest=path)


def _is_host_segment(segment: str) -> bool:
    """True when a first path segment names a host (``subdomain_host`` routing).

    Istio refuses a host whose last label is all digits, so ``/v1.2/...`` or ``/10.0.0.299/...``
    is a plain path; an IPv4 address may be a VirtualService host, so it stays a host.
    """
    if not _HOST_SEGMENT.match(segment):
        return False
    return not segment.rpartition(".")[2].isdigit() or ip_literal(segment) is not None


def validate_key(key: RouteKey) -> RouteKey:
    """Refuse a host route whose host no VirtualService may name (too long)."""
    if key.host is not None and ip_literal(key.host) is None:
        problem = host_problem(key.host)
        if problem:
            raise InvalidRoute(f"host {brief(key.host)} of the route path {problem}")
    return key


def brief(value: object, limit: int = 80) -> str:
    """``repr`` cut to ``limit`` characters: error messages stay one short line (repr escapes
    newlines and surrogates, so the JSON answer can always be encoded)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def json_type(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages the hub's admin reads."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def host_problem(host: str) -> str | None:
    """Why Istio would refuse ``host`` as a VirtualService, ServiceEntry or DestinationRule
    host (its ValidateFQDN), or None when it is fine.

    Stricter than Istio in two places that change nothing for a working target: at most 253
    characters (DNS; Istio says 255) and no empty label (Istio allows a trailing dot).
    """
    if not host:
        return "is empty"
    if len(host) > MAX_HOST:
        return f"is {len(host)} characters long (a DNS name has at most {MAX_HOST})"
    labels = host.split(".")
    for label in labels:
        if not label:
            return "has an empty label ('..', or a leading or trailing '.')"
        if len(label) > MAX_LABEL:
            return f"has a label of {len(label)} characters (at most {MAX_LABEL})"
        if not _LABEL.fullmatch(label):
            return (f"has the label {brief(label, 40)}: labels are letters, digits and '-', "
                    "not starting or ending with '-'")
    if labels[-1].isdigit():
        return "is not an IP address, and a DNS name may not end in an all-numeric label"
    return None


def validate_target(target: object) -> str:
    if not isinstance(target, str):
        raise InvalidRoute("'target' must be a string")
    if _CONTROL.search(target) or len(target) > 2048:
        raise InvalidRoute("'target' contains control characters or is too long")
    try:
        parts = urlsplit(target)
        port = parts.port
    except ValueError:
        raise InvalidRoute(f"'target' {brief(target)} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRoute(f"'target' {brief(target)} must be an absolute http:// or https:// URL")
    if port == 0:
        raise InvalidRoute(f"'target' {brief(target)} has port 0 (ports are 1-65535)")
    _validate_target_host(parts.hostname)
    return target


def _validate_target_host(host: str) -> None:
    address = ip_literal(host)
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        raise InvalidRoute(f"target host {brief(host)} is a scoped IPv6 address: no mesh routes to it")
    problem = None if address is not None else host_problem(host)
    if problem:
        raise InvalidRoute(f"target host {brief(host)} {problem}")


def segment_prefix_of(key: str, path: str) -> bool:
    """True when route ``key`` serves request ``path`` in configurable-http-proxy."""
    return key == "/" or path == key or path.startswith(key + "/")


# RFC 3986 sub-delims and ':' '@' may stand unescaped in a path; JupyterHub escapes names with
# quote(name, safe="@~"), browsers leave most of these alone, other clients escape them.
_PATH_SAFE = "/@~!$&'()*+,;=:"


def wire_forms(rest: str) -> list[str]:
    """The spellings of a decoded path that can arrive at the gateway.

    configurable-http-proxy matches on the decoded path; Envoy matches the path as sent, where
    ``/user/秀樹`` arrives as ``/user/%E7%A7%80%E6%A8%B9`` and ``has@`` as ``has@`` or ``has%40``.
    A rule matches every spelling, so the two agree.
    """
    forms: list[str] = []
    for form in (quote(rest, safe=_PATH_SAFE), quote(rest, safe="/~")):
        if form not in forms:
            forms.append(form)
    return forms
