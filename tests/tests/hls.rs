//! HLS, LL-HLS, MPEG-TS HLS and DASH served from memory: real readers (FFmpeg 5.1 and 9)
//! read what the server writes, a strict playlist parser (m3u8-rs) plus the LL-HLS rules
//! check every playlist, blocking reload answers when the part exists, play auth carries
//! from the playlist to the segments, the segmenter's memory stays bounded, and one
//! connection serves HLS requests in a row (the lean HTTP/1.1 path) and hands any other to the
//! router.

use std::time::{Duration, Instant};

use ferrocast_tests::http::get;
use ferrocast_tests::modern::{decode, encoder_slot, modern_ffmpeg, start_publisher};
use ferrocast_tests::process::run_bounded;
use ferrocast_tests::{require_tool, unique_name, Live, Publisher, TempDir, TestServer};

const T: Duration = Duration::from_secs(15);

fn base(server: &TestServer, name: &str) -> String {
    format!("http://127.0.0.1:{}/live/{name}", server.http_port)
}

/// GET `url`: status, headers, body.
async fn fetch(url: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut r = get(url, &[], T).await.unwrap_or_else(|e| panic!("GET {url}: {e:#}"));
    let (body, _) = r.read_to_end(T).await.unwrap();
    (r.status, r.headers.clone(), body)
}

