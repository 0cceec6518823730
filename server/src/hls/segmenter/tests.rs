use super::*;
use crate::codec::media::FourCc;

/// FFmpeg's AVC sequence header for 1280x720 baseline (see codec::info tests).
const AVC_HEADER: &str = "17000000000142c01fffe100196742c01fd9005005bb0110000003001000000303c0f183248001000568cb83cb20";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn settings() -> Settings {
    Settings {
        target_ms: 2000,
        part_target_ms: 200,
        window: 7,
        max_bytes: 64 << 20,
    }
}

fn video_header() -> Arc<MediaFrame> {
    Arc::new(MediaFrame::new(
        FrameKind::Video,
        FourCc::AVC,
        0,
        0,
        false,
        PacketKind::SequenceHeader,
        Bytes::from(hex(AVC_HEADER)),
    ))
}

fn video(ts: u32, key: bool) -> Arc<MediaFrame> {
    let mut p = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, 0, 0, 0, 100];
    p.extend(std::iter::repeat_n(if key { 0x65 } else { 0x41 }, 100));
    Arc::new(MediaFrame::new(
        FrameKind::Video,
        FourCc::AVC,
        ts,
        0,
        key,
        PacketKind::Frame,
        Bytes::from(p),
    ))
}

fn audio_header() -> Arc<MediaFrame> {
    Arc::new(MediaFrame::new(
        FrameKind::Audio,
        FourCc::AAC,
        0,
        0,
        false,
        PacketKind::SequenceHeader,
        Bytes::from_static(&[0xaf, 0, 0x11, 0x90]),
    ))
}

fn audio(ts: u32) -> Arc<MediaFrame> {
    Arc::new(MediaFrame::new(
        FrameKind::Audio,
        FourCc::AAC,
        ts,
        0,
        false,
        PacketKind::Frame,
        Bytes::from_static(&[0xaf, 1, 0x21, 0x10, 0x04, 0x60]),
    ))
}

/// Feeds `secs` of 30 fps video with a keyframe every `gop_ms`, and AAC audio, from `start_ms`.
fn feed(s: &mut Segmenter, start_ms: u32, secs: u32, gop_ms: u32, with_audio: bool) {
    let mut a = start_ms as f64;
    for i in 0..secs * 30 {
        let ts = start_ms + i * 1000 / 30;
        while with_audio && a <= ts as f64 {
            s.push(&audio(a as u32));
            a += 1024.0 * 1000.0 / 48_000.0;
        }
        s.push(&video(ts, (ts - start_ms) % gop_ms < 1000 / 30));
    }
}

fn segmenter_av() -> Segmenter {
    let mut s = Segmenter::new(settings(), 1, true);
    s.push(&video_header());
    s.push(&audio_header());
    s
}

#[test]
fn segments_start_at_keyframes_and_last_about_the_target() {
    let mut s = segmenter_av();
    feed(&mut s, 0, 20, 1000, true);
    let complete: Vec<&Segment> = s.video.complete_segments().collect();
    assert_eq!(complete.len(), 7, "the window keeps 7 segments");
    for seg in &complete {
        assert!(seg.parts[0].independent, "segment {} starts with a keyframe", seg.msn);
        assert!(
            (seg.duration - 2.0).abs() < 0.05,
            "segment {} lasts {}",
            seg.msn,
            seg.duration
        );
        for p in &seg.parts {
            assert!(p.duration <= 0.2 + 1e-9, "part of {} s", p.duration);
        }
    }
    let msns: Vec<u64> = complete.iter().map(|g| g.msn).collect();
    assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "{msns:?}");
    // The media sequence number is the timeline slot of the segment's start.
    for seg in &complete {
        assert_eq!(seg.msn as i64, (seg.start_ms + 1000) / 2000);
    }
}

