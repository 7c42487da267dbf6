#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then format, lint and every test.
# Real components only: the `prometheus` server (Debian package) is required, not skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v prometheus >/dev/null 2>&1; then
    echo "--- installing prometheus (Debian package)"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
prometheus --version 2>&1 | head -1

export SPINSCALE_REQUIRE_COMPONENTS=1
echo "--- cargo fmt --check"
cargo fmt --all -- --check
echo "--- cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "--- cargo test"
cargo test --all-targets --locked
cargo test --doc --locked
