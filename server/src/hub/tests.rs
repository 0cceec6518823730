//! Hub behaviour with paused tokio time: fan-out, GOP start, grace periods, slow readers.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::*;
use crate::codec::amf0::Amf0Value;

/// Settings for hub tests (shared with the other hub modules' tests).
pub(super) fn settings() -> HubSettings {
    HubSettings {
        publisher_grace: Duration::from_secs(10),
        play_wait: Duration::from_secs(30),
        queue_frames: 16,
        queue_bytes: 32 << 20,
        reader: ReaderLimits {
            max_skips: 3,
            window: Duration::from_secs(30),
            coalesce: Duration::ZERO,
        },
        apps: vec![AppConfig::default()],
        waiting: WaitingLimits::UNLIMITED,
    }
}

fn who(id: u64) -> PublisherInfo {
    PublisherInfo {
        session_id: id,
        protocol: "rtmp",
        remote: "127.0.0.1:1".into(),
        started: SystemTime::now(),
    }
}

fn key() -> StreamKey {
    StreamKey::new("live", "cam").unwrap()
}

const AVC_HEADER: &[u8] = b"\x17\x00\x00\x00\x00\x01\x64\x00\x1f";
const AAC_HEADER: &[u8] = b"\xaf\x00\x12\x10";

fn keyframe(p: &Publisher, ts: u32) {
    p.push_video(ts, Bytes::from_static(b"\x17\x01\x00\x00\x00key"))
        .unwrap();
}
fn inter(p: &Publisher, ts: u32) {
    p.push_video(ts, Bytes::from_static(b"\x27\x01\x00\x00\x00inter"))
        .unwrap();
}
fn audio(p: &Publisher, ts: u32) {
    p.push_audio(ts, Bytes::from_static(b"\xaf\x01\x21")).unwrap();
}
fn start(p: &Publisher) {
    p.push_metadata(&[Amf0Value::object([
        ("width", Amf0Value::Number(1280.0)),
        ("audiocodecid", Amf0Value::Number(10.0)),
    ])]);
    p.push_video(0, Bytes::from_static(AVC_HEADER)).unwrap();
    p.push_audio(0, Bytes::from_static(AAC_HEADER)).unwrap();
}

async fn drain(sub: &mut Subscriber) -> Vec<Arc<MediaFrame>> {
    let mut v = Vec::new();
    while let Ok(Some(f)) = sub.try_recv() {
        v.push(f);
    }
    v
}

#[tokio::test(start_paused = true)]
async fn late_joiner_starts_with_headers_then_keyframe() {
    let hub = Hub::new(settings());
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    inter(&p, 10);
    keyframe(&p, 33);
    audio(&p, 40);
    inter(&p, 66);
    let mut sub = hub.subscribe(&key()).unwrap();
    let got = drain(&mut sub).await;
    let kinds: Vec<_> = got.iter().map(|f| (f.kind, f.timestamp, f.keyframe)).collect();
    assert_eq!(
        kinds,
        vec![
            (FrameKind::Data, 0, false),
            (FrameKind::Video, 0, false),
            (FrameKind::Audio, 0, false),
            (FrameKind::Video, 33, true),
            (FrameKind::Audio, 40, false),
            (FrameKind::Video, 66, false),
        ]
    );
    assert!(got[1].is_sequence_header() && got[2].is_sequence_header());
    inter(&p, 99);
    assert_eq!(
        sub.recv().await.unwrap().timestamp,
        99,
        "then live with no gap or duplicate"
    );
}

#[tokio::test(start_paused = true)]
async fn readers_share_one_payload_and_one_encoding() {
    let hub = Hub::new(settings());
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    let mut a = hub.subscribe(&key()).unwrap();
    let mut b = hub.subscribe(&key()).unwrap();
    drain(&mut a).await;
    drain(&mut b).await;
    keyframe(&p, 10);
    let fa = a.recv().await.unwrap();
    let fb = b.recv().await.unwrap();
    assert!(Arc::ptr_eq(&fa, &fb), "same frame object");
    assert_eq!(fa.flv_tag().as_ptr(), fb.flv_tag().as_ptr(), "same encoded FLV tag");
    assert_eq!(
        fa.shared_rtmp_headers().first().as_ptr(),
        fb.shared_rtmp_headers().first().as_ptr(),
        "same RTMP chunk headers"
    );
}