async fn fetch_text(url: &str) -> (u16, String) {
    let (status, _, body) = fetch(url).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The first URI after `tag` lines (or the line after `#EXT-X-STREAM-INF`).
fn uri_after(playlist: &str, tag: &str) -> String {
    let mut lines = playlist.lines();
    while let Some(l) = lines.next() {
        if let Some(rest) = l.strip_prefix(tag) {
            if let Some(i) = rest.find("URI=\"") {
                let u = &rest[i + 5..];
                return u[..u.find('"').unwrap()].to_string();
            }
            return lines.next().unwrap().to_string();
        }
    }
    panic!("no {tag} in\n{playlist}");
}

/// `/live/{name}/muxed.m3u8?hs=...` (video and audio in one playlist) from the multivariant
/// playlist.
async fn variant_playlist_url(server: &TestServer, name: &str) -> String {
    let (status, index) = fetch_text(&format!("{}/index.m3u8", base(server, name))).await;
    assert_eq!(status, 200, "{index}");
    let uri = uri_after(&index, "#EXT-X-STREAM-INF");
    assert!(uri.starts_with("muxed.m3u8?hs="), "the muxed variant: {index}");
    format!("{}/{uri}", base(server, name))
}

#[tokio::test]
async fn ffmpeg_decodes_h264_aac_over_hls_ts_hls_and_dash() {
    let live = Live::start("hls_read").await.unwrap();
    let b = base(&live.server, &live.name);
    let ffmpeg = require_tool("ffmpeg");
    for file in ["index.m3u8", "ts.m3u8", "index.mpd"] {
        let report = decode(&ffmpeg, &format!("{b}/{file}"), Some(3), 60).await.unwrap();
        report.assert_decoded(file, "h264", Some((1280, 720)), "aac", 30);
    }
    let probe = run_bounded(
        &require_tool("ffprobe").display().to_string(),
        &[
            "-v".into(),
            "error".into(),
            "-show_entries".into(),
            "stream=codec_name,width,height".into(),
            "-of".into(),
            "csv=p=0".into(),
            format!("{b}/index.m3u8"),
        ],
        60,
    )
    .await
    .unwrap();
    let out = String::from_utf8_lossy(&probe.stdout);
    assert!(out.contains("h264,1280,720") && out.contains("aac"), "ffprobe: {out}");
}

/// A player that opens `ts.m3u8` itself gets its session once, in a one-variant playlist,
/// and its reloads of that variant keep the session and the segment URIs (a bare media
/// playlist would be reloaded without the token, a new session and new URIs every time).
#[tokio::test]
async fn ts_playlist_opened_directly_keeps_one_session_across_reloads() {
    let live = Live::start("hls_ts_entry").await.unwrap();
    let b = base(&live.server, &live.name);
    let (status, entry) = fetch_text(&format!("{b}/ts.m3u8")).await;
    assert_eq!(status, 200, "{entry}");
    assert!(entry.contains("#EXT-X-STREAM-INF:BANDWIDTH="), "{entry}");
    assert!(entry.contains("RESOLUTION=1280x720"), "{entry}");
    let variant = uri_after(&entry, "#EXT-X-STREAM-INF");
    let (file, token) = variant.split_once('?').expect("the variant carries the session");
    assert_eq!(file, "ts.m3u8");
    assert!(token.starts_with("hs="), "{variant}");
    let url = format!("{b}/{variant}");
    let segments = |p: &str| {
        p.lines()
            .filter(|l| l.starts_with("ts-"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (s1, first) = fetch_text(&url).await;
    let (s2, second) = fetch_text(&url).await;
    assert_eq!((s1, s2), (200, 200), "{first}\n{second}");
    assert!(first.contains("#EXT-X-TARGETDURATION:"), "a media playlist: {first}");
    let (a, z) = (segments(&first), segments(&second));
    assert!(!a.is_empty(), "{first}");
    for uri in a.iter().chain(&z) {
        assert!(uri.ends_with(&format!("?{token}")), "{uri} keeps the session {token}");
    }
    let (status, headers, body) = fetch(&format!("{b}/{}", a[0])).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("video/mp2t"));
    assert_eq!(body.first(), Some(&0x47), "MPEG-TS sync byte");
}

async fn modern_codec_reads_back(video: &str, audio: &str, want_video: &str, want_audio: &str) {
    let _slot = encoder_slot().await;
    let server = TestServer::start().await.unwrap();
    let name = unique_name(&format!("hls_{video}"));
    let dir = TempDir::new("hls-modern").unwrap();
    let mut publisher = start_publisher(&server.rtmp_url(&name), video, audio, 40, &dir).unwrap();
    server
        .wait_live(&name, Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("{e:#}: {}", publisher.log_text()));
    let report = decode(
        &modern_ffmpeg(),
        &format!("{}/index.m3u8", base(&server, &name)),
        Some(2),
        90,
    )
    .await
    .unwrap();
    report.assert_decoded(
        &format!("{video}+{audio} over fMP4 HLS"),
        want_video,
        Some((640, 360)),
        want_audio,
        10,
    );
    publisher.kill();
}

#[tokio::test]
async fn hevc_aac_reads_back_over_fmp4_hls() {
    modern_codec_reads_back("hevc", "aac", "hevc", "aac").await;
}

#[tokio::test]
async fn av1_opus_reads_back_over_fmp4_hls() {
    modern_codec_reads_back("av1", "opus", "av1", "opus").await;
}

#[tokio::test]
async fn vp9_opus_reads_back_over_fmp4_hls() {
    modern_codec_reads_back("vp9", "opus", "vp9", "opus").await;
}

/// Reads the first sample of `segment` (with its init) back with ffprobe: a keyframe?
async fn starts_with_keyframe(init: &[u8], segment: &[u8], dir: &TempDir, n: u64) -> bool {
    let path = dir.join(&format!("seg{n}.mp4"));
    std::fs::write(&path, [init, segment].concat()).unwrap();
    let out = run_bounded(
        &require_tool("ffprobe").display().to_string(),
        &[
            "-v".into(),
            "error".into(),
            "-select_streams".into(),
            "v:0".into(),
            "-read_intervals".into(),
            "%+#1".into(),
            "-show_entries".into(),
            "frame=key_frame".into(),
            "-of".into(),
            "csv=p=0".into(),
            path.display().to_string(),
        ],
        30,
    )
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // CSV: key_frame, then possibly an empty side-data column.
    let first = text.lines().next().and_then(|l| l.split(',').next()).map(str::trim);
    if first != Some("1") {
        eprintln!(
            "ffprobe on segment {n}: {text:?} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    first == Some("1")
}

#[tokio::test]
async fn playlists_pass_a_strict_parser_and_the_ll_hls_rules() {
    let live = Live::start("hls_rules").await.unwrap();
    let b = base(&live.server, &live.name);
    let url = variant_playlist_url(&live.server, &live.name).await;
    let dir = TempDir::new("hls-rules").unwrap();
    let mut last_sequence = None;
    let mut checked = std::collections::HashSet::new();
    for round in 0..5 {
        let (status, text) = fetch_text(&url).await;
        assert_eq!(status, 200);
        let pl = m3u8_rs::parse_media_playlist_res(text.as_bytes())
            .unwrap_or_else(|e| panic!("m3u8-rs refuses the playlist: {e:?}\n{text}"));
        assert_eq!(pl.target_duration, 2, "{text}");
        assert!(!pl.segments.is_empty(), "{text}");
        // Media sequence numbers only move forward, one per segment.
        if let Some((seq, first_uri)) = &last_sequence {
            assert!(pl.media_sequence >= *seq, "{text}");
            if pl.media_sequence == *seq {
                assert_eq!(&pl.segments[0].uri, first_uri);
            }
        }
        last_sequence = Some((pl.media_sequence, pl.segments[0].uri.clone()));
        let init_uri = uri_after(&text, "#EXT-X-MAP:");
        let (_, _, init) = fetch(&format!("{b}/{init_uri}")).await;
        for (i, seg) in pl.segments.iter().enumerate() {
            // The GOP is 1 s and the target 2 s: no segment may exceed the target.
            assert!(seg.duration <= 2.0 + 1e-3, "segment of {} s:\n{text}", seg.duration);
            let msn = pl.media_sequence + i as u64;
            assert!(
                seg.uri.contains(&format!("-{msn}.m4s")),
                "segment {i} is not msn {msn}: {}",
                seg.uri
            );
            if checked.insert(seg.uri.clone()) {
                let (status, _, body) = fetch(&format!("{b}/{}", seg.uri)).await;
                assert_eq!(status, 200, "{}", seg.uri);
                assert!(
                    starts_with_keyframe(&init, &body, &dir, msn).await,
                    "{} does not start with a keyframe",
                    seg.uri
                );
            }
        }
        // LL-HLS: parts within the part target, a preload hint for the next part, server control.
        let part_target: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PART-INF:PART-TARGET="))
            .expect("EXT-X-PART-INF")
            .parse()
            .unwrap();
        assert_eq!(part_target, 0.2);
        let parts: Vec<f64> = text
            .lines()
            .filter_map(|l| l.strip_prefix("#EXT-X-PART:DURATION="))
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert!(!parts.is_empty(), "{text}");
        assert!(parts.iter().all(|d| *d <= part_target + 1e-9), "{parts:?}");
        assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK="));
        assert!(text.contains("#EXT-X-PRELOAD-HINT:TYPE=PART,URI="), "{text}");
        if round < 4 {
            tokio::time::sleep(Duration::from_millis(1500)).await;
        }
    }
    // The separate video and audio playlists (DASH's tracks, served by name) follow the same
    // rules and numbers.
    let (_, index) = fetch_text(&format!("{b}/index.m3u8")).await;
    let hs = url.split_once('?').unwrap().1;
    let (_, muxed) = fetch_text(&url).await;
    let muxed = m3u8_rs::parse_media_playlist_res(muxed.as_bytes()).unwrap();
    for track in ["video", "audio"] {
        let (status, text) = fetch_text(&format!("{b}/{track}.m3u8?{hs}")).await;
        assert_eq!(status, 200, "{track}");
        let pl = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("playlist parses");
        assert!(pl.segments.iter().all(|s| s.duration <= 2.1), "{text}");
        assert!(
            pl.segments.iter().all(|s| s.uri.starts_with(&format!("{track}-"))),
            "{text}"
        );
        let last = |p: &m3u8_rs::MediaPlaylist| p.media_sequence + p.segments.len() as u64;
        assert!(
            last(&pl).abs_diff(last(&muxed)) <= 1,
            "the muxed numbers are the {track} numbers:\n{text}"
        );
    }
    let m = m3u8_rs::parse_master_playlist_res(index.as_bytes()).expect("multivariant playlist parses");
    assert_eq!(m.variants.len(), 1);
    assert!(
        m.alternatives.is_empty() && m.variants[0].audio.is_none(),
        "audio is in the variant: {index}"
    );
    let codecs = m.variants[0].codecs.as_deref().unwrap_or_default();
    assert!(codecs.starts_with("avc1.") && codecs.ends_with(",mp4a.40.2"), "{index}");
}

/// (msn, part) of the preload hint.
fn preload_hint(text: &str) -> (String, u64, usize) {
    let uri = uri_after(text, "#EXT-X-PRELOAD-HINT:");
    let file = uri.split('?').next().unwrap();
    let stem = file.strip_suffix(".m4s").unwrap();
    let (head, part) = stem.rsplit_once('.').unwrap();
    let msn = head.rsplit('-').next().unwrap();
    (uri.clone(), msn.parse().unwrap(), part.parse().unwrap())
}

#[tokio::test]
async fn blocking_reload_answers_when_the_part_exists_and_refuses_too_far_ahead() {
    let live = Live::start("hls_block").await.unwrap();
    let b = base(&live.server, &live.name);
    let url = variant_playlist_url(&live.server, &live.name).await;
    let (_, text) = fetch_text(&url).await;
    let (hint, msn, part) = preload_hint(&text);
    assert!(
        !text.contains(&format!("URI=\"{hint}\",")),
        "the hinted part is not listed yet"
    );
    // The next part does not exist yet: the request is held until it does.
    let started = Instant::now();
    let (status, headers, body) = fetch(&format!("{url}&_HLS_msn={msn}&_HLS_part={part}")).await;
    let held = started.elapsed();
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("#EXT-X-PART:") && l.contains(&hint)),
        "the answer lists the part it waited for:\n{text}"
    );
    assert_eq!(
        header(&headers, "cache-control"),
        Some("no-store"),
        "blocking responses are never cached"
    );
    assert!(held < Duration::from_secs(6), "held {held:?}");
    // The preload hint itself is held until the part exists, then served.
    let (_, next) = fetch_text(&url).await;
    let (hint, _, _) = preload_hint(&next);
    let (status, headers, part_bytes) = fetch(&format!("{b}/{hint}")).await;
    assert_eq!(status, 200);
    assert_eq!(&part_bytes[4..8], b"moof", "a part is a CMAF chunk");
    assert_eq!(header(&headers, "content-type"), Some("video/iso.segment"));
    // Too far ahead is refused at once.
    let (status, _) = fetch_text(&format!("{url}&_HLS_msn={}", msn + 10)).await;
    assert_eq!(status, 400);
    let (status, _) = fetch_text(&format!("{url}&_HLS_part=1")).await;
    assert_eq!(status, 400, "_HLS_part without _HLS_msn");
    // Delta updates are offered. In one, the first segment listed is the one after those
    // skipped, and names its init section (none is skipped before the window is long enough).
    let (_, full) = fetch_text(&url).await;
    assert!(full.contains(",CAN-SKIP-UNTIL=12\n"), "{full}");
    let (status, delta) = fetch_text(&format!("{url}&_HLS_skip=YES")).await;
    assert_eq!(status, 200, "{delta}");
    let number = |tag: &str| {
        delta
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .map(|n| n.parse::<u64>().unwrap())
    };
    let sequence = number("#EXT-X-MEDIA-SEQUENCE:").expect("a media sequence");
    let skipped = number("#EXT-X-SKIP:SKIPPED-SEGMENTS=").unwrap_or(0);
    let first = delta
        .lines()
        .find(|l| !l.starts_with('#') && l.contains(".m4s"))
        .expect("a segment");
    let first_msn: u64 = first
        .split(".m4s")
        .next()
        .unwrap()
        .rsplit('-')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(first_msn, sequence + skipped, "{delta}");
    let before_first = &delta[..delta.find(first).unwrap()];
    assert!(before_first.contains("#EXT-X-MAP:"), "{delta}");
    let (status, text) = fetch_text(&format!("{url}&_HLS_skip=NO")).await;
    assert_eq!(status, 400, "_HLS_skip=NO: {text}");
    // Values that are not numbers are refused, not read as a plain reload.
    for bad in [format!("_HLS_msn={msn}x"), format!("_HLS_msn={msn}&_HLS_part=-1")] {
        let (status, text) = fetch_text(&format!("{url}&{bad}")).await;
        assert_eq!(status, 400, "{bad}: {text}");
    }
}

#[tokio::test]
async fn responses_carry_content_types_caching_cors_and_count_viewers() {
    let live = Live::start("hls_http").await.unwrap();
    let b = base(&live.server, &live.name);
    let (status, headers, _) = fetch(&format!("{b}/index.m3u8")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("application/vnd.apple.mpegurl"));
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&headers, "cache-control"), Some("max-age=1"));
    let url = variant_playlist_url(&live.server, &live.name).await;
    let (_, text) = fetch_text(&url).await;
    let seg = text.lines().find(|l| l.starts_with("muxed-")).unwrap();
    let (status, headers, body) = fetch(&format!("{b}/{seg}")).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), Some("video/iso.segment"));
    assert_eq!(
        header(&headers, "cache-control"),
        Some("public, max-age=86400, immutable")
    );
    assert_eq!(
        header(&headers, "content-length"),
        Some(body.len().to_string().as_str())
    );
    let init = uri_after(&text, "#EXT-X-MAP:");
    let (status, headers, _) = fetch(&format!("{b}/{init}")).await;
    assert_eq!((status, header(&headers, "content-type")), (200, Some("video/mp4")));
    let (status, headers, _) = fetch(&format!("{b}/index.mpd")).await;
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, Some("application/dash+xml"))
    );
    // HEAD answers the headers alone.
    let mut r = ferrocast_tests::http::request("HEAD", &format!("{b}/{seg}"), &[], None, T)
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some(body.len().to_string().as_str()));
    drop(r.read_to_end(Duration::from_millis(200)).await);
    // Two sessions (two index requests) and their requests are counted.
    let _second = variant_playlist_url(&live.server, &live.name).await;
    let metrics = loop_until_metric(&live.server, &live.name, "ferrocast_stream_hls_viewers", 3).await;
    assert!(
        metrics.contains("ferrocast_hls_requests_total{app=\"live\",kind=\"segment\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferrocast_hls_segments_total{app=\"live\"}"),
        "{metrics}"
    );
}