#[test]
fn a_longer_gop_makes_a_longer_segment_never_one_without_a_keyframe() {
    let mut s = segmenter_av();
    feed(&mut s, 0, 30, 5000, false);
    let complete: Vec<&Segment> = s.video.complete_segments().collect();
    assert!(complete.len() >= 4);
    for seg in &complete {
        assert!(seg.parts[0].independent);
        assert!((seg.duration - 5.0).abs() < 0.05, "{}", seg.duration);
    }
    let msns: Vec<u64> = complete.iter().map(|g| g.msn).collect();
    assert!(msns.windows(2).all(|w| w[1] == w[0] + 1), "still contiguous: {msns:?}");
    assert!(s.longest >= 5.0);
}

#[test]
fn audio_follows_the_video_cuts() {
    let mut s = segmenter_av();
    feed(&mut s, 0, 12, 2000, true);
    let v: Vec<(u64, i64)> = s.video.complete_segments().map(|g| (g.msn, g.start_ms)).collect();
    let a: Vec<(u64, i64)> = s.audio.complete_segments().map(|g| (g.msn, g.start_ms)).collect();
    assert!(!a.is_empty());
    for (msn, start) in &a {
        let (_, vstart) = v.iter().find(|(m, _)| m == msn).expect("same numbers as video");
        assert!(
            *start >= *vstart && *start - *vstart < 25,
            "audio {start} after video {vstart}"
        );
    }
}

#[test]
fn two_segmenters_joining_at_different_keyframes_agree_on_numbers() {
    let mut a = segmenter_av();
    let mut b = segmenter_av();
    feed(&mut a, 10_000, 20, 2000, false);
    feed(&mut b, 14_000, 16, 2000, false);
    let na: Vec<(u64, i64)> = a.video.complete_segments().map(|g| (g.msn, g.start_ms)).collect();
    let nb: Vec<(u64, i64)> = b.video.complete_segments().map(|g| (g.msn, g.start_ms)).collect();
    for seg in &nb {
        if let Some(x) = na.iter().find(|x| x.0 == seg.0) {
            assert_eq!(x, seg, "same number, same start");
        }
    }
    assert!(nb.iter().any(|s| na.contains(s)));
    assert_eq!(a.epoch, b.epoch);
}

#[test]
fn timestamps_continue_over_the_32_bit_wrap() {
    let mut s = segmenter_av();
    let start = u32::MAX - 5_000;
    for i in 0..300u32 {
        let ts = start.wrapping_add(i * 1000 / 30);
        s.push(&video(ts, i % 60 == 0));
    }
    let starts: Vec<i64> = s.video.segments.iter().map(|g| g.start).collect();
    assert!(starts.windows(2).all(|w| w[1] > w[0]), "{starts:?}");
    assert!(s.video.segments.back().unwrap().start_ms > i64::from(u32::MAX));
}

#[test]
fn a_new_configuration_starts_a_discontinuity_with_a_new_init() {
    let mut s = segmenter_av();
    feed(&mut s, 0, 6, 2000, false);
    let first_init = s.video.init.as_ref().unwrap().name.clone();
    // A publisher reconnects with another picture size.
    let other = "17000000000164001fffe1001a6764001facd94050045b0110000003001000000303c0f1831960010006 68ebe3cb22c0"
        .replace(' ', "");
    s.push(&Arc::new(MediaFrame::new(
        FrameKind::Video,
        FourCc::AVC,
        6000,
        0,
        false,
        PacketKind::SequenceHeader,
        Bytes::from(hex(&other)),
    )));
    feed(&mut s, 6000, 6, 2000, false);
    let changed = s
        .video
        .segments
        .iter()
        .find(|g| g.init.name != first_init)
        .expect("new init");
    assert!(changed.discontinuity);
    assert!(changed.parts[0].independent);
}

#[test]
fn memory_stays_within_max_bytes() {
    let mut s = Segmenter::new(
        Settings {
            max_bytes: 4 << 20,
            window: 100,
            ..settings()
        },
        1,
        true,
    );
    s.push(&video_header());
    let big = |ts: u32, key: bool| {
        let mut p = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, 0, 0, 0x4e, 0x20];
        p.extend(std::iter::repeat_n(0x41, 20_000));
        Arc::new(MediaFrame::new(
            FrameKind::Video,
            FourCc::AVC,
            ts,
            0,
            key,
            PacketKind::Frame,
            Bytes::from(p),
        ))
    };
    for i in 0..3000u32 {
        s.push(&big(i * 33, i % 30 == 0));
        assert!(s.held_bytes() <= 4 << 20, "{} bytes at frame {i}", s.held_bytes());
    }
    assert!(s.video.complete_segments().count() >= 2);
}

