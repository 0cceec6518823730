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
#
# The transcoding variant is the same image plus ffmpeg (docs/transcoding.md):
#
#   docker build --build-arg FFMPEG=yes -t ferrocast:dev-ffmpeg .
#
# Its ffmpeg is Debian's own build of the runtime's Debian release (5.1: libx264, libx265,
# NVENC, VA-API, QSV), copied in with the libraries it links and the Intel VA-API driver it
# loads, still distroless. H.265 renditions need an ffmpeg of 6.1 or later (enhanced FLV output).

ARG RUST_VERSION=1.95
ARG DEBIAN_CODENAME=bookworm
# `yes` adds ffmpeg (the transcoding variant).
ARG FFMPEG=no

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

# ffmpeg and everything it needs at run time, laid out under /ffmpeg-root for the variant:
# the libraries ldd names (glibc excepted: the runtime has the same one), and the Intel VA-API
# driver and QSV runtime, which are loaded at run time and so are listed by hand. Each file
# goes to its directory's real path (/lib is a link to /usr/lib here), under its own name.
FROM docker.io/library/debian:${DEBIAN_CODENAME}-slim AS ffmpeg
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
    && apt-get install -y --no-install-recommends ffmpeg=7:5.1.* intel-media-va-driver=23.* \
    && rm -rf /var/lib/apt/lists/* \
    && lib="$(echo /usr/lib/*-linux-gnu)" \
    && loaded=("${lib}"/dri/*.so "${lib}"/libmfxhw64.so.* "${lib}"/mfx/*.so) \
    && for f in /usr/bin/ffmpeg "${loaded[@]}"; do if [ -e "$f" ]; then echo "$f"; ldd "$f"; fi; done \
        | awk '$1 ~ /^\// && NF == 1 {print $1} $2 == "=>" && $3 ~ /^\// {print $3}' | sort -u \
        | grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv)\.so' \
        | while read -r f; do \
            dir="/ffmpeg-root$(readlink -f "$(dirname "$f")")"; \
            mkdir -p "$dir" && cp -L "$f" "$dir/"; \
          done

# Debian 12 like the build stage, so the binaries find the glibc they were linked against.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime-no

FROM runtime-no AS runtime-yes
COPY --from=ffmpeg /ffmpeg-root/ /

# hadolint ignore=DL3006
FROM runtime-${FFMPEG}
LABEL org.opencontainers.image.title="ferrocast" \
      org.opencontainers.image.description="Live-streaming media server (RTMP, RTMPS, HTTP-FLV, WS-FLV) and its Kubernetes operator" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ferrocast /out/ferrocast-operator /usr/local/bin/
USER 65532:65532
# rtmp, rtmps, http (HTTP-FLV, WS-FLV, API), https, server admin (/metrics, /healthz,
# /readyz), operator metrics and probes
EXPOSE 1935 1936 8000 8443 9090 8080
ENTRYPOINT ["/usr/local/bin/ferrocast"]
