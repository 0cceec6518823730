//! Transcoding (fission): a 1280x720 source with a 480p/360p ladder. ffprobe reads every
//! rendition (sizes, codecs), bitrates land near their targets, keyframes sit at the same
//! timestamps in the source and every rendition; the multivariant playlist lists them all
//! and hls.js in Chromium plays and switches between them; ffprobe reads the MPD; ffmpeg
//! ends with its source, comes back after it is killed, and never outlives a SIGKILLed
//! server; a rendition is never transcoded again.
//!
//! The 360p rung halves the 30 fps source's frame rate (`fps: 15`), so its keyframes must
//! survive the frame dropping.
//!
//! Encodes are kept light (ultrafast, short runs): the machine is shared.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferrocast_tests::env::require_node_package;
use ferrocast_tests::fixtures::ffprobe;
use ferrocast_tests::process::run_json;
use ferrocast_tests::{require_tool, workspace_root, Live, Publisher, StreamEnd, TestServer, TestServerBuilder};
use serde_json::Value;

const LADDER: &str = "transcode: [{rule: '*', renditions: [\
    {name: 480p, height: 480, video_kbps: 800, audio_kbps: 96, preset: ultrafast}, \
    {name: 360p, height: 360, video_kbps: 400, audio_kbps: 64, fps: 15, preset: ultrafast}]}]";

fn server() -> TestServerBuilder {
    TestServer::builder().grace_secs(2).app_yaml(LADDER)
}

/// The live source and its renditions, all live.
async fn ladder(prefix: &str) -> Live {
    // A source denser than every rung, as real ladders are.
    let live = Live::start_with(prefix, server(), |p| p.duration_secs(90).video_kbps(2000))
        .await
        .unwrap();
    for r in ["480p", "360p"] {
        live.server
            .wait_live(&format!("{}_{r}", live.name), Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("rendition {r} not live: {e:#}"));
    }
    live
}

/// Pids of the server's ffmpeg children (found by parent pid, whichever thread forked them).
fn ffmpeg_children(server_pid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else { continue };
        let comm = &stat[stat.find('(').unwrap_or(0) + 1..close];
        let mut fields = stat[close + 1..].split_whitespace();
        let (state, ppid) = (fields.next(), fields.next().and_then(|p| p.parse::<u32>().ok()));
        if comm == "ffmpeg" && ppid == Some(server_pid) && state != Some("Z") {
            pids.push(pid);
        }
    }
    pids
}

/// Whether `pid` is gone (or a zombie: dead, waiting to be reaped).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .is_some_and(|c| stat[c + 1..].trim_start().starts_with('Z')),
    }
}

async fn wait_for<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The one ffmpeg of the server.
async fn the_ffmpeg(server: &TestServer) -> u32 {
    let pid = server.server_pid().expect("server running");
    wait_for("one ffmpeg child", Duration::from_secs(20), || {
        let c = ffmpeg_children(pid);
        (c.len() == 1).then(|| c[0])
    })
    .await
}

/// Video frames of an FLV capture: (timestamp, keyframe, body bytes), sequence headers left out.
fn video_frames(tags: &[ferrocast_tests::flv::Tag]) -> Vec<(u32, bool, usize)> {
    tags.iter()
        .filter(|t| t.is_video_frame())
        .map(|t| (t.timestamp, t.is_keyframe(), t.data.len()))
        .collect()
}

