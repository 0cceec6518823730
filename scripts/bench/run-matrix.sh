#!/usr/bin/env bash
# Runs the comparison benchmark of docs/benchmarks.md: for each server (Ferrocast release
# build, Node-Media-Server, nginx-rtmp), protocol (RTMP, HTTP-FLV, WS-FLV, HLS, LL-HLS;
# nginx-rtmp does RTMP and HLS (written to a tmpfs, served by nginx), NMS RTMP and the FLVs,
# Ferrocast all of them) and player count, it starts the server fresh,
# publishes the clip in a loop with `ffmpeg -re -stream_loop -1 -c copy`, waits 3 s, runs
# ferrocast-bench with the server's PID, and stops everything. Every process is bounded with
# `timeout -k` and stopped by its own PID. Results (one JSON and one log per run, plus a
# Markdown table) go to OUT (default .tools/bench/results/DATE).
#
# Other work on the box distorts the figures. Before each run the driver waits (up to
# QUIET_WAIT seconds) until less than QUIET_MAX cores are busy; after it, when processes other
# than the server, the bench and the kernel's softirq work used more than OTHER_MAX cores
# during the measured window, the run is repeated (at most RETRIES times). Each result
# records how busy the machine was.
#
# Usage: scripts/bench/run-matrix.sh [options]
#   --servers "ferrocast nms nginx"     --protocols "rtmp http-flv ws-flv" (or hls, ll-hls, hls-ts:
#                                       Ferrocast's MPEG-TS playlist ts.m3u8, nginx-rtmp's HLS)
#   --players "100 500 1000 2000 4000"  --out DIR
# Binaries are copied from target/release to OUT/bin first.
# Environment: RAMP (default 10 s up to 1000 players, 20 s above), WARMUP (5), MEASURE (15),
#   BENCH_THREADS (1), QUIET_MAX (0.3), QUIET_WAIT (180), OTHER_MAX (0.2), RETRIES (2),
#   RTMP_PORT (11935), HTTP_PORT (18080),
#   ADMIN_PORT (19190), SKIP_BUILD=1 to use the binaries already in target/release,
#   FERROCAST_CONFIG_EXTRA (YAML appended to Ferrocast's config, e.g. 'hub: {write_coalesce_ms: 0}'),
#   FERROCAST_HTTP_EXTRA (keys added to its `http` section, e.g. 'threads: 0').
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

SERVERS="ferrocast nms nginx"
PROTOCOLS="rtmp http-flv ws-flv"
PLAYERS="100 500 1000 2000 4000"
OUT=""
while (($#)); do
    case "$1" in
        --servers) SERVERS="$2"; shift 2 ;;
        --protocols) PROTOCOLS="$2"; shift 2 ;;
        --players) PLAYERS="$2"; shift 2 ;;
        --out) OUT="$2"; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
        *) echo "run-matrix.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

WARMUP="${WARMUP:-5}"
MEASURE="${MEASURE:-15}"
BENCH_THREADS="${BENCH_THREADS:-1}"
QUIET_MAX="${QUIET_MAX:-0.3}"
QUIET_WAIT="${QUIET_WAIT:-180}"
OTHER_MAX="${OTHER_MAX:-0.2}"
RETRIES="${RETRIES:-2}"
RTMP_PORT="${RTMP_PORT:-11935}"
HTTP_PORT="${HTTP_PORT:-18080}"
ADMIN_PORT="${ADMIN_PORT:-19190}"
OUT="${OUT:-$ROOT/.tools/bench/results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
CLIP="$ROOT/.tools/bench/clip.flv"
FERROCAST="$OUT/bin/ferrocast"
BENCH="$OUT/bin/ferrocast-bench"