/// Scrapes until `metric` of the stream reaches at least `min` (the segmenter refreshes its
/// gauges every second).
async fn loop_until_metric(server: &TestServer, name: &str, metric: &str, min: i64) -> String {
    let prefix = format!("{metric}{{app=\"live\",stream=\"{name}\"}} ");
    for _ in 0..30 {
        let (_, m) = fetch_text(&server.admin_url("/metrics")).await;
        let v = m
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.trim().parse::<i64>().ok());
        if v.is_some_and(|v| v >= min) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("{metric} of {name} never reached {min}");
}

#[tokio::test]
async fn play_auth_guards_the_playlist_and_carries_to_segments() {
    let dir = TempDir::new("hls-auth").unwrap();
    std::fs::write(dir.join("keys.yaml"), "cam: play-k3y\nother: other-k3y\n").unwrap();
    let server = TestServer::builder()
        .app_yaml(&format!("play: {{auth: key, keys_file: {:?}}}", dir.join("keys.yaml")))
        .start()
        .await
        .unwrap();
    let mut cam = Publisher::builder(&server.rtmp_url("cam")).start().unwrap();
    let mut other = Publisher::builder(&server.rtmp_url("other")).start().unwrap();
    // Played by its key as the name, as the play policy allows.
    server.wait_live("play-k3y", T).await.unwrap();
    server.wait_live("other-k3y", T).await.unwrap();
    let b = base(&server, "cam");
    let (status, _) = fetch_text(&format!("{b}/index.m3u8")).await;
    // The key policy reads a bare name as a possible key, so it answers 403 (a wrong key).
    assert!(status == 401 || status == 403, "no credential: {status}");
    let (status, _) = fetch_text(&format!("{b}/index.m3u8?key=wrong")).await;
    assert_eq!(status, 403);
    let (status, _) = fetch_text(&format!("{b}/index.mpd")).await;
    assert!(status == 401 || status == 403, "DASH too: {status}");
    let (status, index) = fetch_text(&format!("{b}/index.m3u8?key=play-k3y")).await;
    assert_eq!(status, 200);
    assert!(!index.contains("play-k3y"), "the key is never put in a URL:\n{index}");
    let media = uri_after(&index, "#EXT-X-STREAM-INF");
    let (status, text) = fetch_text(&format!("{b}/{media}")).await;
    assert_eq!(status, 200);
    assert!(!text.contains("play-k3y"));
    let seg = text.lines().find(|l| l.starts_with("muxed-")).unwrap().to_string();
    let (status, _, body) = fetch(&format!("{b}/{seg}")).await;
    assert_eq!(status, 200, "the session carries to segments");
    assert!(!body.is_empty());
    let bare = seg.split('?').next().unwrap();
    let (status, _) = fetch_text(&format!("{b}/{bare}")).await;
    assert_eq!(status, 401, "a segment without the session");
    // The session of one stream does not open another.
    let hs = seg.split_once('?').unwrap().1;
    let (status, _) = fetch_text(&format!("{}/video.m3u8?{hs}", base(&server, "other"))).await;
    assert!(status == 401 || status == 403, "replayed for another stream: {status}");
    let (status, other_index) = fetch_text(&format!("{}/index.m3u8?{hs}", base(&server, "other"))).await;
    assert!(status == 401 || status == 403, "{status}: {other_index}");
    // On one kept-alive connection, which remembers the session it was shown last: the
    // same checks hold request after request.
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.http_port))
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut tampered = hs.to_string();
    let last = tampered.pop().unwrap();
    tampered.push(if last == '0' { '1' } else { '0' });
    for (path, want) in [
        (format!("/live/cam/{seg}"), 200),
        (format!("/live/other/video.m3u8?{hs}"), 403),
        (format!("/live/cam/{bare}?{tampered}"), 403),
        (format!("/live/cam/{bare}"), 401),
        (format!("/live/cam/{seg}"), 200),
        (format!("/live/cam/{media}"), 200),
    ] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let (status, _, _) = next_response(&mut s, &mut buf, false).await;
        assert_eq!(status, want, "{path} on a kept-alive connection");
    }
    cam.kill().await;
    other.kill().await;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn segmenter_memory_stays_bounded_over_two_minutes() {
    // The smallest bound allowed: a 720p test picture fills it within the 7-segment window.
    const MAX: u64 = 1 << 20;
    let live = Live::start_with(
        "hls_mem",
        TestServer::builder().app_yaml(&format!("hls: {{mode: always, max_bytes: {MAX}}}")),
        |p| p.duration_secs(140),
    )
    .await
    .unwrap();
    let pid = live.server.server_pid().unwrap();
    let prefix = format!("ferrocast_stream_hls_bytes{{app=\"live\",stream=\"{}\"}} ", live.name);
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut rss_after_warmup = None;
    while started.elapsed() < Duration::from_secs(125) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let (_, m) = fetch_text(&live.server.admin_url("/metrics")).await;
        if let Some(v) = m.lines().find_map(|l| l.strip_prefix(&prefix)) {
            let v: u64 = v.trim().parse().unwrap();
            assert!(v <= MAX, "segmenter holds {v} bytes, bound {MAX}");
            samples.push(v);
        }
        if started.elapsed() > Duration::from_secs(30) && rss_after_warmup.is_none() {
            rss_after_warmup = Some(rss_kib(pid));
        }
    }
    assert!(
        samples.len() >= 20,
        "the always-on segmenter reported its memory: {samples:?}"
    );
    assert!(samples.iter().any(|v| *v > MAX / 2), "the window filled: {samples:?}");
    let (_, text) = fetch_text(&variant_playlist_url(&live.server, &live.name).await).await;
    let segments = text.lines().filter(|l| l.starts_with("#EXTINF")).count();
    assert!((1..=7).contains(&segments), "{text}");
    let growth = rss_kib(pid).saturating_sub(rss_after_warmup.unwrap());
    assert!(
        growth < 24 * 1024,
        "server RSS grew {growth} KiB over 90 s of a steady stream"
    );
}

