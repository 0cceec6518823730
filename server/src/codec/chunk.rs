//! RTMP chunk stream: reassembles messages from chunks (types 0-3, extended timestamps,
//! aborts) and splits messages into chunks.
//!
//! The decoder follows "check, then parse": it consumes a chunk only when the whole chunk is
//! buffered, so `Ok(None)` means "need more bytes" and never loses state. Every length the
//! peer controls is capped: chunk size, number of chunk streams, message length (media and
//! everything else have separate limits, so a session can keep commands small while letting
//! a publisher send large frames), and the total length of the messages started but not
//! finished across all chunk streams, which is what a peer can make us buffer at once.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::message::{TYPE_AGGREGATE, TYPE_AUDIO, TYPE_DATA_AMF0, TYPE_DATA_AMF3, TYPE_VIDEO};

/// Chunk size every RTMP connection starts with.
pub const DEFAULT_CHUNK_SIZE: u32 = 128;
/// Timestamps at or above this value go in the extended timestamp field.
const EXTENDED_TIMESTAMP: u32 = 0x00FF_FFFF;
/// A peer may use this many distinct chunk stream ids; real clients use fewer than ten.
const MAX_CHUNK_STREAMS: usize = 64;

/// One reassembled RTMP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMessage {
    pub csid: u32,
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("message length {0} exceeds the limit of {1} bytes")]
    MessageTooLarge(u32, u32),
    #[error("messages started but not finished would total {0} bytes, over the limit of {1}")]
    TooMuchUnfinished(u64, u64),
    #[error("chunk size {0} is out of range (1..={1})")]
    BadChunkSize(u32, u32),
    #[error("chunk continues a message on chunk stream {0} that never started")]
    NoPreviousHeader(u32),
    #[error("too many chunk streams (limit {MAX_CHUNK_STREAMS})")]
    TooManyChunkStreams,
    #[error("message length or type changed in the middle of a message on chunk stream {0}")]
    HeaderChangedMidMessage(u32),
}

#[derive(Debug, Default, Clone)]
struct ChunkStreamState {
    /// Whether a full header was ever seen; continuation types need one.
    initialized: bool,
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    /// The last header carried an extended timestamp, so type-3 chunks may too.
    extended: bool,
    extended_value: u32,
    partial: BytesMut,
}

/// Message types held to the media limit: audio, video, aggregates of them, and data
/// messages (`onMetaData`), which a publisher sends alongside its media. Every other type
/// (commands, shared objects, protocol control) is held to the command limit.
fn is_media_type(type_id: u8) -> bool {
    matches!(
        type_id,
        TYPE_AUDIO | TYPE_VIDEO | TYPE_AGGREGATE | TYPE_DATA_AMF0 | TYPE_DATA_AMF3
    )
}

fn stream_mut(streams: &mut [(u32, ChunkStreamState)], csid: u32) -> Option<&mut ChunkStreamState> {
    streams.iter_mut().find(|(id, _)| *id == csid).map(|(_, s)| s)
}

/// Reassembles messages from the peer's chunk stream.
#[derive(Debug)]
pub struct ChunkDecoder {
    chunk_size: u32,
    max_chunk_size: u32,
    max_media_message: u32,
    max_command_message: u32,
    /// Sum of the announced lengths of messages started but not finished. Counted by
    /// announced length because that is what the reassembly buffer reserves.
    unfinished: u64,
    /// By chunk stream id. A peer uses a handful, so a linear search beats hashing on every
    /// chunk.
    streams: Vec<(u32, ChunkStreamState)>,
    /// Whether a message that arrives whole in one chunk may be a slice of the input buffer.
    share_input: bool,
}

impl ChunkDecoder {
    /// A decoder that caps every message at `max_message_size`.
    pub fn new(max_chunk_size: u32, max_message_size: u32) -> Self {
        ChunkDecoder {
            chunk_size: DEFAULT_CHUNK_SIZE,
            max_chunk_size,
            max_media_message: max_message_size,
            max_command_message: max_message_size,
            unfinished: 0,
            streams: Vec::new(),
            share_input: false,
        }
    }

    /// Lets a message that arrives whole in one chunk (most audio and inter frames at the
    /// usual 4096-byte chunk size) be a slice of the input buffer instead of a copy: no
    /// allocation and no copy per message. The slice keeps the whole input allocation alive,
    /// so the caller allows it only while that allocation is small.
    pub fn set_share_input(&mut self, share: bool) {
        self.share_input = share;
    }

