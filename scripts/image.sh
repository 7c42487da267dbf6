#!/usr/bin/env bash
# Builds the container image from ./Dockerfile here, offline: no base image is pulled.
#
#   scripts/image.sh [TAG]     # TAG defaults to the crate version; prints the image reference last
#
# The Dockerfile has two stages. Where base images can be pulled, `docker build .` runs both. Here
# none can be, so this script provides each stage's input locally and lets buildah build the
# Dockerfile's final stage (`runtime`) itself:
#   - `builder`: the same commands as the Dockerfile's builder, run on the host (a Debian 12 with the
#     Rust toolchain, like rust:1.95-bookworm), their /out put into a `from scratch` image.
#     `--build-context builder=container-image://...` replaces the stage: buildah then never runs it.
#   - gcr.io/distroless/cc-debian12:nonroot: a `from scratch` image made of the host's own Debian 12
#     files for what that image holds and spinscale uses: the libc6, libgcc-s1 and libssl3 packages,
#     the CA bundle, /etc/passwd and /etc/group with nonroot 65532, /tmp, /home/nonroot, and the
#     same config (user, working directory, PATH, SSL_CERT_FILE). `--build-context <that name>=...`
#     replaces the FROM image.
# `--pull=never` makes any other base image an error instead of a download. Both helper images are
# removed at the end; the image is `localhost/spinscale:<TAG>`.
#
# Needs buildah (scripts/install-buildah.sh installs it). Storage driver vfs and chroot isolation:
# both work as root in a container without overlayfs, fuse or user namespaces. STORAGE_DRIVER
# overrides the driver, for machines whose container storage already uses another one.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v buildah >/dev/null 2>&1 || {
    echo "image.sh: buildah is missing: scripts/install-buildah.sh installs it" >&2
    exit 1
}

version="$(sed -n '/^\[workspace\.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' Cargo.toml)"
[ -n "$version" ] || { echo "image.sh: no [workspace.package] version in Cargo.toml" >&2; exit 1; }
tag="${1:-$version}"
image="localhost/spinscale:$tag"
builder_image="localhost/spinscale-builder:$tag-$$"
base_image="localhost/spinscale-distroless-cc:$tag-$$" # per run: two runs never share one
# Must match the runtime stage's FROM exactly: that is the name the build context replaces.
distroless="$(sed -n 's/^FROM \([^ ]*\) AS runtime$/\1/p' Dockerfile)"
[ -n "$distroless" ] || { echo "image.sh: no 'FROM <image> AS runtime' in Dockerfile" >&2; exit 1; }

buildah() { command buildah --storage-driver "${STORAGE_DRIVER:-vfs}" "$@"; }
export BUILDAH_ISOLATION=chroot
log() { echo "--- $*" >&2; }

work="$(mktemp -d)"
containers=()
cleanup() {
    for c in "${containers[@]}"; do buildah rm "$c" >/dev/null 2>&1 || true; done
    buildah rmi "$builder_image" "$base_image" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# Commits the directory $2 (its whole tree, owners and modes as they are) as image $1, with the
# `buildah config` options that follow.
commit_tree() {
    local name="$1" dir="$2" c
    shift 2
    tar -C "$dir" --numeric-owner -cf "$work/tree.tar" .
    c="$(buildah from scratch)"
    containers+=("$c")
    buildah add "$c" "$work/tree.tar" / >/dev/null
    [ $# -eq 0 ] || buildah config "$@" "$c"
    buildah commit --quiet --rm "$c" "$name" >/dev/null
    rm -f "$work/tree.tar"
}

# --- builder: the Dockerfile's RUN, on the host.
started=$SECONDS
log "cargo build --release --locked -p spinscale --bin spinscale"
cargo build --release --locked -p spinscale --bin spinscale >&2
out="$work/builder/out"
triplet="$(gcc -dumpmachine)"
install -D -m 0755 target/release/spinscale "$out/spinscale"
mkdir -p "$out/lib/$triplet"
cp -L "/lib/$triplet/libz.so.1" "$out/lib/$triplet/"
log "cargo and builder files: $((SECONDS - started)) s"
commit_tree "$builder_image" "$work/builder"

# --- the distroless base, from the host's Debian files.
root="$work/base"
mkdir -p "$root"
# Files and file symlinks only: a directory would bring all it holds, and the host's /lib and
# /lib64 are symlinks to directories. No documentation.
dpkg -L libc6 libgcc-s1 libssl3 | sort -u | while read -r f; do
    case "$f" in /usr/share/doc/* | /usr/share/lintian/* | /usr/share/man/* | /usr/share/locale/*) continue ;; esac
    if [ ! -d "$f" ] && { [ -f "$f" ] || [ -L "$f" ]; }; then printf '%s\n' "${f#/}"; fi
done >"$work/files"
# tar follows the host's /lib -> usr/lib symlink while reading and writes real directories, as
# Debian 12 distroless images have them (not merged /usr).
tar -C / --no-recursion -cf - -T "$work/files" | tar -C "$root" -xf -
install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
    'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$root/etc/passwd"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' 'nonroot:x:65532:' >"$root/etc/group"
printf '%s\n' 'hosts: files dns' 'networks: files' 'passwd: files' 'group: files' >"$root/etc/nsswitch.conf"
install -d -m 1777 "$root/tmp"
install -d -m 0700 -o 65532 -g 65532 "$root/home/nonroot"
install -d -m 0700 "$root/root"
commit_tree "$base_image" "$root" \
    --user 65532:65532 --workingdir /home/nonroot \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt

# --- the Dockerfile's runtime stage, built by buildah from the Dockerfile itself.
previous="$(buildah images --quiet --noheading "$image" 2>/dev/null || true)"
log "buildah build --target runtime -t $image"
buildah build --quiet --pull=never --isolation chroot --target runtime \
    --build-context "builder=container-image://$builder_image" \
    --build-context "$distroless=container-image://$base_image" \
    --tag "$image" . >/dev/null
current="$(buildah images --quiet --noheading "$image")"
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    buildah rmi "$previous" >/dev/null 2>&1 || true # the replaced build, unless a container uses it
fi

# Smoke test: the binary loads every library it links from the image alone.
c="$(buildah from --pull=never "$image")"
containers+=("$c")
buildah run --isolation chroot "$c" -- /usr/local/bin/spinscale --version >&2

log "built $image in $((SECONDS - started)) s"
echo "$image"
