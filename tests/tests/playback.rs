//! Playback of a live ffmpeg stream by real clients: ffprobe (RTMP, HTTP-FLV), rtmpdump,
//! GStreamer rtmp2src and rtmpsrc, a Rust WebSocket client, and HTTP-FLV response headers.

use std::time::Duration;

use ferrocast_tests::fixtures::{assert_h264_720p_and_aac_only, ffprobe};
use ferrocast_tests::http;
use ferrocast_tests::player::summarize;
use ferrocast_tests::process::{describe_output, run_bounded};
use ferrocast_tests::{flv, require_tool, FlvPlayer, Live, TestServer};

#[tokio::test]
async fn ffprobe_over_rtmp_sees_h264_720p_and_aac_and_no_data_stream() {
    let live = Live::start("probe_rtmp").await.unwrap();
    let probe = ffprobe(&live.rtmp_url(), &[], 20).await.unwrap();
    assert_h264_720p_and_aac_only(&probe, "ffprobe over RTMP");
}

#[tokio::test]
async fn ffprobe_over_http_flv_sees_h264_720p_and_aac_and_no_data_stream() {
    let live = Live::start("probe_http").await.unwrap();
    let probe = ffprobe(&live.flv_url(), &[], 20).await.unwrap();
    assert_h264_720p_and_aac_only(&probe, "ffprobe over HTTP-FLV");
}

