"""One parsed request and one response, as the routing and the store pass them around.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .common import _APIError


@dataclass(slots=True)
class _Request:
    method: str
    query: dict[str, str]
    headers: Any
    body: bytes
    user: str = ""  # whose bearer token authenticated the request

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


@dataclass(frozen=True, slots=True)
class Access:
    """One resource request as an RBAC rule sees it: who, verb, group, resource, namespace."""

    user: str
    verb: str
    group: str
    resource: str  # "pods", or "pods/status" for a subresource
    namespace: str  # "" for cluster-scoped requests and lists across namespaces
    name: str
    allowed: bool = True  # False: refused with 403 by the token's rules
