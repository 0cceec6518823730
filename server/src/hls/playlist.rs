//! Playlists and manifests rendered from a segmenter's window: the HLS multivariant
//! playlist, LL-HLS media playlists (RFC 8216bis: parts, preload hints, server control,
//! rendition reports), the MPEG-TS media playlist, and the DASH MPD over the same segments.
//!
//! Every URI is relative to `/{app}/{name}/` and ends with `query` (the session token), so
//! a credential given once on the playlist carries to everything it lists.

use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::segmenter::{Init, Segment, Segmenter, Track, TrackName};

/// Segments (the newest complete ones) whose parts are listed, besides the one in progress.
const SEGMENTS_WITH_PARTS: usize = 2;

/// The URL names of a stream's files.
pub fn segment_name(track: TrackName, epoch: u64, msn: u64) -> String {
    format!("{}-{epoch}-{msn}.m4s", track.as_str())
}

pub fn part_name(track: TrackName, epoch: u64, msn: u64, part: usize) -> String {
    format!("{}-{epoch}-{msn}.{part}.m4s", track.as_str())
}

pub fn ts_name(epoch: u64, msn: u64) -> String {
    format!("ts-{epoch}-{msn}.ts")
}

/// Seconds as EXTINF / part durations print them.
fn secs(v: f64) -> String {
    format!("{v:.5}")
}

/// EXT-X-TARGETDURATION: whole seconds, at least every segment's duration rounded.
pub fn target_duration(seg: &Segmenter) -> u64 {
    let configured = (seg.settings.target_ms as f64 / 1000.0).ceil();
    configured.max(seg.longest.round()).max(1.0) as u64
}

/// CAN-SKIP-UNTIL: a delta update keeps this many seconds before the playlist's end (RFC
/// 8216bis: at least six target durations), and leaves out the segments that end before them.
pub fn skip_until(seg: &Segmenter) -> u64 {
    target_duration(seg) * 6
}

/// Delta updates are offered when the window is longer than what they keep, so that one can
/// leave something out.
fn offers_delta(seg: &Segmenter) -> bool {
    seg.settings.window as u64 * target_duration(seg) > skip_until(seg)
}

/// How many complete segments at the front of `track` a delta update leaves out: those that
/// end at least [`skip_until`] seconds before the end of the playlist (parts included).
fn skippable(seg: &Segmenter, track: &Track) -> usize {
    let length = |s: &Segment| match s.complete {
        true => s.duration,
        false => s.parts.iter().map(|p| p.duration).sum(),
    };
    let boundary = track.segments.iter().map(length).sum::<f64>() - skip_until(seg) as f64;
    let mut end = 0.0;
    track
        .segments
        .iter()
        .take_while(|s| {
            end += length(s);
            s.complete && end <= boundary + 1e-6
        })
        .count()
}

/// Bits per second of a track over its window (0 when unknown).
fn bandwidth(track: &Track) -> u64 {
    let (bytes, secs) = track
        .complete_segments()
        .fold((0usize, 0f64), |(b, s), seg| (b + seg.bytes(), s + seg.duration));
    if secs > 0.0 {
        (bytes as f64 * 8.0 / secs) as u64
    } else {
        0
    }
}

/// Peak bits per second of a track: its densest complete segment (0 when unknown).
fn peak_bandwidth(track: &Track) -> u64 {
    track
        .complete_segments()
        .filter(|s| s.duration > 0.0)
        .map(|s| (s.bytes() as f64 * 8.0 / s.duration) as u64)
        .max()
        .unwrap_or(0)
}

/// One variant of a multivariant playlist or MPD: a stream's segmenter and where its files
/// are. A stream's renditions are variants of it (docs/transcoding.md).
pub struct Variant<'a> {
    pub seg: &'a Segmenter,
    /// Prefix of the variant's URIs, relative to the playlist (`""`, or `../{stream}/`).
    pub prefix: &'a str,
    /// Query of its URIs (its own session token).
    pub query: &'a str,
    /// Names its audio group and DASH representations (`source`, `480p`).
    pub id: &'a str,
    /// Frames per second, when known.
    pub fps: Option<f64>,
}