/// Segment memory files (`memfd:ferrocast-segment`) the server process holds open.
fn segment_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().contains("memfd:ferrocast-segment"))
        .count()
}

/// The body of an HTTP/1.0 GET of `path` (hyper answers HTTP/1.0; the lean path does not).
async fn http10_body(port: u16, path: &str) -> Vec<u8> {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (status, _, body) = next_response(&mut s, &mut Vec::new(), false).await;
    assert_eq!(status, 200, "{path}");
    body
}

/// The next response on a kept-alive connection, in time: status, headers, body.
async fn next_response(
    s: &mut tokio::net::TcpStream,
    buf: &mut Vec<u8>,
    head_only: bool,
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let r = tokio::time::timeout(T, ferrocast_tests::http::next_response(s, buf, head_only))
        .await
        .expect("a response in time")
        .unwrap();
    (r.status, r.headers, r.body)
}

#[tokio::test]
async fn one_connection_serves_hls_requests_in_a_row_then_hands_other_requests_to_the_router() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::builder().section_yaml("http", "request_timeout_secs: 2");
    let live = Live::start_with("hls_conn", server, |p| p).await.unwrap();
    let (port, name) = (live.server.http_port, live.name.as_str());
    let get = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut buf = Vec::new();
    // Two requests in one write (pipelined): the playlist, then the same as HEAD.
    let index = format!("/live/{name}/index.m3u8");
    let head = get(&index, "").replacen("GET", "HEAD", 1);
    s.write_all(format!("{}{head}", get(&index, "")).as_bytes())
        .await
        .unwrap();
    let (status, headers, body) = next_response(&mut s, &mut buf, false).await;
    let text = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("#EXTM3U"), "{text}");
    assert_eq!(header(&headers, "content-type"), Some("application/vnd.apple.mpegurl"));
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    assert!(
        header(&headers, "date").is_some_and(|d| d.ends_with(" GMT")),
        "{headers:?}"
    );
    let (status, headers, _) = next_response(&mut s, &mut buf, true).await;
    assert_eq!(status, 200);
    assert!(header(&headers, "content-length").unwrap().parse::<usize>().unwrap() > 0);
    // The media playlist and a segment, on the same connection.
    let media = uri_after(&text, "#EXT-X-STREAM-INF");
    s.write_all(get(&format!("/live/{name}/{media}"), "").as_bytes())
        .await
        .unwrap();
    let (status, _, body) = next_response(&mut s, &mut buf, false).await;
    assert_eq!(status, 200);
    let playlist = String::from_utf8(body).unwrap();
    let seg = playlist.lines().find(|l| l.starts_with("muxed-")).unwrap();
    let pid = live.server.server_pid().unwrap();
    assert_eq!(segment_files(pid), 0, "no segment was asked for yet");
    s.write_all(get(&format!("/live/{name}/{seg}"), "").as_bytes())
        .await
        .unwrap();
    let (status, headers, body) = next_response(&mut s, &mut buf, false).await;
    // The segment went out of a memory file, not the buffers (a silent fallback would pass
    // every byte comparison below).
    assert_eq!(segment_files(pid), 1, "the segment's memory file exists");
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, Some("video/iso.segment"))
    );
    assert!(body.len() > 8 && (&body[4..8] == b"styp" || &body[4..8] == b"moof"));
    // This path sends complete segments from a memory file (sendfile through a pipe): the
    // same bytes as hyper writes from the segmenter's buffers (HTTP/1.0 goes to hyper).
    let segment_url = format!("/live/{name}/{seg}");
    let through_hyper = http10_body(port, &segment_url).await;
    assert!(
        through_hyper == body,
        "lean {} bytes, hyper {} bytes",
        body.len(),
        through_hyper.len()
    );
    // HEAD of a segment: its length, no body (the next response follows at once).
    let segment_head = get(&segment_url, "").replacen("GET", "HEAD", 1);
    s.write_all(format!("{segment_head}{}", get(&segment_url, "")).as_bytes())
        .await
        .unwrap();
    let (status, headers, _) = next_response(&mut s, &mut buf, true).await;
    assert_eq!(
        (status, header(&headers, "content-length")),
        (200, Some(&*body.len().to_string()))
    );
    let (status, _, again) = next_response(&mut s, &mut buf, false).await;
    assert!(
        status == 200 && again == body,
        "the second send of the segment file is whole too"
    );
    // The MPEG-TS rendering goes out the same way.
    s.write_all(
        get(
            &format!("/live/{name}/ts.m3u8{}", &seg[seg.find('?').unwrap_or(seg.len())..]),
            "",
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (status, _, ts_playlist) = next_response(&mut s, &mut buf, false).await;
    let ts_playlist = String::from_utf8(ts_playlist).unwrap();
    assert_eq!(status, 200, "{ts_playlist}");
    let ts_seg = ts_playlist.lines().find(|l| l.starts_with("ts-")).unwrap();
    let ts_url = format!("/live/{name}/{ts_seg}");
    s.write_all(get(&ts_url, "").as_bytes()).await.unwrap();
    let (status, _, ts) = next_response(&mut s, &mut buf, false).await;
    assert!(
        status == 200 && ts.len() > 188 && ts[0] == 0x47,
        "{status} {}",
        ts.len()
    );
    assert!(
        http10_body(port, &ts_url).await == ts,
        "lean and hyper send the same TS segment"
    );
    // A refusal keeps the connection.
    s.write_all(get(&format!("/nope/{name}/index.m3u8"), "").as_bytes())
        .await
        .unwrap();
    let (status, headers, body) = next_response(&mut s, &mut buf, false).await;
    assert_eq!((status, body.as_slice()), (404, &b"unknown app\n"[..]));
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    // A percent-encoded path goes to the router, with the bytes already read, and so does
    // every later request on the connection.
    let encoded = format!("%{:02X}{}", name.as_bytes()[0], &name[1..]);
    s.write_all(get(&format!("/live/{encoded}/index.m3u8"), "").as_bytes())
        .await
        .unwrap();
    let (status, _, body) = next_response(&mut s, &mut buf, false).await;
    assert_eq!(status, 200);
    assert!(body.starts_with(b"#EXTM3U"));
    s.write_all(get(&index, "").as_bytes()).await.unwrap();
    let (status, headers, _) = next_response(&mut s, &mut buf, false).await;
    assert_eq!((status, header(&headers, "cache-control")), (200, Some("max-age=1")));
    // Through hyper the answer carries the same CORS header.
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    // `Connection: close` is honoured.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(get(&index, "Connection: close\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let (status, headers, _) = next_response(&mut s, &mut buf, false).await;
    assert_eq!((status, header(&headers, "connection")), (200, Some("close")));
    let closed = tokio::time::timeout(T, s.read_buf(&mut buf)).await.unwrap();
    assert_eq!(closed.unwrap(), 0, "closed after the response");
    // A request head that never ends is closed after the request timeout (2 s).
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {index} HTTP/1.1\r\nHost: t\r\n").as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(T, s.read_buf(&mut buf)).await.unwrap();
    assert_eq!(closed.unwrap_or(0), 0, "closed without an answer");
    assert!(started.elapsed() >= Duration::from_secs(1), "{:?}", started.elapsed());
}
