//! Modern codecs end to end, with the FFmpeg 9 of imageio-ffmpeg (`.tools/venv`): HEVC, AV1
//! and VP9 in enhanced RTMP, Opus in enhanced audio, published over RTMP and read back over
//! RTMP, HTTP-FLV and WS-FLV; legacy HEVC (FLV codec id 12) from a Rust publisher forwarded
//! byte for byte.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use ferrocast_tests::flv::{self, Tag};
use ferrocast_tests::modern::{self, decode, modern_ffmpeg, strip_ansi, DecodeReport};
use ferrocast_tests::player::{check_monotonic, summarize};
use ferrocast_tests::process::tail;
use ferrocast_tests::rtmp_client::RtmpClient;
use ferrocast_tests::{unique_name, FlvPlayer, TempDir, TestServer};

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// Media seconds each publisher sends: start-up, going live, then ~3 s of reading.
const PUBLISH_SECS: u32 = 12;
/// How long ffmpeg / the WS player read.
const READ_SECS: u32 = 2;

/// The FourCC of a codec in enhanced RTMP; None where FFmpeg keeps the legacy form.
fn video_fourcc(codec: &str) -> Option<[u8; 4]> {
    match codec {
        "hevc" => Some(*b"hvc1"),
        "av1" => Some(*b"av01"),
        "vp9" => Some(*b"vp09"),
        _ => None,
    }
}

fn audio_fourcc(codec: &str) -> Option<[u8; 4]> {
    match codec {
        "opus" => Some(*b"Opus"),
        _ => None,
    }
}

/// Checks what a player that joined a live stream received first: the sequence headers before
/// any frame, the first video frame a keyframe in the codec's form (enhanced: FourCC, frame
/// type 1, packet type CodedFrames or CodedFramesX) from a later GOP than the first (the player
/// joined more than a GOP into the stream), timestamps never going back.
fn assert_late_joiner_start(what: &str, tags: &[Tag], video: &str, audio: &str) {
    let ctx = || format!("{what}: {} tags: {}", tags.len(), summarize(tags));
    let first_frame = tags
        .iter()
        .position(Tag::is_video_frame)
        .unwrap_or_else(|| panic!("no video frame: {}", ctx()));
    let seq = tags
        .iter()
        .position(Tag::is_video_seq_header)
        .unwrap_or_else(|| panic!("no video sequence header: {}", ctx()));
    assert!(
        seq < first_frame,
        "video sequence header after the first frame: {}",
        ctx()
    );
    let key = &tags[first_frame];
    assert!(
        key.is_keyframe(),
        "first video frame is not a keyframe: {}: {}",
        key.describe(),
        ctx()
    );
    match video_fourcc(video) {
        Some(fourcc) => {
            for t in [&tags[seq], key] {
                assert!(t.is_ex_video(), "{} is not enhanced: {}", t.describe(), ctx());
                assert_eq!(t.video_fourcc(), Some(fourcc), "{}: {}", t.describe(), ctx());
            }
            let b0 = key.data[0];
            assert!(
                b0 & 0x80 != 0 && (b0 >> 4) & 7 == 1 && matches!(b0 & 0x0f, 1 | 3),
                "first video frame header byte {b0:#04x}: {}",
                ctx()
            );
        }
        None => {
            assert_eq!(key.video_codec_id(), Some(7), "{}: {}", key.describe(), ctx());
            assert_eq!(&key.data[..2], &[0x17, 0x01], "{}", ctx());
        }
    }
    let first_audio = tags
        .iter()
        .position(Tag::is_audio_frame)
        .unwrap_or_else(|| panic!("no audio frame: {}", ctx()));
    let audio_seq = tags
        .iter()
        .position(Tag::is_audio_seq_header)
        .unwrap_or_else(|| panic!("no audio sequence header: {}", ctx()));
    assert!(
        audio_seq < first_audio,
        "audio sequence header after the first frame: {}",
        ctx()
    );
    match audio_fourcc(audio) {
        Some(fourcc) => {
            for t in [&tags[audio_seq], &tags[first_audio]] {
                assert!(t.is_ex_audio(), "{} is not enhanced audio: {}", t.describe(), ctx());
                assert_eq!(t.audio_fourcc(), Some(fourcc), "{}: {}", t.describe(), ctx());
            }
        }
        None => assert_eq!(tags[first_audio].audio_format(), Some(10), "{}", ctx()),
    }
    // (Past 500 ms: with B-frames the second keyframe's decoding time is a frame or two
    // before 1000 ms.)
    assert!(
        key.timestamp >= 500,
        "first video frame @{} ms: the player did not join after the first GOP: {}",
        key.timestamp,
        ctx()
    );
    if let Err(e) = check_monotonic(tags) {
        panic!("{what}: {e}");
    }
}

