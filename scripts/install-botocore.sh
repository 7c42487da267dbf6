#!/usr/bin/env bash
# Installs the independent SigV4 implementation tests/prometheus_auth.rs checks spinscale's
# signatures with: PyPI's `botocore` (the AWS SDK for Python's core), in a virtualenv under the
# repository's target/ directory. Idempotent: does nothing when the pinned version is already there.
# Prints the virtualenv's python, which the test uses (it looks at the same path, or at
# SPINSCALE_BOTOCORE_PYTHON when set).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.44.5
VENV="${SPINSCALE_BOTOCORE_VENV:-$PWD/target/botocore-venv}"
PYTHON="$VENV/bin/python"

installed() {
    [ -x "$PYTHON" ] && "$PYTHON" - "$VERSION" <<'PY' >/dev/null 2>&1
import sys
from importlib.metadata import version
assert version("botocore") == sys.argv[1]
from botocore.auth import SigV4Auth
PY
}

if ! installed; then
    echo "--- installing botocore $VERSION into $VENV" >&2
    command -v python3 >/dev/null 2>&1 || { echo "python3 is needed" >&2; exit 1; }
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
    "$PYTHON" -m pip install --quiet --disable-pip-version-check "botocore==$VERSION" >&2
    installed || { echo "botocore $VERSION did not load" >&2; exit 1; }
fi
"$PYTHON" -c 'import botocore; print("botocore", botocore.__version__)' >&2
echo "$PYTHON"
