# The spinscale image: `docker build -t ghcr.io/spinscale/spinscale:0.1.0 .` (or podman/buildah build).
#
# Stage `builder` compiles the release binary with the Rust toolchain. Stage `runtime` is distroless
# (Debian 12: glibc, libgcc, OpenSSL 3, CA certificates, /etc/passwd with `nonroot` 65532; no shell,
# no package manager) plus the binary and zlib, the one library it links that distroless/cc does not
# promise (librdkafka compresses with it). `ldd` of the binary: libssl.so.3, libcrypto.so.3,
# libz.so.1, libgcc_s.so.1, libm.so.6, libc.so.6 and the loader.
#
# scripts/image.sh builds this same file where no base image can be pulled: it runs the builder's
# commands on the host and hands buildah two local images in place of the `builder` stage and of
# the distroless base (`--build-context`), so the `runtime` stage below makes the image either way.

FROM docker.io/library/rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# The cache mounts keep downloaded crates and target/ between builds (BuildKit, buildah, podman).
# /out holds what the runtime stage takes: the binary, and zlib under its multiarch directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p spinscale --bin spinscale \
 && install -D -m 0755 target/release/spinscale /out/spinscale \
 && triplet="$(gcc -dumpmachine)" \
 && mkdir -p "/out/lib/$triplet" \
 && cp -L "/lib/$triplet/libz.so.1" "/out/lib/$triplet/"

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="spinscale" \
      org.opencontainers.image.description="KEDA external-push scaler for SpinKube apps: Prometheus and Kafka signals, pushed activation" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.source="https://github.com/spinscale/spinscale" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/lib/ /usr/lib/
COPY --from=builder /out/spinscale /usr/local/bin/spinscale
# The numeric user deploy/base/deployment.yaml runs as (runAsNonRoot needs a number to verify).
USER 65532:65532
# gRPC (KEDA), HTTP (/healthz, /readyz, /metrics, /status), activator.
EXPOSE 9500 9501 9502
ENTRYPOINT ["/usr/local/bin/spinscale"]
CMD ["serve"]