    fn stream(&self, csid: u32) -> Option<&ChunkStreamState> {
        self.streams.iter().find(|(id, _)| *id == csid).map(|(_, s)| s)
    }

    /// Caps media and data messages at `media` bytes and every other message at `command`
    /// bytes. Messages already started keep the limit they were checked against.
    pub fn set_message_limits(&mut self, media: u32, command: u32) {
        self.max_media_message = media;
        self.max_command_message = command;
    }

    /// The most bytes of unfinished messages held at once: room for the largest message
    /// plus as much again interleaved with it (a well-behaved peer has one unfinished
    /// message per chunk stream it uses, and only its video frames are large).
    pub fn max_unfinished(&self) -> u64 {
        2 * u64::from(self.max_media_message.max(self.max_command_message))
    }

    /// Applies the peer's SetChunkSize.
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size > self.max_chunk_size {
            return Err(ChunkError::BadChunkSize(size, self.max_chunk_size));
        }
        self.chunk_size = size;
        Ok(())
    }

    pub fn chunk_size(&self) -> u32 {
        self.chunk_size
    }

    /// Drops the partly received message on `csid` (the peer's Abort message).
    pub fn abort(&mut self, csid: u32) {
        if let Some(s) = stream_mut(&mut self.streams, csid) {
            if !s.partial.is_empty() {
                self.unfinished = self.unfinished.saturating_sub(u64::from(s.length));
            }
            s.partial = BytesMut::new();
        }
    }

    /// Decodes chunks from the front of `buf` until one message is complete.
    /// `Ok(None)`: every complete chunk was consumed and more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<RawMessage>, ChunkError> {
        loop {
            match self.decode_chunk(buf)? {
                ChunkOutcome::NeedMore => return Ok(None),
                ChunkOutcome::Partial => continue,
                ChunkOutcome::Message(m) => return Ok(Some(m)),
            }
        }
    }

    fn decode_chunk(&mut self, buf: &mut BytesMut) -> Result<ChunkOutcome, ChunkError> {
        let data: &[u8] = buf;
        let Some(&b0) = data.first() else {
            return Ok(ChunkOutcome::NeedMore);
        };
        let fmt = b0 >> 6;
        let (csid, mut pos) = match b0 & 0x3f {
            0 => match data.get(1) {
                Some(&b) => (64 + u32::from(b), 2),
                None => return Ok(ChunkOutcome::NeedMore),
            },
            1 => match data.get(1..3) {
                Some(b) => (64 + u32::from(b[0]) + 256 * u32::from(b[1]), 3),
                None => return Ok(ChunkOutcome::NeedMore),
            },
            id => (u32::from(id), 1),
        };
        let header_len = [11, 7, 3, 0][fmt as usize];
        let Some(h) = data.get(pos..pos + header_len) else {
            return Ok(ChunkOutcome::NeedMore);
        };
        pos += header_len;

        let known = self.stream(csid);
        if known.is_none() && self.streams.len() >= MAX_CHUNK_STREAMS {
            return Err(ChunkError::TooManyChunkStreams);
        }
        let prev = known.cloned_header();
        if fmt != 0 && !prev.initialized {
            return Err(ChunkError::NoPreviousHeader(csid));
        }
        let continuing = !prev.partial_is_empty;
        let (prev_length, prev_type) = (prev.length, prev.type_id);

        let mut next = prev;
        let mut ts_field = 0;
        if fmt <= 2 {
            ts_field = be24(&h[0..3]);
        }
        if fmt <= 1 {
            next.length = be24(&h[3..6]);
            next.type_id = h[6];
        }
        if fmt == 0 {
            next.stream_id = u32::from_le_bytes([h[7], h[8], h[9], h[10]]);
        }
        // The limits are checked when a message starts; a new length or type half-way would
        // slip past them.
        if continuing && fmt <= 1 && (next.length != prev_length || next.type_id != prev_type) {
            return Err(ChunkError::HeaderChangedMidMessage(csid));
        }
        let mut ext_value = None;
        if fmt <= 2 {
            next.extended = ts_field == EXTENDED_TIMESTAMP;
            if next.extended {
                let Some(e) = data.get(pos..pos + 4) else {
                    return Ok(ChunkOutcome::NeedMore);
                };
                ext_value = Some(u32::from_be_bytes([e[0], e[1], e[2], e[3]]));
                pos += 4;
            }
        } else if next.extended {
            // Type 3 after an extended timestamp repeats it (ffmpeg, librtmp); some encoders
            // omit it on continuation chunks, so only consume it when it matches.
            let Some(e) = data.get(pos..pos + 4) else {
                return Ok(ChunkOutcome::NeedMore);
            };
            let v = u32::from_be_bytes([e[0], e[1], e[2], e[3]]);
            if !continuing || v == next.extended_value {
                ext_value = Some(v);
                pos += 4;
            }
        }
        let ts_value = ext_value.unwrap_or(ts_field);

        if !continuing {
            let limit = if is_media_type(next.type_id) {
                self.max_media_message
            } else {
                self.max_command_message
            };
            if next.length > limit {
                return Err(ChunkError::MessageTooLarge(next.length, limit));
            }
            let total = self.unfinished + u64::from(next.length);
            if total > self.max_unfinished() {
                return Err(ChunkError::TooMuchUnfinished(total, self.max_unfinished()));
            }
        }
        let already = if continuing { next.partial_len } else { 0 };
        let remaining = (next.length as usize).saturating_sub(already);
        let take = remaining.min(self.chunk_size as usize);
        if data.len() < pos + take {
            return Ok(ChunkOutcome::NeedMore);
        }

        // The whole chunk is here: commit the header state and consume it.
        if !continuing {
            match fmt {
                0 => next.timestamp = ts_value,
                1 | 2 => {
                    next.delta = ts_value;
                    next.timestamp = next.timestamp.wrapping_add(ts_value);
                }
                _ => {
                    if ext_value.is_some() {
                        next.delta = ts_value;
                    }
                    next.timestamp = next.timestamp.wrapping_add(next.delta);
                }
            }
        }
        if let Some(v) = ext_value {
            next.extended_value = v;
        }
        if self.stream(csid).is_none() {
            self.streams.push((csid, ChunkStreamState::default()));
        }
        let state = stream_mut(&mut self.streams, csid).expect("inserted above");
        state.initialized = true;
        state.timestamp = next.timestamp;
        state.delta = next.delta;
        state.length = next.length;
        state.type_id = next.type_id;
        state.stream_id = next.stream_id;
        state.extended = next.extended;
        state.extended_value = next.extended_value;
        if !continuing && self.share_input && take == state.length as usize {
            buf.advance(pos);
            let payload = buf.split_to(take).freeze();
            return Ok(ChunkOutcome::Message(RawMessage {
                csid,
                timestamp: state.timestamp,
                type_id: state.type_id,
                stream_id: state.stream_id,
                payload,
            }));
        }
        if !continuing && state.partial.capacity() < next.length as usize {
            state.partial = BytesMut::with_capacity(next.length as usize);
        }
        buf.advance(pos);
        state.partial.put_slice(&buf[..take]);
        buf.advance(take);
        if state.partial.len() < state.length as usize {
            if !continuing {
                self.unfinished += u64::from(state.length);
            }
            return Ok(ChunkOutcome::Partial);
        }
        if continuing {
            self.unfinished = self.unfinished.saturating_sub(u64::from(state.length));
        }
        // Taken whole, not split: the payload becomes a plain vector-backed `Bytes` instead of
        // a shared one, which saves an allocation per message (the next message allocates
        // its own buffer either way).
        let payload = std::mem::take(&mut state.partial).freeze();
        Ok(ChunkOutcome::Message(RawMessage {
            csid,
            timestamp: state.timestamp,
            type_id: state.type_id,
            stream_id: state.stream_id,
            payload,
        }))
    }
}

