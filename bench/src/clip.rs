//! The clip publishers replay: an FLV file read once into memory, and its tags encoded for
//! each ingest protocol (RTMP chunks, HTTP chunked FLV, masked WebSocket frames of FLV).
//!
//! Every publisher sends the same bytes, so each encoding is made once and shared (`Bytes`):
//! the head (metadata and sequence headers, once per publisher) and one encoding of the media
//! tags per loop of the clip, as timestamps grow by the clip's duration with every loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use ferrocast_server::codec::amf0::{self, Amf0Value};
use ferrocast_server::codec::chunk::encode_message;
use ferrocast_server::codec::flv::{encode_tag, FlvReader, Tag, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use ferrocast_server::codec::message::{CSID_AUDIO, CSID_DATA, CSID_VIDEO, TYPE_AUDIO, TYPE_DATA_AMF0, TYPE_VIDEO};

/// The chunk size our RTMP publishers announce (what OBS and ffmpeg use).
pub const RTMP_CHUNK_SIZE: u32 = 4096;
/// The mask key of every WebSocket frame we send. RFC 6455 asks clients for a random key so
/// that proxies cannot be confused; a fixed one is still valid framing, and it lets every
/// publisher share one encoding of the clip.
const WS_MASK: [u8; 4] = [0x3c, 0xa5, 0x5a, 0xc3];

/// How a publisher carries the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    /// RTMP messages on message stream 1 (the id every server we measure hands out first).
    Rtmp,
    /// An HTTP/1.1 chunked request body of FLV.
    HttpChunked,
    /// Masked binary WebSocket frames of FLV.
    WsFrames,
}

/// One message ready to write: when it is due (ms from the publisher's start) and its bytes.
#[derive(Debug, Clone)]
pub struct Item {
    pub due_ms: u64,
    /// Media timestamp it carries (ms).
    pub timestamp: u32,
    pub bytes: Bytes,
}

pub struct Clip {
    /// onMetaData, sequence headers: sent once, at the start.
    head: Vec<Tag>,
    /// Media tags, looped.
    media: Vec<Tag>,
    /// Length of one loop in ms (last video timestamp plus one frame interval).
    pub duration_ms: u32,
    /// Average bitrate of the media tags, bytes per ms (to turn queued bytes into time).
    pub bytes_per_ms: f64,
    pub has_audio: bool,
    pub has_video: bool,
    cache: Mutex<HashMap<(Wire, u32), Arc<Vec<Item>>>>,
}

fn is_sequence_header(t: &Tag) -> bool {
    match t.tag_type {
        // AAC: packet type 0. Other codecs have none.
        TAG_AUDIO => t.body.len() >= 2 && t.body[0] >> 4 == 10 && t.body[1] == 0,
        TAG_VIDEO => {
            let b0 = t.body.first().copied().unwrap_or(0);
            if b0 & 0x80 != 0 {
                b0 & 0x0f == 0 // enhanced RTMP: PacketTypeSequenceStart
            } else {
                t.body.get(1) == Some(&0) && matches!(b0 & 0x0f, 7 | 12 | 13)
            }
        }
        _ => false,
    }
}

