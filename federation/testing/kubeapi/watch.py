"""Watch streams: events from the history as chunked JSON lines, bookmarks, 410 Expired for a
compacted resourceVersion, and the ways a stream ends (timeout, outage, broken on purpose).
"""

from __future__ import annotations

import queue
import select
import socket
import time
from typing import TYPE_CHECKING

from .common import _api_version, _APIError, _dumps, _status
from .events import _BREAK, _CLOSE, _Event, _Watcher
from .faults import FaultsMixin
from .messages import _Request
from .resources import _Resource, _Stored
from .store import StoreMixin

if TYPE_CHECKING:  # import cycle: only annotations need it
    from .protocol import _Handler


def _peer_closed(conn: socket.socket) -> bool:
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        return conn.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


def _since(req: _Request) -> int:
    text = req.query.get("resourceVersion") or "0"
    try:
        return int(text)
    except ValueError:
        raise _APIError(400, f'resourceVersion: Invalid value: "{text}"') from None


class _Stream:
    """One watch response on a handler's connection: chunked JSON lines, one event each."""

    def __init__(self, h: _Handler) -> None:
        self.h = h

    def start(self) -> None:
        self.h.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            b"Cache-Control: no-cache, private\r\nTransfer-Encoding: chunked\r\n\r\n"
        )

    def emit(self, event_type: str, obj_raw: bytes) -> None:
        line = b'{"type":"' + event_type.encode() + b'","object":' + obj_raw + b"}\n"
        self.h.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))

    def end(self) -> None:
        """A clean end: the last chunk."""
        self.h.wfile.write(b"0\r\n\r\n")

    def drop(self) -> None:
        """An abrupt end, as when an apiserver goes away mid-stream."""
        self.h.close_connection = True
        try:
            self.h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class WatchMixin(StoreMixin, FaultsMixin):
    """Watch streams: chunked JSON lines from the event history, bookmarks, 410 when compacted."""

    bookmark_interval: float


    def break_watches(self, *, graceful: bool = False) -> None:
        """End every open watch: abruptly (connection dropped) or, if graceful, cleanly."""
        self._broadcast(_CLOSE if graceful else _BREAK)

    @property
    def open_watches(self) -> int:
        with self._lock:
            return len(self._watchers)

    def watched_kinds(self) -> set[str]:
        """The plurals with at least one open watch."""
        with self._lock:
            return {watcher.res.plural for watcher in self._watchers}

    def _broadcast(self, sentinel: object) -> None:
        with self._lock:
            for watcher in self._watchers:
                watcher.queue.put(sentinel)

    def _watch(
        self, h: _Handler, req: _Request, res: _Resource, version: str, namespace: str | None
    ) -> None:
        labels, fields = self._selectors(req)
        # Every parameter is parsed before the headers go out: a bad one is still a 400 Status.
        follow = (req.int_param("timeoutSeconds"), req.flag("allowWatchBookmarks"))
        since = _since(req)
        watcher = _Watcher(res, version, namespace, labels, fields)
        with self._lock:
            initial = self._initial_locked(watcher, since)
            if initial is not None:
                watcher.last_rv = self._rv
                self._watchers.add(watcher)
            floor = self._floor
        try:
            self._stream(h, watcher, initial, since, floor, follow)
        finally:
            with self._lock:
                self._watchers.discard(watcher)

    def _initial_locked(self, watcher: _Watcher, since: int) -> list[tuple[str, _Stored]] | None:
        """The events a new watch starts with; None when ``since`` is older than the history
        (410 Expired). Lock held."""
        res, namespace = watcher.res, watcher.namespace
        if since == 0:
            # "Get state and start at most recent": synthetic ADDED for what exists now.
            return [("ADDED", stored) for _, stored in res.walk(namespace, None)
                    if watcher.selects(stored.obj)]
        if since < self._floor:
            return None
        initial = []
        for event in self._history:
            if event.rv > since and event.res is res:
                seen = watcher.translate(event)
                if seen is not None:
                    initial.append((seen, event.stored))
        return initial

    def _stream(
        self,
        h: _Handler,
        watcher: _Watcher,
        initial: list[tuple[str, _Stored]] | None,
        since: int,
        floor: int,
        follow: tuple[int | None, bool],
    ) -> None:
        out = _Stream(h)
        try:
            out.start()
            if initial is None:
                status = _status(410, "Expired", f"too old resource version: {since} ({floor})")
                out.emit("ERROR", _dumps(status))
                out.end()
                return
            for event_type, stored in initial:
                out.emit(event_type, watcher.res.render(stored, watcher.version))
            self._follow(out, watcher, *follow)
        except Exception:  # headers are out: a Status body is no longer possible, so hang up
            out.drop()

    def _follow(
        self, out: _Stream, watcher: _Watcher, timeout: int | None, bookmarks: bool
    ) -> None:
        """Deliver events until the timeout, an outage, a break, or the client leaves."""
        deadline = time.monotonic() + timeout if timeout and timeout > 0 else None
        next_bookmark = time.monotonic() + self.bookmark_interval if bookmarks else None
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                out.end()
                return
            wait = 0.5  # also how often a vanished client is noticed
            if deadline is not None:
                wait = min(wait, deadline - now)
            if next_bookmark is not None:
                wait = min(wait, max(0.0, next_bookmark - now))
            try:
                item = watcher.queue.get(timeout=max(wait, 0.001))
            except queue.Empty:
                if _peer_closed(out.h.connection):
                    out.drop()
                    return
                if next_bookmark is not None and time.monotonic() >= next_bookmark:
                    out.emit("BOOKMARK", self._bookmark(watcher))
                    next_bookmark = time.monotonic() + self.bookmark_interval
                continue
            if not self._deliver(out, watcher, item):
                return

    def _deliver(self, out: _Stream, watcher: _Watcher, item: object) -> bool:
        """Send one queued item; False when it ended the stream."""
        if item is _BREAK or self._stopping:
            out.drop()
            return False
        if item is _CLOSE:
            out.end()
            return False
        if self._down == "hang":
            self._hold_while_hung()
            if self._down is not None or self._stopping:
                out.drop()
                return False
        assert isinstance(item, _Event)
        self._lag(item.at)
        seen = watcher.translate(item)
        if seen is not None:
            out.emit(seen, watcher.res.render(item.stored, watcher.version))
        watcher.last_rv = item.rv
        return True

    def _bookmark(self, watcher: _Watcher) -> bytes:
        with self._lock:
            # Only claim versions this watcher has been sent: nothing queued means caught up.
            rv = self._rv if watcher.queue.empty() else watcher.last_rv
        return _dumps(
            {
                "kind": watcher.res.kind,
                "apiVersion": _api_version(watcher.res.group, watcher.version),
                "metadata": {"resourceVersion": str(rv)},
            }
        )