#[tokio::test]
async fn renditions_have_the_ladder_sizes_codecs_bitrates_and_the_source_keyframes() {
    let live = ladder("tc_ladder").await;
    for (r, w, h) in [("480p", 854, 480), ("360p", 640, 360)] {
        let probe = ffprobe(&live.server.flv_url(&format!("{}_{r}", live.name)), &[], 20)
            .await
            .unwrap();
        let streams = probe["streams"].as_array().unwrap();
        let video: Vec<&Value> = streams.iter().filter(|s| s["codec_type"] == "video").collect();
        let audio: Vec<&Value> = streams.iter().filter(|s| s["codec_type"] == "audio").collect();
        assert_eq!(video.len(), 1, "{r}: {probe}");
        assert_eq!(audio.len(), 1, "{r}: {probe}");
        assert_eq!(video[0]["codec_name"], "h264", "{r}");
        assert_eq!(
            (video[0]["width"].as_u64(), video[0]["height"].as_u64()),
            (Some(w), Some(h)),
            "{r}"
        );
        assert_eq!(audio[0]["codec_name"], "aac", "{r}");
    }

    // Ten seconds of the source and both renditions, read at the same time.
    let names = [
        live.name.clone(),
        format!("{}_480p", live.name),
        format!("{}_360p", live.name),
    ];
    let mut players = Vec::new();
    for n in &names {
        players.push(live.server.http_player(n).await.unwrap());
    }
    let reads = futures_util::future::join_all(players.iter_mut().map(|p| p.read_for(Duration::from_secs(10)))).await;
    let frames: Vec<Vec<(u32, bool, usize)>> = reads.into_iter().map(|r| video_frames(&r.unwrap())).collect();

    // Bitrate from media time, past the first keyframe (the GOP cache replays the start).
    for (i, target) in [(1, 800_000.0), (2, 400_000.0)] {
        let f = &frames[i];
        let start = f.iter().position(|x| x.1).expect("a keyframe");
        let (first, last) = (f[start].0, f.last().unwrap().0);
        let bytes: usize = f[start..f.len() - 1].iter().map(|x| x.2).sum();
        let bps = bytes as f64 * 8.0 / (f64::from(last - first) / 1000.0);
        assert!(
            (bps - target).abs() <= target * 0.25,
            "{}: measured {bps:.0} bit/s for a target of {target}",
            names[i]
        );
    }

    // Keyframes at the same timestamps everywhere, over the span all three captures cover.
    let from = frames.iter().map(|f| f[0].0).max().unwrap();
    let to = frames.iter().map(|f| f.last().unwrap().0).min().unwrap();
    let keys: Vec<BTreeSet<u32>> = frames
        .iter()
        .map(|f| {
            f.iter()
                .filter(|x| x.1 && x.0 >= from && x.0 <= to)
                .map(|x| x.0)
                .collect()
        })
        .collect();
    assert!(keys[0].len() >= 5, "ten seconds of a 1 s GOP: {keys:?}");
    assert_eq!(keys[1], keys[0], "480p keyframes are the source's");
    assert_eq!(keys[2], keys[0], "360p keyframes (at 15 fps) are the source's");

    // The 15 fps rung has half the frames of the others over the same span.
    let count = |f: &Vec<(u32, bool, usize)>| f.iter().filter(|x| x.0 >= from && x.0 <= to).count() as f64;
    let (full, half) = (count(&frames[1]), count(&frames[2]));
    assert!(
        (half / full - 0.5).abs() < 0.05,
        "360p has {half} frames where 480p has {full}"
    );
}

/// The multivariant playlist at `url` (its text and parse), asserting it lists the source and
/// both renditions, largest first.
async fn ladder_playlist(url: &str, secs: u64) -> (String, m3u8_rs::MasterPlaylist) {
    let (status, text) = ferrocast_tests::http::get_text(url, Duration::from_secs(secs))
        .await
        .unwrap();
    assert_eq!(status, 200, "{text}");
    let m = m3u8_rs::parse_master_playlist_res(text.as_bytes()).expect("multivariant playlist parses");
    let sizes: Vec<(u64, u64)> = m
        .variants
        .iter()
        .map(|v| v.resolution.map(|r| (r.width, r.height)).unwrap_or_default())
        .collect();
    assert_eq!(sizes, [(1280, 720), (854, 480), (640, 360)], "{text}");
    (text, m)
}

/// A variant's URI of the multivariant playlist of `name`, resolved as players do.
fn variant_url(server: &TestServer, name: &str, uri: &str) -> String {
    match uri.strip_prefix("../") {
        Some(rest) => format!("http://127.0.0.1:{}/live/{rest}", server.http_port),
        None => format!("http://127.0.0.1:{}/live/{name}/{uri}", server.http_port),
    }
}

