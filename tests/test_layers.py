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


# What a backend implements: every member (methods, properties, attributes) of every protocol
# in the seam. Data a backend hands over in a frozen dataclass (Kinds, RouteKind) is not
# implemented: the mirror and the factory read it.
MAX_MEMBERS = 12


def protocol_members() -> dict[str, set[str]]:
    import inspect
    from typing import Protocol

    from federation import seam

    out: dict[str, set[str]] = {}
    for name, cls in vars(seam).items():
        if inspect.isclass(cls) and Protocol in cls.__mro__[1:] and cls.__module__ == seam.__name__:
            members = {m for m in vars(cls) if not m.startswith("_")}
            out[name] = members | set(vars(cls).get("__annotations__", {}))
    return out


def test_a_backend_implements_few_members() -> None:
    found = protocol_members()
    assert "Backend" in found and "put" in found["Backend"]  # the count sees the protocols
    total = sum(len(m) for m in found.values())
    assert total <= MAX_MEMBERS, {k: sorted(v) for k, v in found.items()}
