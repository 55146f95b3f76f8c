"""``KubeAPIServer``: one emulated cluster, stacking the store, validation, watch, discovery,
faults and protocol layers; its life cycle (start, stop, outages of the listener).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from .events import _BREAK
from .kubelet import KubeletMixin
from .protocol import ProtocolMixin
from .tls import ServerTLS


class KubeAPIServer(ProtocolMixin, KubeletMixin):
    """One emulated cluster's API server on loopback. Thread-safe; usable as a context manager.

    The layers it stacks (protocol, watch, discovery, store, validation, faults) each live in
    their own module; this class sets them up and owns the life cycle of the listener.
    """

    def __init__(
        self,
        name: str,
        *,
        token: str = "test-token",
        host: str = "127.0.0.1",
        port: int = 0,
        namespaces: Iterable[str] = ("jupyterhub", "default", "istio-system"),
        crd_files: Iterable[str | Path] = (),
        history_limit: int = 5000,
        git_version: str = "v1.30.0",
        tls: ServerTLS | None = None,
        kubelet: bool = True,
        pod_ready_delay: float = 0.2,
        pod_stop_delay: float = 0.2,
    ) -> None:
        self._init_listener(name, token, host, port, tls)
        self._init_faults()
        self._init_store(history_limit, crd_files)
        self._init_kubelet(kubelet, pod_ready_delay, pod_stop_delay, zlib.crc32(name.encode()))
        self.git_version = git_version
        # Seconds between BOOKMARK events on watches that allow them (the apiserver uses ~1 min).
        self.bookmark_interval: float = 60.0
        for ns in namespaces:
            self.add_namespace(ns)

    def start(self) -> KubeAPIServer:
        with self._state:
            if self._started and not self._stopping:
                return self
            self._load_crds()
            self._stopping = False
            self._down = None
            self._started = True
        self._open_listener()
        return self

    def stop(self) -> None:
        with self._state:
            if not self._started or self._stopping:
                return
            self._stopping = True
            self._state.notify_all()
        self._stop_kubelet()
        self._close_listener()
        self._broadcast(_BREAK)
        self._drop_connections()

    def __enter__(self) -> KubeAPIServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"KubeAPIServer({self.name!r}, url={self.url!r})"

    def set_down(self, down: bool, mode: str = "refuse") -> None:
        """Simulate an outage: "refuse" closes the port and drops connections; "hang" stalls."""
        if mode not in ("refuse", "hang"):
            raise ValueError(f"mode must be 'refuse' or 'hang', not {mode!r}")
        with self._state:
            if not self._started or self._stopping:
                raise RuntimeError("the server is not running")
            previous = self._down
            self._down = mode if down else None
            self._state.notify_all()
        if self._down == "refuse":
            if previous != "refuse":
                self._close_listener()
            self._broadcast(_BREAK)
            self._drop_connections()
        elif previous == "refuse":
            self._open_listener()  # same port: the client's URL keeps working

