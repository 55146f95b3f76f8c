"""Without helm a developer's run skips the chart tests with the reason; CI fails instead."""

from __future__ import annotations

import pytest

from . import conftest


@pytest.fixture
def no_helm(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("HELM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(conftest, "_TOOLS_CANDIDATES", (tmp_path / "helm",))


def test_developer_machine_skips_with_the_reason(no_helm, monkeypatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="helm 3 not found"):
        conftest.require_helm()


def test_ci_fails_instead(no_helm, monkeypatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the chart tests"):
        conftest.require_helm()