#[test]
fn ts_rendering_of_a_segment_is_made_once() {
    let mut s = segmenter_av();
    feed(&mut s, 0, 8, 2000, true);
    let msn = s.video.complete_segments().next().unwrap().msn;
    let held = s.held_bytes();
    let a = s.ts_segment(msn).expect("h264 + aac fit TS");
    let b = s.ts_segment(msn).unwrap();
    assert_eq!(a.as_ptr(), b.as_ptr());
    assert_eq!(s.held_bytes(), held + a.len(), "the rendering counts as held memory");
    assert_eq!(a.len() % 188, 0);
    assert_eq!(a[0], 0x47);
}

/// (track id, base decode time, sample count, summed durations) of each `traf` of a part.
fn trafs(part: &[u8]) -> Vec<(u32, u64, usize, u64)> {
    fn boxes(mut b: &[u8]) -> Vec<(&[u8], &[u8])> {
        let mut out = Vec::new();
        while b.len() >= 8 {
            let size = u32::from_be_bytes(b[..4].try_into().unwrap()) as usize;
            out.push((&b[4..8], &b[8..size]));
            b = &b[size..];
        }
        out
    }
    let u32_at = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
    let (_, moof) = boxes(part).into_iter().find(|(t, _)| *t == b"moof").expect("a moof");
    boxes(moof)
        .into_iter()
        .filter(|(t, _)| *t == b"traf")
        .map(|(_, traf)| {
            let (mut id, mut base, mut count, mut total) = (0, 0, 0, 0);
            for (t, body) in boxes(traf) {
                match t {
                    b"tfhd" => id = u32_at(body, 4),
                    b"tfdt" if body[0] == 1 => base = u64::from_be_bytes(body[4..12].try_into().unwrap()),
                    b"tfdt" => base = u64::from(u32_at(body, 4)),
                    b"trun" => {
                        let flags = u32_at(body, 0) & 0xff_ffff;
                        count = u32_at(body, 4) as usize;
                        let mut at = 8 + if flags & 1 != 0 { 4 } else { 0 } + if flags & 4 != 0 { 4 } else { 0 };
                        let entry = [0x100, 0x200, 0x400, 0x800].iter().filter(|f| flags & **f != 0).count() * 4;
                        assert!(flags & 0x100 != 0, "durations per sample");
                        for _ in 0..count {
                            total += u64::from(u32_at(body, at));
                            at += entry;
                        }
                    }
                    _ => {}
                }
            }
            (id, base, count, total)
        })
        .collect()
}

#[test]
fn the_muxed_track_carries_video_and_audio_in_the_video_parts() {
    let mut s = segmenter_av();
    feed(&mut s, 0, 20, 1000, true);
    let init = s.muxed.init.as_ref().expect("muxed once both tracks are configured");
    assert!(
        init.codec.starts_with("avc1.") && init.codec.contains(",mp4a.40."),
        "{}",
        init.codec
    );
    let muxed: Vec<&Segment> = s.muxed.complete_segments().collect();
    assert_eq!(muxed.len(), 7, "the same window as video");
    let mut next_audio: Option<u64> = None;
    let mut audio_samples = 0;
    for seg in &muxed {
        let video = s.video.segment(seg.msn).expect("the video segment of the same number");
        assert_eq!((seg.start_ms, seg.duration), (video.start_ms, video.duration));
        assert_eq!(seg.parts.len(), video.parts.len(), "one muxed part per video part");
        assert!(seg.parts[0].independent, "segment {} starts with a keyframe", seg.msn);
        for (m, v) in seg.parts.iter().zip(&video.parts) {
            assert_eq!((m.duration, m.independent), (v.duration, v.independent));
            let t = trafs(&m.bytes);
            assert_eq!(t[0].0, 1, "video first, on track 1");
            assert_eq!(
                (t[0].1, t[0].2),
                (trafs(&v.bytes)[0].1, trafs(&v.bytes)[0].2),
                "the video part's samples"
            );
            if let Some(&(id, base, count, total)) = t.get(1) {
                assert_eq!(id, 2, "audio on track 2");
                // Audio continues from part to part: nothing lost, nothing twice.
                if let Some(expected) = next_audio {
                    assert_eq!(base, expected, "audio of part in segment {}", seg.msn);
                }
                next_audio = Some(base + total);
                audio_samples += count;
            }
        }
    }
    // About 47 AAC frames a second at 48 kHz over 14 s.
    assert!((640..=680).contains(&audio_samples), "{audio_samples} audio samples");
    assert!(s.ready());
}

