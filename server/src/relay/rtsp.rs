//! RTSP source through the `retina` crate (RTSP over TCP with RTP interleaved; H.264, H.265
//! and AAC depacketized). Frames come out MP4-framed (length-prefixed NAL units, raw AAC), which
//! is what FLV carries: parameter sets become AVC/HEVC decoder configuration records and the
//! AudioSpecificConfig becomes the AAC sequence header. H.264 goes out as legacy FLV video,
//! H.265 as enhanced RTMP (`hvc1`). Timestamps are the RTP clock's elapsed ticks converted to
//! milliseconds from the absolute count each time, so rounding never accumulates into drift.

use std::collections::VecDeque;
use std::pin::Pin;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use retina::client::{
    Credentials, Demuxed, PlayOptions, Session, SessionOptions, SetupOptions, TcpTransportOptions, Transport,
};
use retina::codec::{CodecItem, FrameFormat, ParametersRef};
use tokio::time::timeout;

use super::source::{Ingest, LinkOptions};
use super::url::RelayUrl;
use super::RelayError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VideoCodec {
    H264,
    H265,
}

pub struct RtspLink {
    demuxed: Pin<Box<Demuxed>>,
    video: Option<(usize, VideoCodec)>,
    audio: Option<usize>,
    video_header_sent: bool,
    audio_header_sent: bool,
    ready: VecDeque<Ingest>,
    opts: LinkOptions,
}

/// The first line of a retina error (the rest is connection context), as our error.
fn rtsp_error(e: retina::Error) -> RelayError {
    if e.status_code() == Some(404) {
        return RelayError::NotFound;
    }
    let text = e.to_string();
    RelayError::Rtsp(text.lines().next().unwrap_or("").chars().take(200).collect())
}

/// Milliseconds of a retina timestamp since the stream start, computed from the absolute
/// tick count (never summed from deltas); wraps like RTMP timestamps.
fn millis(ts: retina::Timestamp) -> u32 {
    let elapsed = ts.elapsed().max(0) as i128;
    (elapsed * 1000 / i128::from(ts.clock_rate().get())) as u32
}

impl RtspLink {
    pub async fn open(url: &RelayUrl, opts: LinkOptions) -> Result<RtspLink, RelayError> {
        let limit = opts.connect_timeout;
        timeout(limit, Self::start(url, opts))
            .await
            .map_err(|_| RelayError::Timeout("RTSP setup"))?
    }

    async fn start(url: &RelayUrl, opts: LinkOptions) -> Result<RtspLink, RelayError> {
        // Credentials go to retina separately (it answers Basic and Digest challenges).
        let mut plain = url.clone();
        let creds = match std::mem::take(&mut plain.userinfo) {
            u if u.is_empty() => None,
            u => {
                let (user, pass) = u.split_once(':').unwrap_or((u.as_str(), ""));
                let decode = |s: &str| {
                    url::form_urlencoded::parse(format!("x={s}").as_bytes())
                        .next()
                        .map(|(_, v)| v.into_owned())
                        .unwrap_or_default()
                };
                Some(Credentials {
                    username: decode(user),
                    password: decode(pass),
                })
            }
        };
        let parsed = url::Url::parse(&plain.to_wire()).map_err(|e| RelayError::Url(e.to_string()))?;
        let options = SessionOptions::default()
            .creds(creds)
            .user_agent(concat!("Ferrocast/", env!("CARGO_PKG_VERSION")).to_string());
        let mut session = Session::describe(parsed, options).await.map_err(rtsp_error)?;
        let video = session
            .streams()
            .iter()
            .enumerate()
            .find_map(|(i, s)| match (s.media(), s.encoding_name()) {
                ("video", "h264") => Some((i, VideoCodec::H264)),
                ("video", "h265") => Some((i, VideoCodec::H265)),
                _ => None,
            });
        let audio = session
            .streams()
            .iter()
            .position(|s| s.media() == "audio" && s.encoding_name() == "mpeg4-generic");
        if video.is_none() && audio.is_none() {
            return Err(RelayError::Rtsp("the source has no H.264, H.265 or AAC track".into()));
        }
        for i in video.map(|(i, _)| i).into_iter().chain(audio) {
            session
                .setup(
                    i,
                    SetupOptions::default()
                        .transport(Transport::Tcp(TcpTransportOptions::default()))
                        .frame_format(FrameFormat::MP4),
                )
                .await
                .map_err(rtsp_error)?;
        }
        let playing = session.play(PlayOptions::default()).await.map_err(rtsp_error)?;
        let demuxed = playing.demuxed().map_err(rtsp_error)?;
        Ok(RtspLink {
            demuxed: Box::pin(demuxed),
            video,
            audio,
            video_header_sent: false,
            audio_header_sent: false,
            ready: VecDeque::new(),
            opts,
        })
    }