log() { printf '[run-matrix %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# --- prerequisites ------------------------------------------------------------------------------
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building release binaries"
    timeout -k 10 3600 cargo build --release --bin ferrocast --bin ferrocast-bench
fi
# A snapshot of the binaries, so a rebuild during the matrix does not change what is measured.
mkdir -p "$OUT/bin"
cp "$ROOT/target/release/ferrocast" "$ROOT/target/release/ferrocast-bench" "$OUT/bin/"
{
    echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git status --porcelain -- server bench 2>/dev/null | grep -q . && echo ' (uncommitted changes in server/ or bench/)')"
    echo "ferrocast: $(sha256sum "$FERROCAST" | cut -c1-16)  $(date -r "$ROOT/target/release/ferrocast" '+%F %T')"
    echo "node: $(node --version 2>/dev/null)  nginx: $(nginx -v 2>&1 | cut -d/ -f2)  kernel: $(uname -r)  cpus: $(nproc)"
    lscpu 2>/dev/null | grep -m1 'Model name' || true
} > "$OUT/environment.txt"
scripts/bench/make-clip.sh "$CLIP"
[[ " $SERVERS " == *" nms "* ]] && scripts/bench/install-nms.sh

# Every player connects from 127.0.0.1: lift the per-address limits to the totals.
printf 'bind: 127.0.0.1\nrtmp: {port: %s, max_connections_per_ip: 20000}\nhttp: {port: %s, max_connections_per_ip: 20000%s}\nadmin: {port: %s}\n%s\n' \
    "$RTMP_PORT" "$HTTP_PORT" "${FERROCAST_HTTP_EXTRA:+, $FERROCAST_HTTP_EXTRA}" "$ADMIN_PORT" "${FERROCAST_CONFIG_EXTRA:-}" > "$OUT/ferrocast.yaml"

# Process handling (start_bg, stop_bg, cleanup on exit) and the quiet-machine check.
# shellcheck source=scripts/bench/lib.sh
source "$ROOT/scripts/bench/lib.sh"

url_for() { # url_for SERVER PROTOCOL
    case "$1/$2" in
        */rtmp) echo "rtmp://127.0.0.1:$RTMP_PORT/live/bench" ;;
        */http-flv) echo "http://127.0.0.1:$HTTP_PORT/live/bench.flv" ;;
        */ws-flv) echo "ws://127.0.0.1:$HTTP_PORT/live/bench.flv" ;;
        nginx/hls | nginx/hls-ts) echo "http://127.0.0.1:$HTTP_PORT/hls/bench.m3u8" ;;
        */hls-ts) echo "http://127.0.0.1:$HTTP_PORT/live/bench/ts.m3u8" ;;
        */hls | */ll-hls) echo "http://127.0.0.1:$HTTP_PORT/live/bench/index.m3u8" ;;
    esac
}

# CPU used during a result's window by everything but the server, the bench and softirq.
other_cores() {
    jq -r '[.machine.busy_cores - .server.cpu_cores - .bench.cpu_cores - (.machine.softirq_cores // 0), 0] | max' "$1"
}

run_with_retries() { # run_with_retries SERVER PROTOCOL PLAYERS
    local name="$1-$2-$3" attempt other
    for attempt in $(seq 0 "$RETRIES"); do
        ATTEMPT="$attempt"
        run_one "$@"
        [[ -f "$OUT/$name.json" ]] || return 0
        other="$(other_cores "$OUT/$name.json")"
        if awk -v o="$other" -v m="$OTHER_MAX" 'BEGIN{exit !(o <= m)}'; then
            return 0
        fi
        log "$name: other processes used $other cores during the window (> $OTHER_MAX)"
        if [[ "$attempt" -lt "$RETRIES" ]]; then
            log "$name: repeating the run"
        fi
    done
}

