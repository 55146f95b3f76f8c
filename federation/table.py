"""The hub's route table: every route some cluster owns, one answer per path, kept rendered.

Each cluster's route index publishes into it (:meth:`RouteTable.update`); GET /api/routes is
answered from it, never by listing. Traffic activity is overlaid from the :class:`ActivityBook`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .activity_book import ActivityBook
from .model import Entry, winner


class RouteTable:
    """The hub's view: every route owned by some cluster, one answer per path.

    Each route's JSON is kept rendered, so a GET after a write joins strings instead of
    serialising the whole table again (the hub polls it, and big hubs have many routes).
    """

    def __init__(self) -> None:
        self.owned: dict[str, dict[str, Entry]] = {}
        self.fragments: dict[str, str] = {}
        self.version = 0
        self._rendered: tuple[int, bytes] | None = None
        self.activity = ActivityBook()  # traffic activity overlaid on write times (activity.py)

    def update(self, cluster: str, path: str, entry: Entry | None) -> None:
        owners = self.owned.get(path)
        if entry is None:
            if owners and owners.pop(cluster, None) is not None:
                if not owners:
                    del self.owned[path]
                self._changed(path)
            return
        if owners is None:
            owners = self.owned[path] = {}
        if owners.get(cluster) != entry:
            owners[cluster] = entry
            self._changed(path)

    def _changed(self, path: str) -> None:
        self.version += 1
        entry = self.get(path)
        if entry is None:
            self.fragments.pop(path, None)
        else:
            self.fragments[path] = _dumps(path) + ":" + _dumps(self.public(entry))

    def get(self, path: str) -> Entry | None:
        owners = self.owned.get(path)
        if not owners:
            return None
        # A route briefly owned twice (a move whose old side is unreachable) resolves to the
        # newest write; the reconciler removes the stale copy.
        return winner(list(owners.values()))

    def duplicates(self) -> list[tuple[str, list[Entry]]]:
        return [(p, list(o.values())) for p, o in self.owned.items() if len(o) > 1]

    def __len__(self) -> int:
        return len(self.owned)

    def public(self, entry: Entry) -> dict[str, Any]:
        route = dict(entry.data)
        route["target"] = entry.target
        last_activity = self.activity.last_activity(entry)
        if last_activity:
            route["last_activity"] = last_activity
        return route

    def render(self) -> bytes:
        """The whole table as JSON, cached until the next change."""
        if self._rendered is None or self._rendered[0] != self.version:
            body = ("{" + ",".join(self.fragments.values()) + "}").encode("utf-8")
            self._rendered = (self.version, body)
        return self._rendered[1]

    def filtered(self, inactive_since: str) -> bytes:
        table = {}
        for path in self.owned:
            entry = self.get(path)
            last_activity = None if entry is None else self.activity.last_activity(entry)
            if entry is not None and last_activity and last_activity < inactive_since:
                table[path] = self.public(entry)
        return _dumps(table).encode("utf-8")

    # -- traffic activity (federation/activity.py) -------------------------------------------

    def routes(self) -> Iterator[tuple[str, Entry]]:
        """Every route and the entry that answers for it."""
        for path in list(self.owned):
            entry = self.get(path)
            if entry is not None:
                yield path, entry

    def note_activity(self, seen: dict[str, str]) -> int:
        """Newer activity times (path -> ISO time); the routes they move are rendered again."""
        moved = [p for p in self.activity.merge(seen) if p in self.owned]
        for path in moved:
            self._changed(path)
        return len(moved)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