    pub async fn next(&mut self) -> Result<Ingest, RelayError> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Ok(item);
            }
            let item = timeout(self.opts.idle_timeout, self.demuxed.next())
                .await
                .map_err(|_| RelayError::Timeout("waiting for data"))?;
            match item {
                None => return Err(RelayError::Ended),
                Some(Err(e)) => return Err(rtsp_error(e)),
                Some(Ok(CodecItem::VideoFrame(f))) => {
                    let Some((i, codec)) = self.video.filter(|(i, _)| *i == f.stream_id()) else {
                        continue;
                    };
                    if !self.video_header_sent || f.has_new_parameters() {
                        if let Some(ParametersRef::Video(p)) = self.demuxed.streams()[i].parameters() {
                            let header = video_header(codec, p.extra_data());
                            self.ready.push_back(Ingest::Video(millis(f.timestamp()), header));
                            self.video_header_sent = true;
                        }
                    }
                    if !self.video_header_sent {
                        continue;
                    }
                    self.opts.counters.add_in(f.data().len());
                    let key = f.is_random_access_point() || is_keyframe(codec, f.data());
                    let body = video_frame(codec, key, f.data());
                    self.ready.push_back(Ingest::Video(millis(f.timestamp()), body));
                }
                Some(Ok(CodecItem::AudioFrame(f))) => {
                    if Some(f.stream_id()) != self.audio {
                        continue;
                    }
                    if !self.audio_header_sent {
                        if let Some(ParametersRef::Audio(p)) = self.demuxed.streams()[f.stream_id()].parameters() {
                            let mut h = BytesMut::with_capacity(2 + p.extra_data().len());
                            h.put_slice(&[0xAF, 0x00]);
                            h.put_slice(p.extra_data());
                            self.ready.push_back(Ingest::Audio(millis(f.timestamp()), h.freeze()));
                            self.audio_header_sent = true;
                        }
                    }
                    if !self.audio_header_sent {
                        continue;
                    }
                    self.opts.counters.add_in(f.data().len());
                    let mut b = BytesMut::with_capacity(2 + f.data().len());
                    b.put_slice(&[0xAF, 0x01]);
                    b.put_slice(f.data());
                    self.ready.push_back(Ingest::Audio(millis(f.timestamp()), b.freeze()));
                }
                Some(Ok(_)) => {}
            }
        }
    }
}

/// The FLV sequence header for the decoder configuration record retina built from the
/// SPS/PPS (and VPS for H.265).
fn video_header(codec: VideoCodec, record: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + record.len());
    match codec {
        // Legacy AVC: keyframe | codec 7, AVCPacketType 0, composition time 0.
        VideoCodec::H264 => b.put_slice(&[0x17, 0x00, 0x00, 0x00, 0x00]),
        // Enhanced RTMP: IsExHeader | keyframe | PacketTypeSequenceStart, FourCC.
        VideoCodec::H265 => {
            b.put_u8(0x80 | 0x10);
            b.put_slice(b"hvc1");
        }
    }
    b.put_slice(record);
    b.freeze()
}

/// Whether an access unit (4-byte length-prefixed NAL units) starts a decodable picture: an
/// H.264 IDR, or an H.265 IRAP picture (BLA, IDR or CRA: x265 cuts open GOPs at CRA pictures,
/// which retina does not flag, and a player may start at one).
fn is_keyframe(codec: VideoCodec, mut data: &[u8]) -> bool {
    while data.len() > 4 {
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let nal = &data[4..];
        let Some(&first) = nal.first() else { return false };
        let irap = match codec {
            VideoCodec::H264 => first & 0x1f == 5,
            VideoCodec::H265 => (16..=23).contains(&((first >> 1) & 0x3f)),
        };
        if irap {
            return true;
        }
        data = nal.get(len..).unwrap_or_default();
    }
    false
}

