"""Loaded by a JupyterHub process of the MultiClusterKubeSpawner stack (``federation demo --hub``
and its end-to-end test): the hub's DNS for the clusters' ingress host names, which do not exist,
sends them to a loopback stand-in for the users' servers. Needs aiohttp (a jupyterhub 6
dependency).
"""

from __future__ import annotations

import socket
from typing import Any

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver


class LoopbackResolver(AbstractResolver):
    """``"host:port"`` -> ``(ip, port)``; other names resolve as usual.

    aiohttp connects where the resolver says while the request keeps its URL (Host header), so
    the hub waits for a server at its real ingress URL and the stand-in sees which one it was.
    """

    def __init__(self, table: dict[str, Any]) -> None:
        self.table = {key.lower(): (str(ip), int(port)) for key, (ip, port) in table.items()}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = self.table.get(f"{host.lower().rstrip('.')}:{port}")
        if found is None:
            resolver = ThreadedResolver()
            try:
                return await resolver.resolve(host, port, family)
            finally:
                await resolver.close()
        ip, stand_in_port = found
        return [{"hostname": host, "host": ip, "port": stand_in_port, "family": socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        return None
