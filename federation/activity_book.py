"""The traffic activity overlay the route table reads: path -> the newest activity the mesh
reported (filled by :mod:`federation.activity`; read on every GET of the table)."""

from __future__ import annotations

from .model import Entry


class ActivityBook:
    """path -> the newest activity seen for it (the route table shows the later of this and the
    route's write time). Times only move forward."""

    def __init__(self) -> None:
        self.times: dict[str, str] = {}

    def last_activity(self, entry: Entry) -> str:
        seen = self.times.get(entry.path, "")
        return seen if seen > entry.last_activity else entry.last_activity

    def merge(self, seen: dict[str, str]) -> list[str]:
        """Record newer times; returns the paths whose time moved."""
        moved = []
        for path, when in seen.items():
            if when > self.times.get(path, ""):
                self.times[path] = when
                moved.append(path)
        return moved

    def retain(self, paths: set[str]) -> None:
        """Forget routes that are gone (a route added again starts from its write time)."""
        for path in [p for p in self.times if p not in paths]:
            del self.times[path]
