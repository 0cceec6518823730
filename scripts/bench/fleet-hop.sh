#!/usr/bin/env bash
# The cost of the fleet's hop (docs/benchmarks.md): the same N HTTP-FLV players of one stream
# (the benchmark clip, published with ffmpeg -re -c copy) served
#   1. by one server process, players and publisher on it;
#   2. by three server processes on 127.0.0.1-3 (a fleet), the publisher on the first and the
#      players split over the other two, which pull the stream from the first once each.
# For each: the servers' CPU (all processes, user + system, over the measured window) per
# player, time to the first keyframe (p50/p99, from ferrocast-bench) and, for the fleet, the
# bytes that crossed between pods per stream (what the origin's admin port sent).
#
# Usage: scripts/bench/fleet-hop.sh [N]   (default 1000)
# Environment: SKIP_BUILD=1, PROFILE=debug (a quick check of the script), RAMP (10), WARMUP (5), MEASURE (15), OUT (.tools/bench/fleet-DATE)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
N="${1:-1000}"
RAMP="${RAMP:-10}"
WARMUP="${WARMUP:-5}"
MEASURE="${MEASURE:-15}"
OUT="${OUT:-$ROOT/.tools/bench/fleet-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT/bin"
log() { printf '[fleet-hop %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

PROFILE="${PROFILE:-release}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    profile_flag=(--release)
    [[ "$PROFILE" == debug ]] && profile_flag=()
    timeout -k 10 3600 cargo build "${profile_flag[@]}" --bin ferrocast --bin ferrocast-bench
fi
cp "target/$PROFILE/ferrocast" "target/$PROFILE/ferrocast-bench" "$OUT/bin/"
scripts/bench/make-clip.sh
CLIP="$ROOT/.tools/bench/clip.flv"
echo "fleet-hop-$RANDOM$RANDOM" > "$OUT/secret"

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

# server IP NAME [cluster yaml]: starts a server on IP (ports 11935/18080/19190); its PID is
# left in SERVER_PID.
server() {
    local ip="$1" name="$2" extra="${3:-}"
    cat > "$OUT/$name.yaml" <<EOF
bind: $ip
rtmp: {port: 11935, max_connections_per_ip: 100000}
http: {port: 18080, max_connections: 100000, max_connections_per_ip: 100000}
admin: {port: 19190}
$extra
EOF
    timeout -k 5 900 "$OUT/bin/ferrocast" --config "$OUT/$name.yaml" > "$OUT/$name.log" 2>&1 &
    PIDS+=($!)
    local wrapper=$!
    for _ in $(seq 100); do curl -sf "http://$ip:19190/readyz" >/dev/null && break; sleep 0.1; done
    SERVER_PID="$(pgrep -P "$wrapper" -x ferrocast || echo "$wrapper")"
}

cpu_ticks() { # total utime+stime of the given PIDs, in clock ticks
    local t=0 p
    for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$t"
}

publish() {
    timeout -k 5 600 ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i "$CLIP" -c copy \
        -f flv "rtmp://$1:11935/live/hop" &
    PIDS+=($!)
    sleep 3
}

bench() { # URL PLAYERS JSON
    "$OUT/bin/ferrocast-bench" --url "$1" --players "$2" --ramp-secs "$RAMP" --warmup-secs "$WARMUP" \
        --measure-secs "$MEASURE" --json > "$3" 2> "$3.log"
}

measure() { # LABEL PIDS... -- runs after the ramp and warm-up, over MEASURE seconds
    local label="$1"; shift
    sleep $((RAMP + WARMUP))
    local t0 t1
    t0="$(cpu_ticks "$@")"
    sleep "$MEASURE"
    t1="$(cpu_ticks "$@")"
    python3 -c "print(f'$label: server CPU {($t1 - $t0) / $(getconf CLK_TCK) / $MEASURE:.3f} cores')" | tee "$OUT/$label.cpu"
}

log "one process, $N players"
server 127.0.0.1 single; A=$SERVER_PID
publish 127.0.0.1
bench "http://127.0.0.1:18080/live/hop.flv" "$N" "$OUT/single.json" &
BENCH=$!
measure single "$A"
wait "$BENCH"
cleanup; PIDS=()
sleep 2

log "three processes, publisher on the first, $N players over the other two"
peers='[127.0.0.1:19190, 127.0.0.2:19190, 127.0.0.3:19190]'
cluster="cluster: {peers: $peers, secret_file: $OUT/secret}"
server 127.0.0.1 pod-a "$cluster"; A=$SERVER_PID
server 127.0.0.2 pod-b "$cluster"; B=$SERVER_PID
server 127.0.0.3 pod-c "$cluster"; C=$SERVER_PID
publish 127.0.0.1
bench "http://127.0.0.2:18080/live/hop.flv" "$((N / 2))" "$OUT/fleet-b.json" &
B1=$!
bench "http://127.0.0.3:18080/live/hop.flv" "$((N - N / 2))" "$OUT/fleet-c.json" &
B2=$!
measure fleet "$A" "$B" "$C"
# What the origin's admin port sent to the two pulling pods (bytes acked on those sockets).
crossing="$(ss -tinH state established '( sport = :19190 )' src 127.0.0.1 | grep -o 'bytes_acked:[0-9]*' | cut -d: -f2 | paste -sd+ | bc || echo 0)"
wait "$B1" "$B2"

python3 - "$OUT" "$N" "$crossing" <<'EOF'
import json, sys, pathlib
out, n, crossing = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3] or 0)
def cores(label):
    return float((out / f"{label}.cpu").read_text().split()[-2])
single = json.loads((out / "single.json").read_text())
fb, fc = (json.loads((out / f).read_text()) for f in ("fleet-b.json", "fleet-c.json"))
def ttfk(*rs):
    return " / ".join(f"{max(r['first_keyframe_ms'][k] or 0 for r in rs):.0f}" for k in ("p50", "p99"))
print(f"| setup | players | keep-up | server CPU (cores) | CPU per 1000 players | 1st keyframe p50 / p99 ms |")
print(f"|---|---:|---:|---:|---:|---:|")
print(f"| one process | {n} | {single['keep_up_fraction']:.2f} | {cores('single'):.2f} | {cores('single') / n * 1000:.3f} | {ttfk(single)} |")
keep = (fb['keep_up'] + fc['keep_up']) / max(1, fb['players'] + fc['players'])
print(f"| three processes (hop) | {n} | {keep:.2f} | {cores('fleet'):.2f} | {cores('fleet') / n * 1000:.3f} | {ttfk(fb, fc)} |")
print(f"bytes from the origin's admin port to its peers during the run: {crossing} ({crossing / 1e6:.1f} MB for 2 pulls of one stream)")
EOF
log "results in $OUT"
