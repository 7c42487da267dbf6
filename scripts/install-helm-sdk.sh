#!/usr/bin/env bash
# Installs the Helm engine tests/helm.rs renders and lints deploy/helm/spinscale with: PyPI's
# `helm-python-sdk` (import name `helm_python`; Helm v4's Go SDK as a native library, no `helm`
# binary), in a virtualenv under the repository's target/ directory. Idempotent: does nothing when
# the pinned version is already there. Prints the virtualenv's python, which tests/helm.rs uses
# (it looks at the same path, or at SPINSCALE_HELM_PYTHON when set).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.2.2
VENV="${SPINSCALE_HELM_VENV:-$PWD/target/helm-venv}"
PYTHON="$VENV/bin/python"

installed() {
    [ -x "$PYTHON" ] && "$PYTHON" - "$VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("helm-python-sdk") == sys.argv[1]
import helm_python
helm_python.helm_sdk_version()
PY
}

if ! installed; then
    echo "--- installing helm-python-sdk $VERSION into $VENV" >&2
    command -v python3 >/dev/null 2>&1 || { echo "python3 (3.10 or later) is needed" >&2; exit 1; }
    if [ ! -x "$PYTHON" ]; then
        if ! python3 -m venv "$VENV" >&2; then
            # Debian's python3 needs python3-venv (ensurepip) for `python3 -m venv`.
            rm -rf "$VENV"
            as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
            echo "--- installing python3-venv (Debian package)" >&2
            as_root apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends python3-venv >&2
            python3 -m venv "$VENV" >&2
        fi
    fi
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "helm-python-sdk==$VERSION" >&2
    installed || { echo "helm-python-sdk $VERSION did not load" >&2; exit 1; }
fi
"$PYTHON" -c 'import helm_python as h; print("helm-python-sdk", h.__version__, "Helm", h.helm_sdk_version())' >&2
echo "$PYTHON"
