"""The HTTP side: the threaded listener (plain or TLS), bearer authentication, body limits, and
the routing of a request path to discovery, the store or a watch; errors become Status bodies.
"""

from __future__ import annotations

import hmac
import socket
import ssl
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from .common import MAX_REQUEST_BYTES, _APIError, _dumps, _status
from .messages import Access, _Request, _Response
from .openapi import OpenAPIMixin
from .rbac import Rule, forbidden_message
from .resources import _Resource
from .tls import ServerTLS
from .watch import WatchMixin


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and small bodies must not wait for delayed ACKs
    server: _HTTPServer

    def setup(self) -> None:
        if isinstance(self.request, ssl.SSLSocket):
            # The TLS handshake runs here, in the connection's own thread, not in accept():
            # a slow or failing client then holds up only itself.
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
        super().setup()
        self.server.api._track(self.connection, True)

    def finish(self) -> None:
        self.server.api._track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # the base class names it so
        pass  # thousands of requests per test; the request counters are the useful record

    def do_GET(self) -> None:
        self.server.api._serve(self)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # never join idle keep-alive connections on close
    request_queue_size = 512
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: ProtocolMixin) -> None:
        self.api = api
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # dropped connections are routine here (outages, stop, client timeouts)
        super().handle_error(request, client_address)


_NOT_ALLOWED = "the server does not allow this method on the requested resource"


@dataclass(slots=True)
class _Target:
    """The resource (and object, subresource) a request path names."""

    res: _Resource
    version: str
    namespace: str | None
    name: str | None
    sub: str | None
    watch_path: bool


