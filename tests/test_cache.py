"""The route table derived from stored entries (no cluster needed)."""

from __future__ import annotations

import json
import random

from federation.model import Entry
from federation.table import RouteTable


def entry(path: str, owner: str, at: str, target: str = "http://t:1", **data) -> Entry:
    return Entry(path, target, owner, data, at)


def test_rendered_table_follows_every_change() -> None:
    rng = random.Random(3)
    table = RouteTable()
    model: dict[str, dict[str, Entry]] = {}
    for step in range(2000):
        path = f"/user/u{rng.randrange(50)}"
        cluster = rng.choice(["hub", "east", "west"])
        if rng.random() < 0.3:
            table.update(cluster, path, None)
            model.get(path, {}).pop(cluster, None)
        else:
            e = entry(path, cluster, f"2026-11-20T12:00:{step % 60:02d}.{step:03d}Z",
                      target=f"http://t{step}:1", user="秀樹", n=step)
            table.update(cluster, path, e)
            model.setdefault(path, {})[cluster] = e
        if step % 97 == 0:
            expected = {}
            for p, owners in model.items():
                if owners:
                    win = max(owners.values(), key=lambda x: (x.last_activity, x.owner))
                    expected[p] = {**win.data, "target": win.target, "last_activity": win.last_activity}
            assert json.loads(table.render()) == expected


def test_newest_write_wins_and_duplicates_are_listed() -> None:
    table = RouteTable()
    old = entry("/user/a", "east", "2026-11-20T12:00:00.000Z", "https://east")
    new = entry("/user/a", "west", "2026-11-20T12:00:01.000Z", "http://west:8080")
    table.update("west", "/user/a", new)
    table.update("east", "/user/a", old)
    assert table.get("/user/a") is new
    assert table.duplicates() == [("/user/a", [new, old])]
    before = table.version
    table.update("east", "/user/a", old)  # no change, no new version
    assert table.version == before


def test_inactive_since_filter() -> None:
    table = RouteTable()
    table.update("hub", "/a", entry("/a", "hub", "2026-11-20T12:00:00.000Z"))
    table.update("hub", "/b", entry("/b", "hub", "2026-11-20T13:00:00.000Z"))
    assert set(json.loads(table.filtered("2026-11-20T12:30:00.000Z"))) == {"/a"}
