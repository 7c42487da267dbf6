#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then format, lint and every test.
# Real components only: the `prometheus` server and `chromium` (Debian packages) are required, not skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the tests drive: the Prometheus server, and Chromium for the status page test.
missing=()
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
    echo "--- installing ${missing[*]} (Debian packages)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
prometheus --version 2>&1 | head -1

# Components fetched or built by the project's own scripts: Helm v4 (PyPI helm-python-sdk) for the
# chart tests, buildah for the image test, and the tansu Kafka broker for the real-broker tests (built once into ~/.cargo/bin).
bash scripts/install-helm-sdk.sh >/dev/null
bash scripts/install-botocore.sh >/dev/null    # botocore (PyPI) verifies SigV4 in tests/prometheus_sigv4.rs
bash scripts/install-buildah.sh                # buildah (Debian) builds and runs the image in tests/image.rs
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tansu >/dev/null 2>&1; then
    echo "--- installing tansu (cargo install tansu --locked --features dynostore; once, about 8 minutes)"
    cargo install tansu --locked --features dynostore
fi
export SPINSCALE_REQUIRE_TANSU=1

export SPINSCALE_REQUIRE_COMPONENTS=1
echo "--- cargo fmt --check"
cargo fmt --all -- --check
echo "--- cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "--- cargo test"
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
