"""``KubeAPIServer``: one emulated cluster, stacking the store, validation, watch, discovery,
faults and protocol layers; its life cycle (start, stop, outages of the listener).
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from .common import VERBS
from .events import _BREAK, _Event, _Watcher
from .faults import _Fault
from .protocol import ProtocolMixin, _HTTPServer
from .resources import _Resource
from .tls import ServerTLS


class KubeAPIServer(ProtocolMixin):

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
    ) -> None:
        self.name = name
        self.tls = tls  # HTTPS with this certificate; plain HTTP when None
        self.token = token
        self.host = host
        self.port = port
        self.url = ""
        self.git_version = git_version
        self.history_limit = max(1, history_limit)
        self.crd_files = [Path(p) for p in crd_files]
        self.latency: float = 0.0
        # Seconds between BOOKMARK events on watches that allow them (the apiserver uses ~1 min).
        self.bookmark_interval: float = 60.0
        self.request_counts: dict[str, int] = dict.fromkeys(VERBS, 0)

        self._lock = threading.Lock()  # the store: resources, objects, history, watchers, rv
        self._rv = 0
        self._resources: dict[tuple[str, str], _Resource] = {}
        self._history: deque[_Event] = deque()
        self._floor = 0  # every event after this resourceVersion is still in the history
        self._watchers: set[_Watcher] = set()
        self._crds_loaded = False

        self._state = threading.Condition()  # outage mode, faults, lifecycle
        self._down: str | None = None
        self._faults: deque[_Fault] = deque()
        self._started = False
        self._stopping = False
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conn_lock = threading.Lock()
        self._conns: set[socket.socket] = set()

        ns_res = _Resource(
            "",
            "namespaces",
            "Namespace",
            kind_known=True,
            namespaced=False,
            declared=True,
            has_generation=False,
            schemas={"v1": None},
            versions={"v1"},
        )
        self._resources[("", "namespaces")] = ns_res
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

