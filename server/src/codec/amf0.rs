//! AMF0 values as carried by RTMP commands and data messages: encoding, and decoding that
//! tolerates what real encoders (ffmpeg, OBS, Flash) send while capping everything a peer
//! controls (nesting depth, counts, string lengths).
//!
//! Decoding is bounded by its input: nothing is reserved from a count the peer declares,
//! every value consumes at least its marker byte, and one call decodes at most
//! [`MAX_VALUES`] values, so the memory a message can make us hold is a small multiple of
//! its own size however it is crafted.

use bytes::{BufMut, BytesMut};

const MARKER_NUMBER: u8 = 0x00;
const MARKER_BOOLEAN: u8 = 0x01;
const MARKER_STRING: u8 = 0x02;
const MARKER_OBJECT: u8 = 0x03;
const MARKER_MOVIECLIP: u8 = 0x04;
const MARKER_NULL: u8 = 0x05;
const MARKER_UNDEFINED: u8 = 0x06;
const MARKER_REFERENCE: u8 = 0x07;
const MARKER_ECMA_ARRAY: u8 = 0x08;
const MARKER_OBJECT_END: u8 = 0x09;
const MARKER_STRICT_ARRAY: u8 = 0x0A;
const MARKER_DATE: u8 = 0x0B;
const MARKER_LONG_STRING: u8 = 0x0C;
const MARKER_UNSUPPORTED: u8 = 0x0D;
const MARKER_RECORDSET: u8 = 0x0E;
const MARKER_XML_DOCUMENT: u8 = 0x0F;
const MARKER_TYPED_OBJECT: u8 = 0x10;
const MARKER_AVMPLUS: u8 = 0x11;

/// Deepest nesting of objects and arrays we decode; real messages nest two or three levels,
/// and the cap keeps recursion off the end of the stack.
pub const MAX_DEPTH: usize = 64;

/// Most values (scalars, containers and properties alike) decoded from one message. A
/// decoded value costs about 50 bytes for its one-byte encoding, so without a cap a 16 MiB
/// message of nulls decodes into most of a GiB. Real commands hold a dozen values and
/// encoders' `onMetaData` a few dozen; 16384 leaves room for metadata with keyframe
/// indexes while holding the worst case to about 2 MiB.
pub const MAX_VALUES: usize = 16_384;

#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    Number(f64),
    Boolean(bool),
    /// Decoded from both string (0x02) and long string (0x0C); encoded as a long string only
    /// when it does not fit in 65535 bytes.
    String(String),
    /// Properties in wire order.
    Object(Vec<(String, Amf0Value)>),
    Null,
    Undefined,
    /// Properties in wire order. The count on the wire is not trusted.
    EcmaArray(Vec<(String, Amf0Value)>),
    StrictArray(Vec<Amf0Value>),
    Date {
        millis: f64,
        timezone: i16,
    },
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AmfError {
    #[error("truncated AMF0 data")]
    Truncated,
    #[error("unknown AMF0 marker {0:#04x}")]
    UnknownMarker(u8),
    /// Markers the spec defines but no RTMP encoder we care about sends: movie clip,
    /// reference, record set, and the switch to AMF3.
    #[error("unsupported AMF0 marker {0:#04x}")]
    UnsupportedMarker(u8),
    #[error("object-end marker where a value was expected")]
    UnexpectedObjectEnd,
    #[error("AMF0 values nested deeper than {MAX_DEPTH} levels")]
    NestingTooDeep,
    #[error("AMF0 strict array claims {0} elements, more than the bytes left")]
    TooLarge(u32),
    #[error("more than {MAX_VALUES} AMF0 values in one message")]
    TooManyValues,
}

