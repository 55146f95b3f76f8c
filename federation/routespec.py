"""Route paths as the proxy API knows them: normalising, validating and taking them apart.

A route key is what configurable-http-proxy stores: decoded, starting with ``/``, without one
trailing ``/`` (except ``/`` itself). With JupyterHub's ``subdomain_host`` the first segment is a
host name (``/alice.hub.example.org/user/alice``); such a key is a *host route*.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from .errors import InvalidRoute

MAX_PATH_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# A host segment: a DNS name with at least one dot (a base_url segment like "jupyter" has none).
_HOST_SEGMENT = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def normalize_path(raw: str) -> str:
    """The stored key for an API path, or InvalidRoute."""
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidRoute(f"route path is longer than {MAX_PATH_BYTES} bytes")
    if _CONTROL.search(raw):
        raise InvalidRoute("route path contains control characters")
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
        if _HOST_SEGMENT.match(first):
            return cls(path=path, host=first.lower(), rest="/" + rest if rest else "/")
        return cls(path=path, host=None, rest=path)


def validate_target(target: object) -> str:
    if not isinstance(target, str):
        raise InvalidRoute("'target' must be a string")
    if _CONTROL.search(target) or len(target) > 2048:
        raise InvalidRoute("'target' contains control characters or is too long")
    try:
        parts = urlsplit(target)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise InvalidRoute(f"'target' {target!r} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRoute(f"'target' {target!r} must be an absolute http:// or https:// URL")
    return target


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