enum ChunkOutcome {
    NeedMore,
    Partial,
    Message(RawMessage),
}

/// A copy of a chunk stream's header state without its buffered payload.
#[derive(Default)]
struct HeaderState {
    initialized: bool,
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    extended_value: u32,
    partial_is_empty: bool,
    partial_len: usize,
}

trait ClonedHeader {
    fn cloned_header(self) -> HeaderState;
}

impl ClonedHeader for Option<&ChunkStreamState> {
    fn cloned_header(self) -> HeaderState {
        match self {
            None => HeaderState {
                partial_is_empty: true,
                ..HeaderState::default()
            },
            Some(s) => HeaderState {
                initialized: s.initialized,
                timestamp: s.timestamp,
                delta: s.delta,
                length: s.length,
                type_id: s.type_id,
                stream_id: s.stream_id,
                extended: s.extended,
                extended_value: s.extended_value,
                partial_is_empty: s.partial.is_empty(),
                partial_len: s.partial.len(),
            },
        }
    }
}

fn be24(b: &[u8]) -> u32 {
    (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2])
}

/// Where a chunk header is written: an output buffer, or a header of its own.
trait HeaderOut {
    fn header_u8(&mut self, b: u8);
    fn header_u16_le(&mut self, n: u16);
}

impl HeaderOut for BytesMut {
    fn header_u8(&mut self, b: u8) {
        self.put_u8(b);
    }

