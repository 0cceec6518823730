//! The `--publish` mode: N publishers of their own streams (RTMP, FLV over HTTP POST or over
//! WebSocket), ramped up, optionally M players per stream, then a measured window.
//!
//! A stream is "kept in real time" when the server read its publisher's media as fast as it
//! was sent (its media timestamps, less what sat unread in the kernel's queues, advanced at
//! least 95% of the window; the queues come from /proc/net/tcp, so this holds for any
//! server) and every player of it kept up as in the player modes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::clip::Clip;
use crate::publisher::{indexed_url, End, PublisherStats, Shared, DROPPED, FAILED, REFUSED};
use crate::stats::{keeps_up, percentile, PlayerStats, Snapshot, CONNECTED, KEEP_UP_RATIO};
use crate::target::Target;
use crate::{procfs, Args};

type Failures = Arc<Mutex<BTreeMap<String, u64>>>;

fn record(failures: &Failures, what: &str, e: impl std::fmt::Display) {
    let mut reason = format!("{what}: {e:#}");
    reason.truncate(120);
    *failures.lock().expect("failures lock").entry(reason).or_default() += 1;
}

pub async fn run(args: Args) -> Result<()> {
    let n = args.publishers;
    let m = args.players_per_stream;
    let base = Target::parse(&args.url)?;
    let SocketAddr::V4(server_addr) = base.addr else {
        bail!("--publish needs an IPv4 loopback address");
    };
    let targets: Vec<Target> = (0..n)
        .map(|i| Target::parse(&indexed_url(&args.url, i)))
        .collect::<Result<_>>()?;
    let play_url = args.play_url.clone().unwrap_or_else(|| args.url.clone());
    let play_targets: Vec<Target> = if m > 0 {
        (0..n)
            .map(|i| Target::parse(&indexed_url(&play_url, i)))
            .collect::<Result<_>>()?
    } else {
        Vec::new()
    };
    let clip = Clip::load(args.clip.as_deref().context("--publish needs --clip FILE")?)?;
    let bytes_per_ms = clip.bytes_per_ms;
    let shared = Arc::new(Shared {
        clip,
        send_interval: Duration::from_millis(args.send_interval_ms),
    });
    let targets = Arc::new(targets);
    let play_targets = Arc::new(play_targets);
    let pubs: Arc<Vec<PublisherStats>> = Arc::new((0..n).map(|_| PublisherStats::default()).collect());
    let players: Arc<Vec<PlayerStats>> = Arc::new((0..n * m).map(|_| PlayerStats::default()).collect());
    let failures: Failures = Arc::default();
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);

    let baseline = args.server_pid.and_then(procfs::sample_tree);
    if let (Some(pid), None) = (args.server_pid, baseline) {
        bail!("no process with PID {pid}");
    }

    let t0 = tokio::time::Instant::now();
    let ramp = Duration::from_secs_f64(args.ramp);
    {
        let (pubs, players, failures) = (pubs.clone(), players.clone(), failures.clone());
        tokio::spawn(async move {
            for i in 0..n {
                tokio::time::sleep_until(t0 + ramp.mul_f64(i as f64 / n as f64)).await;
                let (pubs2, failures2, targets, shared) =
                    (pubs.clone(), failures.clone(), targets.clone(), shared.clone());
                tokio::spawn(async move {
                    let stats = &pubs2[i];
                    let deadline = tokio::time::Instant::now() + connect_timeout;
                    match crate::publisher::run(&targets[i], &shared, stats, deadline).await {
                        Ok(()) => {}
                        Err(End::Refused(why)) => {
                            stats.set_state(REFUSED);
                            record(&failures2, "refused", why);
                        }
                        Err(End::Failed(e)) if stats.state() == CONNECTED => {
                            stats.set_state(DROPPED);
                            record(&failures2, "dropped", e);
                        }
                        Err(End::Failed(e)) => {
                            stats.set_state(FAILED);
                            record(&failures2, "failed", e);
                        }
                    }
                });
                if m > 0 {
                    let (pubs, players, failures, targets) =
                        (pubs.clone(), players.clone(), failures.clone(), play_targets.clone());
                    tokio::spawn(start_players(i, m, pubs, players, failures, targets, connect_timeout));
                }
            }
        });
    }

    let window_start = t0 + ramp + Duration::from_secs_f64(args.warmup);
    loop {
        let now = tokio::time::Instant::now();
        if now >= window_start {
            break;
        }
        tokio::time::sleep_until((now + Duration::from_secs(5)).min(window_start)).await;
        let publishing = pubs.iter().filter(|p| p.state() == CONNECTED).count();
        let playing = players.iter().filter(|p| p.state() == CONNECTED).count();
        eprintln!(
            "ferrocast-bench: t={:>5.1}s publishing {publishing}/{n}, playing {playing}/{}",
            t0.elapsed().as_secs_f64(),
            n * m
        );
    }

    let measured = crate::window::Window::open(args.server_pid);
    let a_queued = procfs::queued_to(server_addr);
    let a: Vec<(Snapshot, u16)> = pubs.iter().map(|p| (p.snapshot(), p.local_port())).collect();
    let a_play: Vec<Snapshot> = players.iter().map(PlayerStats::snapshot).collect();

    tokio::time::sleep(Duration::from_secs_f64(args.measure)).await;

    let b_play: Vec<Snapshot> = players.iter().map(PlayerStats::snapshot).collect();
    let b: Vec<(Snapshot, u16)> = pubs.iter().map(|p| (p.snapshot(), p.local_port())).collect();
    let b_queued = procfs::queued_to(server_addr);
    let figures = measured.close();
    let window = figures.secs;
    let window_ms = window * 1000.0;

    let count = |s: u8| b.iter().filter(|(x, _)| x.state == s).count();
    let (connected, refused, failed, dropped) = (count(CONNECTED), count(REFUSED), count(FAILED), count(DROPPED));
    let pending = n - connected - refused - failed - dropped;
    let mut accept: Vec<f64> = pubs.iter().filter_map(PublisherStats::accept_ms).collect();
    accept.sort_by(f64::total_cmp);
    let bytes_in: u64 = a.iter().zip(&b).map(|((x, _), (y, _))| y.bytes - x.bytes).sum();
    let mbps_in = bytes_in as f64 * 8.0 / window / 1e6;

    // Per stream: did the server read it in real time, did the client send it in real time,
    // did its players keep up.
    let queued_ms = |q: &HashMap<u16, u64>, port: u16| q.get(&port).copied().unwrap_or(0) as f64 / bytes_per_ms;
    let mut ingest_kept = 0;
    let mut client_behind = 0;
    let mut streams_kept = 0;
    let mut lag_end: Vec<f64> = Vec::new();
    for i in 0..n {
        let ((sa, port), (sb, _)) = (a[i], b[i]);
        let sent_up = keeps_up(&sa, &sb, window_ms);
        let both = sa.state == CONNECTED && sb.state == CONNECTED;
        if both && !sent_up {
            client_behind += 1;
        }
        let (qa, qb) = (queued_ms(&a_queued, port), queued_ms(&b_queued, port));
        if both {
            lag_end.push(qb);
        }
        let read_up = both
            && match (sa.media_ts, sb.media_ts) {
                (Some(x), Some(y)) => f64::from(y.wrapping_sub(x) as i32) - (qb - qa) >= KEEP_UP_RATIO * window_ms,
                _ => false,
            };
        if read_up {
            ingest_kept += 1;
        }
        let players_up = (i * m..(i + 1) * m).all(|j| keeps_up(&a_play[j], &b_play[j], window_ms));
        if read_up && players_up {
            streams_kept += 1;
        }
    }
    lag_end.sort_by(f64::total_cmp);
    let players_connected = b_play.iter().filter(|s| s.state == CONNECTED).count();
    let players_failed = b_play.iter().filter(|s| s.state == crate::stats::FAILED).count();
    let players_up = a_play
        .iter()
        .zip(&b_play)
        .filter(|(x, y)| keeps_up(x, y, window_ms))
        .count();
    let mut ttfk: Vec<f64> = players.iter().filter_map(PlayerStats::first_keyframe_ms).collect();
    ttfk.sort_by(f64::total_cmp);

    let failures = failures.lock().expect("failures lock").clone();

    let fmt_ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    let mut text = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        text,
        "ferrocast-bench publish {} ({}): {n} publishers x {m} players, clip {:.0} kbps, send interval {} ms, ramp {:.0} s, warmup {:.0} s, window {window:.1} s",
        base.url,
        base.protocol.name(),
        bytes_per_ms * 8.0,
        args.send_interval_ms,
        args.ramp,
        args.warmup
    );
    let _ = writeln!(
        text,
        "  publishers      publishing {connected}, refused {refused}, failed {failed}, dropped {dropped}, still connecting {pending}"
    );
    let _ = writeln!(
        text,
        "  accept          p50 {}, p99 {} (connect to publish start, {} publishers)",
        fmt_ms(percentile(&accept, 50.0)),
        fmt_ms(percentile(&accept, 99.0)),
        accept.len()
    );
    let _ = writeln!(
        text,
        "  ingest          {mbps_in:.1} Mbps sent; read in real time {ingest_kept}/{n}; unread at the end p50 {}, max {}; client behind {client_behind}",
        fmt_ms(percentile(&lag_end, 50.0)),
        fmt_ms(lag_end.last().copied())
    );
    if m > 0 {
        let _ = writeln!(
            text,
            "  players         connected {players_connected}/{}, failed {players_failed}, keeping up {players_up}, first keyframe p50 {}, p99 {}",
            n * m,
            fmt_ms(percentile(&ttfk, 50.0)),
            fmt_ms(percentile(&ttfk, 99.0))
        );
    }
    let _ = writeln!(
        text,
        "  streams         {streams_kept}/{n} kept in real time ({:.1}%)",
        100.0 * streams_kept as f64 / n as f64
    );
    text.push_str(&figures.text(baseline, "stream", connected, args.threads));
    for (reason, count) in &failures {
        let _ = writeln!(text, "  x{count}: {reason}");
    }

    if args.json {
        eprint!("{text}");
        let report = json!({
            "mode": "publish",
            "url": base.url,
            "protocol": base.protocol.name(),
            "publishers": n,
            "players_per_stream": m,
            "clip_kbps": bytes_per_ms * 8.0,
            "send_interval_ms": args.send_interval_ms,
            "ramp_secs": args.ramp,
            "warmup_secs": args.warmup,
            "measure_secs": args.measure,
            "window_secs": window,
            "connected": connected,
            "refused": refused,
            "failed": failed,
            "dropped": dropped,
            "pending": pending,
            "accept_ms": { "p50": percentile(&accept, 50.0), "p99": percentile(&accept, 99.0), "count": accept.len() },
            "mbps_in": mbps_in,
            "ingest_kept": ingest_kept,
            "client_behind": client_behind,
            "unread_ms_end": { "p50": percentile(&lag_end, 50.0), "max": lag_end.last() },
            "streams_kept": streams_kept,
            "streams_kept_fraction": streams_kept as f64 / n as f64,
            "players": {
                "total": n * m,
                "connected": players_connected,
                "failed": players_failed,
                "keep_up": players_up,
                "first_keyframe_ms": { "p50": percentile(&ttfk, 50.0), "p99": percentile(&ttfk, 99.0) },
            },
            "failures": failures,
        });
        let mut report = report;
        for (k, v) in figures.json(baseline, "stream", connected, args.threads) {
            report[k] = v;
        }
        println!("{report}");
    } else {
        print!("{text}");
    }
    Ok(())
}

/// Starts the `m` players of stream `i` a second after its publisher was accepted (so the
/// server has its sequence headers and a keyframe), or never if it was not.
async fn start_players(
    i: usize,
    m: usize,
    pubs: Arc<Vec<PublisherStats>>,
    players: Arc<Vec<PlayerStats>>,
    failures: Failures,
    targets: Arc<Vec<Target>>,
    connect_timeout: Duration,
) {
    let give_up = tokio::time::Instant::now() + connect_timeout + Duration::from_secs(1);
    loop {
        match pubs[i].state() {
            CONNECTED => break,
            crate::stats::CONNECTING if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            _ => return,
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for j in i * m..(i + 1) * m {
        let (players, failures, targets) = (players.clone(), failures.clone(), targets.clone());
        tokio::spawn(async move {
            let stats = &players[j];
            let deadline = tokio::time::Instant::now() + connect_timeout;
            if let Err(e) = crate::player::run(&targets[i], stats, j, deadline).await {
                stats.set_state(crate::stats::FAILED);
                record(&failures, "player", e);
            }
        });
    }
}