run_one() { # run_one SERVER PROTOCOL PLAYERS
    local server="$1" proto="$2" n="$3" name="$1-$2-$3" ramp limit srv pub spid port
    ramp="${RAMP:-$([[ $n -le 1000 ]] && echo 10 || echo 20)}"
    limit=$((ramp + WARMUP + MEASURE + 90))
    for port in "$RTMP_PORT" "$HTTP_PORT"; do
        port_free "$port" || { log "port $port is in use; skipping $name"; return 0; }
    done
    wait_quiet
    log "$name: machine quiet ($QUIET_BUSY cores busy); load average $(cut -d' ' -f1-3 /proc/loadavg)"

    case "$server" in
        ferrocast) start_bg "$limit" "$OUT/$name.server.log" "$FERROCAST" --config "$OUT/ferrocast.yaml" ;;
        nms) start_bg "$limit" "$OUT/$name.server.log" node "$ROOT/scripts/bench/nms.js" "$RTMP_PORT" "$HTTP_PORT" "$OUT/nms-data" ;;
        nginx) HLS_HTTP_PORT="$([[ $proto == hls* ]] && echo "$HTTP_PORT")" \
            start_bg "$limit" "$OUT/$name.server.log" "$ROOT/scripts/bench/nginx-rtmp.sh" "$RTMP_PORT" "$OUT/nginx" ;;
    esac
    srv="$BG_PID"
    if ! wait_port "$RTMP_PORT" "$srv"; then
        log "$name: server did not start; see $OUT/$name.server.log"
        stop_bg "$srv"
        return 0
    fi
    spid="$(pgrep -P "$srv" | head -1)"

    start_bg "$limit" "$OUT/$name.publisher.log" ffmpeg -hide_banner -loglevel error -nostdin \
        -stream_loop -1 -re -i "$CLIP" -c copy -f flv "rtmp://127.0.0.1:$RTMP_PORT/live/bench"
    pub="$BG_PID"
    # HLS players start from a full window of segments, as in production (nginx-rtmp writes
    # HLS from the publish on; Ferrocast's on-demand segmenter is started by one request).
    if [[ $proto == hls* || $proto == ll-hls ]]; then
        sleep 1
        [[ $server == ferrocast ]] && curl -s -o /dev/null --max-time 15 "$(url_for "$server" "$proto")"
        sleep 12
    fi
    sleep 3
    if ! kill -0 "$pub" 2>/dev/null; then
        log "$name: publisher exited; see $OUT/$name.publisher.log"
        stop_bg "$srv"
        return 0
    fi

    log "$name: bench (ramp ${ramp}s, warmup ${WARMUP}s, measure ${MEASURE}s, server pid $spid)"
    local ll=()
    [[ $proto == ll-hls ]] && ll=(--ll-hls)
    if timeout -k 5 "$limit" "$BENCH" --url "$(url_for "$server" "$proto")" "${ll[@]}" --players "$n" --ramp-secs "$ramp" \
        --warmup-secs "$WARMUP" --measure-secs "$MEASURE" --server-pid "$spid" --threads "$BENCH_THREADS" \
        --json > "$OUT/$name.json" 2> "$OUT/$name.log"; then
        # Add the run's conditions to its result.
        jq -c --arg server "$server" --arg proto "$proto" --arg busy "$QUIET_BUSY" --arg attempt "${ATTEMPT:-0}" \
            '. + {server_name: $server, protocol: $proto, quiet_busy_cores_before: ($busy | tonumber), attempt: ($attempt | tonumber)}' \
            "$OUT/$name.json" > "$OUT/$name.json.tmp" && mv "$OUT/$name.json.tmp" "$OUT/$name.json"
        grep -v ' t=' "$OUT/$name.log" >&2 || true
    else
        log "$name: bench failed; see $OUT/$name.log"
        rm -f "$OUT/$name.json"
    fi
    kill -0 "$pub" 2>/dev/null || log "$name: note: the publisher died during the run"
    kill -0 "$srv" 2>/dev/null || log "$name: note: the server died during the run"
    stop_bg "$pub"
    stop_bg "$srv"
    sleep 1
}

log "results in $OUT"
for server in $SERVERS; do
    for proto in $PROTOCOLS; do
        [[ "$server" == nginx && "$proto" != rtmp && "$proto" != hls && "$proto" != hls-ts ]] && continue
        [[ "$server" == nms && ( "$proto" == hls* || "$proto" == ll-hls ) ]] && continue
        for n in $PLAYERS; do
            run_with_retries "$server" "$proto" "$n"
        done
    done
done
python3 "$ROOT/scripts/bench/table.py" "$OUT" > "$OUT/table.md"
cat "$OUT/table.md"