/// The multivariant playlist of one stream: one variant (video, or audio alone) and, with
/// both, the audio as an alternative rendition group.
pub fn multivariant(seg: &Segmenter, prefix: &str, query: &str) -> String {
    multivariant_of(&[Variant {
        seg,
        prefix,
        query,
        id: "source",
        fps: None,
    }])
}

/// The multivariant playlist of a stream and its renditions: a variant each (peak and
/// average bandwidth, codecs, resolution, frame rate). A variant with video and audio is
/// its muxed track (one request per part or segment instead of two); the separate video and
/// audio playlists stay served for DASH and for players that ask for them by name.
pub fn multivariant_of(variants: &[Variant]) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let single = variants.len() == 1;
    for v in variants {
        let seg = v.seg;
        let (prefix, query) = (v.prefix, v.query);
        let video = seg.video.init.as_ref();
        let audio = seg.audio.init.as_ref();
        let mut codecs = Vec::new();
        let (mut peak, mut average) = (0, 0);
        if let Some(a) = audio {
            codecs.push(a.codec.clone());
            peak += peak_bandwidth(&seg.audio);
            average += bandwidth(&seg.audio);
        }
        if let (Some(video), Some(muxed)) = (video, seg.muxed.init.as_ref()) {
            let _ = write!(
                out,
                "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"",
                peak_bandwidth(&seg.muxed).max(1),
                bandwidth(&seg.muxed).max(1),
                muxed.codec
            );
            stream_inf_video(&mut out, video, v.fps);
            let _ = writeln!(out, "\n{prefix}muxed.m3u8{query}");
            continue;
        }
        let Some(video) = video else {
            if audio.is_some() {
                let _ = writeln!(
                    out,
                    "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"\n{prefix}audio.m3u8{query}",
                    peak.max(1),
                    average.max(1),
                    codecs.join(",")
                );
            }
            continue;
        };
        codecs.insert(0, video.codec.clone());
        peak += peak_bandwidth(&seg.video);
        average += bandwidth(&seg.video);
        let group = if single {
            "audio".to_string()
        } else {
            format!("audio-{}", v.id)
        };
        if audio.is_some() {
            let _ = writeln!(
                out,
                "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{group}\",NAME=\"audio\",DEFAULT=YES,AUTOSELECT=YES,URI=\"{prefix}audio.m3u8{query}\""
            );
        }
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"",
            peak.max(1),
            average.max(1),
            codecs.join(",")
        );
        stream_inf_video(&mut out, video, v.fps);
        if audio.is_some() {
            let _ = write!(out, ",AUDIO=\"{group}\"");
        }
        let _ = writeln!(out, "\n{prefix}video.m3u8{query}");
    }
    out
}

/// RESOLUTION and FRAME-RATE of a variant, when known.
fn stream_inf_video(out: &mut String, video: &Init, fps: Option<f64>) {
    if let ferrocast_media::fmp4::TrackKind::Video { width, height } = video.setup.kind {
        if width > 0 && height > 0 {
            let _ = write!(out, ",RESOLUTION={width}x{height}");
        }
    }
    if let Some(fps) = fps.filter(|f| *f > 0.0) {
        let _ = write!(out, ",FRAME-RATE={fps:.3}");
    }
}

