#!/usr/bin/env bash
# End-to-end on a real Kafka broker: installs the `tansu` broker when it is missing (about 8 minutes
# of build on 2 cores, once), then runs tests/tansu_e2e.rs, which fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
    echo "--- installing tansu (cargo install tansu --locked --features dynostore)"
    cargo install tansu --locked --features dynostore
fi
SPINSCALE_REQUIRE_TANSU=1 cargo test --locked --test tansu_e2e -- --nocapture
