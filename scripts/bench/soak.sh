#!/usr/bin/env bash
# Soak test: a release Ferrocast under publishers and players that join and leave at random
# for DURATION seconds (default 3600), with the server's RSS, open file descriptors, threads
# and live sessions sampled every SAMPLE seconds. Prints a summary (start, settled and end
# figures, growth after the first 10 minutes) and writes every sample to OUT/samples.csv.
#
# The churn: every second one random action: start an RTMP publisher (ffmpeg -c copy of a
# small clip, killed after 5-180 s, sometimes with SIGKILL so the server sees a dropped TCP
# connection), an FLV-over-HTTP pusher (ffmpeg -method POST), an HTTP-FLV player (curl), an
# RTMP player (rtmpdump), a few WS-FLV players (ferrocast-bench), or a player of a name nobody
# publishes. Stream names come from a small set, so publishers also collide (refused as
# duplicates) and take over streams within the publisher grace.
#
# Usage: scripts/bench/soak.sh [DURATION_SECS]
# Environment: SAMPLE (10), MAX_PUBLISHERS (8), MAX_PLAYERS (40), NAMES (12), OUT
#   (default .tools/soak/DATE), SKIP_BUILD=1 to use target/release as it is,
#   PROFILE=debug to soak a debug build (quick checks of the script itself),
#   RTMP_PORT (12935), HTTP_PORT (18090), ADMIN_PORT (19290).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DURATION="${1:-3600}"
SAMPLE="${SAMPLE:-10}"
MAX_PUBLISHERS="${MAX_PUBLISHERS:-8}"
MAX_PLAYERS="${MAX_PLAYERS:-40}"
NAMES="${NAMES:-12}"
RTMP_PORT="${RTMP_PORT:-12935}"
HTTP_PORT="${HTTP_PORT:-18090}"
ADMIN_PORT="${ADMIN_PORT:-19290}"
OUT="${OUT:-$ROOT/.tools/soak/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
CLIP="$ROOT/.tools/soak/clip.flv"