/// An LL-HLS media playlist of one track. Players without LL-HLS support ignore the part
/// tags and read it as a standard live playlist. With `delta` (`_HLS_skip`, when offered) the
/// oldest segments are left out behind an EXT-X-SKIP tag.
pub fn media(seg: &Segmenter, name: TrackName, prefix: &str, query: &str, delta: bool) -> String {
    let track = seg.track(name);
    let part_target = seg.settings.part_target_ms as f64 / 1000.0;
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{}\n\
         #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={}",
        target_duration(seg),
        secs(part_target * 3.0),
    );
    let offered = offers_delta(seg);
    if offered {
        let _ = write!(out, ",CAN-SKIP-UNTIL={}", skip_until(seg));
    }
    let _ = writeln!(out, "\n#EXT-X-PART-INF:PART-TARGET={}", secs(part_target));
    let Some(first) = track.segments.front() else {
        return out;
    };
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", first.msn);
    let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", track.discontinuity_sequence);
    // A player asking for a delta when nothing can be left out gets the whole playlist.
    let skipped = if delta && offered { skippable(seg, track) } else { 0 };
    if skipped > 0 {
        let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }
    let newest = track.segments.back().map_or(0, |s| s.msn);
    // The first segment listed names its initialization section, skipped ones or not.
    let mut map: Option<&str> = None;
    for (i, s) in track.segments.iter().enumerate().skip(skipped) {
        if s.discontinuity && i > 0 {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if map != Some(s.init.name.as_str()) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{prefix}{}{query}\"", s.init.name);
            map = Some(s.init.name.as_str());
        }
        if let Some(t) = seg.wall_clock(s.start_ms) {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", iso8601(t));
        }
        if s.msn + SEGMENTS_WITH_PARTS as u64 >= newest {
            for (p, part) in s.parts.iter().enumerate() {
                let _ = write!(
                    out,
                    "#EXT-X-PART:DURATION={},URI=\"{prefix}{}{query}\"",
                    secs(part.duration),
                    part_name(name, seg.epoch, s.msn, p)
                );
                out.push_str(if part.independent { ",INDEPENDENT=YES\n" } else { "\n" });
            }
        }
        if s.complete {
            let _ = writeln!(
                out,
                "#EXTINF:{},\n{prefix}{}{query}",
                secs(s.duration),
                segment_name(name, seg.epoch, s.msn)
            );
        }
    }
    if let Some((msn, parts)) = next_part(track) {
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{prefix}{}{query}\"",
            part_name(name, seg.epoch, msn, parts)
        );
    }
    // The muxed track is the only rendition of its variant; the others report each other.
    let others = seg.tracks().filter(|t| name != TrackName::Muxed && t.name != name);
    for other in others {
        if let Some(last) = other.segments.back() {
            let (msn, part) = match last.parts.len() {
                0 => (
                    last.msn.saturating_sub(1),
                    other.segment(last.msn.saturating_sub(1)).map_or(0, |s| s.parts.len()),
                ),
                n => (last.msn, n),
            };
            let _ = writeln!(
                out,
                "#EXT-X-RENDITION-REPORT:URI=\"{prefix}{}.m3u8{query}\",LAST-MSN={msn},LAST-PART={}",
                other.name.as_str(),
                part.saturating_sub(1)
            );
        }
    }
    out
}

/// Stands for the query in a cached playlist (never part of a name or a URI prefix).
const QUERY_MARK: &str = "\u{1}";
/// Playlists a cache keeps (tracks times URI prefixes in use, whole and delta).
const CACHED_PLAYLISTS: usize = 12;

/// Media playlists rendered once per segmenter version and track, then given each
/// request's session query: a reload by thousands of players between two parts formats
/// nothing.
#[derive(Default)]
pub struct PlaylistCache(Mutex<Vec<Cached>>);

struct Cached {
    version: u64,
    track: TrackName,
    delta: bool,
    prefix: String,
    template: Arc<Template>,
}

/// A rendered playlist without its queries, and where they go: filling it is copying, with
/// no search through the text per request.
struct Template {
    text: String,
    marks: Vec<usize>,
}

impl Template {
    fn new(rendered: &str) -> Self {
        let mut text = String::with_capacity(rendered.len());
        let mut marks = Vec::new();
        for (i, piece) in rendered.split(QUERY_MARK).enumerate() {
            if i > 0 {
                marks.push(text.len());
            }
            text.push_str(piece);
        }
        Template { text, marks }
    }

