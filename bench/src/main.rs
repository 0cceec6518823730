//! `ferrocast-bench`: opens N concurrent players (RTMP, HTTP-FLV, WS-FLV or HLS / LL-HLS, picked
//! by the URL) against any live-streaming server on this machine, ramps them up, then reports over
//! a measured window: players connected and failed, aggregate Mbps, the share of players
//! keeping up with real time, time to first keyframe, and the server's CPU and memory.
//! With `--publish` it opens N publishers of their own streams instead (see [`ingest`]).
//!
//! It shares the machine with the server it measures, so it is frugal: one runtime thread by
//! default, tag headers parsed in place and payloads skipped. See docs/benchmarks.md.

mod clip;
mod flv;
mod hls;
mod http;
mod ingest;
mod player;
mod procfs;
mod publisher;
mod rtmp;
mod stats;
mod target;
mod window;
mod ws;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::stats::{keep_up_fraction, percentile, video_fps, PlayerStats, Snapshot, CONNECTED, CONNECTING, FAILED};
use crate::target::Target;

const USAGE: &str = "\
usage: ferrocast-bench --url URL --players N [options]
       ferrocast-bench --publish --url URL --publishers N --clip FILE [options]

  --url URL              rtmp://HOST[:PORT]/APP/STREAM, http://HOST[:PORT]/APP/STREAM.flv (HTTP-FLV)
                         ws://HOST[:PORT]/APP/STREAM.flv (WS-FLV), or http://.../x.m3u8 (HLS: the
                         players follow the live playlist and fetch every segment in real time);
                         HOST must be loopback
  --ll-hls               with an .m3u8 URL: LL-HLS players (blocking reload, every part fetched)
  --players N            concurrent players
  --ramp-secs R          start the players evenly over R seconds (default 10)
  --warmup-secs W        wait W seconds after the ramp before measuring (default 5)
  --measure-secs M       length of the measured window (default 15)
  --server-pid PID       report CPU and RSS of this process and its descendants
  --connect-timeout-secs T  a player must be accepted within T seconds (default 10)
  --threads T            runtime threads: 1 = current-thread runtime (default), 2+ = workers
  --json                 print the report as one JSON object on stdout (human text to stderr)
  -h, --help             this help

publish mode (--publish): N publishers, each on its own stream (the URL's stream name plus
0..N-1: rtmp://127.0.0.1/live/pub gives pub0, pub1, ...; http://.../live/pub.flv pushes
FLV by HTTP POST to pub0.flv, ...; ws://.../live/pub.flv by WebSocket), replaying the FLV
clip in real time; --ramp-secs, --warmup-secs, --measure-secs as above.
  --publishers N         concurrent publishers
  --clip FILE            the FLV clip each publisher loops (read once, shared)
  --players-per-stream M players of each stream, started 1 s after its publish (default 0)
  --play-url URL         what players play (default: --url; the index is appended the same way)
  --send-interval-ms I   write the messages due within I ms together (default 0: each message
                         when its timestamp is due, as an encoder does)
";

#[derive(Debug, Clone)]
struct Args {
    url: String,
    players: usize,
    ramp: f64,
    warmup: f64,
    measure: f64,
    server_pid: Option<u32>,
    connect_timeout: f64,
    threads: usize,
    json: bool,
    ll_hls: bool,
    publish: bool,
    publishers: usize,
    clip: Option<String>,
    players_per_stream: usize,
    play_url: Option<String>,
    send_interval_ms: u64,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args> {
    let mut a = Args {
        url: String::new(),
        players: 0,
        ramp: 10.0,
        warmup: 5.0,
        measure: 15.0,
        server_pid: None,
        connect_timeout: 10.0,
        threads: 1,
        json: false,
        ll_hls: false,
        publish: false,
        publishers: 0,
        clip: None,
        players_per_stream: 0,
        play_url: None,
        send_interval_ms: 0,
    };
    fn secs(v: String, name: &str) -> Result<f64> {
        let s: f64 = v.parse().with_context(|| format!("{name} takes a number of seconds"))?;
        if !(0.0..=86_400.0).contains(&s) {
            bail!("{name} out of range");
        }
        Ok(s)
    }
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value()?,
            "--players" => a.players = value()?.parse().context("--players takes a count")?,
            "--ramp-secs" => a.ramp = secs(value()?, "--ramp-secs")?,
            "--warmup-secs" => a.warmup = secs(value()?, "--warmup-secs")?,
            "--measure-secs" => a.measure = secs(value()?, "--measure-secs")?,
            "--server-pid" => a.server_pid = Some(value()?.parse().context("--server-pid takes a PID")?),
            "--connect-timeout-secs" => a.connect_timeout = secs(value()?, "--connect-timeout-secs")?,
            "--threads" => a.threads = value()?.parse().context("--threads takes a count")?,
            "--json" => a.json = true,
            "--ll-hls" => a.ll_hls = true,
            "--publish" => a.publish = true,
            "--publishers" => a.publishers = value()?.parse().context("--publishers takes a count")?,
            "--clip" => a.clip = Some(value()?),
            "--players-per-stream" => {
                a.players_per_stream = value()?.parse().context("--players-per-stream takes a count")?
            }
            "--play-url" => a.play_url = Some(value()?),
            "--send-interval-ms" => {
                a.send_interval_ms = value()?.parse().context("--send-interval-ms takes milliseconds")?;
                if a.send_interval_ms > 10_000 {
                    bail!("--send-interval-ms out of range");
                }
            }
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n\n{USAGE}"),
        }
    }
    if a.publish {
        if a.url.is_empty() || a.publishers == 0 || a.clip.is_none() {
            bail!("--publish needs --url, --publishers and --clip\n\n{USAGE}");
        }
        if a.players != 0 || a.ll_hls {
            bail!("--publish takes --players-per-stream, not --players or --ll-hls");
        }
    } else if a.url.is_empty() || a.players == 0 {
        bail!("--url and --players are required\n\n{USAGE}");
    }
    if a.measure < 1.0 {
        bail!("--measure-secs must be at least 1");
    }
    if !(1..=64).contains(&a.threads) {
        bail!("--threads must be 1..=64");
    }
    Ok(a)
}

