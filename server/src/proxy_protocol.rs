//! PROXY protocol v1 (text) and v2 (binary), as HAProxy specifies them: the header a TCP load
//! balancer sends before its client's bytes, carrying the client's address. Sans-IO: bytes in,
//! a verdict out. Only the client address is read; v2 TLVs are skipped. Both header forms are
//! capped (v1 at the spec's 107 bytes, v2 at [`V2_MAX_PAYLOAD`]) before anything is buffered.
//!
//! Written here rather than taken from a crate: the whole format is a fixed signature, one
//! text line or one length-prefixed block, and the server needs its own caps, a detector
//! (a trusted peer may also connect without a header) and nothing else.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A v1 header is at most this long, CRLF included (the spec's worst case, TCP6).
pub const V1_MAX_LEN: usize = 107;
/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Most v2 bytes accepted after the 16-byte fixed part: the address block (216 bytes for
/// UNIX sockets, the largest) and a few TLVs such as a cloud's endpoint id.
pub const V2_MAX_PAYLOAD: usize = 512;
/// Longest header of either version: the most a reader ever buffers.
pub const MAX_HEADER_LEN: usize = 16 + V2_MAX_PAYLOAD;

const V1_PREFIX: &[u8] = b"PROXY ";

/// What a parsed header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// The balancer forwards a TCP client from this address.
    Client(SocketAddr),
    /// No client address: a v2 LOCAL connection (the balancer's own health check), v1
    /// `UNKNOWN`, or a v2 address family that is not IP. The connection's own address stands.
    Local,
}

/// Whether the first bytes of a connection are a PROXY header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detect {
    Proxy,
    /// The bytes belong to the connection's own protocol (RTMP, HTTP, TLS).
    Plain,
    /// Too few bytes to tell.
    NeedMore,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("PROXY v1 header without CRLF in its first {V1_MAX_LEN} bytes")]
    V1TooLong,
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    #[error("PROXY v2 header announces {0} bytes (at most {V2_MAX_PAYLOAD} accepted)")]
    V2TooLong(usize),
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Tells a PROXY header from the connection's own protocol by its first bytes. RTMP (0x03),
/// TLS (0x16) and HTTP methods are told apart after at most a few bytes ("POST" differs from
/// "PROXY " at the second).
pub fn detect(buf: &[u8]) -> Detect {
    for sig in [V1_PREFIX, &V2_SIGNATURE[..]] {
        let n = buf.len().min(sig.len());
        if buf[..n] == sig[..n] {
            return if n == sig.len() {
                Detect::Proxy
            } else {
                Detect::NeedMore
            };
        }
    }
    Detect::Plain
}

/// Parses the header at the front of `buf`: `Ok(None)` needs more bytes, `Ok(Some((header,
/// len)))` consumed `len` bytes. `buf` must start like a header ([`detect`] said `Proxy`).
pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    if buf.starts_with(V1_PREFIX) {
        parse_v1(buf)
    } else if buf.starts_with(&V2_SIGNATURE) {
        parse_v2(buf)
    } else {
        Err(ProxyError::V1("no PROXY signature"))
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX_LEN {
            Err(ProxyError::V1TooLong)
        } else {
            Ok(None)
        };
    };
    let line = std::str::from_utf8(&buf[..end]).map_err(|_| ProxyError::V1("not ASCII"))?;
    let mut fields = line.split(' ');
    fields.next(); // "PROXY"
    let family = fields.next().ok_or(ProxyError::V1("no protocol"))?;
    if family == "UNKNOWN" {
        // The rest of the line is to be ignored.
        return Ok(Some((Header::Local, end + 2)));
    }
    let fields: Vec<&str> = fields.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::V1("expected four fields after the protocol"));
    };
    let (src, dst_ok): (IpAddr, bool) = match family {
        "TCP4" => (
            src.parse::<Ipv4Addr>()
                .map_err(|_| ProxyError::V1("bad IPv4 source"))?
                .into(),
            dst.parse::<Ipv4Addr>().is_ok(),
        ),
        "TCP6" => (
            src.parse::<Ipv6Addr>()
                .map_err(|_| ProxyError::V1("bad IPv6 source"))?
                .into(),
            dst.parse::<Ipv6Addr>().is_ok(),
        ),
        _ => return Err(ProxyError::V1("protocol is not TCP4, TCP6 or UNKNOWN")),
    };
    if !dst_ok {
        return Err(ProxyError::V1("bad destination address"));
    }
    let port = v1_port(sport)?;
    v1_port(dport)?;
    Ok(Some((Header::Client(SocketAddr::new(src, port)), end + 2)))
}