    fn fill(&self, query: &str) -> String {
        let mut out = String::with_capacity(self.text.len() + self.marks.len() * query.len());
        let mut from = 0;
        for &at in &self.marks {
            out.push_str(&self.text[from..at]);
            out.push_str(query);
            from = at;
        }
        out.push_str(&self.text[from..]);
        out
    }
}

impl PlaylistCache {
    /// [`media`] of `seg` (the caller holds its lock).
    pub fn media(&self, seg: &Segmenter, track: TrackName, prefix: &str, query: &str, delta: bool) -> String {
        let template = {
            let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let at = cache
                .iter()
                .position(|c| c.track == track && c.delta == delta && c.prefix == prefix);
            match at.map(|i| &cache[i]).filter(|c| c.version == seg.version) {
                Some(c) => c.template.clone(),
                None => {
                    let template = Arc::new(Template::new(&media(seg, track, prefix, QUERY_MARK, delta)));
                    if let Some(i) = at {
                        cache.remove(i);
                    } else if cache.len() >= CACHED_PLAYLISTS {
                        cache.remove(0);
                    }
                    cache.push(Cached {
                        version: seg.version,
                        track,
                        delta,
                        prefix: prefix.to_string(),
                        template: template.clone(),
                    });
                    template
                }
            }
        };
        template.fill(query)
    }
}

/// The part a player will ask for next: (segment, part index).
pub fn next_part(track: &Track) -> Option<(u64, usize)> {
    let last = track.segments.back()?;
    Some(if last.complete {
        (last.msn + 1, 0)
    } else {
        (last.msn, last.parts.len())
    })
}

/// The MPEG-TS media playlist (complete segments only), for players without fMP4 support.
/// What a player that opened `ts.m3u8` without a session gets: one variant, the same
/// playlist with the session token in its URI. A media playlist answered directly would be
/// reloaded by its bare URL, and every reload would start a new session with new segment URIs.
pub fn ts_multivariant(seg: &Segmenter, prefix: &str, query: &str) -> String {
    let peak: u64 = seg.tracks().map(peak_bandwidth).sum();
    let mut out = format!("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH={}", peak.max(1));
    if let Some(video) = &seg.video.init {
        if let ferrocast_media::fmp4::TrackKind::Video { width, height } = video.setup.kind {
            if width > 0 && height > 0 {
                let _ = write!(out, ",RESOLUTION={width}x{height}");
            }
        }
    }
    let _ = writeln!(out, "\n{prefix}ts.m3u8{query}");
    out
}

pub fn ts_media(seg: &Segmenter, prefix: &str, query: &str) -> String {
    let track = seg.main_track();
    let complete: Vec<&Segment> = track.complete_segments().collect();
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{}\n",
        target_duration(seg)
    );
    if let Some(first) = complete.first() {
        let _ = write!(
            out,
            "#EXT-X-MEDIA-SEQUENCE:{}\n#EXT-X-DISCONTINUITY-SEQUENCE:{}\n",
            first.msn, track.discontinuity_sequence
        );
    }
    for (i, s) in complete.iter().enumerate() {
        if s.discontinuity && i > 0 {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let _ = writeln!(
            out,
            "#EXTINF:{},\n{prefix}{}{query}",
            secs(s.duration),
            ts_name(seg.epoch, s.msn)
        );
    }
    out
}

/// The DASH MPD (ISO/IEC 23009-1 live profile): one adaptation set per track, a
/// SegmentTimeline of the complete segments, the same fMP4 files as HLS.
pub fn mpd(seg: &Segmenter, prefix: &str, query: &str, now: SystemTime) -> Option<String> {
    mpd_of(
        &[Variant {
            seg,
            prefix,
            query,
            id: "source",
            fps: None,
        }],
        now,
    )
}