#[tokio::test]
async fn rtmpdump_records_a_playable_h264_aac_file() {
    require_tool("rtmpdump");
    let live = Live::start("rtmpdump").await.unwrap();
    let out = live.server.dir().join("rtmpdump.flv");
    let args: Vec<String> = [
        "-r",
        &live.rtmp_url(),
        "--live",
        "-B",
        "3",
        "-o",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // rtmpdump stops by itself after 3 s of stream time (-B 3) when timestamps start near 0;
    // otherwise `timeout` stops it (SIGTERM: rtmpdump closes the file cleanly). Either way
    // the recording is what is judged.
    let res = run_bounded("rtmpdump", &args, 10).await.unwrap();
    let bytes = std::fs::read(&out).unwrap_or_default();
    assert!(
        bytes.len() > 100_000,
        "rtmpdump recorded only {} bytes\n{}",
        bytes.len(),
        describe_output(&res)
    );
    let (header, tags) = flv::parse_all_lenient(&bytes).expect("rtmpdump wrote an FLV file");
    assert!(
        header.has_video() && header.has_audio(),
        "FLV header flags {:#x}",
        header.flags
    );
    let first_frame = tags.iter().find(|t| t.is_video_frame()).expect("a video frame");
    assert!(
        first_frame.is_keyframe(),
        "first recorded video frame is not a keyframe: {}",
        summarize(&tags)
    );
    let probe = ffprobe(&out.display().to_string(), &["-count_frames"], 30)
        .await
        .unwrap();
    assert_h264_720p_and_aac_only(&probe, "ffprobe of the rtmpdump recording");
    let streams = probe["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    let frames: u64 = video["nb_read_frames"].as_str().unwrap_or("0").parse().unwrap_or(0);
    assert!(frames >= 30, "only {frames} video frames decodable from the recording");
}

/// Runs a GStreamer pipeline `SRC ! flvdemux ! (video) ! fakesink num-buffers=60` and asserts it
/// reaches EOS after exactly 60 video buffers, the first one a keyframe.
async fn gstreamer_plays_60_video_buffers(src: &str) {
    require_tool("gst-launch-1.0");
    let pipeline = format!("{src} ! flvdemux name=d d.video ! queue ! fakesink name=vsink silent=false num-buffers=60");
    let mut args = vec!["-v".to_string()];
    args.extend(pipeline.split(' ').map(str::to_string));
    // the rtmpsrc location carries a space ("URL live=1"): rejoin it
    let args = rejoin_quoted(args);
    let out = run_bounded("gst-launch-1.0", &args, 20).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let chains: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("vsink") && l.contains("chain"))
        .collect();
    assert!(
        out.status.success() && stdout.contains("Got EOS"),
        "pipeline `{pipeline}` did not reach EOS after {} video buffers\n{}",
        chains.len(),
        describe_output(&out)
    );
    assert_eq!(
        chains.len(),
        60,
        "video buffers seen by the sink\n{}",
        describe_output(&out)
    );
    assert!(
        !chains[0].contains("delta-unit"),
        "first video buffer is not a keyframe: {}",
        chains[0]
    );
}

fn rejoin_quoted(args: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open = false;
    for a in args {
        if open {
            let last = out.last_mut().unwrap();
            last.push(' ');
            last.push_str(a.trim_end_matches('"'));
            open = !a.ends_with('"');
        } else if let Some(rest) = a.strip_prefix("location=\"") {
            open = !rest.ends_with('"');
            out.push(format!("location={}", rest.trim_end_matches('"')));
        } else {
            out.push(a);
        }
    }
    out
}

#[tokio::test]
async fn gstreamer_rtmp2src_receives_video_and_reaches_eos() {
    // rtmp2src drops media sent on message stream id 0: this only passes when the server sends
    // media on the stream id it returned from createStream.
    let live = Live::start("gst_rtmp2").await.unwrap();
    gstreamer_plays_60_video_buffers(&format!("rtmp2src location={}", live.rtmp_url())).await;
}

#[tokio::test]
async fn gstreamer_rtmpsrc_receives_video_and_reaches_eos() {
    let live = Live::start("gst_rtmp").await.unwrap();
    gstreamer_plays_60_video_buffers(&format!("rtmpsrc location=\"{} live=1\"", live.rtmp_url())).await;
}

#[tokio::test]
async fn ws_flv_starts_with_metadata_and_sequence_headers_then_a_keyframe() {
    let live = Live::start("ws_first").await.unwrap();
    let mut p = FlvPlayer::ws(&live.ws_url(), Duration::from_secs(10)).await.unwrap();
    let tags = p
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();
    let header = p.header().expect("FLV header");
    assert_eq!(header.flags, 0x05, "FLV header flags for audio+video");
    assert!(p.ws_messages >= 1);
    assert_eq!(
        tags[0].script_name().as_deref(),
        Some("onMetaData"),
        "first tag should be onMetaData: {}",
        summarize(&tags)
    );
    assert!(
        tags.iter().any(|t| t.is_video_seq_header()),
        "no AVC sequence header: {}",
        summarize(&tags)
    );
    assert!(
        tags.iter().any(|t| t.is_audio_seq_header()),
        "no AAC sequence header: {}",
        summarize(&tags)
    );
    let first_video = tags.last().unwrap();
    assert!(
        first_video.is_keyframe(),
        "first video frame after the sequence header is not a keyframe: {}",
        summarize(&tags)
    );
    // and the stream keeps flowing
    let more = p.read_for(Duration::from_secs(2)).await.unwrap();
    assert!(
        more.iter().filter(|t| t.is_video_frame()).count() >= 30,
        "video stalls over WS: {}",
        summarize(&more)
    );
}

#[tokio::test]
async fn http_flv_response_is_video_x_flv_with_default_cors_origin() {
    let live = Live::start("headers").await.unwrap();
    let resp = http::get(
        &live.flv_url(),
        &[("Origin", "http://example.test")],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("video/x-flv"),
        "headers {:?}",
        resp.headers
    );
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("*"),
        "headers {:?}",
        resp.headers
    );
    let mut p = FlvPlayer::from_http(&live.flv_url(), resp, std::time::Instant::now());
    let tags = p
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();
    assert_eq!(p.header().unwrap().flags, 0x05, "FLV header flags for audio+video");
    assert!(
        tags.last().unwrap().is_keyframe(),
        "first video frame not a keyframe: {}",
        summarize(&tags)
    );
}

