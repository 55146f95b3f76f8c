"""Which tests need data from outside the repository: exactly the ones listed here.

A bare clone (no ../shared beside it) must test what CI tests, except validation against the
upstream CRD schemas, which are other projects' files and stay out of the repository. Those
tests carry the ``upstream_schemas`` marker (tests/conftest.py skips them with the reason when
../shared/<key> is absent); this module fails when a test joins or leaves that list, or when a
test finds its own way to ../shared, so the count cannot grow unnoticed.
"""

from __future__ import annotations

import re
import subprocess
import sys

from .conftest import REPO

# Each: validates objects the service writes (or the guide's examples) against upstream CRDs.
EXPECTED = {
    "tests/test_docs.py::test_example_gateway_validates",
    "tests/test_gateway_objects.py::test_every_object_of_random_tables_validates",
    "tests/test_gateway_objects.py::test_istio_hostname_edge_objects_validate",
    "tests/test_gateway_objects.py::test_validation_can_fail",
    "tests/test_gateway_objects.py::test_example_gateway_validates_and_admits_the_namespace",
    "tests/test_objects.py::test_every_object_validates_against_istio_schemas",
    "tests/test_objects.py::test_schema_validation_can_fail",
    "tests/test_objects.py::test_webhook_rules_can_fail",
    "tests/test_plan.py::test_objects_for_odd_data_validate",
}
TESTS = REPO / "tests"


def marked_tests() -> set[str]:
    """Every collected test with the upstream_schemas marker, parametrizations folded."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "upstream_schemas",
         "-p", "no:cacheprovider", "-p", "no:randomly", str(TESTS)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ids = [line for line in run.stdout.splitlines() if "::" in line]
    return {line.split("[", 1)[0] for line in ids}


def test_only_the_listed_tests_need_the_upstream_schemas() -> None:
    assert marked_tests() == EXPECTED


def test_no_test_reaches_shared_data_on_its_own() -> None:
    """Only conftest.py locates ../shared; no other module skips for it or reads from it
    (a test reading the schemas when present and passing without them is fine: it uses
    ISTIO_CRDS / GATEWAY_CRDS, never its own path)."""
    own_path = re.compile(r"FEDERATION_SHARED_DIR|[\"']shared[\"']|SHARED\b")
    skips_for_shared = re.compile(r"(pytest\.skip|skipif)\((?:[^()]|\([^()]*\))*shared",
                                  re.DOTALL)
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == "conftest.py" and path.parent == TESTS or path.name == "test_upstream_data.py":
            continue
        text = path.read_text()
        if own_path.search(text) or skips_for_shared.search(text):
            found.append(str(path.relative_to(REPO)))
    assert found == []
