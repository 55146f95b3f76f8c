"""The event history's entries and the watchers that subscribe to it (shared by the store, which
publishes, and the watch streams, which deliver).
"""

from __future__ import annotations

import queue
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .resources import _Resource, _Stored
from .selectors import _FieldReq, _fields_match, _labels_match, _Requirement


@dataclass(frozen=True, slots=True)
class _Event:
    rv: int
    type: str
    res: _Resource
    namespace: str
    stored: _Stored
    prev: dict[str, Any] | None  # previous state, for selector transitions on MODIFIED
    at: float = field(default_factory=time.monotonic)  # when it happened (watch lag counts from it)


_BREAK = object()  # watcher sentinel: end the stream abruptly


_CLOSE = object()  # watcher sentinel: end the stream cleanly


@dataclass(eq=False)
class _Watcher:
    res: _Resource
    version: str
    namespace: str | None
    labels: tuple[_Requirement, ...]
    fields: tuple[_FieldReq, ...]
    queue: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    last_rv: int = 0  # every change up to here has been delivered (or filtered out)

    def selects(self, obj: Mapping[str, Any]) -> bool:
        if self.labels and not _labels_match(
            self.labels, (obj.get("metadata") or {}).get("labels") or {}
        ):
            return False
        return not self.fields or _fields_match(self.fields, obj)

    def translate(self, event: _Event) -> str | None:
        """The event type this watcher sees, following selector transitions like the apiserver."""
        if self.namespace is not None and event.namespace != self.namespace:
            return None
        if not self.labels and not self.fields:
            return event.type
        now = self.selects(event.stored.obj)
        if event.type == "MODIFIED" and event.prev is not None:
            before = self.selects(event.prev)
            if now and before:
                return "MODIFIED"
            if now:
                return "ADDED"
            return "DELETED" if before else None
        return event.type if now else None

