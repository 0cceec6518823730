# syntax=docker/dockerfile:1
#
# One image with both binaries of Ferrocast:
#   /usr/local/bin/ferrocast           the media server (the entrypoint)
#   /usr/local/bin/ferrocast-operator  the Kubernetes operator (run with `--entrypoint` or a
#                                      pod's `command: [ferrocast-operator]`)
#
#   docker build -t ferrocast:dev .
#   docker run --rm -p 1935:1935 -p 8000:8000 ferrocast:dev
#
# The build stage compiles with the dependency versions pinned in Cargo.lock (--locked); the
# runtime stage is distroless (glibc, CA certificates, no shell, no package manager) and runs
# as its unprivileged `nonroot` user (65532), which the Helm chart's securityContext expects.

ARG RUST_VERSION=1.95
ARG DEBIAN_CODENAME=bookworm

FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_CODENAME} AS build
WORKDIR /src
COPY . .
# The cache mounts keep the crate registry and compiled dependencies between builds; the
# binaries are copied out of the cached target directory, which the next stage cannot see.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin ferrocast --bin ferrocast-operator \
    && mkdir -p /out \
    && cp target/release/ferrocast target/release/ferrocast-operator /out/

# Debian 12 like the build stage, so the binaries find the glibc they were linked against.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="ferrocast" \
      org.opencontainers.image.description="Live-streaming media server (RTMP, RTMPS, HTTP-FLV, WS-FLV) and its Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ferrocast /out/ferrocast-operator /usr/local/bin/
USER 65532:65532
# rtmp, rtmps, http (HTTP-FLV, WS-FLV, API), https, server admin (/metrics, /healthz,
# /readyz), operator metrics and probes
EXPOSE 1935 1936 8000 8443 9090 8080
ENTRYPOINT ["/usr/local/bin/ferrocast"]
