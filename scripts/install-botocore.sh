#!/usr/bin/env bash
# Installs the independent SigV4 implementation tests/prometheus_sigv4.rs checks spinscale's
# signatures with: PyPI's `botocore` (the AWS SDK for Python's core), in a virtualenv under the
# repository's target/ directory. Idempotent: does nothing when the pinned version is already there.
# Prints the virtualenv's python, which the test uses (it looks at the same path, or at
# SPINSCALE_BOTOCORE_PYTHON when set).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pip-venv.sh

PYTHON=$(pip_venv "${SPINSCALE_BOTOCORE_VENV:-$PWD/target/botocore-venv}" botocore 1.44.5 \
    'from botocore.auth import SigV4Auth')
"$PYTHON" -c 'import botocore; print("botocore", botocore.__version__)' >&2
echo "$PYTHON"
