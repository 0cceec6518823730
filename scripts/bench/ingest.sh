#!/usr/bin/env bash
# Runs the ingest comparison of docs/benchmarks.md: many publishers, each on its own stream,
# with 0 or M players per stream. For each point (N publishers, M players per stream) the
# servers (Ferrocast release build, Node-Media-Server, nginx-rtmp) run back to back, so a
# disturbance of the shared machine hits one point of all three rather than one server:
# a fresh server, then `ferrocast-bench --publish` with the server's PID (each publisher
# replays the 600 kbps clip in real time from memory; players start a second after their
# stream's publish), then everything stopped. Every process is bounded with `timeout -k`
# and stopped by its own PID. Results (one JSON and one log per run, plus a Markdown table)
# go to OUT (default .tools/bench/ingest/DATE).
#
# Before each run the driver waits (up to QUIET_WAIT seconds) until less than QUIET_MAX
# cores are busy, and records the load average; each result records how busy the machine
# was during its window ("other CPU" in the table).
#
# Usage: scripts/bench/ingest.sh [options]
#   --servers "ferrocast nms nginx"   --publishers "100 500 1000 2000"
#   --players-per-stream "0 2"        --protocol rtmp (or http-flv, ws-flv: Ferrocast only)
#   --out DIR
# Environment: RAMP (default 10 s up to 500 publishers, 15 s to 1000, 20 s above), WARMUP (5),
#   MEASURE (15), BENCH_THREADS (1), SEND_INTERVAL_MS (0), QUIET_MAX (0.5), QUIET_WAIT (20),
#   RTMP_PORT (11935), HTTP_PORT (18080), ADMIN_PORT (19190), SKIP_BUILD=1 to use the
#   binaries already in target/release.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

SERVERS="ferrocast nms nginx"
PUBLISHERS="100 500 1000 2000"
PER_STREAM="0 2"
PROTOCOL="rtmp"
OUT=""
while (($#)); do
    case "$1" in
        --servers) SERVERS="$2"; shift 2 ;;
        --publishers) PUBLISHERS="$2"; shift 2 ;;
        --players-per-stream) PER_STREAM="$2"; shift 2 ;;
        --protocol) PROTOCOL="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "ingest.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

WARMUP="${WARMUP:-5}"
MEASURE="${MEASURE:-15}"
BENCH_THREADS="${BENCH_THREADS:-1}"
SEND_INTERVAL_MS="${SEND_INTERVAL_MS:-0}"
QUIET_MAX="${QUIET_MAX:-0.5}"
QUIET_WAIT="${QUIET_WAIT:-20}"
RTMP_PORT="${RTMP_PORT:-11935}"
HTTP_PORT="${HTTP_PORT:-18080}"
ADMIN_PORT="${ADMIN_PORT:-19190}"
OUT="${OUT:-$ROOT/.tools/bench/ingest/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
CLIP="$ROOT/.tools/bench/clip-600k.flv"
FERROCAST="$OUT/bin/ferrocast"
BENCH="$OUT/bin/ferrocast-bench"

log() { printf '[ingest %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

if [[ "$PROTOCOL" != rtmp ]]; then
    [[ "$SERVERS" == ferrocast ]] || { log "--protocol $PROTOCOL: only Ferrocast takes FLV pushes here (--servers ferrocast)"; exit 2; }
fi

# --- prerequisites ------------------------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building release binaries"
    timeout -k 10 3600 cargo build --release --bin ferrocast --bin ferrocast-bench
fi
mkdir -p "$OUT/bin"
cp "$ROOT/target/release/ferrocast" "$ROOT/target/release/ferrocast-bench" "$OUT/bin/"
{
    echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git status --porcelain -- server bench 2>/dev/null | grep -q . && echo ' (uncommitted changes in server/ or bench/)')"
    echo "ferrocast: $(sha256sum "$FERROCAST" | cut -c1-16)  $(date -r "$ROOT/target/release/ferrocast" '+%F %T')"
    echo "node: $(node --version 2>/dev/null)  nginx: $(nginx -v 2>&1 | cut -d/ -f2)  kernel: $(uname -r)  cpus: $(nproc)"
    lscpu 2>/dev/null | grep -m1 'Model name' || true
    echo "started: $(date -u '+%F %T UTC'); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} > "$OUT/environment.txt"
scripts/bench/make-clip.sh "$CLIP" 600k
[[ " $SERVERS " == *" nms "* ]] && scripts/bench/install-nms.sh

# Every publisher and player connects from 127.0.0.1: lift the per-address limits to the totals.
printf 'bind: 127.0.0.1\nrtmp: {port: %s, max_connections_per_ip: 20000}\nhttp: {port: %s, max_connections_per_ip: 20000}\nadmin: {port: %s}\n' \
    "$RTMP_PORT" "$HTTP_PORT" "$ADMIN_PORT" > "$OUT/ferrocast.yaml"
# Thousands of sockets on each side.
ulimit -n "$(ulimit -Hn)"

# shellcheck source=scripts/bench/lib.sh
source "$ROOT/scripts/bench/lib.sh"

url_for() { # url_for PROTOCOL
    case "$1" in
        rtmp) echo "rtmp://127.0.0.1:$RTMP_PORT/live/pub" ;;
        http-flv) echo "http://127.0.0.1:$HTTP_PORT/live/pub.flv" ;;
        ws-flv) echo "ws://127.0.0.1:$HTTP_PORT/live/pub.flv" ;;
    esac
}