/// A v1 port: decimal 0-65535 without leading zeros.
fn v1_port(s: &str) -> Result<u16, ProxyError> {
    let ok =
        !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse::<u16>().ok())
        .flatten()
        .ok_or(ProxyError::V1("bad port"))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(Header, usize)>, ProxyError> {
    if buf.len() < 16 {
        return Ok(None);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_PAYLOAD {
        return Err(ProxyError::V2TooLong(len));
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let total = 16 + len;
    let body = &buf[16..total];
    match command {
        // LOCAL: the balancer speaks for itself (health checks); the address block is ignored.
        0 => return Ok(Some((Header::Local, total))),
        1 => {}
        _ => return Err(ProxyError::V2("command is neither LOCAL nor PROXY")),
    }
    let (address_family, transport) = (family >> 4, family & 0x0f);
    if address_family == 0 || address_family == 3 {
        // UNSPEC or UNIX: no IP address to use.
        return Ok(Some((Header::Local, total)));
    }
    if transport != 1 {
        return Err(ProxyError::V2("transport is not TCP (STREAM)"));
    }
    let client = match address_family {
        1 => {
            let a = body.get(..12).ok_or(ProxyError::V2("IPv4 address block too short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            SocketAddr::new(ip.into(), u16::from_be_bytes([a[8], a[9]]))
        }
        2 => {
            let a = body.get(..36).ok_or(ProxyError::V2("IPv6 address block too short"))?;
            let octets: [u8; 16] = a[..16].try_into().expect("16 bytes");
            SocketAddr::new(Ipv6Addr::from(octets).into(), u16::from_be_bytes([a[32], a[33]]))
        }
        _ => return Err(ProxyError::V2("unknown address family")),
    };
    Ok(Some((Header::Client(client), total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn v2_tcp4(src: [u8; 4], port: u16, tlvs: &[u8]) -> Vec<u8> {
        let mut body = src.to_vec();
        body.extend_from_slice(&[10, 0, 0, 1]);
        body.extend_from_slice(&port.to_be_bytes());
        body.extend_from_slice(&1935u16.to_be_bytes());
        body.extend_from_slice(tlvs);
        v2(1, 0x11, &body)
    }

    fn client(s: &str) -> Header {
        Header::Client(s.parse().unwrap())
    }

    #[test]
    fn headers_parse_to_the_client_address() {
        let mut tcp6 = Vec::new();
        tcp6.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        tcp6.extend_from_slice(&[0; 16]);
        tcp6.extend_from_slice(&4000u16.to_be_bytes());
        tcp6.extend_from_slice(&443u16.to_be_bytes());
        let cases: Vec<(&str, Vec<u8>, Header)> = vec![
            (
                "v1 tcp4",
                b"PROXY TCP4 203.0.113.7 10.0.0.1 5000 1935\r\n".to_vec(),
                client("203.0.113.7:5000"),
            ),
            (
                "v1 tcp6",
                b"PROXY TCP6 2001:db8::1 2001:db8::2 65535 443\r\n".to_vec(),
                client("[2001:db8::1]:65535"),
            ),
            ("v1 unknown", b"PROXY UNKNOWN whatever\r\n".to_vec(), Header::Local),
            ("v1 bare unknown", b"PROXY UNKNOWN\r\n".to_vec(), Header::Local),
            (
                "v2 tcp4",
                v2_tcp4([198, 51, 100, 9], 6000, &[]),
                client("198.51.100.9:6000"),
            ),
            (
                "v2 tcp4 with a TLV",
                v2_tcp4([198, 51, 100, 9], 6000, &[0xEA, 0, 3, b'v', b'p', b'c']),
                client("198.51.100.9:6000"),
            ),
            ("v2 tcp6", v2(1, 0x21, &tcp6), client("[2001:db8::7]:4000")),
            ("v2 local", v2(0, 0x00, &[]), Header::Local),
            ("v2 local ignores its addresses", v2(0, 0x11, &[1; 12]), Header::Local),
            ("v2 unspec", v2(1, 0x00, &[]), Header::Local),
            ("v2 unix", v2(1, 0x31, &[0; 216]), Header::Local),
        ];
        for (name, wire, want) in cases {
            let mut with_payload = wire.clone();
            with_payload.extend_from_slice(b"\x03rtmp bytes");
            assert_eq!(detect(&with_payload), Detect::Proxy, "{name}");
            assert_eq!(
                parse(&with_payload),
                Ok(Some((want, wire.len()))),
                "{name}: the header's length is consumed, not what follows"
            );
            for cut in 0..wire.len() {
                let part = &wire[..cut];
                match detect(part) {
                    Detect::NeedMore => {}
                    Detect::Proxy => assert_eq!(parse(part), Ok(None), "{name}: cut at {cut} needs more"),
                    Detect::Plain => panic!("{name}: cut at {cut} looks like another protocol"),
                }
            }
        }
    }

    #[test]
    fn other_protocols_are_plain() {
        let cases: &[(&str, &[u8], Detect)] = &[
            ("rtmp c0", b"\x03\x00\x00", Detect::Plain),
            ("tls client hello", b"\x16\x03\x01", Detect::Plain),
            ("http post", b"POST /live/a.flv", Detect::Plain),
            ("http put", b"PUT /", Detect::Plain),
            ("http get", b"GET /", Detect::Plain),
            ("crlf then get", b"\r\nGET /", Detect::Plain),
            ("a lone P waits", b"P", Detect::NeedMore),
            ("PROX waits", b"PROX", Detect::NeedMore),
            ("nothing yet", b"", Detect::NeedMore),
            ("v2 prefix waits", b"\r\n\r\n\0\r\nQU", Detect::NeedMore),
        ];
        for (name, bytes, want) in cases {
            assert_eq!(detect(bytes), *want, "{name}");
        }
    }

    #[test]
    fn malformed_headers_are_errors() {
        let mut long = b"PROXY TCP4 ".to_vec();
        long.extend_from_slice(&[b'1'; 120]);
        let mut big = V2_SIGNATURE.to_vec();
        big.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        let cases: Vec<(&str, Vec<u8>, ProxyError)> = vec![
            ("v1 without CRLF", long, ProxyError::V1TooLong),
            (
                "v1 bad family",
                b"PROXY UDP4 1.2.3.4 1.2.3.5 1 2\r\n".to_vec(),
                ProxyError::V1("protocol is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                "v1 v6 address as TCP4",
                b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec(),
                ProxyError::V1("bad IPv4 source"),
            ),
            (
                "v1 missing field",
                b"PROXY TCP4 1.2.3.4 1.2.3.5 1\r\n".to_vec(),
                ProxyError::V1("expected four fields after the protocol"),
            ),
            (
                "v1 port too big",
                b"PROXY TCP4 1.2.3.4 1.2.3.5 65536 2\r\n".to_vec(),
                ProxyError::V1("bad port"),
            ),
            (
                "v1 port with leading zero",
                b"PROXY TCP4 1.2.3.4 1.2.3.5 080 2\r\n".to_vec(),
                ProxyError::V1("bad port"),
            ),
            (
                "v1 double space",
                b"PROXY TCP4  1.2.3.4 1.2.3.5 1 2\r\n".to_vec(),
                ProxyError::V1("expected four fields after the protocol"),
            ),
            ("v2 length over the cap", big, ProxyError::V2TooLong(0xffff)),
            (
                "v2 version 1",
                {
                    let mut h = v2(1, 0x11, &[0; 12]);
                    h[12] = 0x11;
                    h
                },
                ProxyError::V2("version is not 2"),
            ),
            (
                "v2 bad command",
                v2(2, 0x11, &[0; 12]),
                ProxyError::V2("command is neither LOCAL nor PROXY"),
            ),
            (
                "v2 short ipv4 block",
                v2(1, 0x11, &[0; 8]),
                ProxyError::V2("IPv4 address block too short"),
            ),
            (
                "v2 udp",
                v2(1, 0x12, &[0; 12]),
                ProxyError::V2("transport is not TCP (STREAM)"),
            ),
            (
                "v2 bad family",
                v2(1, 0x41, &[0; 12]),
                ProxyError::V2("unknown address family"),
            ),
        ];
        for (name, wire, want) in cases {
            assert_eq!(detect(&wire), Detect::Proxy, "{name}");
            assert_eq!(parse(&wire), Err(want), "{name}");
        }
    }
}