/// One access unit (length-prefixed NAL units) as an FLV video body. RTP carries
/// presentation times only, so the composition offset is 0.
fn video_frame(codec: VideoCodec, keyframe: bool, data: &[u8]) -> Bytes {
    let frame_type: u8 = if keyframe { 1 } else { 2 };
    let mut b = BytesMut::with_capacity(8 + data.len());
    match codec {
        VideoCodec::H264 => b.put_slice(&[(frame_type << 4) | 7, 0x01, 0x00, 0x00, 0x00]),
        VideoCodec::H265 => {
            // PacketTypeCodedFrames (1) with its 24-bit composition time.
            b.put_u8(0x80 | (frame_type << 4) | 0x01);
            b.put_slice(b"hvc1");
            b.put_slice(&[0x00, 0x00, 0x00]);
        }
    }
    b.put_slice(data);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::media::{parse_video_header, FourCc, PacketKind};

    #[test]
    fn flv_bodies_parse_back_as_the_codec_and_packet_kind() {
        let cases = [
            (
                "h264 header",
                video_header(VideoCodec::H264, b"\x01\x64"),
                FourCc::AVC,
                PacketKind::SequenceHeader,
                false,
            ),
            (
                "h264 key",
                video_frame(VideoCodec::H264, true, b"\x00\x00\x00\x01\x65"),
                FourCc::AVC,
                PacketKind::Frame,
                true,
            ),
            (
                "h264 inter",
                video_frame(VideoCodec::H264, false, b"\x00\x00\x00\x01\x41"),
                FourCc::AVC,
                PacketKind::Frame,
                false,
            ),
            (
                "h265 header",
                video_header(VideoCodec::H265, b"\x01\x01"),
                FourCc::HEVC,
                PacketKind::SequenceHeader,
                false,
            ),
            (
                "h265 key",
                video_frame(VideoCodec::H265, true, b"\x00\x00\x00\x01\x26"),
                FourCc::HEVC,
                PacketKind::Frame,
                true,
            ),
        ];
        for (name, body, codec, kind, key) in cases {
            let h = parse_video_header(&body).unwrap();
            assert_eq!(
                (h.codec, h.kind, h.keyframe, h.composition_offset),
                (codec, kind, key, 0),
                "{name}"
            );
        }
    }

    #[test]
    fn rtp_clock_converts_to_milliseconds_without_drift() {
        let rate = std::num::NonZeroU32::new(90_000).unwrap();
        // 30 fps at 90 kHz is 3000 ticks = 33.33 ms per frame: summing rounded deltas would
        // lose a third of a millisecond per frame; the absolute conversion stays exact.
        let start = 4_000_000_000u32;
        let at = |frame: i64| millis(retina::Timestamp::new(i64::from(start) + frame * 3000, rate, start).unwrap());
        assert_eq!(at(0), 0);
        assert_eq!(at(1), 33);
        assert_eq!(at(3), 100);
        assert_eq!(at(30 * 3600), 3_600_000, "one hour later, still exact");
        let aac = std::num::NonZeroU32::new(48_000).unwrap();
        assert_eq!(
            millis(retina::Timestamp::new(48_000 * 10 + 1024, aac, 0).unwrap()),
            10_021
        );
    }

    #[test]
    fn cra_and_idr_pictures_are_keyframes() {
        // [len][nal] units: SEI + CRA (type 21) for H.265; SEI + IDR (type 5) for H.264.
        let cra = b"\x00\x00\x00\x02\x4e\x01\x00\x00\x00\x02\x2a\x01";
        assert!(is_keyframe(VideoCodec::H265, cra));
        assert!(!is_keyframe(VideoCodec::H265, b"\x00\x00\x00\x02\x02\x01"), "TRAIL_R");
        assert!(is_keyframe(
            VideoCodec::H264,
            b"\x00\x00\x00\x01\x06\x00\x00\x00\x01\x65"
        ));
        assert!(!is_keyframe(VideoCodec::H264, b"\x00\x00\x00\x01\x41"));
        assert!(!is_keyframe(VideoCodec::H264, b"\x00\x00\x01"), "truncated");
        assert!(
            !is_keyframe(VideoCodec::H264, b"\xff\xff\xff\xff\x41"),
            "length past the end"
        );
    }
}