/// Raises the soft open-file limit to the hard limit; returns the new soft limit.
fn raise_nofile_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim = want;
            }
        }
        lim.rlim_cur as u64
    }
}

fn main() {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ferrocast-bench: {e:#}");
            std::process::exit(2);
        }
    };
    let target = match Target::parse(&args.url) {
        Ok(mut t) if args.ll_hls && t.protocol == target::Protocol::Hls => {
            t.protocol = target::Protocol::LlHls;
            t
        }
        Ok(_) if args.ll_hls => {
            eprintln!("ferrocast-bench: --ll-hls needs an http://.../x.m3u8 URL");
            std::process::exit(2);
        }
        Ok(t) => t,
        Err(e) => {
            eprintln!("ferrocast-bench: {e:#}");
            std::process::exit(2);
        }
    };
    if args.publish && matches!(target.protocol, target::Protocol::Hls | target::Protocol::LlHls) {
        eprintln!("ferrocast-bench: --publish needs an rtmp://, http://...flv or ws://...flv URL");
        std::process::exit(2);
    }
    let nofile = raise_nofile_limit();
    let sockets = args.players + args.publishers * (1 + args.players_per_stream);
    if nofile != 0 && (nofile as usize) < sockets + 64 {
        eprintln!("ferrocast-bench: warning: open-file limit {nofile} is below {sockets} connections");
    }

    // The tool stops by itself: a watchdog ends it if the runtime ever fails to.
    let budget = args.ramp + args.warmup + args.measure + args.connect_timeout + 30.0;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(budget));
        eprintln!("ferrocast-bench: watchdog: still running after {budget:.0} s, exiting");
        std::process::exit(3);
    });

    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()
    };
    let runtime = runtime.expect("tokio runtime");
    let result = if args.publish {
        runtime.block_on(ingest::run(args))
    } else {
        runtime.block_on(run(args, target))
    };
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ferrocast-bench: {e:#}");
            1
        }
    };
    // Players are still streaming; do not wait for them.
    std::process::exit(code);
}

