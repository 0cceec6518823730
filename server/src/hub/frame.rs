//! The shared media frame: created once per published message, handed to every reader by
//! reference count, with each output encoding computed at most once and shared too.

use std::sync::OnceLock;

use bytes::{Bytes, BytesMut};

use crate::codec::chunk::ChunkHeaders;
use crate::codec::flv;
use crate::codec::media::{FourCc, PacketKind};
use crate::codec::message::{CSID_AUDIO, CSID_DATA, CSID_VIDEO, TYPE_AUDIO, TYPE_DATA_AMF0, TYPE_VIDEO};

/// The message stream id players get from their first createStream; frames encoded for it
/// are shared, others are encoded per connection.
pub const SHARED_PLAY_STREAM_ID: u32 = 1;

/// The frame's own allocation (struct, reference counts, buffer headers), for accounting.
const FRAME_OVERHEAD: usize = std::mem::size_of::<MediaFrame>() + 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Audio,
    Video,
    /// Script data: only `onMetaData` is forwarded.
    Data,
}

#[derive(Debug)]
pub struct MediaFrame {
    pub kind: FrameKind,
    pub codec: FourCc,
    /// Decode timestamp in milliseconds, already rebased across publisher reconnects.
    pub timestamp: u32,
    pub composition_offset: i32,
    pub keyframe: bool,
    pub packet: PacketKind,
    /// An enhanced-RTMP v2 multitrack packet: only readers that asked for multitrack get it.
    pub multitrack: bool,
    /// The message body exactly as the publisher sent it (an FLV tag body).
    pub payload: Bytes,
    /// The chunk headers for the shared stream id, inline: every player writes them from here.
    rtmp: OnceLock<ChunkHeaders>,
    flv: OnceLock<Bytes>,
}

impl MediaFrame {
    pub fn new(
        kind: FrameKind,
        codec: FourCc,
        timestamp: u32,
        composition_offset: i32,
        keyframe: bool,
        packet: PacketKind,
        payload: Bytes,
    ) -> Self {
        MediaFrame {
            kind,
            codec,
            timestamp,
            composition_offset,
            keyframe,
            packet,
            multitrack: false,
            payload,
            rtmp: OnceLock::new(),
            flv: OnceLock::new(),
        }
    }

    pub fn with_multitrack(mut self, multitrack: bool) -> Self {
        self.multitrack = multitrack;
        self
    }

    pub fn is_sequence_header(&self) -> bool {
        self.packet == PacketKind::SequenceHeader
    }

    /// RTMP message type and chunk stream id for this frame.
    pub fn rtmp_type(&self) -> (u8, u32) {
        match self.kind {
            FrameKind::Audio => (TYPE_AUDIO, CSID_AUDIO),
            FrameKind::Video => (TYPE_VIDEO, CSID_VIDEO),
            FrameKind::Data => (TYPE_DATA_AMF0, CSID_DATA),
        }
    }

    /// The chunk headers for the shared play stream id, made once: with
    /// [`ChunkHeaders::pieces`] and the payload they make the frame on the wire, written
    /// straight from the frame by every player.
    pub fn shared_rtmp_headers(&self) -> &ChunkHeaders {
        self.rtmp.get_or_init(|| self.rtmp_headers(SHARED_PLAY_STREAM_ID))
    }

    /// The frame as RTMP chunks on `stream_id` at `chunk_size`, in owned buffers around the
    /// payload itself (never a copy of it): for writers that queue frames (relay pushes) and
    /// players on another stream id.
    pub fn rtmp_chunks(&self, stream_id: u32, chunk_size: u32) -> RtmpChunks {
        let own;
        let headers = if stream_id == SHARED_PLAY_STREAM_ID {
            self.shared_rtmp_headers()
        } else {
            own = self.rtmp_headers(stream_id);
            &own
        };
        RtmpChunks {
            first: Bytes::copy_from_slice(headers.first()),
            next: Bytes::copy_from_slice(headers.next()),
            payload: self.payload.clone(),
            chunk_size: chunk_size.max(1) as usize,
        }
    }

    fn rtmp_headers(&self, stream_id: u32) -> ChunkHeaders {
        let (type_id, csid) = self.rtmp_type();
        ChunkHeaders::new(csid, self.timestamp, type_id, stream_id, self.payload.len())
    }

