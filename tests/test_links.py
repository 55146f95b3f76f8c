"""Every intra-repository link of the README, the docs and the chart resolves: the file exists
and, for a Markdown file, so does the heading its #anchor names (GitHub's anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import REPO

MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Chart files are YAML and templates: links there are bare paths such as docs/x.md#anchor.
BARE_LINK = re.compile(r"((?:docs/|\.\./)?[\w./-]+\.md(?:#[\w-]+)?)")
FENCE = re.compile(r"^(```|~~~)")


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            base = slug(line.lstrip("#"))
            n = counts.get(base, 0)
            counts[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def broken_links(source: Path, links: list[str], root: Path = REPO) -> list[str]:
    out = []
    for link in links:
        if re.match(r"^[a-z]+:", link):  # http(s), mailto: not ours to check offline
            continue
        target, _, anchor = link.partition("#")
        base = source.parent if source.suffix == ".md" else root
        path = (base / target).resolve() if target else source
        if not path.exists():
            out.append(f"{source.relative_to(root)}: {link}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            out.append(f"{source.relative_to(root)}: {link}: no heading with that anchor")
    return out


def markdown_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return MD_LINK.findall(text)


def chart_links(path: Path) -> list[str]:
    return [m for m in BARE_LINK.findall(path.read_text()) if "/" in m or "#" in m]


def test_every_markdown_link_resolves() -> None:
    files = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
    problems = [p for f in files for p in broken_links(f, markdown_links(f))]
    assert problems == []


def test_every_chart_reference_to_the_docs_resolves() -> None:
    chart = REPO / "charts" / "federation-proxy"
    files = [f for f in sorted(chart.rglob("*")) if f.is_file() and f.suffix != ".json"]
    links = {f: chart_links(f) for f in files}
    assert sum(map(len, links.values())) >= 2  # values.yaml names guide sections
    problems = [p for f, found in links.items() for p in broken_links(f, found)]
    assert problems == []


@pytest.mark.parametrize(("heading", "anchor"), [
    ("## 10. Traffic activity (`last_activity`)", "10-traffic-activity-last_activity"),
    ("## 1b. DNS and TLS", "1b-dns-and-tls"),
    ("## 3. clusters.yaml from MultiClusterKubeSpawner's profile_list",
     "3-clustersyaml-from-multiclusterkubespawners-profile_list"),
    ("# The same setup on the Gateway API (`backend: gateway-api`)",
     "the-same-setup-on-the-gateway-api-backend-gateway-api"),
])
def test_anchors_are_githubs(heading: str, anchor: str) -> None:
    assert slug(heading.lstrip("#")) == anchor


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    doc = tmp_path / "guide.md"
    doc.write_text("# Guide\n\n## 7. Logs\n\nSee [logs](#7-logs), [gone](#7-traffic) and "
                   "[other](other.md).\n")
    problems = broken_links(doc, markdown_links(doc), root=tmp_path)
    assert problems == ["guide.md: #7-traffic: no heading with that anchor",
                        "guide.md: other.md: no such file"]