async fn run(args: Args, target: Target) -> Result<()> {
    let n = args.players;
    let target = Arc::new(target);
    let players: Arc<Vec<PlayerStats>> = Arc::new((0..n).map(|_| PlayerStats::default()).collect());
    let failures: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let connect_timeout = Duration::from_secs_f64(args.connect_timeout);

    let baseline = args.server_pid.and_then(procfs::sample_tree);
    if let (Some(pid), None) = (args.server_pid, baseline) {
        bail!("no process with PID {pid}");
    }

    let t0 = tokio::time::Instant::now();
    let ramp = Duration::from_secs_f64(args.ramp);
    {
        let (players, failures, target) = (players.clone(), failures.clone(), target.clone());
        tokio::spawn(async move {
            for i in 0..n {
                tokio::time::sleep_until(t0 + ramp.mul_f64(i as f64 / n as f64)).await;
                let (players, failures, target) = (players.clone(), failures.clone(), target.clone());
                tokio::spawn(async move {
                    let stats = &players[i];
                    let deadline = tokio::time::Instant::now() + connect_timeout;
                    if let Err(e) = player::run(&target, stats, i, deadline).await {
                        stats.set_state(FAILED);
                        let mut reason = format!("{e:#}");
                        reason.truncate(120);
                        *failures.lock().expect("failures lock").entry(reason).or_default() += 1;
                    }
                });
            }
        });
    }

    // Progress on stderr until the window starts.
    let window_start = t0 + ramp + Duration::from_secs_f64(args.warmup);
    loop {
        let now = tokio::time::Instant::now();
        if now >= window_start {
            break;
        }
        tokio::time::sleep_until((now + Duration::from_secs(5)).min(window_start)).await;
        let (c, f) = count_states(&players);
        eprintln!(
            "ferrocast-bench: t={:>5.1}s connected {c}/{n}, failed {f}",
            t0.elapsed().as_secs_f64()
        );
    }

    let measured = window::Window::open(args.server_pid);
    let a: Vec<Snapshot> = players.iter().map(PlayerStats::snapshot).collect();

    tokio::time::sleep(Duration::from_secs_f64(args.measure)).await;

    let b: Vec<Snapshot> = players.iter().map(PlayerStats::snapshot).collect();
    let figures = measured.close();
    let window = figures.secs;

    let connected = b.iter().filter(|s| s.state == CONNECTED).count();
    let failed = b.iter().filter(|s| s.state == FAILED).count();
    let pending = b.iter().filter(|s| s.state == CONNECTING).count();
    // Standard HLS players load media a segment at a time, so over the window their media
    // advances in steps of a target duration (2 s with the usual settings): one step is
    // allowed for. Parts (LL-HLS) and FLV frames are fine-grained enough as they are.
    let granularity_ms = if target.protocol == target::Protocol::Hls {
        2000.0
    } else {
        0.0
    };
    let (keep_up, keep_up_fraction) = keep_up_fraction(&a, &b, window * 1000.0 - granularity_ms, n);
    let bytes: u64 = a.iter().zip(&b).map(|(x, y)| y.bytes - x.bytes).sum();
    let mbps = bytes as f64 * 8.0 / window / 1e6;
    let mut ttfk: Vec<f64> = players.iter().filter_map(PlayerStats::first_keyframe_ms).collect();
    ttfk.sort_by(f64::total_cmp);
    let p50 = percentile(&ttfk, 50.0);
    let p99 = percentile(&ttfk, 99.0);
    let fps = video_fps(&a, &b, window);
    let stalls: u64 = a.iter().zip(&b).map(|(x, y)| y.stalls - x.stalls).sum();
    let stalled_players = a.iter().zip(&b).filter(|(x, y)| y.stalls > x.stalls).count();
    let fps_p1 = percentile(&fps, 1.0);
    let fps_p50 = percentile(&fps, 50.0);
    let failures = failures.lock().expect("failures lock").clone();

    let mut text = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        text,
        "ferrocast-bench {} ({}): {n} players, ramp {:.0} s, warmup {:.0} s, window {window:.1} s",
        target.url,
        target.protocol.name(),
        args.ramp,
        args.warmup
    );
    let _ = writeln!(
        text,
        "  players         connected {connected}, failed {failed}, still connecting {pending}"
    );
    let _ = writeln!(
        text,
        "  keep-up         {keep_up_fraction:.4} ({keep_up}/{n} advanced >= 95% of the window)"
    );
    let _ = writeln!(
        text,
        "  throughput      {mbps:.1} Mbps aggregate, {:.2} Mbps per connected player",
        mbps / connected.max(1) as f64
    );
    let fmt_fps = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    let _ = writeln!(
        text,
        "  video fps       p50 {}, p1 {} per player (frames received over the window)",
        fmt_fps(fps_p50),
        fmt_fps(fps_p1)
    );
    if matches!(target.protocol, target::Protocol::Hls | target::Protocol::LlHls) {
        let _ = writeln!(
            text,
            "  stalls          {stalls} in the window, {stalled_players} players stalled (simulated playback buffer ran dry)"
        );
    }
    let fmt_ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
    let _ = writeln!(
        text,
        "  first keyframe  p50 {}, p99 {} ({} players)",
        fmt_ms(p50),
        fmt_ms(p99),
        ttfk.len()
    );
    text.push_str(&figures.text(baseline, "player", connected, args.threads));
    for (reason, count) in &failures {
        let _ = writeln!(text, "  failure x{count}: {reason}");
    }

    if args.json {
        eprint!("{text}");
        let report = json!({
            "url": target.url,
            "protocol": target.protocol.name(),
            "players": n,
            "ramp_secs": args.ramp,
            "warmup_secs": args.warmup,
            "measure_secs": args.measure,
            "window_secs": window,
            "connected": connected,
            "failed": failed,
            "pending": pending,
            "keep_up": keep_up,
            "keep_up_fraction": keep_up_fraction,
            "mbps": mbps,
            "first_keyframe_ms": { "p50": p50, "p99": p99, "count": ttfk.len() },
            "video_fps": { "p50": fps_p50, "p1": fps_p1 },
            "stalls": { "total": stalls, "players": stalled_players },
            "failures": failures,
        });
        let mut report = report;
        for (k, v) in figures.json(baseline, "player", connected, args.threads) {
            report[k] = v;
        }
        println!("{report}");
    } else {
        print!("{text}");
    }
    Ok(())
}

