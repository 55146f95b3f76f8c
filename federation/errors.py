"""The exception tree of the federation proxy.

    FederationError
    ├── ConfigError             clusters.yaml or settings are unusable (start-up, reload)
    ├── InvalidRoute            a proxy API request the service refuses (HTTP 400/413)
    │   └── HostClaimed         it needs a gateway host another hub claims (HTTP 409)
    └── KubeError               a Kubernetes call failed; carries the cluster and verb
        ├── NotFound            404
        ├── Conflict            409 (AlreadyExists or a stale resourceVersion)
        ├── Rejected            other 4xx the API server answered (422 Invalid, 403 ...)
        └── ClusterUnavailable  connection errors, timeouts, 429 and 5xx: worth retrying
            └── CircuitOpen     the cluster failed repeatedly; calls fail fast for a while

The client's own exceptions are always chained as ``__cause__``.
"""

from __future__ import annotations


class FederationError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(FederationError):
    """The configuration cannot be used; the message says where and how to fix it."""


class InvalidRoute(FederationError):
    """A request to the proxy API that is refused without changing anything."""

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


class HostClaimed(InvalidRoute):
    """A route write needs a gateway host that another hub claims on a cluster (409, nothing
    written: JupyterHub raises a 4xx at once, with this message, rather than retrying)."""

    def __init__(self, message: str, *, cluster: str, holder: str) -> None:
        super().__init__(message, status_code=409)
        self.cluster = cluster
        self.holder = holder


class KubeError(FederationError):
    def __init__(
        self,
        message: str,
        *,
        cluster: str,
        verb: str = "",
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.cluster = cluster
        self.verb = verb
        self.status = status
        self.retry_after = retry_after


class NotFound(KubeError):
    pass


class Conflict(KubeError):
    pass


class Rejected(KubeError):
    pass


class ClusterUnavailable(KubeError):
    pass


class CircuitOpen(ClusterUnavailable):
    pass
