#!/usr/bin/env bash
# Installs `buildah` (Debian package) when it is missing; does nothing when it is there.
# scripts/image.sh builds the container image with it, offline and without a Docker engine, and
# tests/image.rs runs that image. Runs apt-get as root, or through sudo.
set -euo pipefail

if command -v buildah >/dev/null 2>&1; then
    buildah --version
    exit 0
fi

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

echo "--- installing buildah (Debian package)"
as_root apt-get update -qq
# --no-install-recommends: no podman, slirp4netns or fuse-overlayfs; image.sh uses the vfs storage
# driver and chroot isolation, which need none of them.
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends buildah >/dev/null
buildah --version
