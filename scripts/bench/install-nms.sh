#!/usr/bin/env bash
# Installs Node-Media-Server (npm package node-media-server, pinned) into the ignored
# project-local folder .tools/nms, for the comparison benchmark (docs/benchmarks.md).
# Reruns do nothing when the pinned version is already there.
#
# Usage: scripts/bench/install-nms.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
NMS_DIR="$ROOT/.tools/nms"
NMS_VERSION="${NMS_VERSION:-4.4.3}"

command -v node >/dev/null && command -v npm >/dev/null || {
    echo "install-nms.sh: node and npm are needed (apt-get install nodejs npm)" >&2
    exit 1
}

installed="$(node -p "require('$NMS_DIR/node_modules/node-media-server/package.json').version" 2>/dev/null || true)"
if [[ "$installed" == "$NMS_VERSION" ]]; then
    echo "node-media-server $installed already in $NMS_DIR"
    exit 0
fi

mkdir -p "$NMS_DIR"
cd "$NMS_DIR"
[[ -f package.json ]] || echo '{"name":"ferrocast-bench-nms","private":true}' > package.json
timeout -k 10 600 npm install --no-audit --no-fund --save-exact "node-media-server@$NMS_VERSION"
echo "node-media-server $(node -p "require('./node_modules/node-media-server/package.json').version") installed in $NMS_DIR"
