"""One version everywhere: the package, the chart's version and appVersion, the changelog's
newest entry, the image tag the guide builds; releases.json lists only older releases, each in
the changelog."""

from __future__ import annotations

import json
import re
import tomllib

import yaml

from federation import __version__

from .conftest import REPO

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


def version_key(version: str) -> tuple[int, ...]:
    match = SEMVER.match(version)
    assert match, f"{version!r} is not MAJOR.MINOR.PATCH"
    return tuple(int(part) for part in match.groups())


def changelog_versions() -> list[str]:
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    return re.findall(r"^## (\d+\.\d+\.\d+)\b", text, re.M)


def test_package_and_chart_versions_agree() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    chart = yaml.safe_load((REPO / "charts" / "federation-proxy" / "Chart.yaml").read_text())
    version_key(__version__)
    assert project["version"] == __version__
    assert str(chart["version"]) == __version__
    assert str(chart["appVersion"]) == __version__


def test_the_changelog_describes_this_version_first() -> None:
    versions = changelog_versions()
    assert versions and versions[0] == __version__, versions
    keys = [version_key(v) for v in versions]
    assert keys == sorted(keys, reverse=True) and len(set(keys)) == len(keys), versions


def test_releases_are_older_and_in_the_changelog() -> None:
    releases = json.loads((REPO / "releases.json").read_text())["releases"]
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert releases
    for release in releases:
        assert version_key(release["version"]) < version_key(__version__)
        assert re.fullmatch(r"[0-9a-f]{40}", release["commit"]), release
        (heading,) = [line for line in text.splitlines()
                      if line.startswith(f"## {release['version']} ")]
        assert release["commit"][:7] in heading, heading


def test_the_guide_builds_the_image_of_this_version() -> None:
    for name in ("docs/operations.md", "Dockerfile"):
        tags = set(re.findall(r"federation-proxy:(\d+\.\d+\.\d+)", (REPO / name).read_text()))
        assert tags <= {__version__}, (name, tags)