/// The MPD of a stream and its renditions: one video and one audio adaptation set, with a
/// representation per variant. Renditions share the source's timeline, so their timelines
/// (and segment numbers) line up and one availability start time serves them all.
pub fn mpd_of(variants: &[Variant], now: SystemTime) -> Option<String> {
    let seg = variants.first()?.seg;
    let ast = seg.wall_clock(0)?;
    let target = seg.settings.target_ms as f64 / 1000.0;
    let depth = target * seg.settings.window as f64;
    let mut out = String::with_capacity(4096);
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" \
         type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\" minimumUpdatePeriod=\"PT{target:.3}S\" \
         minBufferTime=\"PT{target:.3}S\" timeShiftBufferDepth=\"PT{depth:.3}S\" \
         suggestedPresentationDelay=\"PT{:.3}S\">\n",
        iso8601(ast),
        iso8601(now),
        target * 3.0,
    );
    out.push_str("  <Period id=\"0\" start=\"PT0S\">\n");
    for name in [TrackName::Video, TrackName::Audio] {
        let mut set = String::new();
        for v in variants {
            let track = v.seg.track(name);
            let Some(init) = &track.init else { continue };
            let complete: Vec<&Segment> = track
                .complete_segments()
                .filter(|s| std::sync::Arc::ptr_eq(&s.init, init))
                .collect();
            let Some(first) = complete.first() else { continue };
            let extra = match init.setup.kind {
                ferrocast_media::fmp4::TrackKind::Video { width, height } => {
                    let mut e = format!(" width=\"{width}\" height=\"{height}\"");
                    if let Some(fps) = v.fps.filter(|f| *f > 0.0) {
                        let _ = write!(e, " frameRate=\"{}\"", (fps * 1000.0).round() / 1000.0);
                    }
                    e
                }
                ferrocast_media::fmp4::TrackKind::Audio { sample_rate, .. } => {
                    format!(" audioSamplingRate=\"{sample_rate}\"")
                }
            };
            let id = if variants.len() == 1 {
                name.as_str().to_string()
            } else {
                format!("{}-{}", name.as_str(), v.id)
            };
            let (prefix, query, track_name) = (v.prefix, v.query, name.as_str());
            let _ = write!(
                set,
                "      <Representation id=\"{id}\" codecs=\"{}\" bandwidth=\"{}\"{extra}>\n\
                 \x20       <SegmentTemplate timescale=\"{}\" initialization=\"{prefix}{}{query}\" media=\"{prefix}{track_name}-{}-$Number$.m4s{query}\" startNumber=\"{}\">\n\
                 \x20         <SegmentTimeline>\n",
                init.codec,
                bandwidth(track).max(1),
                track.timescale,
                init.name,
                v.seg.epoch,
                first.msn,
            );
            for s in &complete {
                let _ = writeln!(
                    set,
                    "            <S t=\"{}\" d=\"{}\"/>",
                    s.start.max(0),
                    s.ticks(track.timescale)
                );
            }
            set.push_str("          </SegmentTimeline>\n        </SegmentTemplate>\n      </Representation>\n");
        }
        if set.is_empty() {
            continue;
        }
        let (content, mime) = match name {
            TrackName::Video => ("video", "video/mp4"),
            TrackName::Audio => ("audio", "audio/mp4"),
            TrackName::Muxed => continue,
        };
        let _ = writeln!(
            out,
            "    <AdaptationSet contentType=\"{content}\" mimeType=\"{mime}\" segmentAlignment=\"true\" startWithSAP=\"1\">"
        );
        out.push_str(&set);
        out.push_str("    </AdaptationSet>\n");
    }
    let _ = write!(
        out,
        "  </Period>\n  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"{}\"/>\n</MPD>\n",
        iso8601(now)
    );
    Some(out)
}

/// `2026-01-02T03:04:05.678Z`.
pub fn iso8601(t: SystemTime) -> String {
    let u = crate::utc::Utc::of(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second, u.millis
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn iso8601_formats_utc() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_772_409_845_123);
        assert_eq!(iso8601(t), "2026-03-02T00:04:05.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(iso8601(leap), "2000-02-29T00:00:00.000Z");
    }
}