run_one() { # run_one SERVER N M
    local server="$1" n="$2" m="$3" name="$1-$PROTOCOL-$2x$3" ramp limit srv spid port
    if [[ -n "${RAMP:-}" ]]; then ramp="$RAMP"; elif ((n <= 500)); then ramp=10; elif ((n <= 1000)); then ramp=15; else ramp=20; fi
    limit=$((ramp + WARMUP + MEASURE + 90))
    for port in "$RTMP_PORT" "$HTTP_PORT"; do
        port_free "$port" || { log "port $port is in use; skipping $name"; return 0; }
    done
    wait_quiet
    log "$name: $QUIET_BUSY cores busy before; load average $(cut -d' ' -f1-3 /proc/loadavg)"

    case "$server" in
        ferrocast) start_bg "$limit" "$OUT/$name.server.log" "$FERROCAST" --config "$OUT/ferrocast.yaml" ;;
        nms) start_bg "$limit" "$OUT/$name.server.log" node "$ROOT/scripts/bench/nms.js" "$RTMP_PORT" "$HTTP_PORT" "$OUT/nms-data" ;;
        nginx) start_bg "$limit" "$OUT/$name.server.log" "$ROOT/scripts/bench/nginx-rtmp.sh" "$RTMP_PORT" "$OUT/nginx" ;;
    esac
    srv="$BG_PID"
    if ! wait_port "$RTMP_PORT" "$srv"; then
        log "$name: server did not start; see $OUT/$name.server.log"
        stop_bg "$srv"
        return 0
    fi
    spid="$(pgrep -P "$srv" | head -1)"
    sleep 1

    log "$name: bench (ramp ${ramp}s, warmup ${WARMUP}s, measure ${MEASURE}s, server pid $spid)"
    if timeout -k 5 "$limit" "$BENCH" --publish --url "$(url_for "$PROTOCOL")" --clip "$CLIP" --publishers "$n" \
        --players-per-stream "$m" --play-url "rtmp://127.0.0.1:$RTMP_PORT/live/pub" \
        --send-interval-ms "$SEND_INTERVAL_MS" --ramp-secs "$ramp" --warmup-secs "$WARMUP" \
        --measure-secs "$MEASURE" --server-pid "$spid" --threads "$BENCH_THREADS" \
        --json > "$OUT/$name.json" 2> "$OUT/$name.log"; then
        jq -c --arg server "$server" --arg busy "$QUIET_BUSY" --arg load "$(cut -d' ' -f1 /proc/loadavg)" \
            '. + {server_name: $server, quiet_busy_cores_before: ($busy | tonumber), load_after: ($load | tonumber)}' \
            "$OUT/$name.json" > "$OUT/$name.json.tmp" && mv "$OUT/$name.json.tmp" "$OUT/$name.json"
        grep -v ' t=' "$OUT/$name.log" >&2 || true
    else
        log "$name: bench failed; see $OUT/$name.log"
        rm -f "$OUT/$name.json"
    fi
    kill -0 "$srv" 2>/dev/null || log "$name: note: the server died during the run"
    stop_bg "$srv"
    sleep 2
}

log "results in $OUT"
for m in $PER_STREAM; do
    for n in $PUBLISHERS; do
        for server in $SERVERS; do
            run_one "$server" "$n" "$m"
        done
    done
done
python3 "$ROOT/scripts/bench/table.py" "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"