async fn wait_for_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The `<S t d>` entries of each video representation of an MPD (one timescale for all
/// asserted), in order.
fn video_timelines(mpd: &str) -> Vec<Vec<(u64, u64)>> {
    let attr = |s: &str, name: &str| -> Option<u64> {
        s.split(&format!(" {name}=\"")).nth(1)?.split('"').next()?.parse().ok()
    };
    let reps: Vec<&str> = mpd
        .split("<Representation id=\"")
        .skip(1)
        .filter(|r| r.starts_with("video-"))
        .collect();
    let scales: BTreeSet<Option<u64>> = reps.iter().map(|r| attr(r, "timescale")).collect();
    assert_eq!(scales.len(), 1, "one timescale: {mpd}");
    reps.iter()
        .map(|r| {
            r.lines()
                .filter(|l| l.trim_start().starts_with("<S "))
                .map(|l| (attr(l, "t").unwrap(), attr(l, "d").unwrap()))
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn the_multivariant_playlist_and_the_mpd_list_every_rendition_and_chromium_switches_between_them() {
    let live = ladder("tc_abr").await;
    let base = format!("http://127.0.0.1:{}/live/{}", live.server.http_port, live.name);
    // The first request starts the segmenters; the figures come from complete segments, so
    // read them once every variant holds a few.
    let (_, first) = ladder_playlist(&format!("{base}/index.m3u8"), 20).await;
    for v in &first.variants {
        let url = variant_url(&live.server, &live.name, &v.uri);
        wait_for_async("three segments in every variant", Duration::from_secs(40), || async {
            let (_, media) = ferrocast_tests::http::get_text(&url, Duration::from_secs(10))
                .await
                .ok()?;
            (media.matches("#EXTINF").count() >= 3).then_some(())
        })
        .await;
    }
    let (text, m) = ladder_playlist(&format!("{base}/index.m3u8"), 20).await;
    // Each rendition's figures near its video + audio target, and the ladder in order.
    for (v, target) in m.variants.iter().zip([None, Some(896_000.0), Some(464_000.0)]) {
        let average = v.average_bandwidth.unwrap_or(0) as f64;
        if let Some(t) = target {
            assert!(
                (average - t).abs() <= t * 0.5,
                "AVERAGE-BANDWIDTH {average} for {t}: {text}"
            );
            let peak = v.bandwidth as f64;
            assert!((peak - t).abs() <= t * 0.5, "BANDWIDTH {peak} for {t}: {text}");
        }
    }
    for w in m.variants.windows(2) {
        assert!(
            w[0].bandwidth > w[1].bandwidth,
            "BANDWIDTH source > 480p > 360p: {text}"
        );
        assert!(
            w[0].average_bandwidth > w[1].average_bandwidth,
            "AVERAGE-BANDWIDTH source > 480p > 360p: {text}"
        );
    }
    for v in &m.variants {
        assert!(
            v.bandwidth > 0 && v.average_bandwidth.is_some_and(|a| a > 0 && a <= v.bandwidth),
            "{text}"
        );
    }
    // The 15 fps rung announces its own rate.
    for (v, fps) in m.variants.iter().zip([30.0, 30.0, 15.0]) {
        assert!(v.frame_rate.is_some_and(|f| (f - fps).abs() < 0.5), "{fps}: {text}");
    }
    for v in &m.variants {
        let codecs = v.codecs.as_deref().unwrap_or("");
        assert!(codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"), "{text}");
        assert!(v.audio.is_none(), "each variant carries its own audio (muxed): {text}");
        assert!(
            v.uri.contains("hs="),
            "the session token carries to every variant: {text}"
        );
    }
    assert!(
        m.variants[1]
            .uri
            .starts_with(&format!("../{}_480p/muxed.m3u8?", live.name)),
        "{text}"
    );
    assert!(m.alternatives.is_empty(), "no separate audio renditions: {text}");
    // The rendition URIs, resolved against the playlist's URL as players do, answer.
    let rendition_playlist = format!(
        "http://127.0.0.1:{}/live/{}",
        live.server.http_port,
        m.variants[2]
            .uri
            .strip_prefix("../")
            .expect("relative to the source's directory")
    );
    let (status, media) = ferrocast_tests::http::get_text(&rendition_playlist, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(status, 200, "{rendition_playlist}: {media}");

    // ffprobe reads the MPD: one video representation per variant, each its size.
    let probe = ffprobe(&format!("{base}/index.mpd"), &[], 40).await.unwrap();
    let mut video: Vec<(u64, u64)> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["codec_type"] == "video")
        .map(|s| (s["width"].as_u64().unwrap(), s["height"].as_u64().unwrap()))
        .collect();
    video.sort();
    assert_eq!(video, [(640, 360), (854, 480), (1280, 720)], "{probe}");
    let (_, mpd) = ferrocast_tests::http::get_text(&format!("{base}/index.mpd"), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(mpd.matches("<AdaptationSet contentType=\"video\"").count(), 1, "{mpd}");
    assert_eq!(mpd.matches("<Representation id=\"video-").count(), 3, "{mpd}");
    // Segment boundaries line up: over the span every representation covers, the same
    // segment start times and durations.
    let timelines = video_timelines(&mpd);
    assert_eq!(timelines.len(), 3, "{mpd}");
    let from = timelines.iter().map(|t| t[0].0).max().unwrap();
    let to = timelines.iter().map(|t| t.last().unwrap().0).min().unwrap();
    let spans: Vec<Vec<(u64, u64)>> = timelines
        .iter()
        .map(|t| t.iter().copied().filter(|s| s.0 >= from && s.0 <= to).collect())
        .collect();
    assert!(spans[0].len() >= 2, "a few common segments: {mpd}");
    assert_eq!(spans[1], spans[0], "480p segments are the source's: {mpd}");
    assert_eq!(spans[2], spans[0], "360p segments are the source's: {mpd}");

    // hls.js plays the ladder and shows every level when asked to switch.
    require_tool("node");
    require_tool("chromium");
    require_node_package("playwright-core");
    require_node_package("hls.js");
    let script = workspace_root().join("tests/browser/play.mjs");
    let args: Vec<String> = [
        script.display().to_string().as_str(),
        "--player",
        "hls",
        "--url",
        &format!("{base}/index.m3u8"),
        "--timeout-ms",
        "30000",
        "--min-time",
        "1.5",
        "--cycle-levels",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (r, _) = run_json("node", &args, 150).await;
    let pretty = serde_json::to_string_pretty(&r).unwrap();
    assert_eq!(r["ok"], true, "Chromium did not play the ladder: {pretty}");
    assert_eq!(r["levels"].as_array().map(Vec::len), Some(3), "{pretty}");
    let switches = r["switches"].as_array().expect("levels cycled");
    assert_eq!(switches.len(), 3, "{pretty}");
    for s in switches {
        assert_eq!(s["shown"], true, "level not shown after switching to it: {pretty}");
    }
    assert!(r["errors"].as_array().is_some_and(Vec::is_empty), "{pretty}");
}

#[tokio::test]
async fn ffmpeg_exits_when_the_source_ends_and_the_renditions_end() {
    let mut live = ladder("tc_end").await;
    let ffmpeg = the_ffmpeg(&live.server).await;
    let mut player = live.server.http_player(&format!("{}_480p", live.name)).await.unwrap();
    player
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();
    // While it runs: each rung's frame rate (the 360p rung is capped at 15), encoding at
    // about real time, and the CPU it takes.
    let stream = format!("stream=\"{}\"", live.name);
    let rung = |r: &'static str| [stream.clone(), format!("rendition=\"{r}\"")];
    let in_range = |m: &str, name: &str, labels: &[String], lo: f64, hi: f64| {
        metric(m, name, labels).is_some_and(|v| (lo..=hi).contains(&v))
    };
    wait_for_async("the transcode's metrics in range", Duration::from_secs(30), || async {
        let (_, m) = ferrocast_tests::http::get_text(&live.server.admin_url("/metrics"), Duration::from_secs(5))
            .await
            .ok()?;
        let ok = in_range(&m, "ferrocast_transcode_fps", &rung("480p"), 24.0, 36.0)
            && in_range(&m, "ferrocast_transcode_fps", &rung("360p"), 12.0, 18.0)
            && in_range(&m, "ferrocast_transcode_speed_ratio", &rung("480p"), 0.8, 1.2)
            && in_range(&m, "ferrocast_transcode_speed_ratio", &rung("360p"), 0.8, 1.2)
            && in_range(
                &m,
                "ferrocast_transcode_ffmpeg_speed_ratio",
                std::slice::from_ref(&stream),
                0.8,
                1.2,
            )
            && in_range(
                &m,
                "ferrocast_transcode_cpu_seconds_total",
                std::slice::from_ref(&stream),
                1e-6,
                f64::MAX,
            );
        ok.then_some(())
    })
    .await;
    live.publisher.kill().await;
    // The source ends after the publisher grace (2 s); ffmpeg gets its end of input.
    wait_for("ffmpeg to exit", Duration::from_secs(20), || {
        is_dead(ffmpeg).then_some(())
    })
    .await;
    let (end, _) = player.wait_end(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        end,
        StreamEnd::HttpComplete,
        "the rendition's player sees its stream end"
    );
    let server_pid = live.server.server_pid().unwrap();
    assert!(ffmpeg_children(server_pid).is_empty(), "no ffmpeg left");
    // The transcode's series go with it.
    wait_for_async("the transcode's series removed", Duration::from_secs(10), || async {
        let (_, m) = ferrocast_tests::http::get_text(&live.server.admin_url("/metrics"), Duration::from_secs(5))
            .await
            .ok()?;
        let left: Vec<&str> = m
            .lines()
            .filter(|l| l.starts_with("ferrocast_transcode_") && l.contains(&stream))
            .collect();
        left.is_empty().then_some(())
    })
    .await;
}

/// The value of the series of `name` whose labels include every `k="v"` of `labels`.
fn metric(text: &str, name: &str, labels: &[String]) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(name)?.strip_prefix('{')?;
        let (set, value) = rest.split_once("} ")?;
        let pairs: Vec<&str> = set.split(',').collect();
        labels
            .iter()
            .all(|want| pairs.contains(&want.as_str()))
            .then(|| value.trim().parse().ok())?
    })
}

#[tokio::test]
async fn a_killed_ffmpeg_is_restarted_and_the_renditions_resume() {
    let live = ladder("tc_restart").await;
    let first = the_ffmpeg(&live.server).await;
    let mut player = live.server.http_player(&format!("{}_360p", live.name)).await.unwrap();
    let before = player
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status();
    let second = wait_for("a new ffmpeg", Duration::from_secs(30), || {
        let c = ffmpeg_children(live.server.server_pid()?);
        c.into_iter().find(|p| *p != first)
    })
    .await;
    assert_ne!(second, first);
    // The same player carries on: frames from the new ffmpeg, later than the old ones, from a
    // keyframe on.
    let last = before
        .iter()
        .filter(|t| t.is_video_frame())
        .map(|t| t.timestamp)
        .max()
        .unwrap();
    let after = player
        .read_until(Duration::from_secs(30), |t| {
            t.is_video_frame() && t.timestamp > last + 3000
        })
        .await
        .unwrap();
    let frames: Vec<&ferrocast_tests::flv::Tag> = after.iter().filter(|t| t.is_video_frame()).collect();
    assert!(!frames.is_empty());
    let mut prev = last;
    for t in &frames {
        assert!(t.timestamp >= prev, "timestamps never go back across the restart");
        prev = t.timestamp;
    }
    let metrics = ferrocast_tests::http::get_text(&live.server.admin_url("/metrics"), Duration::from_secs(5))
        .await
        .unwrap()
        .1;
    assert!(
        metrics.contains("ferrocast_transcode_restarts_total{app=\"live\"} 1"),
        "the restart is counted:\n{metrics}"
    );
}

#[tokio::test]
async fn a_sigkilled_server_leaves_no_ffmpeg_behind() {
    let live = ladder("tc_crash").await;
    let ffmpeg = the_ffmpeg(&live.server).await;
    let server_pid = live.server.server_pid().unwrap();
    // The server alone (ffmpeg has its own process group, so only the kernel can take it).
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &server_pid.to_string()])
        .status();
    wait_for("ffmpeg to die with the server", Duration::from_secs(10), || {
        is_dead(ffmpeg).then_some(())
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_ffmpeg_before_the_server_exits() {
    let mut live = ladder("tc_term").await;
    let ffmpeg = the_ffmpeg(&live.server).await;
    live.server.sigterm();
    let status = live.server.wait_exit(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "clean exit: {status:?}");
    assert!(is_dead(ffmpeg), "ffmpeg was stopped with the server");
    assert!(
        live.server.logs().contains("transcode stopped"),
        "the transcode ended in order, not by the kernel:\n{}",
        live.server.logs()
    );
}

#[tokio::test]
async fn a_rendition_matching_the_rule_is_not_transcoded_again() {
    let live = ladder("tc_loop").await;
    the_ffmpeg(&live.server).await;
    // Give the watcher several rounds to (wrongly) pick the renditions up.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = live.server.server_pid().unwrap();
    assert_eq!(ffmpeg_children(pid).len(), 1, "one ffmpeg: the source's");
    let metrics = ferrocast_tests::http::get_text(&live.server.admin_url("/metrics"), Duration::from_secs(5))
        .await
        .unwrap()
        .1;
    assert!(
        metrics.contains("ferrocast_transcodes_running{app=\"live\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("stream=\"{}_480p\"", live.name)), "{metrics}");
    assert!(!metrics.contains("_480p_"), "no rendition of a rendition: {metrics}");
    assert!(!metrics.contains("_360p_"), "no rendition of a rendition: {metrics}");
}

#[tokio::test]
async fn sources_beyond_the_cap_are_refused_and_counted_and_start_once_a_place_frees_up() {
    let mut live = Live::start_with("tc_cap", server().yaml("transcoding: {max_processes: 1}"), |p| {
        p.duration_secs(60)
    })
    .await
    .unwrap();
    the_ffmpeg(&live.server).await;
    let second = format!("{}_b", live.name);
    let _publisher = Publisher::builder(&live.server.rtmp_url(&second))
        .duration_secs(30)
        .start()
        .unwrap();
    live.server.wait_live(&second, Duration::from_secs(20)).await.unwrap();
    let metrics = wait_for_metric(&live.server, "ferrocast_transcodes_refused_total{app=\"live\"} 1").await;
    assert!(
        metrics.contains("ferrocast_transcodes_running{app=\"live\"} 1"),
        "{metrics}"
    );
    assert_eq!(ffmpeg_children(live.server.server_pid().unwrap()).len(), 1);
    // The first source ends: its place goes to the refused one, still published.
    live.publisher.kill().await;
    for r in ["480p", "360p"] {
        live.server
            .wait_live(&format!("{second}_{r}"), Duration::from_secs(40))
            .await
            .unwrap_or_else(|e| panic!("{second}_{r} not live once a place freed up: {e:#}"));
    }
    assert_eq!(ffmpeg_children(live.server.server_pid().unwrap()).len(), 1);
}

#[tokio::test]
async fn a_portrait_source_gets_portrait_renditions() {
    let live = Live::start_with(
        "tc_portrait",
        TestServer::builder().app_yaml(
            "transcode: [{rule: '*', renditions: [\
             {name: 480p, height: 480, video_kbps: 600, audio_kbps: 64, preset: ultrafast}, \
             {name: box, width: 640, height: 360, video_kbps: 300, audio_kbps: 64, preset: ultrafast}]}]",
        ),
        |p| p.duration_secs(40).size(720, 1280),
    )
    .await
    .unwrap();
    // The 480p rung's short side is 480; the 640x360 box is turned upright.
    for (r, w, h) in [("480p", 480, 854), ("box", 360, 640)] {
        let stream = format!("{}_{r}", live.name);
        live.server
            .wait_live(&stream, Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{stream} not live: {e:#}"));
        let probe = ffprobe(&live.server.flv_url(&stream), &[], 20).await.unwrap();
        let video = probe["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["codec_type"] == "video")
            .cloned()
            .unwrap_or_else(|| panic!("{r}: no video: {probe}"));
        assert_eq!(
            (video["width"].as_u64(), video["height"].as_u64()),
            (Some(w), Some(h)),
            "{r}: {video}"
        );
    }
}

async fn wait_for_metric(server: &TestServer, line: &str) -> String {
    let start = Instant::now();
    loop {
        let (_, metrics) = ferrocast_tests::http::get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
            .await
            .unwrap();
        if metrics.contains(line) {
            return metrics;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no `{line}` in\n{metrics}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `GET /api/v1{path}` with a bearer token: the envelope's `data`.
async fn api_get(server: &TestServer, path: &str, token: &str) -> Value {
    let (status, mut json) = server.api_json("GET", path, Some(token), None).await;
    assert_eq!(status, 200, "{json}");
    json["data"].take()
}

/// A server with an API user: the server, a bearer token, the open event stream, and the
/// users directory (kept for the server's life).
struct WithApi {
    server: TestServer,
    token: String,
    events: ferrocast_tests::http::HttpResponse,
    _users: ferrocast_tests::TempDir,
}

async fn with_api(builder: TestServerBuilder) -> WithApi {
    let users = ferrocast_tests::TempDir::new("tc-users").unwrap();
    std::fs::write(users.join("admin"), ferrocast_tests::argon2_phc("pw-for-tests")).unwrap();
    let server = builder
        .yaml(&format!("api:\n  users_dir: {:?}", users.path()))
        .start()
        .await
        .unwrap();
    let body = serde_json::json!({"username": "admin", "password": "pw-for-tests"}).to_string();
    let (status, login) = server.api_json("POST", "/login", None, Some(&body)).await;
    assert_eq!(status, 200, "{login}");
    let token = login["data"]["token"].as_str().expect("a token").to_string();
    let events_url = format!("http://127.0.0.1:{}/api/v1/events?token={token}", server.http_port);
    let events = ferrocast_tests::http::request("GET", &events_url, &[], None, Duration::from_secs(5))
        .await
        .unwrap();
    WithApi {
        server,
        token,
        events,
        _users: users,
    }
}

/// Reads the event stream until `done` holds for what was read, or `limit` passes.
async fn read_events(
    events: &mut ferrocast_tests::http::HttpResponse,
    limit: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + limit;
    while !done(&text) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), events.next_event()).await {
            Ok(ferrocast_tests::http::BodyEvent::Data(d)) => text.push_str(&String::from_utf8_lossy(&d)),
            Ok(_) => break,
            Err(_) => {}
        }
    }
    text
}

/// The `state`s of the `transcodeState` events in an event stream's text.
fn transcode_states(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("data: {\"event\":\"transcodeState\""))
        .filter_map(|l| l.split("\"state\":\"").nth(1)?.split('"').next())
        .collect()
}

#[tokio::test]
async fn the_api_lists_renditions_under_their_source_and_the_event_stream_follows_the_transcode() {
    let WithApi {
        server,
        token,
        mut events,
        _users,
    } = with_api(server()).await;

    let name = ferrocast_tests::unique_name("tc_api");
    let mut publisher = Publisher::builder(&server.rtmp_url(&name))
        .duration_secs(60)
        .start()
        .unwrap();
    server
        .wait_live(&format!("{name}_360p"), Duration::from_secs(30))
        .await
        .unwrap();
    server
        .wait_live(&format!("{name}_480p"), Duration::from_secs(30))
        .await
        .unwrap();

    let streams = api_get(&server, "/streams", &token).await;
    let list = streams["streams"].as_array().unwrap();
    assert_eq!(list.len(), 1, "renditions are not listed on their own: {streams}");
    let source = &list[0];
    assert_eq!(source["name"], name.as_str());
    assert_eq!(source["transcode"]["state"], "running", "{source}");
    assert!(source["transcode"]["pid"].as_u64().is_some(), "{source}");
    let renditions: Vec<(String, String, u64)> = source["renditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["rendition"].as_str().unwrap().to_string(),
                r["video"]["height"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        renditions,
        [
            (format!("{name}_480p"), "480p".to_string(), 480),
            (format!("{name}_360p"), "360p".to_string(), 360)
        ],
        "{source}"
    );
    let one = api_get(&server, &format!("/streams/live/{name}_480p"), &token).await;
    assert_eq!(
        (one["source"].as_str(), one["rendition"].as_str()),
        (Some(name.as_str()), Some("480p"))
    );

    publisher.kill().await;
    let text = read_events(&mut events, Duration::from_secs(20), |t| {
        t.contains("\"state\":\"stopped\"") && t.contains("event: doneTranscode")
    })
    .await;
    assert_eq!(transcode_states(&text), ["starting", "running", "stopped"], "{text}");
    // The webhook events of the transcode, in the lifecycle events' shape.
    let hooks: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .filter(|e| e.ends_with("Transcode"))
        .collect();
    assert_eq!(hooks, ["postTranscode", "doneTranscode"], "{text}");
    assert!(
        text.contains(&format!(
            "\"name\":\"{name}\",\"query\":\"\",\"protocol\":\"transcode\""
        )),
        "{text}"
    );
}

#[tokio::test]
async fn an_ffmpeg_that_fails_at_once_every_time_is_given_up_until_the_source_is_published_anew() {
    // An "ffmpeg" that fails like one without the encoder: at once, with a message.
    let dir = ferrocast_tests::TempDir::new("tc-fail").unwrap();
    let runs = dir.join("runs");
    let script = dir.join("ffmpeg-without-encoder");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho run >> {runs:?}\necho \"Unknown encoder 'libx264'\" >&2\nexit 1\n"),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let count_runs = || std::fs::read_to_string(&runs).map_or(0, |r| r.lines().count());
    let WithApi { server, mut events, .. } =
        with_api(server().yaml(&format!("transcoding: {{ffmpeg: {script:?}}}"))).await;
    let name = ferrocast_tests::unique_name("tc_fail");
    let mut publisher = Publisher::builder(&server.rtmp_url(&name))
        .duration_secs(60)
        .start()
        .unwrap();
    let text = read_events(&mut events, Duration::from_secs(40), |t| {
        t.contains("\"state\":\"stopped\"")
    })
    .await;
    let mut want = vec!["starting"];
    want.extend(["running", "restarting"].repeat(4));
    want.extend(["running", "failed", "stopped"]);
    assert_eq!(transcode_states(&text), want, "{text}");
    let failed = text.lines().find(|l| l.contains("\"state\":\"failed\"")).unwrap();
    assert!(
        failed.contains("Unknown encoder"),
        "ffmpeg's last lines come with it: {failed}"
    );
    assert_eq!(count_runs(), 5);
    assert!(server.logs().contains("transcode given up"), "{}", server.logs());
    wait_for_metric(&server, "ferrocast_transcode_failures_total{app=\"live\"} 1").await;
    // Several watcher rounds: given up for this publish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(count_runs(), 5, "no run after giving up");
    server.wait_live(&name, Duration::from_secs(5)).await.unwrap();

    // Published anew: tried again.
    publisher.kill().await;
    let _again = Publisher::builder(&server.rtmp_url(&name))
        .duration_secs(60)
        .start()
        .unwrap();
    wait_for("a run for the new publish", Duration::from_secs(30), || {
        (count_runs() > 5).then_some(())
    })
    .await;
}

#[tokio::test]
async fn in_a_fleet_another_pod_serves_the_origin_pods_renditions_in_its_multivariant_playlist() {
    let dir = ferrocast_tests::TempDir::new("tc-fleet").unwrap();
    let secret = dir.join("cluster-secret");
    std::fs::write(&secret, "transcode-fleet-secret\n").unwrap();
    let ports = ferrocast_tests::server::free_ports::<2>().unwrap();
    let peers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut pods = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let pod = server()
            .admin_port(*port)
            .yaml(&format!(
                "cluster:\n  peers: {peers:?}\n  secret_file: {secret:?}\n  pod_name: pod-{i}\n  lookup_timeout_ms: 500"
            ))
            .start()
            .await
            .unwrap();
        pods.push(pod);
    }
    let (a, b) = (&pods[0], &pods[1]);
    let name = ferrocast_tests::unique_name("tc_fleet");
    let _publisher = Publisher::builder(&a.rtmp_url(&name))
        .duration_secs(60)
        .start()
        .unwrap();
    a.wait_live(&format!("{name}_480p"), Duration::from_secs(30))
        .await
        .unwrap();
    a.wait_live(&format!("{name}_360p"), Duration::from_secs(30))
        .await
        .unwrap();

    let url = format!("http://127.0.0.1:{}/live/{name}/index.m3u8", b.http_port);
    let (_, m) = ladder_playlist(&url, 30).await;
    assert!(
        ffmpeg_children(b.server_pid().unwrap()).is_empty(),
        "pod B transcodes nothing: the origin pod does"
    );
    assert_eq!(ffmpeg_children(a.server_pid().unwrap()).len(), 1);
    let rendition = format!(
        "http://127.0.0.1:{}/live/{}",
        b.http_port,
        m.variants[1].uri.strip_prefix("../").unwrap()
    );
    let (status, media) = ferrocast_tests::http::get_text(&rendition, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(status, 200, "{rendition}: {media}");
    assert!(media.contains(".m4s"), "{media}");
}

#[tokio::test]
async fn a_source_smaller_than_every_rung_is_not_transcoded_nor_retried() {
    let live = Live::start_with(
        "tc_small",
        TestServer::builder()
            .app_yaml("transcode: [{rule: '*', renditions: [{name: 1080p, height: 1080, video_kbps: 4000}]}]"),
        |p| p.duration_secs(30),
    )
    .await
    .unwrap();
    // Several watcher rounds: the decision holds for this publish.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let logs = live.server.logs();
    assert_eq!(
        logs.matches("rendition skipped: larger than the source").count(),
        1,
        "{logs}"
    );
    assert_eq!(logs.matches("no rendition applies to this source").count(), 1, "{logs}");
    assert!(ffmpeg_children(live.server.server_pid().unwrap()).is_empty());
}

#[tokio::test]
async fn an_h265_rendition_comes_out_of_a_modern_ffmpeg_as_enhanced_rtmp_hevc() {
    use ferrocast_tests::modern::{decode, encoder_slot, modern_ffmpeg};
    let ffmpeg = modern_ffmpeg();
    let _slot = encoder_slot().await;
    let live = Live::start_with(
        "tc_hevc",
        TestServer::builder()
            .grace_secs(2)
            .app_yaml(
                "transcode: [{rule: '*', renditions: [\
                 {name: 360p, height: 360, video_kbps: 300, audio_kbps: 64, codec: h265, preset: ultrafast}]}]",
            )
            .yaml(&format!("transcoding: {{ffmpeg: {:?}}}", ffmpeg.display().to_string())),
        |p| p.duration_secs(60),
    )
    .await
    .unwrap();
    let rendition = format!("{}_360p", live.name);
    live.server
        .wait_live(&rendition, Duration::from_secs(40))
        .await
        .unwrap();
    let mut player = live.server.http_player(&rendition).await.unwrap();
    let tags = player
        .read_until(Duration::from_secs(20), |t| t.is_video_frame())
        .await
        .unwrap();
    let video = tags.iter().find(|t| t.is_video_frame()).unwrap();
    assert_eq!(
        video.video_fourcc(),
        Some(*b"hvc1"),
        "enhanced RTMP HEVC: {}",
        video.describe()
    );
    let report = decode(&ffmpeg, &live.server.flv_url(&rendition), Some(3), 40)
        .await
        .unwrap();
    report.assert_decoded("the H.265 rendition", "hevc", Some((640, 360)), "aac", 30);
}

#[tokio::test]
async fn the_playlists_authorization_carries_to_the_renditions_and_only_with_its_session() {
    let dir = ferrocast_tests::TempDir::new("tc-auth").unwrap();
    let name = ferrocast_tests::unique_name("tc_auth");
    std::fs::write(dir.join("keys.yaml"), format!("{name}: play-k3y\n")).unwrap();
    let server = server()
        .app_yaml(&format!("play: {{auth: key, keys_file: {:?}}}", dir.join("keys.yaml")))
        .start()
        .await
        .unwrap();
    let _publisher = Publisher::builder(&server.rtmp_url(&name))
        .duration_secs(60)
        .start()
        .unwrap();
    let base = |n: &str| format!("http://127.0.0.1:{}/live/{n}", server.http_port);
    // Renditions go live (seen in the metrics: FLV players would need keys of their own).
    let start = Instant::now();
    let metrics = loop {
        let (_, m) = ferrocast_tests::http::get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
            .await
            .unwrap();
        if m.contains(&format!("stream=\"{name}_360p\"")) && m.contains(&format!("stream=\"{name}_480p\"")) {
            break m;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "renditions not live:\n{m}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(metrics.contains("ferrocast_transcodes_running{app=\"live\"} 1"));
    let get = |url: String| async move {
        ferrocast_tests::http::get_text(&url, Duration::from_secs(30))
            .await
            .unwrap()
    };
    let (status, _) = get(format!("{}/index.m3u8", base(&format!("{name}_480p")))).await;
    assert!(
        status == 401 || status == 403,
        "a rendition's playlist needs a credential: {status}"
    );
    let (status, index) = get(format!("{}/index.m3u8?key=play-k3y", base(&name))).await;
    assert_eq!(status, 200, "{index}");
    assert!(!index.contains("play-k3y"), "the key is never put in a URL:\n{index}");
    let m = m3u8_rs::parse_master_playlist_res(index.as_bytes()).unwrap();
    assert_eq!(m.variants.len(), 3, "{index}");
    let uri = m.variants[1].uri.strip_prefix("../").unwrap().to_string();
    let (status, media) = get(format!("http://127.0.0.1:{}/live/{uri}", server.http_port)).await;
    assert_eq!(status, 200, "the rendition's session opens its playlist: {media}");
    let segment = media
        .lines()
        .find(|l| l.starts_with("muxed-"))
        .expect("a segment")
        .to_string();
    let rendition_dir = uri.split('/').next().unwrap().to_string();
    let (status, _) = get(format!("{}/{segment}", base(&rendition_dir))).await;
    assert_eq!(status, 200, "and its segments");
    let bare = segment.split('?').next().unwrap();
    let (status, _) = get(format!("{}/{bare}", base(&rendition_dir))).await;
    assert_eq!(status, 401, "a rendition segment without the session");
    // The session of one rendition does not open another stream.
    let hs = segment.split_once('?').unwrap().1;
    let (status, _) = get(format!("{}/video.m3u8?{hs}", base(&format!("{name}_360p")))).await;
    assert!(
        status == 401 || status == 403,
        "replayed for another rendition: {status}"
    );
}
