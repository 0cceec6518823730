#!/usr/bin/env bash
# Publish-to-playback latency of LL-HLS, HLS and HTTP-FLV with real players (hls.js and
# mpegts.js in headless Chromium; docs/benchmarks.md "Latency"). ffmpeg encodes a live 640x360
# 30 fps test picture (x264 zerolatency, 1 s GOP, AAC) whose top 40 rows carry the frame
# number as 16 black/white blocks, and publishes it over RTMP to a Ferrocast on 127.0.0.2;
# latency.mjs plays the stream three ways on one page and prints the latencies.
#
# Usage: scripts/bench/latency.sh
# Environment: SKIP_BUILD=1, PROFILE=debug, WARMUP_MS (15000), MEASURE_MS (30000),
#              OUT (.tools/bench/latency-DATE), PART_MS (200), SEGMENT_SECS (2)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/.tools/bench/latency-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
log() { printf '[latency %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
for tool in ffmpeg node curl; do command -v "$tool" >/dev/null || { log "missing $tool (scripts/test.sh installs it)"; exit 1; }; done
[[ -d .tools/node/node_modules/playwright-core ]] || { log "missing .tools/node (run scripts/test.sh once)"; exit 1; }

PROFILE="${PROFILE:-release}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    profile_flag=(--release)
    [[ "$PROFILE" == debug ]] && profile_flag=()
    timeout -k 10 3600 cargo build "${profile_flag[@]}" --bin ferrocast
fi

IP=127.0.0.2
cat > "$OUT/ferrocast.yaml" <<EOF
bind: $IP
rtmp: {port: 11935}
http: {port: 18080}
admin: {port: 19190}
apps:
  - name: live
    hls: {mode: always, segment_secs: ${SEGMENT_SECS:-2}, part_ms: ${PART_MS:-200}}
EOF
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
timeout -k 5 600 "target/$PROFILE/ferrocast" --config "$OUT/ferrocast.yaml" > "$OUT/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -sf "http://$IP:19190/readyz" >/dev/null && break; sleep 0.1; done

# The frame-number bar: block k (40 px wide) is white when bit k of the frame number is set.
BAR="color=c=black:s=640x40:r=30,format=yuv420p,geq=lum='255*mod(floor(N/pow(2,floor(X/40))),2)':cb=128:cr=128"
timeout -k 5 600 ffmpeg -hide_banner -loglevel error -re -f lavfi -i "testsrc2=size=640x360:rate=30" \
    -re -f lavfi -i "sine=frequency=440:sample_rate=44100" \
    -filter_complex "$BAR[bar];[0:v][bar]overlay=0:0:shortest=1,format=yuv420p[v]" \
    -map '[v]' -map 1:a -c:v libx264 -preset veryfast -tune zerolatency -g 30 -keyint_min 30 -sc_threshold 0 \
    -b:v 1500k -c:a aac -b:a 96k -f flv "rtmp://$IP:11935/live/latency" > "$OUT/ffmpeg.log" 2>&1 &
PIDS+=($!)
# Viewers join a stream that is already live: a full window of segments and parts is there.
sleep 10
log "measuring (warm-up ${WARMUP_MS:-15000} ms, window ${MEASURE_MS:-30000} ms)"
node scripts/bench/latency.mjs --base "http://$IP:18080/live/latency" \
    --warmup-ms "${WARMUP_MS:-15000}" --measure-ms "${MEASURE_MS:-30000}" | tee "$OUT/result.json"
python3 - "$OUT/result.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print("| player | latency p50 (ms) | p90 | min | max | samples |")
print("|---|---:|---:|---:|---:|---:|")
names = {"ll-hls": "LL-HLS (hls.js lowLatencyMode)", "hls": "HLS (hls.js)",
         "hls-by-frames": "HLS (by frame numbers, cross-check)", "flv": "HTTP-FLV (mpegts.js defaults)",
         "flv-chase": "HTTP-FLV (mpegts.js liveBufferLatencyChasing)"}
for k, name in names.items():
    s = (r.get("latencyMs") or {}).get(k)
    if s:
        print(f"| {name} | {s['p50']} | {s['p90']} | {s['min']} | {s['max']} | {s['samples']} |")
if r.get("errors"):
    print("errors:", r["errors"])
EOF
