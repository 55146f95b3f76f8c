"""Static credentials read straight from a kubeconfig or the pod's service account.

The ``kubernetes`` package's loaders import requests, oauthlib, urllib3, websocket-client and
its client configuration (about 270 modules, 7-9 MiB of resident memory in every replica) to
produce what most clusters need: a server URL, a CA, a bearer token or a client certificate.
Those are read here. A user entry with anything more (an exec plugin, an auth-provider,
impersonation, a proxy) yields None, and the caller hands it to the ``kubernetes`` package,
which runs and refreshes such credentials.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REREAD_SECONDS = 60.0  # token files rotate (projected tokens: hourly); re-read this often
# User and cluster keys this module understands; any other one means the kubernetes package.
_USER_KEYS = {"token", "tokenFile", "client-certificate", "client-certificate-data",
              "client-key", "client-key-data", "username", "password"}
_CLUSTER_KEYS = {"server", "certificate-authority", "certificate-authority-data",
                 "insecure-skip-tls-verify", "extensions"}


@dataclass(frozen=True)
class Static:
    server: str
    verify: ssl.SSLContext | bool
    token: Callable[[], str | None]  # the Authorization header value


class TokenFile:
    """A bearer token read from a file, again every REREAD_SECONDS (rotation)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._value = ""
        self._read_at = -REREAD_SECONDS

    def __call__(self) -> str | None:
        with self._lock:
            if time.monotonic() - self._read_at >= REREAD_SECONDS:
                self._value = self.path.read_text().strip()
                self._read_at = time.monotonic()
            return f"Bearer {self._value}" if self._value else None


def merged(paths: list[Path]) -> dict[str, Any]:
    """Several kubeconfig files as one, as kubectl merges them: the first file that names a
    cluster, user or context (or sets current-context) wins. Relative file references are
    made absolute against the file that holds them."""
    out: dict[str, Any] = {"clusters": {}, "users": {}, "contexts": {}, "current-context": None}
    for path in paths:
        doc = yaml.safe_load(path.read_text()) or {}
        out["current-context"] = out["current-context"] or doc.get("current-context")
        for kind, body in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for item in doc.get(kind) or []:
                if isinstance(item, dict) and item.get("name") not in out[kind]:
                    out[kind][item["name"]] = _absolute(dict(item.get(body) or {}), path.parent)
    return out


def _absolute(section: dict[str, Any], base: Path) -> dict[str, Any]:
    for key in ("certificate-authority", "client-certificate", "client-key", "tokenFile"):
        if section.get(key):
            section[key] = str(base / os.path.expanduser(section[key]))
    return section


def from_kubeconfig(paths: list[Path], context: str | None) -> Static | None:
    """The credentials of ``context`` (default: current-context), or None when they need the
    kubernetes package. Raises KeyError for a context, cluster or user that is not there."""
    config = merged(paths)
    ctx = config["contexts"][context or config["current-context"]]
    cluster, user = config["clusters"][ctx["cluster"]], config["users"][ctx.get("user", "")]
    if set(user) - _USER_KEYS or set(cluster) - _CLUSTER_KEYS:
        return None
    return Static(str(cluster["server"]).rstrip("/"), _verify(cluster, user), _token(user))


def in_cluster(directory: Path = SERVICE_ACCOUNT) -> Static:
    """The pod's service account: the API server from the environment Kubernetes sets.
    Outside a pod, or with no token mounted, a ConfigError that says which."""
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if not (host and port):
        raise ConfigError(
            "inCluster: true, but this process does not run in a Kubernetes pod "
            "(KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set): give the "
            "cluster a kubeconfig context instead")
    if not (directory / "token").is_file():
        raise ConfigError(
            f"inCluster: true, but the pod has no service account token at {directory / 'token'} "
            "(automountServiceAccountToken: false?)")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address
    verify = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    return Static(f"https://{host}:{port}", verify, TokenFile(directory / "token"))


def _verify(cluster: dict[str, Any], user: dict[str, Any]) -> ssl.SSLContext | bool:
    if cluster.get("insecure-skip-tls-verify"):
        if not (user.get("client-certificate") or user.get("client-certificate-data")):
            return False
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
        ctx = ssl.create_default_context(cadata=ca)
    else:
        ctx = ssl.create_default_context(cafile=cluster.get("certificate-authority"))
    _load_client_certificate(ctx, user)
    return ctx


def _load_client_certificate(ctx: ssl.SSLContext, user: dict[str, Any]) -> None:
    cert, key = user.get("client-certificate"), user.get("client-key")
    if user.get("client-certificate-data"):
        with _data_file(user["client-certificate-data"]) as cert, \
                _data_file(user.get("client-key-data", "")) as key:
            ctx.load_cert_chain(cert, key or None)
    elif cert:
        ctx.load_cert_chain(cert, key or None)


class _data_file:  # noqa: N801 - used like a function
    """Base64 data in a private temporary file while the ssl module reads it (it reads only
    files), removed at once."""

    def __init__(self, data: str) -> None:
        self.data = data
        self.path = ""

    def __enter__(self) -> str:
        if not self.data:
            return ""
        fd, self.path = tempfile.mkstemp(prefix="federation-cred-")
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(self.data))
        return self.path

    def __exit__(self, *exc: object) -> None:
        if self.path:
            os.unlink(self.path)


def _token(user: dict[str, Any]) -> Callable[[], str | None]:
    if user.get("token"):
        value = f"Bearer {user['token']}"
        return lambda: value
    if user.get("tokenFile"):
        return TokenFile(Path(user["tokenFile"]))
    if user.get("username") and user.get("password"):
        pair = f"{user['username']}:{user['password']}".encode()
        basic = "Basic " + base64.b64encode(pair).decode()
        return lambda: basic
    return lambda: None
