"""Fault injection: queued error answers per verb, request latency, outages (refuse, hang,
reset) and the per-verb request counters.
"""

from __future__ import annotations

import math
import random
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .common import _INJECTED_MESSAGES, VERBS, _APIError

if TYPE_CHECKING:  # import cycle: only annotations need it
    from .protocol import _Handler


@dataclass(slots=True)
class _Fault:
    remaining: int
    status: int
    retry_after: float | None
    verbs: frozenset[str] | None


class FaultsMixin:
    """Injected errors, latency and outages, and the request counters."""

    _state: threading.Condition  # guards the outage mode, the faults and the lifecycle
    _down: str | None
    _faults: deque[_Fault]
    _started: bool
    _stopping: bool
    request_counts: dict[str, int]
    latency: float
    read_delay: float
    watch_lag: float


    def _init_faults(self) -> None:
        self._state = threading.Condition()
        self._down = None
        self._faults = deque()
        self._started = False
        self._stopping = False
        self.latency = 0.0
        # Late answers, as from a loaded API server or an etcd follower: a GET of one object is
        # decided, then delivered up to ``read_delay`` s later (a create in between is not in
        # it); watch events reach every watcher ``watch_lag`` s after they happened.
        self.read_delay = 0.0
        self.watch_lag = 0.0
        self._late = random.Random()
        self.request_counts = dict.fromkeys(VERBS, 0)

    def inject_errors(
        self,
        count: int,
        status: int = 500,
        *,
        retry_after: float | None = None,
        verbs: Iterable[str] | None = None,
    ) -> None:
        """Fail the next `count` resource requests (of `verbs`, default all) with `status`."""
        if count <= 0:
            return
        chosen = frozenset(verbs) if verbs is not None else None
        if chosen is not None and not chosen <= set(VERBS):
            raise ValueError(f"unknown verbs: {sorted(chosen - set(VERBS))}")
        if status == 429 and retry_after is None:
            retry_after = 1  # the apiserver always tells throttled clients when to come back
        with self._state:
            self._faults.append(_Fault(count, status, retry_after, chosen))

    def clear_errors(self) -> None:
        with self._state:
            self._faults.clear()

    @property
    def down(self) -> str | None:
        return self._down

    def reset_counts(self) -> None:
        with self._state:
            for verb in VERBS:
                self.request_counts[verb] = 0

    def _admit(self, verb: str) -> None:
        """Count a resource request and apply any injected fault."""
        with self._state:
            self.request_counts[verb] = self.request_counts.get(verb, 0) + 1
            fault = next((f for f in self._faults if f.verbs is None or verb in f.verbs), None)
            if fault is None:
                return
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
        headers: list[tuple[str, str]] = []
        details: dict[str, Any] | None = None
        if fault.retry_after is not None:
            seconds = max(0, math.ceil(fault.retry_after))  # urllib3 only parses whole seconds
            headers.append(("Retry-After", str(seconds)))
            details = {"causes": [{"message": "injected fault"}], "retryAfterSeconds": seconds}
        message = _INJECTED_MESSAGES.get(fault.status, f"injected fault ({fault.status})")
        raise _APIError(fault.status, message, details=details, headers=headers)

    def _deliver_late(self) -> None:
        """Hold a decided GET answer for up to ``read_delay`` seconds."""
        if self.read_delay > 0:
            time.sleep(self._late.uniform(0, self.read_delay))

    def _lag(self, happened: float) -> None:
        """Hold a watch event until ``watch_lag`` seconds after it happened."""
        wait = happened + self.watch_lag - time.monotonic()
        if self.watch_lag > 0 and wait > 0:
            time.sleep(wait)

    def _stall_or_drop(self, h: _Handler) -> None:
        with self._state:
            while self._down == "hang" and not self._stopping:
                self._state.wait()
        # Whatever happened meanwhile, this request is never answered (the client gave up).
        h.close_connection = True
        try:
            h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _hold_while_hung(self) -> None:
        with self._state:
            while self._down == "hang" and not self._stopping:
                self._state.wait()

