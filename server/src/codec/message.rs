//! Typed RTMP messages: protocol control, user control, commands and data, audio and video.
//!
//! Decoding turns a [`RawMessage`] into a [`Message`]; encoding appends a message as chunks.
//! Media payloads stay [`Bytes`] so they are never copied here.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::amf0::{self, Amf0Value, AmfError};
use super::chunk::{encode_message, RawMessage};

pub const TYPE_SET_CHUNK_SIZE: u8 = 1;
pub const TYPE_ABORT: u8 = 2;
pub const TYPE_ACK: u8 = 3;
pub const TYPE_USER_CONTROL: u8 = 4;
pub const TYPE_WINDOW_ACK_SIZE: u8 = 5;
pub const TYPE_SET_PEER_BANDWIDTH: u8 = 6;
pub const TYPE_AUDIO: u8 = 8;
pub const TYPE_VIDEO: u8 = 9;
pub const TYPE_DATA_AMF3: u8 = 15;
pub const TYPE_SHARED_OBJECT_AMF3: u8 = 16;
pub const TYPE_COMMAND_AMF3: u8 = 17;
pub const TYPE_DATA_AMF0: u8 = 18;
pub const TYPE_SHARED_OBJECT_AMF0: u8 = 19;
pub const TYPE_COMMAND_AMF0: u8 = 20;
pub const TYPE_AGGREGATE: u8 = 22;

/// Chunk stream ids we send on (the values Flash Media Server and NMS use).
pub const CSID_PROTOCOL: u32 = 2;
pub const CSID_COMMAND: u32 = 3;
pub const CSID_AUDIO: u32 = 4;
pub const CSID_DATA: u32 = 5;
pub const CSID_VIDEO: u32 = 6;