    fn header_u16_le(&mut self, n: u16) {
        self.put_u16_le(n);
    }
}

impl<const N: usize> HeaderOut for HeaderBuf<N> {
    fn header_u8(&mut self, b: u8) {
        self.put(&[b]);
    }

    fn header_u16_le(&mut self, n: u16) {
        self.put(&n.to_le_bytes());
    }
}

fn put_basic_header(out: &mut impl HeaderOut, fmt: u8, csid: u32) {
    match csid {
        2..=63 => out.header_u8((fmt << 6) | csid as u8),
        64..=319 => {
            out.header_u8(fmt << 6);
            out.header_u8((csid - 64) as u8);
        }
        _ => {
            out.header_u8((fmt << 6) | 1);
            out.header_u16_le((csid - 64) as u16);
        }
    }
}

/// Encoded size of a message, so callers can reserve once.
pub fn encoded_len(csid: u32, timestamp: u32, payload_len: usize, chunk_size: u32) -> usize {
    let basic = match csid {
        2..=63 => 1,
        64..=319 => 2,
        _ => 3,
    };
    let ext = if timestamp >= EXTENDED_TIMESTAMP { 4 } else { 0 };
    let chunks = payload_len.div_ceil(chunk_size as usize).max(1);
    basic + 11 + ext + (chunks - 1) * (basic + ext) + payload_len
}

/// The chunk headers of one message: the type-0 header of its first chunk and the type-3
/// header of every further chunk. Plain values, so a frame can keep them inline and every
/// player of it write them from there.
#[derive(Debug, Clone, Copy)]
pub struct ChunkHeaders {
    first: HeaderBuf<18>,
    next: HeaderBuf<7>,
}

impl ChunkHeaders {
    pub fn new(csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload_len: usize) -> Self {
        debug_assert!((2..=65599).contains(&csid));
        let extended = timestamp >= EXTENDED_TIMESTAMP;
        let mut first = HeaderBuf::default();
        put_basic_header(&mut first, 0, csid);
        let ts_field = if extended { EXTENDED_TIMESTAMP } else { timestamp };
        first.put(&ts_field.to_be_bytes()[1..]);
        first.put(&(payload_len as u32).to_be_bytes()[1..]);
        first.put(&[type_id]);
        first.put(&stream_id.to_le_bytes());
        let mut next = HeaderBuf::default();
        put_basic_header(&mut next, 3, csid);
        if extended {
            first.put(&timestamp.to_be_bytes());
            next.put(&timestamp.to_be_bytes());
        }
        ChunkHeaders { first, next }
    }

    /// The first chunk's header.
    pub fn first(&self) -> &[u8] {
        self.first.as_slice()
    }

    /// The header of every chunk after the first.
    pub fn next(&self) -> &[u8] {
        self.next.as_slice()
    }

    /// The message's bytes on the wire, in order: the first header, then the payload cut at
    /// `chunk_size` with the continuation header between the pieces.
    pub fn pieces<'a>(&'a self, payload: &'a [u8], chunk_size: usize) -> impl Iterator<Item = &'a [u8]> + 'a {
        let chunk_size = chunk_size.max(1);
        let chunks = payload.chunks(chunk_size);
        std::iter::once(self.first())
            .chain(chunks.enumerate().flat_map(move |(i, c)| {
                let header: &[u8] = if i == 0 { &[] } else { self.next() };
                [header, c]
            }))
            .filter(|p| !p.is_empty())
    }

    /// Bytes on the wire of a message of `payload_len` bytes.
    pub fn wire_len(&self, payload_len: usize, chunk_size: usize) -> usize {
        let further = payload_len.div_ceil(chunk_size.max(1)).saturating_sub(1);
        self.first().len() + further * self.next().len() + payload_len
    }
}

/// Bytes of a header, inline.
#[derive(Debug, Clone, Copy)]
struct HeaderBuf<const N: usize> {
    buf: [u8; N],
    len: u8,
}