impl Amf0Value {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Amf0Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Amf0Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Amf0Value::Boolean(b) => Some(*b),
            _ => None,
        }
    }

    /// Property lookup for Object and EcmaArray; the first property with that key wins.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        match self {
            Amf0Value::Object(props) | Amf0Value::EcmaArray(props) => {
                props.iter().find(|(k, _)| k == key).map(|(_, v)| v)
            }
            _ => None,
        }
    }

    /// Builds an Object from properties, keeping their order.
    pub fn object<I, K>(props: I) -> Amf0Value
    where
        I: IntoIterator<Item = (K, Amf0Value)>,
        K: Into<String>,
    {
        Amf0Value::Object(props.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

impl From<&str> for Amf0Value {
    fn from(s: &str) -> Self {
        Amf0Value::String(s.to_owned())
    }
}

impl From<String> for Amf0Value {
    fn from(s: String) -> Self {
        Amf0Value::String(s)
    }
}

impl From<f64> for Amf0Value {
    fn from(n: f64) -> Self {
        Amf0Value::Number(n)
    }
}

impl From<bool> for Amf0Value {
    fn from(b: bool) -> Self {
        Amf0Value::Boolean(b)
    }
}

/// Decodes one value from the front of `buf`, advancing it. On error, `buf` is left where
/// the failing value started.
pub fn decode(buf: &mut &[u8]) -> Result<Amf0Value, AmfError> {
    decode_counted(buf, &mut Budget(MAX_VALUES))
}

/// Decodes values until `buf` is empty; at most [`MAX_VALUES`] values in all.
pub fn decode_all(buf: &[u8]) -> Result<Vec<Amf0Value>, AmfError> {
    let mut buf = buf;
    let mut budget = Budget(MAX_VALUES);
    let mut values = Vec::new();
    while !buf.is_empty() {
        values.push(decode_counted(&mut buf, &mut budget)?);
    }
    Ok(values)
}

/// How many more values one decode call may produce.
struct Budget(usize);

impl Budget {
    fn spend(&mut self) -> Result<(), AmfError> {
        self.0 = self.0.checked_sub(1).ok_or(AmfError::TooManyValues)?;
        Ok(())
    }
}

fn decode_counted(buf: &mut &[u8], budget: &mut Budget) -> Result<Amf0Value, AmfError> {
    let mut cursor = *buf;
    let value = decode_value(&mut cursor, 0, budget)?;
    *buf = cursor;
    Ok(value)
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], AmfError> {
    if buf.len() < n {
        return Err(AmfError::Truncated);
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn take_array<const N: usize>(buf: &mut &[u8]) -> Result<[u8; N], AmfError> {
    let mut out = [0u8; N];
    out.copy_from_slice(take(buf, N)?);
    Ok(out)
}

fn read_u8(buf: &mut &[u8]) -> Result<u8, AmfError> {
    Ok(take_array::<1>(buf)?[0])
}

fn read_u16(buf: &mut &[u8]) -> Result<u16, AmfError> {
    Ok(u16::from_be_bytes(take_array(buf)?))
}

fn read_u32(buf: &mut &[u8]) -> Result<u32, AmfError> {
    Ok(u32::from_be_bytes(take_array(buf)?))
}

fn read_f64(buf: &mut &[u8]) -> Result<f64, AmfError> {
    Ok(f64::from_be_bytes(take_array(buf)?))
}

/// Reads `len` bytes of text; `take` fails before allocating when `len` exceeds the input,
/// so the allocation is bounded by the message size. Invalid UTF-8 is replaced rather than
/// rejected: a stray Latin-1 title in metadata must not cost a publisher its stream.
fn read_utf8(buf: &mut &[u8], len: usize) -> Result<String, AmfError> {
    let bytes = take(buf, len)?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn read_short_string(buf: &mut &[u8]) -> Result<String, AmfError> {
    let len = read_u16(buf)?;
    read_utf8(buf, usize::from(len))
}

fn read_long_string(buf: &mut &[u8]) -> Result<String, AmfError> {
    let len = read_u32(buf)?;
    let len = usize::try_from(len).map_err(|_| AmfError::Truncated)?;
    read_utf8(buf, len)
}

/// Reads properties up to and including the end marker (an empty key followed by 0x09).
/// An empty key followed by any other value is kept as a property with an empty name, which
/// is legal AMF0 and what our encoder writes for such a property.
fn read_properties(buf: &mut &[u8], depth: usize, budget: &mut Budget) -> Result<Vec<(String, Amf0Value)>, AmfError> {
    let mut props = Vec::new();
    loop {
        let key = read_short_string(buf)?;
        if key.is_empty() && buf.first() == Some(&MARKER_OBJECT_END) {
            *buf = &buf[1..];
            return Ok(props);
        }
        let value = decode_value(buf, depth, budget)?;
        props.push((key, value));
    }
}

fn decode_value(buf: &mut &[u8], depth: usize, budget: &mut Budget) -> Result<Amf0Value, AmfError> {
    budget.spend()?;
    let marker = read_u8(buf)?;
    let nested = || {
        if depth >= MAX_DEPTH {
            Err(AmfError::NestingTooDeep)
        } else {
            Ok(depth + 1)
        }
    };
    Ok(match marker {
        MARKER_NUMBER => Amf0Value::Number(read_f64(buf)?),
        MARKER_BOOLEAN => Amf0Value::Boolean(read_u8(buf)? != 0),
        MARKER_STRING => Amf0Value::String(read_short_string(buf)?),
        MARKER_OBJECT => Amf0Value::Object(read_properties(buf, nested()?, budget)?),
        MARKER_NULL | MARKER_UNSUPPORTED => Amf0Value::Null,
        MARKER_UNDEFINED => Amf0Value::Undefined,
        MARKER_ECMA_ARRAY => {
            // ffmpeg and OBS send counts that disagree with the properties that follow; only
            // the end marker is reliable.
            let _count = read_u32(buf)?;
            Amf0Value::EcmaArray(read_properties(buf, nested()?, budget)?)
        }
        MARKER_OBJECT_END => return Err(AmfError::UnexpectedObjectEnd),
        MARKER_STRICT_ARRAY => {
            let depth = nested()?;
            let count = read_u32(buf)?;
            // Every element takes at least one byte, so a larger count is a lie.
            if usize::try_from(count).map_or(true, |c| c > buf.len()) {
                return Err(AmfError::TooLarge(count));
            }
            // Grow as elements actually decode rather than trusting the count for capacity:
            // nested arrays could otherwise each reserve the whole remaining length.
            let mut items = Vec::new();
            for _ in 0..count {
                items.push(decode_value(buf, depth, budget)?);
            }
            Amf0Value::StrictArray(items)
        }
        MARKER_DATE => {
            let millis = read_f64(buf)?;
            let timezone = i16::from_be_bytes(take_array(buf)?);
            Amf0Value::Date { millis, timezone }
        }
        MARKER_LONG_STRING | MARKER_XML_DOCUMENT => Amf0Value::String(read_long_string(buf)?),
        MARKER_TYPED_OBJECT => {
            // The class name means nothing to a media server; keep the properties.
            let _class = read_short_string(buf)?;
            Amf0Value::Object(read_properties(buf, nested()?, budget)?)
        }
        MARKER_MOVIECLIP | MARKER_REFERENCE | MARKER_RECORDSET | MARKER_AVMPLUS => {
            return Err(AmfError::UnsupportedMarker(marker))
        }
        other => return Err(AmfError::UnknownMarker(other)),
    })
}

/// Appends the encoding of `value` to `out`.
///
/// Property keys longer than 65535 bytes cannot be represented in AMF0 and are cut at the
/// last character boundary that fits; we never produce such keys ourselves.
pub fn encode(value: &Amf0Value, out: &mut BytesMut) {
    match value {
        Amf0Value::Number(n) => {
            out.put_u8(MARKER_NUMBER);
            out.put_f64(*n);
        }
        Amf0Value::Boolean(b) => {
            out.put_u8(MARKER_BOOLEAN);
            out.put_u8(u8::from(*b));
        }
        Amf0Value::String(s) => match u16::try_from(s.len()) {
            Ok(len) => {
                out.put_u8(MARKER_STRING);
                out.put_u16(len);
                out.put_slice(s.as_bytes());
            }
            Err(_) => {
                out.put_u8(MARKER_LONG_STRING);
                // Strings over 4 GiB never come near an RTMP message (capped far lower).
                out.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
                out.put_slice(s.as_bytes());
            }
        },
        Amf0Value::Object(props) => {
            out.put_u8(MARKER_OBJECT);
            encode_properties(props, out);
        }
        Amf0Value::Null => out.put_u8(MARKER_NULL),
        Amf0Value::Undefined => out.put_u8(MARKER_UNDEFINED),
        Amf0Value::EcmaArray(props) => {
            out.put_u8(MARKER_ECMA_ARRAY);
            out.put_u32(u32::try_from(props.len()).unwrap_or(u32::MAX));
            encode_properties(props, out);
        }
        Amf0Value::StrictArray(items) => {
            out.put_u8(MARKER_STRICT_ARRAY);
            out.put_u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
            for item in items {
                encode(item, out);
            }
        }
        Amf0Value::Date { millis, timezone } => {
            out.put_u8(MARKER_DATE);
            out.put_f64(*millis);
            out.put_i16(*timezone);
        }
    }
}

/// Appends the encodings of `values`, one after another, to `out`.
pub fn encode_all(values: &[Amf0Value], out: &mut BytesMut) {
    for value in values {
        encode(value, out);
    }
}

fn encode_properties(props: &[(String, Amf0Value)], out: &mut BytesMut) {
    for (key, value) in props {
        let key = truncate_to_u16_len(key);
        // `truncate_to_u16_len` guarantees the length fits.
        out.put_u16(key.len() as u16);
        out.put_slice(key.as_bytes());
        encode(value, out);
    }
    out.put_u16(0);
    out.put_u8(MARKER_OBJECT_END);
}

fn truncate_to_u16_len(s: &str) -> &str {
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        s.chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn enc(value: &Amf0Value) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode(value, &mut out);
        out.to_vec()
    }

    fn num(n: f64) -> Amf0Value {
        Amf0Value::Number(n)
    }

    /// One table drives both directions: `bytes` decodes to `value` and `value` encodes to
    /// `bytes`.
    fn cases() -> Vec<(&'static str, Amf0Value, Vec<u8>)> {
        let long = "x".repeat(65536);
        let mut long_bytes = hex("0c 00010000");
        long_bytes.extend_from_slice(long.as_bytes());
        let max_short = "y".repeat(65535);
        let mut max_short_bytes = hex("02 ffff");
        max_short_bytes.extend_from_slice(max_short.as_bytes());
        vec![
            ("number", num(1.0), hex("00 3ff0000000000000")),
            ("number negative zero", num(-0.0), hex("00 8000000000000000")),
            ("number infinity", num(f64::INFINITY), hex("00 7ff0000000000000")),
            ("boolean true", true.into(), hex("01 01")),
            ("boolean false", false.into(), hex("01 00")),
            ("string empty", "".into(), hex("02 0000")),
            ("string", "live".into(), hex("02 0004 6c697665")),
            ("string utf8", "é".into(), hex("02 0002 c3a9")),
            ("string 65535 bytes stays short", max_short.into(), max_short_bytes),
            ("string over 65535 bytes is long", long.into(), long_bytes),
            ("null", Amf0Value::Null, hex("05")),
            ("undefined", Amf0Value::Undefined, hex("06")),
            (
                "object empty",
                Amf0Value::object(Vec::<(String, _)>::new()),
                hex("03 0000 09"),
            ),
            (
                "object keeps order",
                Amf0Value::object([("b", num(2.0)), ("a", Amf0Value::Null)]),
                hex("03 0001 62 00 4000000000000000 0001 61 05 0000 09"),
            ),
            (
                "object empty key",
                Amf0Value::object([("", true.into())]),
                hex("03 0000 01 01 0000 09"),
            ),
            (
                "object nested",
                Amf0Value::object([("o", Amf0Value::object([("k", "v".into())]))]),
                hex("03 0001 6f 03 0001 6b 02 0001 76 0000 09 0000 09"),
            ),
            (
                "ecma array empty",
                Amf0Value::EcmaArray(vec![]),
                hex("08 00000000 0000 09"),
            ),
            (
                "ecma array",
                Amf0Value::EcmaArray(vec![("w".into(), num(1280.0)), ("s".into(), true.into())]),
                hex("08 00000002 0001 77 00 4094000000000000 0001 73 01 01 0000 09"),
            ),
            ("strict array empty", Amf0Value::StrictArray(vec![]), hex("0a 00000000")),
            (
                "strict array",
                Amf0Value::StrictArray(vec![num(0.0), Amf0Value::Null, "a".into()]),
                hex("0a 00000003 00 0000000000000000 05 02 0001 61"),
            ),
            (
                "date",
                Amf0Value::Date {
                    millis: 1_700_000_000_000.0,
                    timezone: -60,
                },
                hex("0b 4278bcfe56800000 ffc4"),
            ),
        ]
    }

    #[test]
    fn table_decodes_and_encodes() {
        for (name, value, bytes) in cases() {
            let mut buf = &bytes[..];
            assert_eq!(decode(&mut buf).as_ref(), Ok(&value), "decode {name}");
            assert!(buf.is_empty(), "decode {name} left {} bytes", buf.len());
            assert_eq!(enc(&value), bytes, "encode {name}");
        }
    }

    #[test]
    fn decode_only_forms() {
        let cases: Vec<(&str, Vec<u8>, Amf0Value)> = vec![
            ("short long string", hex("0c 00000002 6869"), "hi".into()),
            ("xml document", hex("0f 00000004 3c612f3e"), "<a/>".into()),
            ("unsupported is null", hex("0d"), Amf0Value::Null),
            ("boolean non-zero", hex("01 7f"), true.into()),
            ("invalid utf8 is replaced", hex("02 0002 c328"), "\u{fffd}(".into()),
            (
                "invalid utf8 key is replaced",
                hex("03 0001 ff 05 0000 09"),
                Amf0Value::object([("\u{fffd}", Amf0Value::Null)]),
            ),
            (
                "typed object",
                hex("10 0003 466f6f 0001 61 00 3ff0000000000000 0000 09"),
                Amf0Value::object([("a", num(1.0))]),
            ),
            (
                "ecma array count too high",
                hex("08 00000005 0001 61 05 0000 09"),
                Amf0Value::EcmaArray(vec![("a".into(), Amf0Value::Null)]),
            ),
            (
                "ecma array count zero",
                hex("08 00000000 0001 61 05 0000 09"),
                Amf0Value::EcmaArray(vec![("a".into(), Amf0Value::Null)]),
            ),
        ];
        for (name, bytes, value) in cases {
            assert_eq!(decode_all(&bytes), Ok(vec![value]), "{name}");
        }
    }

    #[test]
    fn errors() {
        let cases: Vec<(&str, Vec<u8>, AmfError)> = vec![
            ("empty", vec![], AmfError::Truncated),
            ("number short", hex("00 3ff0"), AmfError::Truncated),
            ("string short", hex("02 0005 6869"), AmfError::Truncated),
            (
                "long string length beyond input",
                hex("0c ffffffff 00"),
                AmfError::Truncated,
            ),
            ("object without end", hex("03 0001 61 05"), AmfError::Truncated),
            ("object end marker missing 0x09", hex("03 0000"), AmfError::Truncated),
            (
                "ecma array without end",
                hex("08 00000001 0001 61 05"),
                AmfError::Truncated,
            ),
            (
                "strict array count lies",
                hex("0a ffffffff 05 05"),
                AmfError::TooLarge(u32::MAX),
            ),
            ("strict array short", hex("0a 00000002 05"), AmfError::TooLarge(2)),
            (
                "strict array elements short",
                hex("0a 00000002 00 00"),
                AmfError::Truncated,
            ),
            ("bare object end", hex("09"), AmfError::UnexpectedObjectEnd),
            ("reference", hex("07 0001"), AmfError::UnsupportedMarker(0x07)),
            ("movie clip", hex("04"), AmfError::UnsupportedMarker(0x04)),
            ("record set", hex("0e"), AmfError::UnsupportedMarker(0x0e)),
            ("avmplus", hex("11 01"), AmfError::UnsupportedMarker(0x11)),
            ("unknown", hex("12"), AmfError::UnknownMarker(0x12)),
            ("unknown high", hex("ff"), AmfError::UnknownMarker(0xff)),
        ];
        for (name, bytes, err) in cases {
            assert_eq!(decode(&mut &bytes[..]), Err(err), "{name}");
        }
    }

    #[test]
    fn decode_error_leaves_buf_in_place() {
        let bytes = hex("05 02 0005 6869");
        let mut buf = &bytes[..];
        assert_eq!(decode(&mut buf), Ok(Amf0Value::Null));
        assert_eq!(decode(&mut buf), Err(AmfError::Truncated));
        assert_eq!(buf.len(), bytes.len() - 1);
    }

    #[test]
    fn nesting_is_capped() {
        let nest = |levels: usize, open: &[u8], close: &[u8]| {
            let mut bytes = Vec::new();
            for _ in 0..levels {
                bytes.extend_from_slice(open);
            }
            bytes.push(MARKER_NULL);
            for _ in 0..levels {
                bytes.extend_from_slice(close);
            }
            bytes
        };
        let object = (&hex("03 0001 61")[..], &hex("0000 09")[..]);
        let strict = (&hex("0a 00000001")[..], &[][..]);
        let ecma = (&hex("08 00000001 0001 61")[..], &hex("0000 09")[..]);
        for (open, close) in [object, strict, ecma] {
            assert!(decode_all(&nest(MAX_DEPTH, open, close)).is_ok());
            assert_eq!(
                decode_all(&nest(MAX_DEPTH + 1, open, close)),
                Err(AmfError::NestingTooDeep)
            );
        }
        // Far deeper than the cap must fail fast, not overflow the stack.
        assert_eq!(
            decode_all(&nest(100_000, object.0, object.1)),
            Err(AmfError::NestingTooDeep)
        );
    }

    #[test]
    fn values_per_message_are_capped() {
        let strict_nulls = |n: usize| {
            let mut bytes = hex("0a");
            bytes.extend_from_slice(&(n as u32).to_be_bytes());
            bytes.resize(bytes.len() + n, MARKER_NULL);
            bytes
        };
        // The array counts as one value, its elements as the rest.
        let fits = decode_all(&strict_nulls(MAX_VALUES - 1)).unwrap();
        assert!(matches!(&fits[..], [Amf0Value::StrictArray(items)] if items.len() == MAX_VALUES - 1));
        assert_eq!(decode_all(&strict_nulls(MAX_VALUES)), Err(AmfError::TooManyValues));
        // Properties with empty keys cost three bytes each and are counted the same way.
        let mut object = hex("03");
        for _ in 0..MAX_VALUES {
            object.extend_from_slice(&hex("0000 05"));
        }
        object.extend_from_slice(&hex("0000 09"));
        assert_eq!(decode_all(&object), Err(AmfError::TooManyValues));
        // The budget spans the whole message, not each top-level value.
        let many = vec![MARKER_NULL; MAX_VALUES + 1];
        assert_eq!(decode_all(&many), Err(AmfError::TooManyValues));
        assert_eq!(decode_all(&many[..MAX_VALUES]).map(|v| v.len()), Ok(MAX_VALUES));
    }

    #[test]
    fn accessors_and_builders() {
        let v = Amf0Value::object([("app", Amf0Value::from("live")), ("n", 2.0.into())]);
        assert_eq!(v.get("app").and_then(Amf0Value::as_str), Some("live"));
        assert_eq!(v.get("n").and_then(Amf0Value::as_f64), Some(2.0));
        assert_eq!(v.get("missing"), None);
        assert_eq!(Amf0Value::from(true).as_bool(), Some(true));
        assert_eq!(Amf0Value::from(String::from("s")).as_str(), Some("s"));
        assert_eq!(Amf0Value::Null.as_str(), None);
        assert_eq!(Amf0Value::Null.get("app"), None);
        let arr = Amf0Value::EcmaArray(vec![("width".into(), 1280.0.into())]);
        assert_eq!(arr.get("width").and_then(Amf0Value::as_f64), Some(1280.0));
    }

    #[test]
    fn encode_all_concatenates() {
        let mut out = BytesMut::new();
        encode_all(&[Amf0Value::Null, 1.0.into()], &mut out);
        assert_eq!(&out[..], &hex("05 00 3ff0000000000000")[..]);
    }

    /// Body of the AMF0 `connect` command (message type 20, csid 3) sent by ffmpeg 5.1
    /// (Lavf59.27.100, native rtmp protocol), captured with a small python RTMP listener on
    /// 127.0.0.1:19351 that did a simple handshake, reassembled chunks and dumped each
    /// command body, while running `ffmpeg -re -f lavfi -i testsrc=size=1280x720:rate=30
    /// -f lavfi -i sine -t 2 -c:v libx264 -c:a aac -ac 2 -f flv rtmp://127.0.0.1:19351/live/test`.
    const FFMPEG_CONNECT: &str = "\
        020007636f6e6e656374003ff00000000000000300036170700200046c697665\
        00047479706502000a6e6f6e707269766174650008666c617368566572020024\
        464d4c452f332e302028636f6d70617469626c653b204c61766635392e32372e\
        313030290005746355726c02001b72746d703a2f2f3132372e302e302e313a31\
        393335312f6c697665000009";

    /// Body of the AMF0 data message (type 18) carrying `@setDataFrame`/`onMetaData`, from the
    /// same capture. Note the ECMA array count (13) and filesize/duration 0 as ffmpeg writes
    /// them before it knows the final values.
    const FFMPEG_SET_DATA_FRAME: &str = "\
        02000d40736574446174614672616d6502000a6f6e4d65746144617461080000\
        000d00086475726174696f6e0040000000000000000005776964746800409400\
        00000000000006686569676874004086800000000000000d766964656f646174\
        617261746500000000000000000000096672616d657261746500403e00000000\
        0000000c766964656f636f646563696400401c000000000000000d617564696f\
        646174617261746500405f400000000000000f617564696f73616d706c657261\
        74650040e5888000000000000f617564696f73616d706c6573697a6500403000\
        0000000000000673746572656f0101000c617564696f636f6465636964004024\
        0000000000000007656e636f64657202000d4c61766635392e32372e31303000\
        0866696c6573697a65000000000000000000000009";

    #[test]
    fn real_ffmpeg_connect() {
        let bytes = hex(FFMPEG_CONNECT);
        let values = decode_all(&bytes).unwrap();
        let expected = vec![
            Amf0Value::from("connect"),
            1.0.into(),
            Amf0Value::object([
                ("app", Amf0Value::from("live")),
                ("type", "nonprivate".into()),
                ("flashVer", "FMLE/3.0 (compatible; Lavf59.27.100)".into()),
                ("tcUrl", "rtmp://127.0.0.1:19351/live".into()),
            ]),
        ];
        assert_eq!(values, expected);
        let mut out = BytesMut::new();
        encode_all(&values, &mut out);
        assert_eq!(&out[..], &bytes[..]);
    }

    #[test]
    fn real_ffmpeg_set_data_frame() {
        let bytes = hex(FFMPEG_SET_DATA_FRAME);
        let values = decode_all(&bytes).unwrap();
        assert_eq!(values.len(), 3);
        assert_eq!(values[0].as_str(), Some("@setDataFrame"));
        assert_eq!(values[1].as_str(), Some("onMetaData"));
        let meta = &values[2];
        assert!(matches!(meta, Amf0Value::EcmaArray(p) if p.len() == 13));
        let n = |k: &str| meta.get(k).and_then(Amf0Value::as_f64);
        assert_eq!(n("duration"), Some(2.0));
        assert_eq!(n("width"), Some(1280.0));
        assert_eq!(n("height"), Some(720.0));
        assert_eq!(n("videodatarate"), Some(0.0));
        assert_eq!(n("framerate"), Some(30.0));
        assert_eq!(n("videocodecid"), Some(7.0));
        assert_eq!(n("audiodatarate"), Some(125.0));
        assert_eq!(n("audiosamplerate"), Some(44100.0));
        assert_eq!(n("audiosamplesize"), Some(16.0));
        assert_eq!(meta.get("stereo").and_then(Amf0Value::as_bool), Some(true));
        assert_eq!(n("audiocodecid"), Some(10.0));
        assert_eq!(meta.get("encoder").and_then(Amf0Value::as_str), Some("Lavf59.27.100"));
        assert_eq!(n("filesize"), Some(0.0));
        // The count ffmpeg wrote matches here, so re-encoding is byte-identical.
        let mut out = BytesMut::new();
        encode_all(&values, &mut out);
        assert_eq!(&out[..], &bytes[..]);
    }

    fn arb_value() -> impl Strategy<Value = Amf0Value> {
        let key = "[a-zA-Z0-9é]{0,8}";
        let leaf = prop_oneof![
            any::<f64>()
                .prop_filter("NaN never compares equal", |n| !n.is_nan())
                .prop_map(Amf0Value::Number),
            any::<bool>().prop_map(Amf0Value::Boolean),
            ".{0,20}".prop_map(Amf0Value::String),
            Just(Amf0Value::Null),
            Just(Amf0Value::Undefined),
            (any::<f64>().prop_filter("not NaN", |n| !n.is_nan()), any::<i16>())
                .prop_map(|(millis, timezone)| Amf0Value::Date { millis, timezone }),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                proptest::collection::vec((key, inner.clone()), 0..8).prop_map(Amf0Value::Object),
                proptest::collection::vec((key, inner.clone()), 0..8).prop_map(Amf0Value::EcmaArray),
                proptest::collection::vec(inner, 0..8).prop_map(Amf0Value::StrictArray),
            ]
        })
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = decode_all(&bytes);
            let mut buf = &bytes[..];
            while decode(&mut buf).is_ok() && !buf.is_empty() {}
        }

        #[test]
        fn roundtrip(values in proptest::collection::vec(arb_value(), 0..4)) {
            let mut out = BytesMut::new();
            encode_all(&values, &mut out);
            prop_assert_eq!(decode_all(&out), Ok(values));
        }
    }
}
