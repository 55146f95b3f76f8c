"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ..prometheus import GatewayMetrics, Prometheus, running_prometheus


@pytest.fixture(scope="session")
def mesh(tmp_path_factory: Any) -> Iterator[tuple[Prometheus, GatewayMetrics]]:
    """One real Prometheus scraping the gateway stand-in, shared by the activity tests (it takes
    seconds to start scraping). Tests use destinations of their own; a test that stops it starts
    it again."""
    with running_prometheus(tmp_path_factory.mktemp("prometheus")) as running:
        yield running
