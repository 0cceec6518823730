#!/usr/bin/env python3
"""Prints the Markdown results table of a scripts/bench/run-matrix.sh or ingest.sh output directory.

Usage: scripts/bench/table.py RESULTS_DIR
"""
import json
import pathlib
import sys

SERVER_ORDER = {"ferrocast": 0, "nms": 1, "nginx": 2}
SERVER_NAME = {"ferrocast": "Ferrocast", "nms": "NMS 4.4.3", "nginx": "nginx-rtmp"}
PROTO_ORDER = {"rtmp": 0, "http-flv": 1, "ws-flv": 2, "hls": 3, "hls-ts": 4, "ll-hls": 5}


def fmt(v, spec, dash="-"):
    return dash if v is None else format(v, spec)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rows = []
    for f in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
        try:
            r = json.loads(f.read_text())
        except ValueError:
            continue  # a run in progress or cut short
        if "server_name" not in r:
            continue
        rows.append(r)
    ingest = [r for r in rows if r.get("mode") == "publish"]
    if ingest:
        print_ingest(ingest)
    rows = [r for r in rows if r.get("mode") != "publish"]
    if not rows:
        return
    rows.sort(key=lambda r: (SERVER_ORDER.get(r["server_name"], 9), PROTO_ORDER.get(r["protocol"], 9), r["players"]))
    print("| Server | Protocol | N | connected | failed | keep-up | Mbps | video fps p50 / p1 | 1st keyframe p50 / p99 (ms) "
          "| server CPU (cores) | server RSS (MB) | RSS/player (KB): total / marginal | bench CPU | softirq | other CPU |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r.get("server") or {}
        ttfk = r["first_keyframe_ms"]
        fps = r.get("video_fps") or {}
        machine = (r.get("machine") or {}).get("busy_cores")
        softirq = (r.get("machine") or {}).get("softirq_cores")
        cpu = s.get("cpu_cores")
        bench = r["bench"]["cpu_cores"]
        other = None if machine is None or cpu is None else max(0.0, machine - cpu - bench - (softirq or 0.0))
        rss = s.get("rss_kb")
        # HLS runs: stalls of the simulated playback buffer in the window (stalled players).
        st = r.get("stalls")
        stalls = f" ({st['total']} stalls, {st['players']} players)" if st and r["protocol"] in ("hls", "hls-ts", "ll-hls") else ""
        # The server's system time (kernel: sockets, copies, wake-ups), when the bench reported it.
        kernel = f" (kernel {s['sys_cores']:.2f})" if s.get("sys_cores") is not None else ""
        print(
            f"| {SERVER_NAME.get(r['server_name'], r['server_name'])} | {r['protocol']} | {r['players']} "
            f"| {r['connected']} | {r['failed']} | {100 * r['keep_up_fraction']:.1f}%{stalls} | {r['mbps']:.0f} "
            f"| {fmt(fps.get('p50'), '.1f')} / {fmt(fps.get('p1'), '.1f')} "
            f"| {fmt(ttfk['p50'], '.1f')} / {fmt(ttfk['p99'], '.0f')} "
            f"| {fmt(cpu, '.2f')}{kernel} | {fmt(None if rss is None else rss / 1024, '.0f')} "
            f"| {fmt(s.get('rss_per_player_kb'), '.0f')} / {fmt(s.get('rss_marginal_per_player_kb'), '.0f')} "
            f"| {bench:.2f} | {fmt(softirq, '.2f')} | {fmt(other, '.2f')} |"
        )


def other_cpu(r):
    s = r.get("server") or {}
    m = r.get("machine") or {}
    if m.get("busy_cores") is None or s.get("cpu_cores") is None:
        return None
    return max(0.0, m["busy_cores"] - s["cpu_cores"] - r["bench"]["cpu_cores"] - (m.get("softirq_cores") or 0.0))


def print_ingest(rows):
    """ingest.sh runs: one row per (players per stream, N, server), servers side by side."""
    rows.sort(key=lambda r: (r["players_per_stream"], r["publishers"], SERVER_ORDER.get(r["server_name"], 9)))
    print("| Server | publishers | players / stream | publishing | refused / failed / dropped | accept p50 / p99 (ms) "
          "| streams kept in real time | server CPU (cores) | publishers per core | server RSS (MB) "
          "| RSS / stream (KB): total / marginal | Mbps in | bench CPU | softirq | other CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        s = r.get("server") or {}
        acc = r["accept_ms"]
        cpu = s.get("cpu_cores")
        rss = s.get("rss_kb")
        per_core = None if not cpu else r["connected"] / cpu
        print(
            f"| {SERVER_NAME.get(r['server_name'], r['server_name'])} | {r['publishers']} | {r['players_per_stream']} "
            f"| {r['connected']} | {r['refused']} / {r['failed']} / {r['dropped']} "
            f"| {fmt(acc['p50'], '.1f')} / {fmt(acc['p99'], '.0f')} "
            f"| {r['streams_kept']} ({100 * r['streams_kept_fraction']:.1f}%) "
            f"| {fmt(cpu, '.2f')} | {fmt(per_core, '.0f')} | {fmt(None if rss is None else rss / 1024, '.0f')} "
            f"| {fmt(s.get('rss_per_stream_kb'), '.0f')} / {fmt(s.get('rss_marginal_per_stream_kb'), '.0f')} "
            f"| {r['mbps_in']:.0f} | {r['bench']['cpu_cores']:.2f} | {fmt((r.get('machine') or {}).get('softirq_cores'), '.2f')} "
            f"| {fmt(other_cpu(r), '.2f')} |"
        )
    print()


if __name__ == "__main__":
    main()