#[tokio::test(start_paused = true)]
async fn reader_without_gop_waits_for_keyframe() {
    let mut s = settings();
    s.apps[0].gop_cache = false;
    let hub = Hub::new(s);
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    keyframe(&p, 0);
    let mut sub = hub.subscribe(&key()).unwrap();
    assert_eq!(drain(&mut sub).await.len(), 3, "only metadata and sequence headers");
    inter(&p, 33);
    keyframe(&p, 66);
    let f = sub.recv().await.unwrap();
    assert_eq!(
        (f.timestamp, f.keyframe),
        (66, true),
        "inter frame before the keyframe skipped"
    );
}

#[tokio::test(start_paused = true)]
async fn second_publisher_is_refused() {
    let hub = Hub::new(settings());
    let _p = hub.publish(&key(), who(1)).unwrap();
    assert_eq!(hub.publish(&key(), who(2)).err(), Some(HubError::AlreadyPublishing(1)));
}

#[tokio::test(start_paused = true)]
async fn republish_within_grace_continues_for_readers() {
    let hub = Hub::new(settings());
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    keyframe(&p, 5000);
    let mut sub = hub.subscribe(&key()).unwrap();
    drain(&mut sub).await;
    drop(p);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let p2 = hub.publish(&key(), who(2)).expect("slot free again");
    start(&p2);
    keyframe(&p2, 0);
    let frames = drain(&mut sub).await;
    let key_ts = frames.iter().find(|f| f.keyframe).unwrap().timestamp;
    assert!(
        key_ts > 5000,
        "timestamps keep increasing across the reconnect: {key_ts}"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(hub.stream(&key()).is_some(), "a live stream is never reaped");
}

#[tokio::test(start_paused = true)]
async fn readers_end_after_grace_without_publisher() {
    let hub = Hub::new(settings());
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    let mut sub = hub.subscribe(&key()).unwrap();
    drain(&mut sub).await;
    drop(p);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(matches!(sub.try_recv(), Ok(None)), "still attached within grace");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sub.recv().await.err(), Some(ReaderEnd::StreamEnded));
    assert!(hub.stream(&key()).is_none());
}

#[tokio::test(start_paused = true)]
async fn player_waits_for_publisher_then_plays() {
    let hub = Hub::new(settings());
    let mut sub = hub.subscribe(&key()).unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    keyframe(&p, 0);
    let got = drain(&mut sub).await;
    assert_eq!(got.len(), 4);
    assert!(got[3].keyframe);
}

#[tokio::test(start_paused = true)]
async fn waiting_player_gives_up_after_play_wait() {
    let hub = Hub::new(settings());
    let mut sub = hub.subscribe(&key()).unwrap();
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(sub.recv().await.err(), Some(ReaderEnd::StreamEnded));
}

#[tokio::test(start_paused = true)]
async fn lagging_reader_skips_to_next_keyframe_and_counts() {
    let hub = Hub::new(settings());
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    keyframe(&p, 0);
    let mut sub = hub.subscribe(&key()).unwrap();
    drain(&mut sub).await;
    for i in 1..40 {
        audio(&p, i * 10);
        inter(&p, i * 10 + 1);
    }
    keyframe(&p, 1000);
    audio(&p, 1010);
    let f = sub.recv().await.unwrap();
    assert_eq!(
        (f.timestamp, f.keyframe),
        (1000, true),
        "resumes at the keyframe, no stale audio"
    );
    assert_eq!(sub.recv().await.unwrap().timestamp, 1010);
    assert!(sub.dropped() >= 60, "dropped {}", sub.dropped());
    assert!(hub.stream(&key()).unwrap().stats.frames_dropped.load(Ordering::Relaxed) >= 60);
}

