"""The seam sits below the backends: only a backend's own package and the factory
(federation/backend.py) import a backend; the protocols' module and the mirror (writers
included) import none."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "federation"
BACKENDS = ("istio", "gateway")
FACTORY = PACKAGE / "backend.py"


def imported(path: Path) -> set[str]:
    """The federation modules ``path`` imports, as dotted names relative to the package."""
    here = path.relative_to(PACKAGE).with_suffix("").parts[:-1]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = list(here[: len(here) - node.level + 1]) if node.level else []
            module = ".".join(base + (node.module.split(".") if node.module else []))
            if not node.level:
                module = module.removeprefix("federation.") if module.startswith(
                    "federation.") else ""
            out.update(f"{module}.{a.name}".strip(".") for a in node.names)
            out.add(module)
        elif isinstance(node, ast.Import):
            out.update(a.name.removeprefix("federation.") for a in node.names
                       if a.name.startswith("federation."))
    return {m for m in out if m}


def backend_imports(path: Path) -> set[str]:
    return {m for m in imported(path) if m.split(".")[0] in BACKENDS}


def test_only_a_backend_and_the_factory_import_a_backend() -> None:
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in BACKENDS or rel.parts[0] == "testing" or path == FACTORY:
            continue
        found = backend_imports(path)
        if found:
            offenders[str(rel)] = sorted(found)
    assert offenders == {}


def test_the_floor_imports_no_backend_and_no_factory() -> None:
    floor = [PACKAGE / "seam.py", *sorted((PACKAGE / "mirror").glob("*.py"))]
    for path in floor:
        found = imported(path)
        assert not backend_imports(path), path
        assert "backend" not in found, path


def test_the_import_reader_sees_a_backend_import() -> None:
    """The checks above can fail: the factory's own imports are found."""
    assert {"istio.backend", "gateway.backend"} <= {m.rsplit(".", 1)[0]
                                                   for m in backend_imports(FACTORY)}
