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
from .events import _BREAK, _CLOSE, _Watcher
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

    def _broadcast(self, sentinel: object) -> None:
        with self._lock:
            for watcher in self._watchers:
                watcher.queue.put(sentinel)

    def _watch(
        self, h: _Handler, req: _Request, res: _Resource, version: str, namespace: str | None
    ) -> None:
        labels, fields = self._selectors(req)
        timeout = req.int_param("timeoutSeconds")
        bookmarks = req.flag("allowWatchBookmarks")
        since_text = req.query.get("resourceVersion") or "0"
        try:
            since = int(since_text)
        except ValueError:
            raise _APIError(400, f'resourceVersion: Invalid value: "{since_text}"') from None
        watcher = _Watcher(res, version, namespace, labels, fields)
        initial: list[tuple[str, _Stored]] = []
        expired = False
        with self._lock:
            if since == 0:
                # "Get state and start at most recent": synthetic ADDED for what exists now.
                for key, stored in sorted(res.objects.items()):
                    if (namespace is None or key[0] == namespace) and watcher.selects(stored.obj):
                        initial.append(("ADDED", stored))
            elif since < self._floor:
                expired = True
            else:
                for event in self._history:
                    if event.rv > since and event.res is res:
                        seen = watcher.translate(event)
                        if seen is not None:
                            initial.append((seen, event.stored))
            if not expired:
                watcher.last_rv = self._rv
                self._watchers.add(watcher)
            floor = self._floor
        try:
            self._stream(h, watcher, initial, expired, since, floor, timeout, bookmarks)
        finally:
            with self._lock:
                self._watchers.discard(watcher)

    def _stream(
        self,
        h: _Handler,
        watcher: _Watcher,
        initial: list[tuple[str, _Stored]],
        expired: bool,
        since: int,
        floor: int,
        timeout: int | None,
        bookmarks: bool,
    ) -> None:
        res, version = watcher.res, watcher.version

        def emit(event_type: str, obj_raw: bytes) -> None:
            line = b'{"type":"' + event_type.encode() + b'","object":' + obj_raw + b"}\n"
            h.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))

        def end() -> None:
            h.wfile.write(b"0\r\n\r\n")

        def drop() -> None:
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        try:
            h.wfile.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Cache-Control: no-cache, private\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            if expired:
                status = _status(410, "Expired", f"too old resource version: {since} ({floor})")
                emit("ERROR", _dumps(status))
                end()
                return
            for event_type, stored in initial:
                emit(event_type, res.render(stored, version))
            deadline = time.monotonic() + timeout if timeout and timeout > 0 else None
            next_bookmark = time.monotonic() + self.bookmark_interval if bookmarks else None
            while True:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    end()
                    return
                wait = 0.5  # also how often a vanished client is noticed
                if deadline is not None:
                    wait = min(wait, deadline - now)
                if next_bookmark is not None:
                    wait = min(wait, max(0.0, next_bookmark - now))
                try:
                    item = watcher.queue.get(timeout=max(wait, 0.001))
                except queue.Empty:
                    if _peer_closed(h.connection):
                        drop()
                        return
                    if next_bookmark is not None and time.monotonic() >= next_bookmark:
                        emit("BOOKMARK", self._bookmark(watcher))
                        next_bookmark = time.monotonic() + self.bookmark_interval
                    continue
                if item is _BREAK or self._stopping:
                    drop()
                    return
                if item is _CLOSE:
                    end()
                    return
                if self._down == "hang":
                    self._hold_while_hung()
                    if self._down is not None or self._stopping:
                        drop()
                        return
                seen = watcher.translate(item)
                if seen is not None:
                    emit(seen, res.render(item.stored, version))
                watcher.last_rv = item.rv
        except Exception:  # headers are out: a Status body is no longer possible, so hang up
            drop()

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