#[test]
fn the_muxed_track_restarts_with_a_discontinuity_when_the_audio_changes() {
    let mut s = segmenter_av();
    feed(&mut s, 0, 6, 1000, true);
    let first = s.muxed.init.as_ref().unwrap().name.clone();
    // 44.1 kHz instead of 48 kHz.
    s.push(&Arc::new(MediaFrame::new(
        FrameKind::Audio,
        FourCc::AAC,
        6000,
        0,
        false,
        PacketKind::SequenceHeader,
        Bytes::from_static(&[0xaf, 0, 0x12, 0x10]),
    )));
    feed(&mut s, 6000, 6, 1000, true);
    let second = s.muxed.init.as_ref().unwrap().name.clone();
    assert_ne!(first, second, "a new init for the new audio");
    let changed = s
        .muxed
        .segments
        .iter()
        .find(|g| g.init.name == second)
        .expect("segments with the new init");
    assert!(changed.discontinuity, "EXT-X-DISCONTINUITY where the init changes");
    // No part mixes audio of the old configuration into a segment of the new one, or the
    // other way round: every audio run of a segment continues the one before it.
    for seg in s.muxed.segments.iter().filter(|g| g.init.name == second) {
        let mut next = None;
        for p in &seg.parts {
            if let Some(&(_, base, _, total)) = trafs(&p.bytes).get(1) {
                if let Some(n) = next {
                    assert_eq!(base, n);
                }
                next = Some(base + total);
            }
        }
    }
}

#[test]
fn cached_playlists_equal_fresh_ones_and_follow_every_change() {
    use crate::hls::playlist::{media, PlaylistCache};
    let cache = PlaylistCache::default();
    let mut s = segmenter_av();
    feed(&mut s, 0, 5, 1000, true);
    let before = cache.media(&s, TrackName::Muxed, "", "?hs=one", false);
    // Becoming live adds program date times without a new part: the cache must see it.
    s.mark_live(SystemTime::UNIX_EPOCH);
    let after = cache.media(&s, TrackName::Muxed, "", "?hs=one", false);
    assert!(!before.contains("PROGRAM-DATE-TIME") && after.contains("PROGRAM-DATE-TIME"));
    for track in [TrackName::Muxed, TrackName::Video, TrackName::Audio] {
        for query in ["?hs=one", "?hs=two", ""] {
            for delta in [false, true] {
                assert_eq!(
                    cache.media(&s, track, "", query, delta),
                    media(&s, track, "", query, delta)
                );
            }
        }
        assert_eq!(
            cache.media(&s, track, "../k/", "?x", false),
            media(&s, track, "../k/", "?x", false)
        );
    }
    // Every frame that changes the segmenter changes what the cache answers.
    let mut ts = 5000;
    for _ in 0..40 {
        s.push(&video(ts, ts % 1000 == 0));
        s.push(&audio(ts));
        ts += 50;
        assert_eq!(
            cache.media(&s, TrackName::Muxed, "", "?hs=one", false),
            media(&s, TrackName::Muxed, "", "?hs=one", false)
        );
    }
}

