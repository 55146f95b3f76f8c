"""The one list-then-watch loop (federation.listwatch): an error that is not the API server's (an
event its user cannot read, a bug) neither kills the loop nor leaves its cache as it was: it
is logged once, naming the cluster and the kind, and the kind is listed again."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from federation.errors import KubeError
from federation.listwatch import ListWatch
from federation.services_cache import SERVICES
from federation.testing.kubeapi import KubeAPIServer

from .conftest import USER_NAMESPACE
from .test_services_cache import create, east_client, until


class Names(ListWatch):
    """The Services of one namespace by name; the first event it hears makes it fail."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.names: set[str] = set()
        self.listing: set[str] = set()
        self.lists = 0
        self.broken_once = False

    def on_relist(self) -> None:
        self.listing = set()

    def on_page(self, items: list[dict[str, Any]]) -> None:
        self.listing.update(i["metadata"]["name"] for i in items)

    def on_listed(self, list_rv: str) -> None:
        self.lists += 1
        self.names = self.listing

    def on_event(self, kind: str, obj: dict[str, Any]) -> None:
        if not self.broken_once:
            self.broken_once = True
            raise KeyError("spec")  # as a malformed object would
        self.names.add(obj["metadata"]["name"])

    async def failed(self, exc: KubeError, failures: int) -> tuple[bool, float, int]:
        return exc.status == 410, 0.05, 1


def test_an_error_of_its_own_lists_again_and_the_watch_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with KubeAPIServer("east") as server:
        server.add_namespace(USER_NAMESPACE)

        async def main() -> None:
            client = east_client(server, tmp_path)
            client.side_watch_pool("names")
            watch = Names("east", client, SERVICES, "", 30, 100, namespace=USER_NAMESPACE,
                          pool="names")
            task = asyncio.create_task(watch.run())
            try:
                await until(lambda: watch.lists == 1 and server.open_watches == 1, "the watch")
                await asyncio.to_thread(create, server, "jupyter-alice", 8888)  # the bad event
                await until(lambda: watch.lists == 2, "a list after the failed event")
                assert watch.names == {"jupyter-alice"}  # the relist brought what failed
                await asyncio.to_thread(create, server, "jupyter-bob", 8888)
                await until(lambda: "jupyter-bob" in watch.names, "later events, by the watch")
                assert not task.done()
            finally:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                await client.close()

        with caplog.at_level(logging.ERROR, logger="federation.listwatch"):
            asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "federation.listwatch"]
    assert len(lines) == 1, lines
    assert "cluster east" in lines[0] and "services" in lines[0] and "KeyError" in lines[0]
    assert server.token not in lines[0]
