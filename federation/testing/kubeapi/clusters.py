"""Several emulated clusters behind one kubeconfig (one context each), and the kubeconfig
writer.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .server import KubeAPIServer
from .tls import make_tls


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