#[derive(Debug, Clone, PartialEq)]
pub enum UserControl {
    StreamBegin(u32),
    StreamEof(u32),
    StreamDry(u32),
    SetBufferLength { stream_id: u32, millis: u32 },
    StreamIsRecorded(u32),
    PingRequest(u32),
    PingResponse(u32),
    Other(u16),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    SetChunkSize(u32),
    Abort(u32),
    Acknowledgement(u32),
    UserControl(UserControl),
    WindowAckSize(u32),
    SetPeerBandwidth {
        size: u32,
        limit_type: u8,
    },
    Audio(Bytes),
    Video(Bytes),
    /// AMF0 data message (`@setDataFrame`, `onMetaData`, `|RtmpSampleAccess` ...).
    Data(Vec<Amf0Value>),
    Command(Command),
    /// FLV-style sub-messages packed in one message; split with [`split_aggregate`].
    Aggregate(Bytes),
    /// Shared objects and unknown types are ignored by the session.
    Other {
        type_id: u8,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub name: String,
    pub transaction_id: f64,
    pub object: Amf0Value,
    pub args: Vec<Amf0Value>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MessageError {
    #[error("message type {0} is shorter than its fixed fields")]
    Truncated(u8),
    #[error("bad AMF0 in message type {type_id}: {source}")]
    Amf { type_id: u8, source: AmfError },
    #[error("command message without a name")]
    CommandWithoutName,
}

fn u32_at(p: &[u8], at: usize, type_id: u8) -> Result<u32, MessageError> {
    p.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(MessageError::Truncated(type_id))
}

impl Message {
    /// [`Message::decode`] taking the message, so media bodies move instead of being cloned.
    pub fn from_raw(raw: RawMessage) -> Result<Message, MessageError> {
        Ok(match raw.type_id {
            TYPE_AUDIO => Message::Audio(raw.payload),
            TYPE_VIDEO => Message::Video(raw.payload),
            _ => Message::decode(&raw)?,
        })
    }

    pub fn decode(raw: &RawMessage) -> Result<Message, MessageError> {
        let p = &raw.payload[..];
        let t = raw.type_id;
        let amf = |body: &[u8]| amf0::decode_all(body).map_err(|source| MessageError::Amf { type_id: t, source });
        Ok(match t {
            TYPE_SET_CHUNK_SIZE => Message::SetChunkSize(u32_at(p, 0, t)? & 0x7fff_ffff),
            TYPE_ABORT => Message::Abort(u32_at(p, 0, t)?),
            TYPE_ACK => Message::Acknowledgement(u32_at(p, 0, t)?),
            TYPE_WINDOW_ACK_SIZE => Message::WindowAckSize(u32_at(p, 0, t)?),
            TYPE_SET_PEER_BANDWIDTH => Message::SetPeerBandwidth {
                size: u32_at(p, 0, t)?,
                limit_type: p.get(4).copied().unwrap_or(2),
            },
            TYPE_USER_CONTROL => {
                let kind = p
                    .get(0..2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .ok_or(MessageError::Truncated(t))?;
                let v = |at| u32_at(p, at, t);
                Message::UserControl(match kind {
                    0 => UserControl::StreamBegin(v(2)?),
                    1 => UserControl::StreamEof(v(2)?),
                    2 => UserControl::StreamDry(v(2)?),
                    3 => UserControl::SetBufferLength {
                        stream_id: v(2)?,
                        millis: v(6)?,
                    },
                    4 => UserControl::StreamIsRecorded(v(2)?),
                    6 => UserControl::PingRequest(v(2)?),
                    7 => UserControl::PingResponse(v(2)?),
                    other => UserControl::Other(other),
                })
            }
            TYPE_AUDIO => Message::Audio(raw.payload.clone()),
            TYPE_VIDEO => Message::Video(raw.payload.clone()),
            TYPE_AGGREGATE => Message::Aggregate(raw.payload.clone()),
            TYPE_DATA_AMF0 => Message::Data(amf(p)?),
            // AMF3 data and commands start with a format byte; clients put AMF0 after it.
            TYPE_DATA_AMF3 => Message::Data(amf(p.get(1..).unwrap_or_default())?),
            TYPE_COMMAND_AMF0 | TYPE_COMMAND_AMF3 => {
                let body = if t == TYPE_COMMAND_AMF3 {
                    p.get(1..).unwrap_or_default()
                } else {
                    p
                };
                let mut values = amf(body)?.into_iter();
                let name = match values.next() {
                    Some(Amf0Value::String(s)) => s,
                    _ => return Err(MessageError::CommandWithoutName),
                };
                let transaction_id = values.next().and_then(|v| v.as_f64()).unwrap_or(0.0);
                let object = values.next().unwrap_or(Amf0Value::Null);
                Message::Command(Command {
                    name,
                    transaction_id,
                    object,
                    args: values.collect(),
                })
            }
            other => Message::Other { type_id: other },
        })
    }

    /// The message type id and body.
    pub fn to_body(&self) -> (u8, Bytes) {
        let mut b = BytesMut::new();
        let t = match self {
            Message::SetChunkSize(v) => {
                b.put_u32(*v);
                TYPE_SET_CHUNK_SIZE
            }
            Message::Abort(v) => {
                b.put_u32(*v);
                TYPE_ABORT
            }
            Message::Acknowledgement(v) => {
                b.put_u32(*v);
                TYPE_ACK
            }
            Message::WindowAckSize(v) => {
                b.put_u32(*v);
                TYPE_WINDOW_ACK_SIZE
            }
            Message::SetPeerBandwidth { size, limit_type } => {
                b.put_u32(*size);
                b.put_u8(*limit_type);
                TYPE_SET_PEER_BANDWIDTH
            }
            Message::UserControl(uc) => {
                let (kind, a, c) = match uc {
                    UserControl::StreamBegin(s) => (0, *s, None),
                    UserControl::StreamEof(s) => (1, *s, None),
                    UserControl::StreamDry(s) => (2, *s, None),
                    UserControl::SetBufferLength { stream_id, millis } => (3, *stream_id, Some(*millis)),
                    UserControl::StreamIsRecorded(s) => (4, *s, None),
                    UserControl::PingRequest(t) => (6, *t, None),
                    UserControl::PingResponse(t) => (7, *t, None),
                    UserControl::Other(k) => (*k, 0, None),
                };
                b.put_u16(kind);
                b.put_u32(a);
                if let Some(c) = c {
                    b.put_u32(c);
                }
                TYPE_USER_CONTROL
            }
            Message::Audio(p) => return (TYPE_AUDIO, p.clone()),
            Message::Video(p) => return (TYPE_VIDEO, p.clone()),
            Message::Aggregate(p) => return (TYPE_AGGREGATE, p.clone()),
            Message::Data(values) => {
                amf0::encode_all(values, &mut b);
                TYPE_DATA_AMF0
            }
            Message::Command(c) => {
                amf0::encode(&Amf0Value::String(c.name.clone()), &mut b);
                amf0::encode(&Amf0Value::Number(c.transaction_id), &mut b);
                amf0::encode(&c.object, &mut b);
                amf0::encode_all(&c.args, &mut b);
                TYPE_COMMAND_AMF0
            }
            Message::Other { type_id } => *type_id,
        };
        (t, b.freeze())
    }

    /// Appends this message as chunks on the conventional chunk stream for its type.
    pub fn encode(&self, out: &mut BytesMut, timestamp: u32, stream_id: u32, chunk_size: u32) {
        let (type_id, body) = self.to_body();
        let csid = match type_id {
            TYPE_AUDIO => CSID_AUDIO,
            TYPE_VIDEO => CSID_VIDEO,
            TYPE_DATA_AMF0 | TYPE_DATA_AMF3 => CSID_DATA,
            TYPE_COMMAND_AMF0 | TYPE_COMMAND_AMF3 => CSID_COMMAND,
            _ => CSID_PROTOCOL,
        };
        encode_message(out, csid, timestamp, type_id, stream_id, &body, chunk_size);
    }
}

/// One sub-message of an aggregate message.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregatePart {
    pub type_id: u8,
    pub timestamp: u32,
    pub payload: Bytes,
}

/// Splits an aggregate message body (FLV tags back to back) into its sub-messages, with
/// timestamps rebased onto the aggregate message's own timestamp as the spec requires.
/// Stops at the first malformed tag.
pub fn split_aggregate(body: &Bytes, message_timestamp: u32) -> Vec<AggregatePart> {
    let mut parts = Vec::new();
    let mut rest = body.clone();
    let mut first_ts = None;
    while rest.len() >= 11 {
        let type_id = rest[0];
        let size = ((rest[1] as usize) << 16) | ((rest[2] as usize) << 8) | rest[3] as usize;
        let ts =
            (u32::from(rest[7]) << 24) | (u32::from(rest[4]) << 16) | (u32::from(rest[5]) << 8) | u32::from(rest[6]);
        if rest.len() < 11 + size {
            break;
        }
        rest.advance(11);
        let payload = rest.split_to(size);
        let base = *first_ts.get_or_insert(ts);
        parts.push(AggregatePart {
            type_id,
            timestamp: message_timestamp.wrapping_add(ts.wrapping_sub(base)),
            payload,
        });
        if rest.len() < 4 {
            break;
        }
        rest.advance(4);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(type_id: u8, payload: &[u8]) -> RawMessage {
        RawMessage {
            csid: 2,
            timestamp: 0,
            type_id,
            stream_id: 0,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn control_messages_table_roundtrip() {
        let cases: Vec<(&str, Message, u8, Vec<u8>)> = vec![
            (
                "set chunk size",
                Message::SetChunkSize(60000),
                1,
                vec![0, 0, 0xea, 0x60],
            ),
            ("abort", Message::Abort(4), 2, vec![0, 0, 0, 4]),
            (
                "acknowledgement",
                Message::Acknowledgement(2_500_000),
                3,
                vec![0, 0x26, 0x25, 0xa0],
            ),
            (
                "window ack size",
                Message::WindowAckSize(5_000_000),
                5,
                vec![0, 0x4c, 0x4b, 0x40],
            ),
            (
                "set peer bandwidth dynamic",
                Message::SetPeerBandwidth {
                    size: 5_000_000,
                    limit_type: 2,
                },
                6,
                vec![0, 0x4c, 0x4b, 0x40, 2],
            ),
            (
                "stream begin",
                Message::UserControl(UserControl::StreamBegin(1)),
                4,
                vec![0, 0, 0, 0, 0, 1],
            ),
            (
                "stream eof",
                Message::UserControl(UserControl::StreamEof(1)),
                4,
                vec![0, 1, 0, 0, 0, 1],
            ),
            (
                "set buffer length",
                Message::UserControl(UserControl::SetBufferLength {
                    stream_id: 1,
                    millis: 3000,
                }),
                4,
                vec![0, 3, 0, 0, 0, 1, 0, 0, 0x0b, 0xb8],
            ),
            (
                "ping request",
                Message::UserControl(UserControl::PingRequest(77)),
                4,
                vec![0, 6, 0, 0, 0, 77],
            ),
            (
                "ping response",
                Message::UserControl(UserControl::PingResponse(77)),
                4,
                vec![0, 7, 0, 0, 0, 77],
            ),
        ];
        for (name, message, type_id, body) in cases {
            assert_eq!(Message::decode(&raw(type_id, &body)).unwrap(), message, "decode {name}");
            let (t, b) = message.to_body();
            assert_eq!((t, &b[..]), (type_id, &body[..]), "encode {name}");
        }
    }

    #[test]
    fn command_roundtrip() {
        let cmd = Message::Command(Command {
            name: "publish".into(),
            transaction_id: 5.0,
            object: Amf0Value::Null,
            args: vec![Amf0Value::String("key".into()), Amf0Value::String("live".into())],
        });
        let (t, body) = cmd.to_body();
        assert_eq!(t, TYPE_COMMAND_AMF0);
        assert_eq!(Message::decode(&raw(t, &body)).unwrap(), cmd);
        // The same command sent as AMF3 command (objectEncoding 3 clients): leading 0 byte.
        let mut amf3 = vec![0u8];
        amf3.extend_from_slice(&body);
        assert_eq!(Message::decode(&raw(TYPE_COMMAND_AMF3, &amf3)).unwrap(), cmd);
    }

    #[test]
    fn truncated_control_message_is_an_error() {
        assert_eq!(Message::decode(&raw(1, &[0, 0])), Err(MessageError::Truncated(1)));
        assert_eq!(Message::decode(&raw(4, &[0])), Err(MessageError::Truncated(4)));
    }

    #[test]
    fn command_without_name_is_an_error() {
        assert_eq!(
            Message::decode(&raw(20, &[0, 0, 0, 0, 0, 0, 0, 0, 0])),
            Err(MessageError::CommandWithoutName)
        );
    }

    #[test]
    fn aggregate_is_split_and_rebased() {
        let mut body = Vec::new();
        for (t, ts, payload) in [(9u8, 1000u32, &b"\x17\x01"[..]), (8, 1023, &b"\xaf\x01\x55"[..])] {
            body.push(t);
            body.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            body.extend_from_slice(&ts.to_be_bytes()[1..]);
            body.push((ts >> 24) as u8);
            body.extend_from_slice(&[0, 0, 0]);
            body.extend_from_slice(payload);
            body.extend_from_slice(&(11 + payload.len() as u32).to_be_bytes());
        }
        let parts = split_aggregate(&Bytes::from(body), 50);
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0].type_id, parts[0].timestamp, &parts[0].payload[..]),
            (9, 50, &b"\x17\x01"[..])
        );
        assert_eq!(
            (parts[1].type_id, parts[1].timestamp, &parts[1].payload[..]),
            (8, 73, &b"\xaf\x01\x55"[..])
        );
    }
}