/// The server's "video track" / "audio track" log lines for `name` name the codec (and, where
/// the sequence header carries it, the picture size).
fn assert_track_logs(server: &TestServer, name: &str, video: &str, audio: &str) {
    let log = strip_ansi(&server.logs());
    let stream = format!("stream=/live/{name} ");
    let line = |kind: &str| {
        log.lines()
            .find(|l| l.contains(kind) && l.contains(&stream))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no {kind:?} line for {name} in the server log:\n{}", tail(&log, 4000)))
    };
    let v = line("video track");
    assert!(v.contains(&format!("codec=\"{video}\"")), "{v}");
    // A VP9 configuration record has no picture size (the server learns it from keyframes).
    if video != "vp9" {
        assert!(v.contains("width=640") && v.contains("height=360"), "{v}");
    }
    let a = line("audio track");
    assert!(a.contains(&format!("codec=\"{audio}\"")), "{a}");
    assert!(a.contains("sample_rate=48000") && a.contains("channels=1"), "{a}");
}

/// Publishes `video` + `audio` with FFmpeg 9 over RTMP, then reads it back at once over RTMP
/// and HTTP-FLV (FFmpeg 9 decoding 2 s) and WS-FLV (2.5 s of tags, decoded from a file), and
/// checks the late joiners' first tags on HTTP-FLV and WS-FLV and the server's track logs.
async fn publish_and_read_back(video: &'static str, audio: &'static str) {
    let _slot = modern::encoder_slot().await;
    let ffmpeg = modern_ffmpeg();
    let server = TestServer::start().await.unwrap();
    let name = unique_name(&format!("{video}_{audio}"));
    let dir = TempDir::new("ferrocast-codecs").unwrap();
    let mut publisher = modern::start_publisher(&server.rtmp_url(&name), video, audio, PUBLISH_SECS, &dir).unwrap();
    // Join late: once the stream is past its first GOP (a keyframe at 500 ms or later has been
    // published), so the readers start from a later keyframe out of the GOP cache.
    let past_first_gop = async {
        let mut watcher = server.http_player(&name).await?;
        watcher
            .read_until(SECS(20), |t| {
                t.is_video_frame() && t.is_keyframe() && t.timestamp >= 500
            })
            .await
    };
    if let Err(e) = past_first_gop.await {
        let st = publisher.try_status();
        panic!(
            "{video}+{audio} did not get past its first GOP: {e:#}\npublisher {st:?}:\n{}",
            tail(&publisher.log_text(), 3000)
        );
    }
    let (rtmp_url, flv_url) = (server.rtmp_url(&name), server.flv_url(&name));
    let rtmp = decode(&ffmpeg, &rtmp_url, Some(READ_SECS), 20);
    let http = decode(&ffmpeg, &flv_url, Some(READ_SECS), 20);
    let ws = async {
        let mut p = FlvPlayer::ws(&server.ws_url(&name), SECS(10)).await?;
        let tags = p.read_for(Duration::from_millis(2500)).await?;
        let header = p.header().map(|h| h.flags).unwrap_or(0);
        anyhow::Ok((header, tags))
    };
    let http_start = async {
        let mut p = server.http_player(&name).await?;
        let (mut audio_seen, mut video_seen) = (false, false);
        p.read_until(SECS(10), |t| {
            audio_seen |= t.is_audio_frame();
            video_seen |= t.is_video_frame();
            audio_seen && video_seen
        })
        .await
    };
    let (rtmp, http, ws, http_start) = tokio::join!(rtmp, http, ws, http_start);

    let what = |via: &str| format!("{video}+{audio} read back over {via}");
    let (rtmp, http) = (rtmp.unwrap(), http.unwrap());
    rtmp.assert_decoded(&what("RTMP"), video, Some((640, 360)), audio, 20);
    http.assert_decoded(&what("HTTP-FLV"), video, Some((640, 360)), audio, 20);

    let (flags, ws_tags) = ws.unwrap();
    eprintln!(
        "{video}+{audio}: RTMP {} frames ({:?}), HTTP-FLV {} frames ({:?}), WS-FLV {} tags: {}",
        rtmp.frames,
        rtmp.video.as_ref().map(|v| &v.line),
        http.frames,
        http.audio.as_ref().map(|a| &a.line),
        ws_tags.len(),
        summarize(&ws_tags[..ws_tags.len().min(8)])
    );
    assert_late_joiner_start(&what("WS-FLV"), &ws_tags, video, audio);
    let file = dir.join("ws.flv");
    std::fs::write(&file, flv::encode_file(flags, &ws_tags)).unwrap();
    let ws_report: DecodeReport = decode(&ffmpeg, &file.display().to_string(), None, 20).await.unwrap();
    ws_report.assert_decoded(&what("WS-FLV (recorded)"), video, Some((640, 360)), audio, 20);

    assert_late_joiner_start(&what("HTTP-FLV"), &http_start.unwrap(), video, audio);

    assert_track_logs(&server, &name, video, audio);
    assert!(
        publisher.is_running(),
        "publisher ended early:\n{}",
        tail(&publisher.log_text(), 3000)
    );
    publisher.kill_and_wait().await;
}