class ProtocolMixin(WatchMixin, OpenAPIMixin):
    """The listener, one request's path from bytes to a Status or an object, and its routing."""

    name: str
    token: str
    host: str
    port: int
    url: str
    tls: ServerTLS | None
    _httpd: _HTTPServer | None
    _thread: threading.Thread | None
    _conn_lock: threading.Lock
    _conns: set[socket.socket]


    def _init_listener(
        self, name: str, token: str, host: str, port: int, tls: ServerTLS | None
    ) -> None:
        self.name = name
        self.token = token
        self.tokens: dict[str, str] = {token: "admin"}  # bearer token -> user name
        self.access_log: list[Access] = []  # requests of the tokens added by add_token
        self._recorded: set[str] = set()
        self._rules: dict[str, list[Rule]] = {}
        self.host = host
        self.port = port
        self.url = ""
        self.tls = tls  # HTTPS with this certificate; plain HTTP when None
        self._httpd = None
        self._thread = None
        self._conn_lock = threading.Lock()
        self._conns = set()

    def _open_listener(self) -> None:
        httpd = _HTTPServer((self.host, self.port), self)
        if self.tls is not None:
            httpd.socket = self.tls.server_context().wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = httpd.server_address[1]
        self.url = f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},  # shutdown() waits for one poll
            name=f"kubeapi-{self.name}",
            daemon=True,
        )
        self._httpd, self._thread = httpd, thread
        thread.start()

    def _close_listener(self) -> None:
        httpd, thread = self._httpd, self._thread
        self._httpd = self._thread = None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def add_token(self, token: str, user: str, rules: Sequence[Rule] | None = None) -> None:
        """Accept another bearer token; its resource requests are recorded under ``user`` in
        :attr:`access_log` (the server's own token is not recorded: tests make many requests).
        With ``rules`` (see :func:`rbac.rules_for`), requests they do not allow get 403."""
        if not token or not user:
            raise ValueError("a token and a user name are needed")
        self.tokens[token] = user
        self._recorded.add(user)
        if rules is not None:
            self._rules[user] = list(rules)

    def accesses(self, user: str, *, allowed: bool = True) -> set[tuple[str, str, str, str]]:
        """(verb, group, resource, namespace) of the resource requests ``user`` made that its
        rules allowed (``allowed=False``: those refused)."""
        return {(a.verb, a.group, a.resource, a.namespace)
                for a in list(self.access_log) if a.user == user and a.allowed == allowed}

    def _record(self, req: _Request, verb: str, t: _Target) -> None:
        """Record a request of an added token, and refuse it when its rules do not allow it."""
        if req.user not in self._recorded:
            return
        resource = t.res.plural + (f"/{t.sub}" if t.sub else "")
        group, namespace, name = t.res.group, t.namespace or "", t.name or ""
        rules = self._rules.get(req.user)
        allowed = rules is None or any(
            r.allows(verb, group, resource, namespace, name) for r in rules)
        access = Access(req.user, verb, group, resource, namespace, name, allowed)
        self.access_log.append(access)
        if not allowed:
            message = forbidden_message(req.user, verb, access.group, resource, access.namespace,
                                        access.name)
            raise _APIError(403, message, details={"name": access.name, "group": access.group,
                                                   "kind": t.res.plural})

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    def _drop_connections(self) -> None:
        with self._conn_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _serve(self, h: _Handler) -> None:
        if self._down is not None or self._stopping:
            self._stall_or_drop(h)
            return
        try:
            body = self._read_body(h)
        except _APIError as exc:
            h.close_connection = True  # the unread body would poison the next request
            self._send(h, _Response(exc.code, _dumps(exc.status()), exc.headers))
            return
        except (OSError, ValueError):
            h.close_connection = True
            return
        latency = self.latency
        if latency > 0:
            time.sleep(latency)
        if self._down is not None or self._stopping:
            self._stall_or_drop(h)
            return
        split = urlsplit(h.path)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        req = _Request(h.command, query, h.headers, body)
        try:
            user = self._authorized(h.headers.get("Authorization"))
            if user is None:
                raise _APIError(401, "Unauthorized")
            req.user = user
            response = self._route(h, req, [unquote(s) for s in split.path.split("/") if s])
        except _APIError as exc:
            response = _Response(exc.code, _dumps(exc.status()), exc.headers)
        except Exception as exc:  # a bug here must reach the client, not kill the connection
            message = f"Internal error occurred: {type(exc).__name__}: {exc}"
            response = _Response(500, _dumps(_status(500, "InternalError", message)))
        if response is not None:
            self._send(h, response)

    def _read_body(self, h: _Handler) -> bytes:
        if "chunked" in (h.headers.get("Transfer-Encoding") or "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                size = int(h.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while h.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_REQUEST_BYTES:
                    raise _APIError(413, f"Request entity too large: limit is {MAX_REQUEST_BYTES}")
                parts.append(h.rfile.read(size))
                h.rfile.readline()
        length = int(h.headers.get("Content-Length") or 0)
        if length > MAX_REQUEST_BYTES:
            raise _APIError(413, f"Request entity too large: limit is {MAX_REQUEST_BYTES}")
        return h.rfile.read(length) if length > 0 else b""

    def _authorized(self, header: str | None) -> str | None:
        """The user whose token the request carries; None when it carries no known token."""
        if not header or not header.startswith("Bearer "):
            return None
        given = header[7:].strip().encode()
        found = None
        for token, user in list(self.tokens.items()):  # compare all: no early exit to time
            if hmac.compare_digest(given, token.encode()):
                found = user
        return found

    def _send(self, h: _Handler, response: _Response) -> None:
        try:
            phrase = HTTPStatus(response.code).phrase
        except ValueError:
            phrase = ""
        lines = [
            f"HTTP/1.1 {response.code} {phrase}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            "Cache-Control: no-cache, private",
        ]
        lines += [f"{k}: {v}" for k, v in response.headers]
        if h.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace")
        try:
            h.wfile.write(head + response.body)  # one write: no Nagle/delayed-ACK stalls
        except OSError:
            h.close_connection = True

    def _route(self, h: _Handler, req: _Request, segs: list[str]) -> _Response | None:
        """The answer to one request (None: a watch, which wrote its own stream)."""
        answer = self._discovery(segs)
        if answer is not None:
            return answer
        target = self._target(*self._api_prefix(segs))
        if target.name is None:
            return self._collection_verb(h, req, target)
        return self._object_verb(req, target)

    def _discovery(self, segs: list[str]) -> _Response | None:
        """The answer for a discovery or health path; None for a resource path."""
        if not segs:
            return self._json(200, {"paths": ["/api", "/api/v1", "/apis", "/version"]})
        if len(segs) == 1 and segs[0] in ("healthz", "readyz", "livez"):
            return _Response(200, b"ok", content_type="text/plain; charset=utf-8")
        if segs == ["version"]:
            return self._json(200, self._version())
        if segs[0] == "openapi":
            return self._json(200, self._openapi(segs[1:]))
        if segs[0] == "api" and len(segs) <= 2:
            return self._json(200, self._core_discovery(segs))
        if segs[0] == "apis" and len(segs) == 1:
            return self._json(200, self._group_list())
        if segs[0] == "apis" and len(segs) == 2:
            return self._json(200, self._group(segs[1]))
        if segs[0] == "apis" and len(segs) == 3:
            return self._json(200, self._resource_list(segs[1], segs[2]))
        return None

    def _core_discovery(self, segs: list[str]) -> dict[str, Any]:
        if len(segs) == 1:
            address = f"{self.host}:{self.port}"
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}
        if segs[1] != "v1":
            raise self._page_not_found()
        return self._resource_list("", "v1")

    def _api_prefix(self, segs: list[str]) -> tuple[str, str, list[str]]:
        """(group, version, the rest) of a resource path: /api/v1/... or /apis/<g>/<v>/..."""
        if segs[0] == "api" and segs[1] == "v1":
            return "", "v1", segs[2:]
        if segs[0] == "apis":
            return segs[1], segs[2], segs[3:]
        raise self._page_not_found()

    def _target(self, group: str, version: str, rest: list[str]) -> _Target:
        """What [watch/][namespaces/<ns>/]<plural>[/<name>[/<sub>]] names; 404 for the rest."""
        watch_path = rest[0] == "watch"  # the deprecated /watch/ prefix
        if watch_path:
            rest = rest[1:]
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            raise self._page_not_found()
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        res = self._resource(group, version, rest[0])
        if sub is not None and sub != "status":
            raise self._page_not_found()
        if res.namespaced and namespace is None and name is not None:
            raise self._page_not_found()
        if not res.namespaced and namespace is not None:
            raise self._page_not_found()
        return _Target(res, version, namespace, name, sub, watch_path)

    def _collection_verb(self, h: _Handler, req: _Request, t: _Target) -> _Response | None:
        res, version, namespace = t.res, t.version, t.namespace
        scoped = namespace is not None or not res.namespaced
        if req.method == "GET":
            watching = t.watch_path or req.flag("watch")
            self._admit("watch" if watching else "list")
            self._record(req, "watch" if watching else "list", t)
            if watching:
                self._watch(h, req, res, version, namespace)
                return None
            return self._list(req, res, version, namespace)
        if req.method == "POST" and scoped:
            self._admit("create")
            self._record(req, "create", t)
            return self._create(req, res, version, namespace or "")
        if req.method == "DELETE" and scoped:
            self._admit("deletecollection")
            self._record(req, "deletecollection", t)
            return self._delete_collection(req, res, version, namespace)
        raise _APIError(405, _NOT_ALLOWED)

    def _object_verb(self, req: _Request, t: _Target) -> _Response:
        res, version, sub = t.res, t.version, t.sub
        assert t.name is not None
        key = (t.namespace or "", t.name)
        if req.method == "GET":
            self._admit("get")
            self._record(req, "get", t)
            stored = res.objects.get(key)
            answer = None if stored is None else _Response(200, res.render(stored, version))
            self._deliver_late()  # decided above: what happens meanwhile is not in it
            if answer is None:
                raise res.not_found(t.name)
            return answer
        if req.method == "PUT":
            self._admit("update")
            self._record(req, "update", t)
            return self._replace(req, res, version, key, sub)
        if req.method == "PATCH":
            self._admit("patch")
            self._record(req, "patch", t)
            return self._patch(req, res, version, key, sub)
        if req.method == "DELETE" and sub is None:
            if res.plural == "namespaces" and not res.group:
                raise _APIError(405, "deleting namespaces is not supported by this emulator")
            self._admit("delete")
            self._record(req, "delete", t)
            return self._delete(req, res, version, key)
        raise _APIError(405, _NOT_ALLOWED)

    @staticmethod
    def _json(code: int, value: Any) -> _Response:
        return _Response(code, _dumps(value))

