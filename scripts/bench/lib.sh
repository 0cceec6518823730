# Shared by the benchmark drivers (run-matrix.sh, ingest.sh); sourced, not run. Expects `log`,
# QUIET_MAX and QUIET_WAIT to be defined by the driver.
#
# Process handling: everything we start is a `timeout` wrapper we know the PID of ----------
STARTED=()
start_bg() { # start_bg SECONDS LOGFILE CMD...: sets BG_PID (the timeout wrapper)
    local secs="$1" logf="$2"
    shift 2
    timeout -k 5 "$secs" "$@" > "$logf" 2>&1 &
    BG_PID=$!
    STARTED+=("$BG_PID")
}
stop_bg() { # stop_bg PID: TERM to the wrapper (it forwards to its child), then KILL both
    local pid="$1" child i
    child="$(pgrep -P "$pid" 2>/dev/null | head -1 || true)"
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        [[ -n "$child" ]] && kill -KILL "$child" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local p
    for p in "${STARTED[@]:-}"; do
        [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null && stop_bg "$p"
    done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

busy_ticks() { awk '/^cpu /{print $2+$3+$4+$7+$8+$9; exit}' /proc/stat; }
# Cores busy over the next 2 seconds, machine-wide.
busy_cores() {
    local a b hz
    hz="$(getconf CLK_TCK)"
    a="$(busy_ticks)"
    sleep 2
    b="$(busy_ticks)"
    awk -v a="$a" -v b="$b" -v hz="$hz" 'BEGIN{printf "%.2f", (b-a)/hz/2}'
}
wait_quiet() {
    local waited=0 busy
    while :; do
        busy="$(busy_cores)"
        if awk -v b="$busy" -v m="$QUIET_MAX" 'BEGIN{exit !(b < m)}'; then
            QUIET_BUSY="$busy"
            return 0
        fi
        if ((waited >= QUIET_WAIT)); then
            log "machine still busy ($busy cores) after ${QUIET_WAIT}s; running anyway"
            QUIET_BUSY="$busy"
            return 0
        fi
        ((waited == 0)) && log "waiting for the machine to quiet down ($busy cores busy)"
        waited=$((waited + 2))
    done
}
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { # wait_port PORT PID
    local i
    for i in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