#[tokio::test(start_paused = true)]
async fn reader_that_stays_behind_is_disconnected() {
    let hub = Hub::new(settings());
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    let mut sub = hub.subscribe(&key()).unwrap();
    drain(&mut sub).await;
    let mut end = None;
    for round in 0..10 {
        for i in 0..40 {
            inter(&p, round * 1000 + i);
        }
        keyframe(&p, round * 1000 + 500);
        match sub.recv().await {
            Ok(_) => {}
            Err(e) => {
                end = Some(e);
                break;
            }
        }
    }
    assert_eq!(end, Some(ReaderEnd::TooSlow(4)));
}

#[tokio::test(start_paused = true)]
async fn memory_stays_bounded_without_readers() {
    let mut s = settings();
    s.apps[0].gop_max_frames = 50;
    let hub = Hub::new(s);
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    let _idle_reader = hub.subscribe(&key()).unwrap();
    keyframe(&p, 0);
    for i in 0..10_000 {
        inter(&p, i);
    }
    let stream = hub.stream(&key()).unwrap();
    assert_eq!(stream.gop_bytes(), 0, "overlong GOP dropped");
    assert!(Arc::strong_count(&stream) < 10);
}

#[test]
fn names_are_limited_to_a_safe_set() {
    for good in ["cam", "Cam_1", "a-b.c", "x".repeat(128).as_str()] {
        assert!(is_valid_name(good), "{good}");
    }
    for bad in ["", ".", "..", "a/b", "a b", "a?b", "ü", "x".repeat(129).as_str()] {
        assert!(!is_valid_name(bad), "{bad}");
    }
}

#[tokio::test]
async fn unknown_app_is_refused() {
    let hub = Hub::new(settings());
    assert_eq!(hub.key("nope", "cam").err(), Some(HubError::UnknownApp));
    assert_eq!(hub.key("live", "a/b").err(), Some(HubError::BadName));
}

// Enhanced RTMP: hvc1 sequence start, HDR metadata, and a multitrack (OneTrack, track 1) keyframe.
const HEVC_START: &[u8] = b"\x90hvc1\x01\x02\x03";
const HEVC_HDR_METADATA: &[u8] = b"\x94hvc1\x02\x00\x0bcolorInfo";
const HEVC_KEY: &[u8] = b"\x91hvc1\x00\x00\x00key";
const MULTITRACK_START: &[u8] = b"\x96\x00hvc1\x01cfg";
const MULTITRACK_KEY: &[u8] = b"\x96\x01hvc1\x01key";

#[tokio::test(start_paused = true)]
async fn enhanced_side_headers_reach_late_joiners_and_multitrack_only_those_who_ask() {
    let hub = Hub::new(settings());
    let p = hub.publish(&key(), who(1)).unwrap();
    p.push_video(0, Bytes::from_static(HEVC_START)).unwrap();
    p.push_video(0, Bytes::from_static(HEVC_HDR_METADATA)).unwrap();
    p.push_video(0, Bytes::from_static(MULTITRACK_START)).unwrap();
    p.push_video(10, Bytes::from_static(HEVC_KEY)).unwrap();
    p.push_video(10, Bytes::from_static(MULTITRACK_KEY)).unwrap();

    let mut plain = hub.subscribe(&key()).unwrap();
    let got: Vec<_> = drain(&mut plain).await.iter().map(|f| f.payload.clone()).collect();
    assert_eq!(
        got,
        vec![
            Bytes::from_static(HEVC_START),
            Bytes::from_static(HEVC_HDR_METADATA),
            Bytes::from_static(HEVC_KEY)
        ]
    );

    let mut multi = hub
        .subscribe_with(&key(), SubscribeOptions { multitrack: true })
        .unwrap();
    let got: Vec<_> = drain(&mut multi).await.iter().map(|f| f.payload.clone()).collect();
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got.contains(&Bytes::from_static(MULTITRACK_START)) && got.contains(&Bytes::from_static(MULTITRACK_KEY)));

    p.push_video(20, Bytes::from_static(MULTITRACK_KEY)).unwrap();
    p.push_video(20, Bytes::from_static(HEVC_KEY)).unwrap();
    assert_eq!(
        plain.recv().await.unwrap().payload,
        Bytes::from_static(HEVC_KEY),
        "plain reader skips multitrack"
    );
    assert_eq!(multi.recv().await.unwrap().payload, Bytes::from_static(MULTITRACK_KEY));
    let info = hub.stream(&key()).unwrap().info();
    assert_eq!(info.video_codec, Some(crate::codec::media::FourCc::HEVC));
}

