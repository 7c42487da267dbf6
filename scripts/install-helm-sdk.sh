#!/usr/bin/env bash
# Installs the Helm engine tests/helm.rs renders and lints deploy/helm/spinscale with: PyPI's
# `helm-python-sdk` (import name `helm_python`; Helm v4's Go SDK as a native library, no `helm`
# binary), in a virtualenv under the repository's target/ directory. Idempotent: does nothing when
# the pinned version is already there. Prints the virtualenv's python, which tests/helm.rs uses
# (it looks at the same path, or at SPINSCALE_HELM_PYTHON when set).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/pip-venv.sh

PYTHON=$(pip_venv "${SPINSCALE_HELM_VENV:-$PWD/target/helm-venv}" helm-python-sdk 0.2.2 \
    'import helm_python; helm_python.helm_sdk_version()')
"$PYTHON" -c 'import helm_python as h; print("helm-python-sdk", h.__version__, "Helm", h.helm_sdk_version())' >&2
echo "$PYTHON"