impl Clip {
    pub fn load(path: &str) -> Result<Clip> {
        let data = std::fs::read(path).with_context(|| format!("reading clip {path}"))?;
        let mut buf = BytesMut::from(&data[..]);
        let mut reader = FlvReader::new(64 << 20);
        let (mut head, mut media) = (Vec::new(), Vec::new());
        while let Some(tag) = reader.next_tag(&mut buf).context("clip is not a valid FLV file")? {
            match tag.tag_type {
                TAG_SCRIPT if media.is_empty() => head.push(tag),
                TAG_AUDIO | TAG_VIDEO if tag.body.is_empty() => {}
                TAG_AUDIO | TAG_VIDEO if is_sequence_header(&tag) && media.is_empty() => head.push(tag),
                TAG_AUDIO | TAG_VIDEO => media.push(tag),
                _ => {}
            }
        }
        let videos: Vec<u32> = media
            .iter()
            .filter(|t| t.tag_type == TAG_VIDEO)
            .map(|t| t.timestamp)
            .collect();
        let (Some(&first), Some(&last)) = (videos.first(), videos.last()) else {
            bail!("clip {path} has no video frames");
        };
        if videos.len() < 2 || last <= first {
            bail!("clip {path} is too short");
        }
        let interval = (last - first) / (videos.len() as u32 - 1);
        let duration_ms = last + interval.max(1);
        let media_bytes: usize = media.iter().map(|t| t.body.len()).sum();
        Ok(Clip {
            has_audio: media.iter().any(|t| t.tag_type == TAG_AUDIO),
            has_video: true,
            head,
            media,
            duration_ms,
            bytes_per_ms: media_bytes as f64 / f64::from(duration_ms),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The head, encoded for `wire` (timestamp 0, due at once).
    pub fn head(&self, wire: Wire) -> Vec<Bytes> {
        self.head.iter().map(|t| encode(wire, t, 0)).collect()
    }

    /// The media of loop `n`, encoded for `wire`; shared by every publisher in that loop.
    pub fn media(&self, wire: Wire, n: u32) -> Arc<Vec<Item>> {
        let mut cache = self.cache.lock().expect("clip cache");
        if let Some(v) = cache.get(&(wire, n)) {
            return v.clone();
        }
        let offset = u64::from(n) * u64::from(self.duration_ms);
        let items: Vec<Item> = self
            .media
            .iter()
            .map(|t| {
                let ts = (offset + u64::from(t.timestamp)) as u32;
                Item {
                    due_ms: offset + u64::from(t.timestamp),
                    timestamp: ts,
                    bytes: encode(wire, t, ts),
                }
            })
            .collect();
        let items = Arc::new(items);
        // Loops long past are not needed again: every publisher moves forward.
        cache.retain(|(_, k), _| *k + 2 > n);
        cache.insert((wire, n), items.clone());
        items
    }
}

fn encode(wire: Wire, t: &Tag, timestamp: u32) -> Bytes {
    match wire {
        Wire::Rtmp => {
            let (type_id, csid, body) = match t.tag_type {
                TAG_AUDIO => (TYPE_AUDIO, CSID_AUDIO, t.body.clone()),
                TAG_VIDEO => (TYPE_VIDEO, CSID_VIDEO, t.body.clone()),
                _ => {
                    // Encoders send metadata as `@setDataFrame onMetaData {...}`.
                    let mut b = BytesMut::new();
                    amf0::encode(&Amf0Value::String("@setDataFrame".into()), &mut b);
                    b.put_slice(&t.body);
                    (TYPE_DATA_AMF0, CSID_DATA, b.freeze())
                }
            };
            let mut out = BytesMut::new();
            encode_message(&mut out, csid, timestamp, type_id, 1, &body, RTMP_CHUNK_SIZE);
            out.freeze()
        }
        Wire::HttpChunked => http_chunk(&encode_tag(t.tag_type, timestamp, &t.body)),
        Wire::WsFrames => ws_frame(&encode_tag(t.tag_type, timestamp, &t.body)),
    }
}

/// `data` as one chunk of a chunked HTTP body.
pub fn http_chunk(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 12);
    out.put_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.put_slice(data);
    out.put_slice(b"\r\n");
    out.freeze()
}

/// `data` as one masked binary WebSocket frame (FIN set).
pub fn ws_frame(data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 14);
    out.put_u8(0x82);
    match data.len() {
        n if n < 126 => out.put_u8(0x80 | n as u8),
        n if n < 65536 => {
            out.put_u8(0x80 | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(0x80 | 127);
            out.put_u64(n as u64);
        }
    }
    out.put_slice(&WS_MASK);
    out.extend(data.iter().enumerate().map(|(i, b)| b ^ WS_MASK[i % 4]));
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrocast_server::codec::chunk::ChunkDecoder;
    use ferrocast_server::codec::flv::header;

    fn clip_file() -> std::path::PathBuf {
        let mut f = BytesMut::new();
        f.put_slice(&header(true, true));
        let mut meta = BytesMut::new();
        amf0::encode(&Amf0Value::String("onMetaData".into()), &mut meta);
        amf0::encode(&Amf0Value::object([("width", Amf0Value::Number(640.0))]), &mut meta);
        f.put_slice(&encode_tag(TAG_SCRIPT, 0, &meta));
        f.put_slice(&encode_tag(TAG_VIDEO, 0, &[0x17, 0, 0, 0, 0, 1, 2]));
        f.put_slice(&encode_tag(TAG_AUDIO, 0, &[0xaf, 0, 0x12, 0x10]));
        for i in 0..10u32 {
            let key = if i % 5 == 0 { 0x17 } else { 0x27 };
            f.put_slice(&encode_tag(TAG_VIDEO, i * 40, &[key, 1, 0, 0, 0, 9, 9, 9]));
            f.put_slice(&encode_tag(TAG_AUDIO, i * 40 + 5, &[0xaf, 1, 7]));
        }
        let path = std::env::temp_dir().join(format!("ferrocast-bench-clip-{}.flv", std::process::id()));
        std::fs::write(&path, &f).unwrap();
        path
    }

    #[test]
    fn clip_splits_head_and_loops_media() {
        let path = clip_file();
        let clip = Clip::load(path.to_str().unwrap()).unwrap();
        std::fs::remove_file(&path).ok();
        assert_eq!((clip.head.len(), clip.media.len(), clip.duration_ms), (3, 20, 400));
        let loop1 = clip.media(Wire::Rtmp, 1);
        assert_eq!((loop1[0].due_ms, loop1[0].timestamp), (400, 400));
        assert!(Arc::ptr_eq(&loop1, &clip.media(Wire::Rtmp, 1)), "one encoding per loop");

        // The RTMP encoding decodes back to the tags, metadata as @setDataFrame.
        let mut wire = BytesMut::new();
        for b in clip.head(Wire::Rtmp).iter().chain(loop1.iter().map(|i| &i.bytes)) {
            wire.put_slice(b);
        }
        let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
        dec.set_chunk_size(RTMP_CHUNK_SIZE).unwrap();
        let first = dec.decode(&mut wire).unwrap().unwrap();
        assert_eq!((first.type_id, first.stream_id), (TYPE_DATA_AMF0, 1));
        let values = amf0::decode_all(&first.payload).unwrap();
        assert_eq!(values[0].as_str(), Some("@setDataFrame"));
        assert_eq!(values[1].as_str(), Some("onMetaData"));
        let mut count = 1;
        let mut last = None;
        while let Some(m) = dec.decode(&mut wire).unwrap() {
            count += 1;
            last = Some((m.type_id, m.timestamp));
        }
        assert_eq!((count, last), (23, Some((TYPE_AUDIO, 400 + 9 * 40 + 5))));
    }

    #[test]
    fn ws_frames_unmask_to_the_payload() {
        let data: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let f = ws_frame(&data);
        assert_eq!((f[0], f[1] & 0x80, f[1] & 0x7f), (0x82, 0x80, 126));
        let mask = &f[4..8];
        let unmasked: Vec<u8> = f[8..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        assert_eq!(unmasked, data);
        assert_eq!(&http_chunk(b"abc")[..], b"3\r\nabc\r\n");
    }
}