/// `packet` (an enhanced-RTMP video message) wrapped in one ModEx TimestampOffsetNano, as
/// enhanced-RTMP v2 encoders send sub-millisecond timing.
fn modex_wrapped(packet: &[u8], nanos: u32) -> Bytes {
    let mut p = vec![(packet[0] & 0xf0) | 7, 2];
    p.extend_from_slice(&nanos.to_be_bytes()[1..]);
    p.push(packet[0] & 0x0f);
    p.extend_from_slice(&packet[1..]);
    Bytes::from(p)
}

#[tokio::test(start_paused = true)]
async fn modex_wrapped_keyframes_start_late_joiners() {
    let hub = Hub::new(settings());
    let p = hub.publish(&key(), who(1)).unwrap();
    let start = modex_wrapped(include_bytes!("../codec/testdata/hevc_1280x720_main.bin"), 0);
    let key_frame = modex_wrapped(HEVC_KEY, 500_000);
    let inter_frame = modex_wrapped(b"\xa1hvc1\x00\x00\x00inter", 250_000);
    let metadata_late = modex_wrapped(HEVC_HDR_METADATA, 2);
    p.push_video(0, start.clone()).unwrap();
    p.push_video(0, modex_wrapped(HEVC_HDR_METADATA, 1)).unwrap();
    p.push_video(5, metadata_late.clone()).unwrap();
    p.push_video(10, key_frame.clone()).unwrap();
    p.push_video(43, inter_frame.clone()).unwrap();

    let mut sub = hub.subscribe(&key()).unwrap();
    let got = drain(&mut sub).await;
    let payloads: Vec<_> = got.iter().map(|f| f.payload.clone()).collect();
    // Bytes reach players as sent; the newer metadata of the same track replaced the older.
    assert_eq!(payloads, vec![start, metadata_late, key_frame, inter_frame]);
    assert!(got[2].keyframe, "the wrapped keyframe anchors the GOP");
    let info = hub.stream(&key()).unwrap().info();
    let video = info.video.expect("codec info read through ModEx");
    assert_eq!((video.codec, video.width, video.height), ("hevc", 1280, 720));
}

#[tokio::test(start_paused = true)]
async fn ingest_bitrate_and_frame_rate_are_measured() {
    let hub = Hub::new(settings());
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    for i in 0..100u32 {
        // 30 fps of 1 KB frames: 240 kbit/s
        let mut frame = b"\x27\x01\x00\x00\x00".to_vec();
        frame.resize(1000, 0);
        p.push_video(i * 1000 / 30, Bytes::from(frame)).unwrap();
        tokio::time::advance(Duration::from_micros(33_333)).await;
    }
    let info = hub.stream(&key()).unwrap().info();
    assert!(
        (info.measured_fps.unwrap() - 30.0).abs() < 0.5,
        "{:?}",
        info.measured_fps
    );
    assert!((230..=250).contains(&info.bitrate_kbps), "{}", info.bitrate_kbps);
}

fn coalescing(ms: u64) -> HubSettings {
    let mut s = settings();
    s.queue_frames = 256;
    s.reader.coalesce = Duration::from_millis(ms);
    s
}

#[tokio::test(start_paused = true)]
async fn coalescing_reader_gets_first_batch_at_once_then_one_batch_per_interval() {
    let hub = Hub::new(coalescing(100));
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    keyframe(&p, 0);
    let mut sub = hub.subscribe(&key()).unwrap();
    let t0 = tokio::time::Instant::now();
    let mut got = Vec::new();
    sub.recv_batch(&mut got, 64).await.unwrap();
    assert_eq!(got.len(), 4, "headers and the keyframe at once");
    assert_eq!(t0.elapsed(), Duration::ZERO);

    // A frame every 20 ms: the next batch is taken 100 ms after the first and holds the four
    // frames published meanwhile, in order.
    let publish = async {
        for i in 1..=4u32 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            inter(&p, i * 20);
        }
    };
    let mut batch = Vec::new();
    let ((), res) = tokio::join!(publish, sub.recv_batch(&mut batch, 64));
    res.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    let ts: Vec<u32> = batch.iter().map(|f| f.timestamp).collect();
    assert_eq!(ts, vec![20, 40, 60, 80]);
}