log() { printf '[soak %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
for tool in ffmpeg curl rtmpdump timeout; do
    command -v "$tool" >/dev/null || { log "missing $tool (scripts/test.sh installs it)"; exit 1; }
done

PROFILE="${PROFILE:-release}"
if [[ "${SKIP_BUILD:-0}" != 1 ]]; then
    log "building $PROFILE binaries"
    profile_flag=(--release)
    [[ "$PROFILE" == debug ]] && profile_flag=()
    timeout -k 10 3600 cargo build "${profile_flag[@]}" --bin ferrocast --bin ferrocast-bench
fi
mkdir -p "$OUT/bin"
cp "target/$PROFILE/ferrocast" "target/$PROFILE/ferrocast-bench" "$OUT/bin/"
git rev-parse HEAD > "$OUT/commit.txt" 2>/dev/null || true

mkdir -p "$(dirname "$CLIP")"
if [[ ! -s "$CLIP" ]]; then
    log "making the soak clip (20 s, 640x360, 600 kbps H.264 + AAC, GOP 1 s)"
    timeout -k 10 600 ffmpeg -hide_banner -loglevel error -nostdin -y \
        -f lavfi -i "testsrc2=size=640x360:rate=25" -f lavfi -i "sine=frequency=440:sample_rate=44100" \
        -t 20 -c:v libx264 -preset veryfast -b:v 600k -maxrate 600k -bufsize 1200k -g 25 -keyint_min 25 \
        -sc_threshold 0 -pix_fmt yuv420p -c:a aac -b:a 64k -f flv "$CLIP.tmp"
    mv "$CLIP.tmp" "$CLIP"
fi

cat > "$OUT/config.yaml" <<EOF
bind: 127.0.0.1
rtmp: {port: $RTMP_PORT}
http: {port: $HTTP_PORT}
admin: {port: $ADMIN_PORT}
hub: {play_wait_secs: 10, publisher_grace_secs: 5}
EOF

PIDS_FILE="$OUT/children"
: > "$PIDS_FILE"
SERVER_PID=""
cleanup() {
    # Every child was started with its own timeout; this only shortens the end.
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$PIDS_FILE"
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
    wait 2>/dev/null || true
}
trap cleanup EXIT

timeout -k 10 "$((DURATION + 120))" "$OUT/bin/ferrocast" --config "$OUT/config.yaml" > "$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null && break
    sleep 0.1
done
curl -sf "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null || { log "server did not start"; exit 1; }
# The server runs under `timeout`: sample the server itself.
FERRO_PID="$(pgrep -P "$SERVER_PID" -x ferrocast || echo "$SERVER_PID")"
log "server pid $FERRO_PID; running $DURATION s; samples in $OUT/samples.csv"

rnd() { echo $((RANDOM % ($2 - $1 + 1) + $1)); }
count() { pgrep -f -c -- "$1" 2>/dev/null || true; }
spawn() { "$@" >/dev/null 2>&1 & echo $! >> "$PIDS_FILE"; }

publish_rtmp() {
    local name="s$(rnd 0 $((NAMES - 1)))" life signal=TERM
    life="$(rnd 5 180)"
    (( RANDOM % 4 == 0 )) && signal=KILL
    spawn timeout -s "$signal" "$life" ffmpeg -hide_banner -loglevel quiet -nostdin -re -stream_loop -1 -i "$CLIP" \
        -c copy -f flv "rtmp://127.0.0.1:$RTMP_PORT/live/$name?soak=publisher"
}
publish_http() {
    local name="s$(rnd 0 $((NAMES - 1)))"
    spawn timeout "$(rnd 5 120)" ffmpeg -hide_banner -loglevel quiet -nostdin -re -stream_loop -1 -i "$CLIP" \
        -c copy -f flv -method POST "http://127.0.0.1:$HTTP_PORT/live/$name.flv?soak=publisher"
}
play_http() {
    spawn timeout "$(rnd 2 90)" curl -s -o /dev/null "http://127.0.0.1:$HTTP_PORT/live/s$(rnd 0 $((NAMES - 1))).flv?soak=player"
}
play_rtmp() {
    spawn timeout "$(rnd 2 90)" rtmpdump -q -r "rtmp://127.0.0.1:$RTMP_PORT/live/s$(rnd 0 $((NAMES - 1)))" --live -o /dev/null
}
play_ws() {
    spawn timeout -k 5 100 "$OUT/bin/ferrocast-bench" --url "ws://127.0.0.1:$HTTP_PORT/live/s$(rnd 0 $((NAMES - 1))).flv" \
        --players "$(rnd 1 4)" --ramp-secs 1 --warmup-secs 0 --measure-secs "$(rnd 2 60)"
}
play_missing() {
    spawn timeout 15 curl -s -o /dev/null "http://127.0.0.1:$HTTP_PORT/live/nobody$(rnd 0 999).flv"
}

echo "elapsed_s,rss_kb,fds,threads,publishers,players" > "$OUT/samples.csv"
sample() {
    local elapsed="$1" rss fds threads pubs players
    rss="$(awk '/^VmRSS/ {print $2}' "/proc/$FERRO_PID/status" 2>/dev/null || echo 0)"
    threads="$(awk '/^Threads/ {print $2}' "/proc/$FERRO_PID/status" 2>/dev/null || echo 0)"
    fds="$(ls "/proc/$FERRO_PID/fd" 2>/dev/null | wc -l)"
    pubs="$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^ferrocast_sessions_active\{.*role="publisher"/ {s += $2} END {print s + 0}')"
    players="$(curl -s "http://127.0.0.1:$ADMIN_PORT/metrics" | awk '/^ferrocast_sessions_active\{.*role="player"/ {s += $2} END {print s + 0}')"
    echo "$elapsed,$rss,$fds,$threads,$pubs,$players" >> "$OUT/samples.csv"
}

start=$SECONDS
next_sample=0
while (( SECONDS - start < DURATION )); do
    kill -0 "$FERRO_PID" 2>/dev/null || { log "the server died: see $OUT/server.log"; exit 1; }
    elapsed=$((SECONDS - start))
    if (( elapsed >= next_sample )); then
        sample "$elapsed"
        next_sample=$((elapsed + SAMPLE))
    fi
    publishers=$(( $(count 'soak=publisher') ))
    players=$(( $(count 'soak=player') + $(count 'rtmpdump -q') + $(count 'ferrocast-bench --url ws') ))
    case $((RANDOM % 10)) in
        0 | 1) (( publishers < MAX_PUBLISHERS )) && publish_rtmp ;;
        2) (( publishers < MAX_PUBLISHERS )) && publish_http ;;
        3 | 4) (( players < MAX_PLAYERS )) && play_http ;;
        5 | 6) (( players < MAX_PLAYERS )) && play_rtmp ;;
        7) (( players < MAX_PLAYERS )) && play_ws ;;
        8) play_missing ;;
        9) ;;
    esac
    # Forget children that ended.
    if (( elapsed % 30 == 0 )); then
        while read -r pid; do kill -0 "$pid" 2>/dev/null && echo "$pid"; done < "$PIDS_FILE" > "$PIDS_FILE.new" || true
        mv "$PIDS_FILE.new" "$PIDS_FILE"
    fi
    sleep 1
done
sample "$((SECONDS - start))"
# Everything stops; the server should come back to its idle figures.
while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$PIDS_FILE"
sleep 20
sample "$((SECONDS - start))"

python3 - "$OUT/samples.csv" <<'EOF'
import csv, sys
rows = [{k: int(v) for k, v in r.items()} for r in csv.DictReader(open(sys.argv[1]))]
def at(t):
    return min(rows, key=lambda r: abs(r["elapsed_s"] - t))
first, settled, end, idle = rows[0], at(600), rows[-2], rows[-1]
live = rows[:-1]
print(f"samples: {len(rows)} over {end['elapsed_s']} s")
for name, r in [("start", first), ("at 10 min", settled), ("end", end), ("idle after", idle)]:
    print(f"{name:>11}: RSS {r['rss_kb'] / 1024:7.1f} MiB  fds {r['fds']:5d}  threads {r['threads']:3d}  "
          f"publishers {r['publishers']:3d}  players {r['players']:4d}")
print(f"peak RSS {max(r['rss_kb'] for r in live) / 1024:.1f} MiB, peak fds {max(r['fds'] for r in live)}, "
      f"peak sessions {max(r['publishers'] + r['players'] for r in live)}")
later = [r for r in live if r["elapsed_s"] >= settled["elapsed_s"]]
if len(later) > 2:
    n = len(later)
    xs = [r["elapsed_s"] for r in later]
    ys = [r["rss_kb"] for r in later]
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1, sum((x - mx) ** 2 for x in xs))
    print(f"RSS trend after 10 min: {slope * 3600 / 1024:+.1f} MiB/hour (least squares)")
EOF
log "done: $OUT"