#[tokio::test]
async fn hevc_aac_over_rtmp_http_flv_and_ws_flv() {
    publish_and_read_back("hevc", "aac").await;
}

#[tokio::test]
async fn av1_aac_over_rtmp_http_flv_and_ws_flv() {
    publish_and_read_back("av1", "aac").await;
}

#[tokio::test]
async fn vp9_aac_over_rtmp_http_flv_and_ws_flv() {
    publish_and_read_back("vp9", "aac").await;
}

#[tokio::test]
async fn h264_opus_over_rtmp_http_flv_and_ws_flv() {
    publish_and_read_back("h264", "opus").await;
}

#[tokio::test]
async fn hevc_opus_over_rtmp_http_flv_and_ws_flv() {
    publish_and_read_back("hevc", "opus").await;
}

/// An enhanced HEVC video tag body in the legacy form with FLV codec id 12: frame type and
/// codec id, packet type (0 sequence header, 1 NALUs, 2 end of sequence), composition time,
/// then the same payload. None for packets the legacy form has no place for (metadata).
fn to_legacy_hevc(tag: &Tag) -> Option<Bytes> {
    let d = &tag.data;
    assert!(
        tag.is_ex_video() && tag.video_fourcc() == Some(*b"hvc1"),
        "{}",
        tag.describe()
    );
    let frame_type = (d[0] >> 4) & 0x07;
    let (packet_type, cts, payload): (u8, [u8; 3], &[u8]) = match d[0] & 0x0f {
        0 => (0, [0; 3], &d[5..]),
        1 => (1, [d[5], d[6], d[7]], &d[8..]),
        2 => (2, [0; 3], &d[5..]),
        3 => (1, [0; 3], &d[5..]),
        _ => return None,
    };
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8((frame_type << 4) | 12);
    b.put_u8(packet_type);
    b.put_slice(&cts);
    b.put_slice(payload);
    Some(b.freeze())
}

fn first_difference(sent: &[(u32, Bytes)], got: &[(u32, Bytes)]) -> String {
    for (i, (s, g)) in sent.iter().zip(got).enumerate() {
        if s != g {
            return format!(
                "video tag #{i} differs: sent @{} {} bytes {:02x?}..., received @{} {} bytes {:02x?}...",
                s.0,
                s.1.len(),
                &s.1[..s.1.len().min(12)],
                g.0,
                g.1.len(),
                &g.1[..g.1.len().min(12)]
            );
        }
    }
    format!("{} video tags sent, {} received", sent.len(), got.len())
}