#[tokio::test(start_paused = true)]
async fn a_coalescing_reader_takes_a_burst_when_it_comes_near_the_end_of_its_pause() {
    let hub = Hub::new(coalescing(100));
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    keyframe(&p, 0);
    let mut sub = hub.subscribe(&key()).unwrap();
    let t0 = tokio::time::Instant::now();
    let mut got = Vec::new();
    sub.recv_batch(&mut got, 64).await.unwrap();
    // A publisher whose reads are coalesced hands over a burst about a pause later: the
    // reader takes it then, not at the next tick of a timer of its own.
    let publish = async {
        tokio::time::sleep(Duration::from_millis(90)).await;
        p.defer_wakeups();
        inter(&p, 40);
        audio(&p, 60);
        inter(&p, 80);
        p.wake_readers();
    };
    let mut batch = Vec::new();
    let ((), res) = tokio::join!(publish, sub.recv_batch(&mut batch, 64));
    res.unwrap();
    assert_eq!(t0.elapsed(), Duration::from_millis(90));
    assert_eq!(batch.iter().map(|f| f.timestamp).collect::<Vec<_>>(), vec![40, 60, 80]);
}

#[tokio::test(start_paused = true)]
async fn deferred_wake_ups_hand_a_burst_to_readers_at_once() {
    let hub = Hub::new(settings());
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    keyframe(&p, 0);
    let mut sub = hub.subscribe(&key()).unwrap();
    let mut got = Vec::new();
    sub.recv_batch(&mut got, 64).await.unwrap();
    let mut batch = Vec::new();
    {
        let recv = sub.recv_batch(&mut batch, 64);
        tokio::pin!(recv);
        assert!(futures_util::poll!(recv.as_mut()).is_pending());
        p.defer_wakeups();
        inter(&p, 40);
        audio(&p, 60);
        assert!(
            futures_util::poll!(recv.as_mut()).is_pending(),
            "not woken while deferred"
        );
        p.wake_readers();
        recv.await.unwrap();
    }
    assert_eq!(batch.iter().map(|f| f.timestamp).collect::<Vec<_>>(), vec![40, 60]);
}

#[tokio::test(start_paused = true)]
async fn a_reader_without_coalescing_takes_each_frame_when_it_is_published() {
    let hub = Hub::new(coalescing(100));
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    keyframe(&p, 0);
    let mut sub = hub.subscribe(&key()).unwrap().without_coalescing();
    let mut got = Vec::new();
    sub.recv_batch(&mut got, 64).await.unwrap();
    let t0 = tokio::time::Instant::now();
    let publish = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        inter(&p, 20);
    };
    let mut batch = Vec::new();
    let ((), res) = tokio::join!(publish, sub.recv_batch(&mut batch, 64));
    res.unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::from_millis(20),
        "taken when published, not after the pause"
    );
    assert_eq!(batch.iter().map(|f| f.timestamp).collect::<Vec<_>>(), vec![20]);
}

#[tokio::test(start_paused = true)]
async fn coalescing_never_delays_a_backlog_that_fills_batches() {
    let hub = Hub::new(coalescing(100));
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    keyframe(&p, 0);
    for i in 1..40u32 {
        inter(&p, i * 33);
    }
    let mut sub = hub.subscribe(&key()).unwrap();
    let t0 = tokio::time::Instant::now();
    let mut got = Vec::new();
    while got.len() < 43 {
        sub.recv_batch(&mut got, 8).await.unwrap();
    }
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "full batches are followed at once by the next"
    );
    assert_eq!(got.last().unwrap().timestamp, 39 * 33);
}