#[test]
fn audio_waiting_for_a_muxed_part_keeps_no_shared_read_buffer_alive() {
    let mut s = segmenter_av();
    s.push(&video(0, true));
    // Audio frames that are slices of one large buffer, as frames read from a socket are.
    let mut big = vec![0u8; 64 << 10];
    for i in 0..10 {
        big[i * 6..i * 6 + 6].copy_from_slice(&[0xaf, 1, 0x21, 0x10, 0x04, 0x60]);
    }
    let big = Bytes::from(big);
    for i in 0..10u32 {
        let at = i as usize * 6;
        s.push(&Arc::new(MediaFrame::new(
            FrameKind::Audio,
            FourCc::AAC,
            i * 21,
            0,
            false,
            PacketKind::Frame,
            big.slice(at..at + 6),
        )));
    }
    assert!(!s.mux_audio.is_empty(), "audio waits for the next video part");
    let range = big.as_ptr() as usize..big.as_ptr() as usize + big.len();
    for (p, _) in &s.mux_audio {
        assert!(
            !range.contains(&(p.data.as_ptr() as usize)),
            "a copy, not a slice of the buffer"
        );
    }
}

/// Seconds a segment covers in the playlist: its duration, or its parts' while open.
fn listed_secs(seg: &Segment) -> f64 {
    match seg.complete {
        true => seg.duration,
        false => seg.parts.iter().map(|p| p.duration).sum(),
    }
}

/// Segment URIs of a media playlist, in order.
fn segment_uris(playlist: &str) -> Vec<&str> {
    playlist
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// A segmenter keeping `window` segments, fed `secs` of video (1 s GOP) and audio.
fn segmenter_av_window(window: usize, secs: u32) -> Segmenter {
    let mut s = Segmenter::new(Settings { window, ..settings() }, 1, true);
    s.push(&video_header());
    s.push(&audio_header());
    feed(&mut s, 0, secs, 1000, true);
    s
}

#[test]
fn a_delta_update_leaves_out_the_segments_ending_six_targets_before_the_end() {
    use crate::hls::playlist::{media, skip_until};
    let mut s = segmenter_av_window(12, 40);
    s.mark_live(SystemTime::UNIX_EPOCH);
    let full = media(&s, TrackName::Muxed, "", "?q", false);
    let delta = media(&s, TrackName::Muxed, "", "?q", true);
    assert_eq!(skip_until(&s), 12);
    assert!(
        full.contains("CAN-SKIP-UNTIL=12\n") && !full.contains("#EXT-X-SKIP"),
        "{full}"
    );
    let skipped: usize = delta
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-SKIP:SKIPPED-SEGMENTS="))
        .expect("a delta update")
        .parse()
        .unwrap();
    // The same media sequence, and the same segments from the first one kept on.
    let header = |p: &str| {
        p.lines()
            .take_while(|l| !l.starts_with("#EXT-X-SKIP") && !l.starts_with("#EXT-X-MAP"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(header(&full), header(&delta));
    assert_eq!(segment_uris(&delta), segment_uris(&full)[skipped..]);
    let after_skip = delta.split_once("SKIPPED-SEGMENTS=").unwrap().1;
    assert!(
        after_skip.lines().nth(1).unwrap().starts_with("#EXT-X-MAP:"),
        "the first segment listed names its init:\n{delta}"
    );
    // What is kept covers the last 12 s; keeping one segment less would not.
    let lengths: Vec<f64> = s.track(TrackName::Muxed).segments.iter().map(listed_secs).collect();
    let kept: f64 = lengths[skipped..].iter().sum();
    assert!(
        skipped > 0 && kept >= 12.0 && kept - lengths[skipped] < 12.0,
        "{lengths:?} skipping {skipped}"
    );
    // The parts, the preload hint and the rendition reports are all still there.
    for tag in ["#EXT-X-PART:", "#EXT-X-PRELOAD-HINT:"] {
        assert_eq!(full.matches(tag).count(), delta.matches(tag).count(), "{tag}");
    }
}

#[test]
fn delta_updates_are_not_offered_when_the_window_is_no_longer_than_what_they_keep() {
    use crate::hls::playlist::media;
    let s = segmenter_av_window(6, 30);
    let full = media(&s, TrackName::Muxed, "", "", false);
    assert!(!full.contains("CAN-SKIP-UNTIL"), "{full}");
    assert_eq!(media(&s, TrackName::Muxed, "", "", true), full);
}