#[tokio::test]
async fn legacy_hevc_codec_id_12_is_forwarded_byte_for_byte() {
    // A 3 s HEVC + AAC stream from FFmpeg 9 (enhanced form), rewritten to codec id 12.
    let dir = TempDir::new("ferrocast-legacy-hevc").unwrap();
    let source = dir.join("hevc.flv");
    {
        let _slot = modern::encoder_slot().await;
        modern::encode_file("hevc", Some("aac"), 3, &source).await.unwrap();
    }
    let (_, tags) = flv::parse_all(&std::fs::read(&source).unwrap()).unwrap();
    let mut media: Vec<(u8, u32, Bytes)> = Vec::new();
    for t in &tags {
        if t.is_video() {
            if let Some(body) = to_legacy_hevc(t) {
                media.push((flv::TAG_VIDEO, t.timestamp, body));
            }
        } else if t.is_audio() {
            media.push((flv::TAG_AUDIO, t.timestamp, t.data.clone()));
        }
    }
    let sent: Vec<(u32, Bytes)> = media
        .iter()
        .filter(|m| m.0 == flv::TAG_VIDEO)
        .map(|m| (m.1, m.2.clone()))
        .collect();
    assert!(
        sent[0].1[..2] == [0x1c, 0x00],
        "the stream starts with a sequence header"
    );
    assert!(sent.len() >= 80, "only {} video tags in 3 s", sent.len());

    // Players join first and wait for the publisher: they see the stream from its first tag.
    let server = TestServer::start().await.unwrap();
    let name = unique_name("legacy_hevc");
    let http_player = server.http_player(&name);
    let rtmp_player = async {
        let mut c = RtmpClient::connect(server.rtmp_port, "live").await?;
        c.play(&name).await?;
        anyhow::Ok(c)
    };
    // The HTTP response head comes only once the stream starts, so open both concurrently
    // with the publisher.
    let publish = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut c = RtmpClient::connect(server.rtmp_port, "live").await?;
        c.publish(&name).await?;
        c.send_metadata(vec![
            ("width", 640.0.into()),
            ("height", 360.0.into()),
            ("framerate", 30.0.into()),
            ("videocodecid", 12.0.into()),
            ("audiocodecid", 10.0.into()),
        ])
        .await?;
        let start = Instant::now();
        for (type_id, ts, body) in &media {
            // Real-time pace.
            let due = start + Duration::from_millis(u64::from(*ts));
            tokio::time::sleep_until(due.into()).await;
            c.send_media(*type_id, *ts, body.clone()).await?;
        }
        anyhow::Ok(c)
    };
    let (http_player, rtmp_player, publisher) = tokio::join!(http_player, rtmp_player, publish);
    let mut http_player = http_player.unwrap();
    let mut rtmp_player = rtmp_player.unwrap();
    let mut publisher = publisher.unwrap();

    let want = sent.len();
    let http_read = async {
        let mut got = Vec::new();
        let deadline = Instant::now() + SECS(10);
        while got.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match http_player.next_tag_within(left).await? {
                Some(t) if t.is_video() => got.push((t.timestamp, t.data.clone())),
                Some(_) => {}
                None => break,
            }
        }
        anyhow::Ok(got)
    };
    let rtmp_read = async {
        let mut got = Vec::new();
        let deadline = Instant::now() + SECS(10);
        while got.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            match rtmp_player.next_media(left).await? {
                Some(m) if m.type_id == flv::TAG_VIDEO => got.push((m.timestamp, m.payload)),
                Some(_) => {}
                None => break,
            }
        }
        anyhow::Ok(got)
    };
    let (http_got, rtmp_got) = tokio::join!(http_read, rtmp_read);
    let _ = publisher.unpublish().await;

    for (via, got) in [("HTTP-FLV", http_got.unwrap()), ("RTMP", rtmp_got.unwrap())] {
        assert!(
            got == sent,
            "legacy HEVC over {via} not forwarded byte for byte: {}",
            first_difference(&sent, &got)
        );
    }
    let log = strip_ansi(&server.logs());
    let track = log
        .lines()
        .find(|l| l.contains("video track") && l.contains(&name))
        .unwrap_or_else(|| panic!("no video track line in the server log:\n{}", tail(&log, 3000)));
    assert!(
        track.contains("codec=\"hevc\"") && track.contains("width=640") && track.contains("height=360"),
        "{track}"
    );
}