#[tokio::test(start_paused = true)]
async fn coalescing_reader_gets_last_frames_before_the_end() {
    let mut s = coalescing(100);
    s.publisher_grace = Duration::ZERO;
    let hub = Hub::new(s);
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    keyframe(&p, 0);
    let mut sub = hub.subscribe(&key()).unwrap();
    let mut got = Vec::new();
    sub.recv_batch(&mut got, 64).await.unwrap();
    inter(&p, 33);
    inter(&p, 66);
    drop(p);
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut last = Vec::new();
    sub.recv_batch(&mut last, 64).await.unwrap();
    assert_eq!(last.iter().map(|f| f.timestamp).collect::<Vec<_>>(), vec![33, 66]);
    assert_eq!(sub.recv_batch(&mut last, 64).await.err(), Some(ReaderEnd::StreamEnded));
}

#[tokio::test(start_paused = true)]
async fn claim_refuses_a_stream_reaped_after_lookup_and_publish_retries() {
    let hub = Hub::new(settings());
    let p = hub.publish(&key(), who(1)).unwrap();
    let mut player = hub.subscribe(&key()).unwrap();
    drop(p);
    // A second publisher looked the stream up (the first half of `publish`) ...
    let stale = hub.stream(&key()).unwrap();
    // ... then the grace ran out and the reaper removed it before the claim.
    tokio::time::sleep(Duration::from_secs(11)).await;
    assert!(hub.stream(&key()).is_none(), "reaped");
    assert!(
        matches!(stale.claim(who(2)), Err(ClaimError::Ended)),
        "an ended stream cannot be published into"
    );
    assert_eq!(player.recv().await.err(), Some(ReaderEnd::StreamEnded));
    // `publish` looks up again and gets a fresh stream that new players do see.
    let p = hub.publish(&key(), who(2)).unwrap();
    let mut player = hub.subscribe(&key()).unwrap();
    start(&p);
    keyframe(&p, 10);
    let got = drain(&mut player).await;
    assert!(got.iter().any(|f| f.keyframe), "frames reach the new stream's players");
}

#[tokio::test(start_paused = true)]
async fn ring_holds_nothing_without_readers_and_is_bounded_in_bytes() {
    let mut s = settings();
    s.queue_frames = 512;
    s.queue_bytes = 1 << 20;
    let hub = Hub::new(s);
    let p = hub.publish(&key(), who(1)).unwrap();
    start(&p);
    let big = || {
        let mut v = vec![0x27u8, 1, 0, 0, 0];
        v.resize(100_000, 0);
        Bytes::from(v)
    };
    for i in 0..50 {
        p.push_video(i, big()).unwrap();
    }
    let stream = hub.stream(&key()).unwrap();
    assert_eq!(stream.ring_bytes(), 0, "no reader: nothing kept for readers");
    let _slow = hub.subscribe(&key()).unwrap();
    for i in 50..200 {
        p.push_video(i, big()).unwrap();
    }
    // 150 frames of 100 kB (15 MB of payload) reached a reader that takes nothing.
    let held = stream.ring_bytes();
    assert!(held > 0 && held <= 1 << 20, "ring holds {held} bytes");
}

#[tokio::test(start_paused = true)]
async fn kept_headers_do_not_hold_the_read_buffer_they_came_in() {
    let hub = Hub::new(settings());
    let p = hub.publish(&key(), who(1)).unwrap();
    // As a connection hands them over: slices of one larger read buffer.
    let mut read = AVC_HEADER.to_vec();
    read.extend_from_slice(b"\x27\x01\x00\x00\x00inter");
    let read = Bytes::from(read);
    p.push_video(0, read.slice(..AVC_HEADER.len())).unwrap();
    p.push_video(40, read.slice(AVC_HEADER.len()..)).unwrap();
    let mut sub = hub.subscribe(&key()).unwrap();
    let header = sub.recv().await.unwrap();
    assert!(header.is_sequence_header());
    let (start, end) = (read.as_ptr() as usize, read.as_ptr() as usize + read.len());
    assert!(
        !(start..end).contains(&(header.payload.as_ptr() as usize)),
        "the sequence header has a buffer of its own"
    );
}