fn count_states(players: &[PlayerStats]) -> (usize, usize) {
    players.iter().fold((0, 0), |(c, f), p| match p.state() {
        CONNECTED => (c + 1, f),
        FAILED => (c, f + 1),
        _ => (c, f),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Args> {
        parse_args(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn argument_parsing() {
        let a = args(&[
            "--url",
            "rtmp://127.0.0.1/live/x",
            "--players",
            "100",
            "--ramp-secs",
            "2.5",
            "--server-pid",
            "42",
            "--json",
        ])
        .unwrap();
        assert_eq!(
            (a.players, a.ramp, a.warmup, a.measure, a.server_pid, a.json, a.threads),
            (100, 2.5, 5.0, 15.0, Some(42), true, 1)
        );
        let p = args(&[
            "--publish",
            "--url",
            "rtmp://127.0.0.1/live/pub",
            "--publishers",
            "2000",
            "--clip",
            "c.flv",
            "--players-per-stream",
            "2",
            "--send-interval-ms",
            "40",
        ])
        .unwrap();
        assert_eq!(
            (
                p.publish,
                p.publishers,
                p.clip.as_deref(),
                p.players_per_stream,
                p.send_interval_ms
            ),
            (true, 2000, Some("c.flv"), 2, 40)
        );
        for bad in [
            &["--players", "10"][..],
            &["--url", "rtmp://127.0.0.1/live/x"],
            &["--url", "rtmp://127.0.0.1/live/x", "--players", "ten"],
            &[
                "--url",
                "rtmp://127.0.0.1/live/x",
                "--players",
                "1",
                "--measure-secs",
                "0",
            ],
            &["--url", "rtmp://127.0.0.1/live/x", "--players", "1", "--bogus"],
            &["--url"],
            &["--publish", "--url", "rtmp://127.0.0.1/live/x", "--publishers", "5"],
            &["--publish", "--url", "rtmp://127.0.0.1/live/x", "--clip", "c.flv"],
            &[
                "--publish",
                "--url",
                "rtmp://127.0.0.1/live/x",
                "--publishers",
                "5",
                "--clip",
                "c.flv",
                "--players",
                "3",
            ],
        ] {
            assert!(args(bad).is_err(), "{bad:?}");
        }
    }
}