    /// The frame as one complete FLV tag, computed once and shared by HTTP-FLV and WS-FLV.
    pub fn flv_tag(&self) -> Bytes {
        self.flv
            .get_or_init(|| {
                let tag_type = match self.kind {
                    FrameKind::Audio => flv::TAG_AUDIO,
                    FrameKind::Video => flv::TAG_VIDEO,
                    FrameKind::Data => flv::TAG_SCRIPT,
                };
                flv::encode_tag(tag_type, self.timestamp, &self.payload)
            })
            .clone()
    }

    /// Bytes this frame holds now: the payload, the encodings made so far and the frame itself.
    pub fn held_bytes(&self) -> usize {
        let flv = self.flv.get().map_or(0, Bytes::len);
        FRAME_OVERHEAD + self.payload.len() + flv
    }

    /// The most this frame can come to hold once readers have made its shared encodings: what
    /// caches charge, so their bounds hold whichever outputs are in use.
    pub fn max_held_bytes(&self) -> usize {
        let n = self.payload.len();
        // RTMP adds nothing: its chunk headers are inline and the payload is shared.
        let flv = n + flv::TAG_HEADER_LEN + 4;
        FRAME_OVERHEAD + n + flv
    }
}

/// A frame as RTMP chunks: its payload cut at the chunk size, each piece after the first
/// preceded by the continuation header. Cheap to clone (shared buffers only).
#[derive(Debug, Clone)]
pub struct RtmpChunks {
    first: Bytes,
    next: Bytes,
    payload: Bytes,
    chunk_size: usize,
}

impl RtmpChunks {
    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        let further = self.payload.len().div_ceil(self.chunk_size).saturating_sub(1);
        self.first.len() + further * self.next.len() + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the buffers to write, in order (for a vectored write).
    pub fn append_to(&self, out: &mut Vec<Bytes>) {
        out.push(self.first.clone());
        let mut at = 0;
        while at < self.payload.len() {
            if at > 0 {
                out.push(self.next.clone());
            }
            let end = (at + self.chunk_size).min(self.payload.len());
            out.push(self.payload.slice(at..end));
            at = end;
        }
    }

    /// The chunks in one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut parts = Vec::new();
        self.append_to(&mut parts);
        let mut out = BytesMut::with_capacity(self.len());
        for p in parts {
            out.extend_from_slice(&p);
        }
        out.freeze()
    }
}

/// Builds the `onMetaData` script body from the publisher's metadata values.
pub fn metadata_body(values: &[crate::codec::amf0::Amf0Value]) -> Bytes {
    let mut out = BytesMut::new();
    crate::codec::amf0::encode(&crate::codec::amf0::Amf0Value::String("onMetaData".into()), &mut out);
    crate::codec::amf0::encode_all(values, &mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::chunk::ChunkDecoder;

    fn frame(payload: &'static [u8]) -> MediaFrame {
        MediaFrame::new(
            FrameKind::Video,
            FourCc::AVC,
            1234,
            0,
            true,
            PacketKind::Frame,
            Bytes::from_static(payload),
        )
    }

    #[test]
    fn shared_encodings_are_computed_once() {
        let f = frame(b"\x17\x01\x00\x00\x00abc");
        assert_eq!(
            f.shared_rtmp_headers().first().as_ptr(),
            f.shared_rtmp_headers().first().as_ptr(),
            "second reader gets the same headers"
        );
        let pieces: Vec<&[u8]> = f.shared_rtmp_headers().pieces(&f.payload, 60000).collect();
        assert_eq!(pieces[1].as_ptr(), f.payload.as_ptr(), "the payload itself, not a copy");
        let mut parts = Vec::new();
        f.rtmp_chunks(1, 60000).append_to(&mut parts);
        assert_eq!(parts[1].as_ptr(), f.payload.as_ptr(), "the payload itself, not a copy");
        let t1 = f.flv_tag();
        let t2 = f.flv_tag();
        assert_eq!(t1.as_ptr(), t2.as_ptr());
    }

    #[test]
    fn rtmp_encoding_decodes_back_to_the_payload() {
        let f = frame(b"\x17\x01\x00\x00\x00abc");
        for sid in [1, 3] {
            let chunks = f.rtmp_chunks(sid, 4);
            assert_eq!(chunks.len(), chunks.to_bytes().len());
            let mut buf = BytesMut::from(&chunks.to_bytes()[..]);
            let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
            dec.set_chunk_size(4).unwrap();
            let m = dec.decode(&mut buf).unwrap().unwrap();
            assert_eq!(
                (m.type_id, m.stream_id, m.timestamp, &m.payload[..]),
                (9, sid, 1234, &f.payload[..])
            );
        }
    }
}