#[tokio::test]
async fn http_flv_cors_origin_follows_config() {
    let live = Live::start_with(
        "cors",
        TestServer::builder().allow_origin("https://player.example.com"),
        |p| p,
    )
    .await
    .unwrap();
    let resp = http::get(
        &live.flv_url(),
        &[("Origin", "https://player.example.com")],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("access-control-allow-origin"),
        Some("https://player.example.com"),
        "headers {:?}",
        resp.headers
    );
}

#[tokio::test]
async fn flv_header_announces_only_the_tracks_present() {
    let live = Live::start_with("video_only", TestServer::builder(), |p| p.audio(false))
        .await
        .unwrap();
    for url in [live.flv_url(), live.ws_url()] {
        let mut p = if url.starts_with("ws") {
            FlvPlayer::ws(&url, Duration::from_secs(10)).await.unwrap()
        } else {
            FlvPlayer::http(&url, Duration::from_secs(10)).await.unwrap()
        };
        let tags = p
            .read_until(Duration::from_secs(10), |t| t.is_video_frame())
            .await
            .unwrap();
        assert_eq!(
            p.header().unwrap().flags,
            0x01,
            "{url}: FLV header flags for a video-only stream"
        );
        assert!(
            !tags.iter().any(|t| t.is_audio()),
            "{url}: audio tags in a video-only stream"
        );
    }
}

#[tokio::test]
async fn unknown_app_or_bad_path_is_not_served() {
    let server = TestServer::start().await.unwrap();
    let url = format!("http://127.0.0.1:{}/nosuchapp/x.flv", server.http_port);
    let (status, _) = http::get_text(&url, Duration::from_secs(5)).await.unwrap();
    assert!((400..500).contains(&status), "GET {url} answered {status}");
}

/// `http.threads`: connections on the main runtime (0, the default) or on serving threads
/// (one, or one per core) play the same, over HTTP-FLV and HLS.
#[tokio::test]
async fn http_flv_and_hls_play_with_any_number_of_serving_threads() {
    for threads in ["0", "1", "null"] {
        let live = Live::start_with(
            &format!("threads{threads}"),
            TestServer::builder().section_yaml("http", &format!("threads: {threads}")),
            |p| p,
        )
        .await
        .unwrap();
        let mut players = Vec::new();
        for _ in 0..4 {
            players.push(FlvPlayer::http(&live.flv_url(), Duration::from_secs(10)).await.unwrap());
        }
        for p in &mut players {
            let tags = p
                .read_until(Duration::from_secs(10), |t| t.is_video_frame())
                .await
                .unwrap_or_else(|e| panic!("threads: {threads}: {e:#}"));
            assert!(
                tags.last().unwrap().is_keyframe(),
                "threads: {threads}: first video frame not a keyframe: {}",
                summarize(&tags)
            );
        }
        let base = format!("http://127.0.0.1:{}/live/{}", live.server.http_port, live.name);
        let index = text_200(&format!("{base}/index.m3u8"), threads).await;
        let muxed = index
            .lines()
            .find(|l| l.starts_with("muxed.m3u8"))
            .expect("the muxed variant");
        let media = text_200(&format!("{base}/{muxed}"), threads).await;
        let segment = media
            .lines()
            .find(|l| !l.starts_with('#') && l.contains(".m4s"))
            .expect("a segment");
        let resp = http::get(&format!("{base}/{segment}"), &[], Duration::from_secs(15))
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "threads: {threads}: segment {segment}");
    }
}

/// The body of a GET of `url`, which must answer 200.
async fn text_200(url: &str, threads: &str) -> String {
    let (status, body) = http::get_text(url, Duration::from_secs(15)).await.unwrap();
    assert_eq!(status, 200, "threads: {threads}: {url}: {body}");
    body
}