impl<const N: usize> Default for HeaderBuf<N> {
    fn default() -> Self {
        HeaderBuf { buf: [0; N], len: 0 }
    }
}

impl<const N: usize> HeaderBuf<N> {
    fn put(&mut self, b: &[u8]) {
        let at = usize::from(self.len);
        self.buf[at..at + b.len()].copy_from_slice(b);
        self.len += b.len() as u8;
    }

    fn as_slice(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

/// Appends one message as chunks: a type-0 chunk, then type-3 continuations.
///
/// Every message starts with a full header so the encoding depends on nothing but its
/// arguments; that lets the hub encode a media frame once and share it with every player.
/// Continuations repeat the extended timestamp, as ffmpeg and librtmp expect.
pub fn encode_message(
    out: &mut BytesMut,
    csid: u32,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    chunk_size: u32,
) {
    debug_assert!((2..=65599).contains(&csid));
    out.reserve(encoded_len(csid, timestamp, payload.len(), chunk_size));
    let extended = timestamp >= EXTENDED_TIMESTAMP;
    put_basic_header(out, 0, csid);
    let ts_field = if extended { EXTENDED_TIMESTAMP } else { timestamp };
    out.put_uint(u64::from(ts_field), 3);
    out.put_uint(payload.len() as u64, 3);
    out.put_u8(type_id);
    out.put_u32_le(stream_id);
    if extended {
        out.put_u32(timestamp);
    }
    let mut chunks = payload.chunks(chunk_size as usize);
    if let Some(first) = chunks.next() {
        out.put_slice(first);
    }
    for chunk in chunks {
        put_basic_header(out, 3, csid);
        if extended {
            out.put_u32(timestamp);
        }
        out.put_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn headers_around_the_payload_make_the_encoded_message() {
        for (timestamp, len, chunk_size, csid) in [
            (0, 0, 128, 6),
            (40, 100, 128, 6),
            (40, 128, 128, 4),
            (0xff_ffff, 1000, 128, 70),
            (0x0100_0000, 5000, 4096, 400),
        ] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut want = BytesMut::new();
            encode_message(&mut want, csid, timestamp, 9, 1, &payload, chunk_size);
            let headers = ChunkHeaders::new(csid, timestamp, 9, 1, payload.len());
            let got: Vec<u8> = headers
                .pieces(&payload, chunk_size as usize)
                .flatten()
                .copied()
                .collect();
            assert_eq!(
                got,
                want.to_vec(),
                "ts {timestamp} len {len} chunk {chunk_size} csid {csid}"
            );
            assert_eq!(headers.wire_len(payload.len(), chunk_size as usize), want.len());
        }
    }

    fn decode_all(dec: &mut ChunkDecoder, bytes: &[u8]) -> Result<Vec<RawMessage>, ChunkError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = dec.decode(&mut buf)? {
            out.push(m);
        }
        assert!(buf.is_empty(), "left {} bytes undecoded", buf.len());
        Ok(out)
    }

    fn msg(csid: u32, ts: u32, type_id: u8, sid: u32, payload: &[u8]) -> RawMessage {
        RawMessage {
            csid,
            timestamp: ts,
            type_id,
            stream_id: sid,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    /// One table drives both directions: `wire` decodes to `messages` at `chunk_size`,
    /// and, where `encodes` is set, encoding `messages` yields `wire`.
    #[derive(Clone)]
    struct Case {
        name: &'static str,
        chunk_size: u32,
        wire: Vec<u8>,
        messages: Vec<RawMessage>,
        encodes: bool,
    }

    fn cases() -> Vec<Case> {
        let big: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let mut split_big = vec![0x06, 0, 0, 0x10, 0, 0x01, 0x2c, 9, 1, 0, 0, 0];
        split_big.extend_from_slice(&big[..128]);
        split_big.push(0xc6);
        split_big.extend_from_slice(&big[128..256]);
        split_big.push(0xc6);
        split_big.extend_from_slice(&big[256..]);

        let mut ext = vec![0x04, 0xff, 0xff, 0xff, 0, 0, 200, 8, 1, 0, 0, 0, 0x01, 0x00, 0x00, 0x00];
        ext.extend_from_slice(&big[..128]);
        ext.extend_from_slice(&[0xc4, 0x01, 0x00, 0x00, 0x00]);
        ext.extend_from_slice(&big[128..200]);

        let mut ext_no_repeat = vec![0x04, 0xff, 0xff, 0xff, 0, 0, 200, 8, 1, 0, 0, 0, 0x01, 0x00, 0x00, 0x00];
        ext_no_repeat.extend_from_slice(&big[..128]);
        ext_no_repeat.push(0xc4);
        ext_no_repeat.extend_from_slice(&big[128..200]);

        vec![
            Case {
                name: "type 0 single chunk",
                chunk_size: 128,
                wire: vec![0x03, 0, 0, 0x0a, 0, 0, 3, 20, 0, 0, 0, 0, b'a', b'b', b'c'],
                messages: vec![msg(3, 10, 20, 0, b"abc")],
                encodes: true,
            },
            Case {
                name: "message split at chunk size 128 with type 3 continuations",
                chunk_size: 128,
                wire: split_big,
                messages: vec![msg(6, 0x10, 9, 1, &big)],
                encodes: true,
            },
            Case {
                name: "extended timestamp repeated on type 3 continuation",
                chunk_size: 128,
                wire: ext,
                messages: vec![msg(4, 0x0100_0000, 8, 1, &big[..200])],
                encodes: true,
            },
            Case {
                name: "extended timestamp omitted on continuation is tolerated",
                chunk_size: 128,
                wire: ext_no_repeat,
                messages: vec![msg(4, 0x0100_0000, 8, 1, &big[..200])],
                encodes: false,
            },
            Case {
                name: "type 1 and type 2 carry timestamp deltas",
                chunk_size: 128,
                wire: vec![
                    0x04, 0, 0, 100, 0, 0, 1, 8, 1, 0, 0, 0, 0xaa, // t=100
                    0x44, 0, 0, 23, 0, 0, 2, 8, 0xbb, 0xcc, // +23 len 2
                    0x84, 0, 0, 23, 0xdd, 0xee, // +23 same length
                    0xc4, 0x11, 0x22, // type 3 new message: +23 again
                ],
                messages: vec![
                    msg(4, 100, 8, 1, &[0xaa]),
                    msg(4, 123, 8, 1, &[0xbb, 0xcc]),
                    msg(4, 146, 8, 1, &[0xdd, 0xee]),
                    msg(4, 169, 8, 1, &[0x11, 0x22]),
                ],
                encodes: false,
            },
            Case {
                name: "two byte chunk stream id",
                chunk_size: 128,
                wire: vec![0x00, 36, 0, 0, 1, 0, 0, 1, 9, 1, 0, 0, 0, 0x17],
                messages: vec![msg(100, 1, 9, 1, &[0x17])],
                encodes: true,
            },
            Case {
                name: "three byte chunk stream id",
                chunk_size: 128,
                wire: vec![0x01, 0x18, 0x02, 0, 0, 1, 0, 0, 1, 9, 1, 0, 0, 0, 0x17],
                messages: vec![msg(600, 1, 9, 1, &[0x17])],
                encodes: true,
            },
            Case {
                name: "empty message",
                chunk_size: 128,
                wire: vec![0x05, 0, 0, 0, 0, 0, 0, 18, 1, 0, 0, 0],
                messages: vec![msg(5, 0, 18, 1, &[])],
                encodes: true,
            },
            Case {
                name: "interleaved chunk streams",
                chunk_size: 2,
                wire: vec![
                    0x04, 0, 0, 1, 0, 0, 3, 8, 1, 0, 0, 0, b'a', b'b', // audio part 1
                    0x06, 0, 0, 2, 0, 0, 2, 9, 1, 0, 0, 0, b'v', b'w', // whole video
                    0xc4, b'c', // audio part 2
                ],
                messages: vec![msg(6, 2, 9, 1, b"vw"), msg(4, 1, 8, 1, b"abc")],
                encodes: false,
            },
        ]
    }

    #[test]
    fn chunk_cases_decode() {
        for (case, share) in cases().into_iter().flat_map(|c| [(c.clone(), false), (c, true)]) {
            let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
            dec.set_share_input(share);
            dec.set_chunk_size(case.chunk_size).unwrap();
            let got = decode_all(&mut dec, &case.wire).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(got, case.messages, "{} (shared input: {share})", case.name);
        }
    }

    #[test]
    fn a_message_whole_in_one_chunk_is_a_slice_of_the_input_when_sharing() {
        let mut wire = BytesMut::new();
        encode_message(&mut wire, 6, 40, 9, 1, &[7u8; 300], 4096);
        encode_message(&mut wire, 6, 80, 9, 1, &[8u8; 300], 128);
        let start = wire.as_ptr() as usize;
        let end = start + wire.len();
        let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
        dec.set_share_input(true);
        dec.set_chunk_size(4096).unwrap();
        let whole = dec.decode(&mut wire).unwrap().unwrap();
        let at = whole.payload.as_ptr() as usize;
        assert!((start..end).contains(&at), "the payload is the input's own bytes");
        assert_eq!(&whole.payload[..], &[7u8; 300][..]);
        dec.set_chunk_size(128).unwrap();
        let split = dec.decode(&mut wire).unwrap().unwrap();
        let at = split.payload.as_ptr() as usize;
        assert!(
            !(start..end).contains(&at),
            "a message over several chunks is reassembled"
        );
        assert_eq!(&split.payload[..], &[8u8; 300][..]);

        let mut wire = BytesMut::new();
        encode_message(&mut wire, 6, 40, 9, 1, &[7u8; 300], 4096);
        let (start, end) = (wire.as_ptr() as usize, wire.as_ptr() as usize + wire.len());
        let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
        dec.set_chunk_size(4096).unwrap();
        let copied = dec.decode(&mut wire).unwrap().unwrap();
        assert!(
            !(start..end).contains(&(copied.payload.as_ptr() as usize)),
            "copied unless allowed"
        );
    }

    #[test]
    fn chunk_cases_decode_byte_by_byte() {
        for (case, share) in cases().into_iter().flat_map(|c| [(c.clone(), false), (c, true)]) {
            let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
            dec.set_share_input(share);
            dec.set_chunk_size(case.chunk_size).unwrap();
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for b in &case.wire {
                buf.put_u8(*b);
                while let Some(m) = dec.decode(&mut buf).unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(got, case.messages, "{}", case.name);
        }
    }

    #[test]
    fn chunk_cases_encode() {
        for case in cases().into_iter().filter(|c| c.encodes) {
            let mut out = BytesMut::new();
            for m in &case.messages {
                encode_message(
                    &mut out,
                    m.csid,
                    m.timestamp,
                    m.type_id,
                    m.stream_id,
                    &m.payload,
                    case.chunk_size,
                );
                assert_eq!(
                    encoded_len(m.csid, m.timestamp, m.payload.len(), case.chunk_size),
                    out.len(),
                    "{}",
                    case.name
                );
            }
            assert_eq!(&out[..], &case.wire[..], "{}", case.name);
        }
    }

    #[test]
    fn oversized_message_is_rejected_before_buffering() {
        let mut dec = ChunkDecoder::new(1 << 20, 1000);
        let mut buf = BytesMut::from(&[0x04u8, 0, 0, 0, 0xff, 0xff, 0xff, 9, 1, 0, 0, 0][..]);
        assert_eq!(dec.decode(&mut buf), Err(ChunkError::MessageTooLarge(0xff_ffff, 1000)));
    }

    #[test]
    fn commands_and_media_have_separate_limits() {
        let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
        dec.set_message_limits(100_000, 1000);
        // A 5000-byte video message is fine, a 5000-byte command is not.
        let mut buf = BytesMut::new();
        encode_message(&mut buf, 6, 0, TYPE_VIDEO, 1, &[0x17; 5000], 128);
        assert_eq!(dec.decode(&mut buf).unwrap().map(|m| m.payload.len()), Some(5000));
        let mut buf = BytesMut::from(&[0x03u8, 0, 0, 0, 0, 0x13, 0x88, 20, 0, 0, 0, 0][..]);
        assert_eq!(dec.decode(&mut buf), Err(ChunkError::MessageTooLarge(5000, 1000)));
    }

    #[test]
    fn unfinished_messages_across_chunk_streams_are_capped() {
        let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
        dec.set_message_limits(10_000, 10_000);
        assert_eq!(dec.max_unfinished(), 20_000);
        // Each chunk stream starts a 9000-byte message and sends its first 128 bytes: each is
        // under the message limit, but the third would have 27000 bytes unfinished.
        let start = |csid: u8| {
            let mut w = vec![csid, 0, 0, 0, 0, 0x23, 0x28, 9, 1, 0, 0, 0];
            w.extend_from_slice(&[0; 128]);
            w
        };
        let mut buf = BytesMut::new();
        for csid in [4, 5] {
            buf.extend_from_slice(&start(csid));
        }
        assert_eq!(dec.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&start(6));
        assert_eq!(dec.decode(&mut buf), Err(ChunkError::TooMuchUnfinished(27_000, 20_000)));
    }

    #[test]
    fn finished_and_aborted_messages_release_their_share() {
        let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
        dec.set_message_limits(10_000, 10_000);
        let payload = vec![0u8; 9000];
        // Many 9000-byte messages in a row on one chunk stream never add up.
        for _ in 0..10 {
            let mut buf = BytesMut::new();
            encode_message(&mut buf, 4, 0, TYPE_VIDEO, 1, &payload, 128);
            assert!(dec.decode(&mut buf).unwrap().is_some());
        }
        // Started then aborted, twice on each of two streams: nothing stays counted.
        for _ in 0..2 {
            for csid in [4u8, 5] {
                let mut w = vec![csid, 0, 0, 0, 0, 0x23, 0x28, 9, 1, 0, 0, 0];
                w.extend_from_slice(&[0; 128]);
                let mut buf = BytesMut::from(&w[..]);
                assert_eq!(dec.decode(&mut buf), Ok(None));
            }
            dec.abort(4);
            dec.abort(5);
        }
        assert_eq!(dec.unfinished, 0);
    }

    #[test]
    fn length_change_in_the_middle_of_a_message_is_rejected() {
        let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
        dec.set_message_limits(1 << 20, 200);
        // A 150-byte command starts within the command limit, then a type-1 header on the
        // same chunk stream claims a far larger length.
        let mut w = vec![0x03u8, 0, 0, 0, 0, 0, 150, 20, 0, 0, 0, 0];
        w.extend_from_slice(&[0x05; 128]);
        w.extend_from_slice(&[0x43, 0, 0, 0, 0x10, 0, 0, 20]);
        w.extend_from_slice(&[0x05; 22]);
        let mut buf = BytesMut::from(&w[..]);
        assert_eq!(dec.decode(&mut buf), Err(ChunkError::HeaderChangedMidMessage(3)));
    }

    #[test]
    fn chunk_size_out_of_range_is_rejected() {
        let mut dec = ChunkDecoder::new(65536, 1 << 20);
        assert!(dec.set_chunk_size(0).is_err());
        assert!(dec.set_chunk_size(0x8000_0000).is_err());
        assert!(dec.set_chunk_size(65536).is_ok());
    }

    #[test]
    fn continuation_without_header_is_rejected() {
        let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
        let mut buf = BytesMut::from(&[0xc4u8, 1, 2][..]);
        assert_eq!(dec.decode(&mut buf), Err(ChunkError::NoPreviousHeader(4)));
    }

    #[test]
    fn abort_discards_partial_message() {
        let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
        dec.set_chunk_size(2).unwrap();
        let mut buf = BytesMut::from(&[0x04u8, 0, 0, 1, 0, 0, 4, 8, 1, 0, 0, 0, b'a', b'b'][..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        dec.abort(4);
        let mut buf = BytesMut::from(&[0x04u8, 0, 0, 5, 0, 0, 1, 8, 1, 0, 0, 0, b'z'][..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(msg(4, 5, 8, 1, b"z")));
    }

    #[test]
    fn too_many_chunk_streams_is_rejected() {
        let mut dec = ChunkDecoder::new(1 << 20, 1 << 20);
        let mut wire = Vec::new();
        for i in 0..=MAX_CHUNK_STREAMS as u8 {
            wire.extend_from_slice(&[0x00, i, 0, 0, 0, 0, 0, 1, 8, 1, 0, 0, 0, 0]);
        }
        assert_eq!(
            decode_all(&mut dec, &wire).unwrap_err(),
            ChunkError::TooManyChunkStreams
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4096), size in 1u32..300) {
            let mut dec = ChunkDecoder::new(1 << 16, 1 << 16);
            dec.set_chunk_size(size).unwrap();
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }

        #[test]
        fn encode_then_decode_roundtrips(
            payload in proptest::collection::vec(any::<u8>(), 0..2000),
            ts in any::<u32>(),
            csid in 2u32..400,
            size in 1u32..600,
        ) {
            let mut out = BytesMut::new();
            encode_message(&mut out, csid, ts, 9, 1, &payload, size);
            let mut dec = ChunkDecoder::new(1 << 16, 1 << 16);
            dec.set_chunk_size(size).unwrap();
            let got = decode_all(&mut dec, &out).unwrap();
            prop_assert_eq!(got, vec![msg(csid, ts, 9, 1, &payload)]);
        }
    }
}
