//! RTMP handshake, sans-IO: the simple handshake and the HMAC-SHA256 digest ("complex")
//! handshake of Flash Player / FMS, for both the server side and a client side used by the
//! benchmark tool and tests.
//!
//! Both sides only consume handshake bytes, so anything the peer pipelined after its last
//! handshake packet (clients often send C2 and the first chunks together) stays in the input.

use bytes::{Buf, BufMut, BytesMut};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The only protocol version we speak; 6 (RTMPE) and older versions are rejected.
pub const RTMP_VERSION: u8 = 3;
/// Size of C1, C2, S1 and S2.
pub const HANDSHAKE_SIZE: usize = 1536;

const DIGEST_LEN: usize = 32;
/// The second half of both well-known keys, shared by Flash Player and FMS.
const KEY_TAIL: [u8; 32] = [
    0xF0, 0xEE, 0xC2, 0x4A, 0x80, 0x68, 0xBE, 0xE8, 0x2E, 0x00, 0xD0, 0xD1, 0x02, 0x9E, 0x7E, 0x57, 0x6E, 0xEC, 0x5D,
    0x2D, 0x29, 0x80, 0x6F, 0xAB, 0x93, 0xB8, 0xE6, 0x36, 0xCF, 0xEB, 0x31, 0xAE,
];
const CLIENT_KEY_TEXT: &[u8; 30] = b"Genuine Adobe Flash Player 001";
const SERVER_KEY_TEXT: &[u8; 36] = b"Genuine Adobe Flash Media Server 001";
/// Version announced in a digest S1; clients only check that it is non-zero.
const SERVER_VERSION: [u8; 4] = [0x04, 0x05, 0x00, 0x01];
/// Version announced in a digest C1 (Flash Player 9.0.124.2, as ffmpeg does); a non-zero
/// value is what tells servers to look for a digest.
const CLIENT_VERSION: [u8; 4] = [0x09, 0x00, 0x7C, 0x02];

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("unsupported RTMP version {0} (only 3 is supported)")]
    UnsupportedVersion(u8),
    #[error("S1 digest does not verify")]
    BadS1Digest,
    #[error("S2 digest does not verify")]
    BadS2Digest,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    InProgress,
    Done,
}

/// Where a block keeps its digest: the 764-byte half at 8..772 (schema 0) or 772..1536
/// (schema 1). The first 4 bytes of the half choose the offset inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    Zero,
    One,
}

impl Schema {
    fn from_u8(schema: u8) -> Self {
        if schema == 0 {
            Schema::Zero
        } else {
            Schema::One
        }
    }

    fn digest_offset(self, block: &[u8; HANDSHAKE_SIZE]) -> usize {
        let base = match self {
            Schema::Zero => 8,
            Schema::One => 772,
        };
        let sum: usize = block[base..base + 4].iter().map(|&b| usize::from(b)).sum();
        // 728 = 764 - 4 offset bytes - 32 digest bytes, so the digest always fits in the half.
        base + 4 + sum % 728
    }
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; DIGEST_LEN] {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn full_key(text: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(text.len() + KEY_TAIL.len());
    key.extend_from_slice(text);
    key.extend_from_slice(&KEY_TAIL);
    key
}

/// The digest of a block: HMAC over all 1536 bytes except the 32 where the digest goes.
fn block_digest(block: &[u8; HANDSHAKE_SIZE], offset: usize, key: &[u8]) -> [u8; DIGEST_LEN] {
    hmac_sha256(key, &[&block[..offset], &block[offset + DIGEST_LEN..]])
}

/// Returns the digest when `block` carries a valid one in `schema`.
fn find_digest(block: &[u8; HANDSHAKE_SIZE], schema: Schema, key: &[u8]) -> Option<[u8; DIGEST_LEN]> {
    let offset = schema.digest_offset(block);
    let expected = block_digest(block, offset, key);
    constant_time_eq(&expected, &block[offset..offset + DIGEST_LEN]).then_some(expected)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Fills `block` with time, version and random bytes, then writes a digest in `schema`.
/// Returns the digest.
fn imprint_digest(block: &mut [u8; HANDSHAKE_SIZE], version: [u8; 4], schema: Schema, key: &[u8]) -> [u8; DIGEST_LEN] {
    rand::thread_rng().fill_bytes(&mut block[8..]);
    block[..4].copy_from_slice(&0u32.to_be_bytes());
    block[4..8].copy_from_slice(&version);
    let offset = schema.digest_offset(block);
    let digest = block_digest(block, offset, key);
    block[offset..offset + DIGEST_LEN].copy_from_slice(&digest);
    digest
}

/// A C2/S2 answering a digest handshake: random bytes signed with a key derived from the
/// peer's C1/S1 digest.
fn signed_response(peer_digest: &[u8; DIGEST_LEN], full_key: &[u8]) -> [u8; HANDSHAKE_SIZE] {
    let mut block = [0u8; HANDSHAKE_SIZE];
    rand::thread_rng().fill_bytes(&mut block[..HANDSHAKE_SIZE - DIGEST_LEN]);
    let key = hmac_sha256(full_key, &[peer_digest]);
    let signature = hmac_sha256(&key, &[&block[..HANDSHAKE_SIZE - DIGEST_LEN]]);
    block[HANDSHAKE_SIZE - DIGEST_LEN..].copy_from_slice(&signature);
    block
}

fn verify_signed_response(block: &[u8; HANDSHAKE_SIZE], own_digest: &[u8; DIGEST_LEN], full_key: &[u8]) -> bool {
    let key = hmac_sha256(full_key, &[own_digest]);
    let signature = hmac_sha256(&key, &[&block[..HANDSHAKE_SIZE - DIGEST_LEN]]);
    constant_time_eq(&signature, &block[HANDSHAKE_SIZE - DIGEST_LEN..])
}

fn take_block(input: &mut BytesMut) -> [u8; HANDSHAKE_SIZE] {
    let mut block = [0u8; HANDSHAKE_SIZE];
    input.copy_to_slice(&mut block);
    block
}

#[derive(Debug)]
enum ServerState {
    WaitC0C1,
    WaitC2,
    Done,
    Failed(HandshakeError),
}

/// Server side. Feed it what the socket delivered; it appends what must be sent to `out`.
/// Consumes only handshake bytes from `input`: once Done, bytes still in `input` (the first
/// RTMP chunks, which clients often send together with C2) are left there for the chunk decoder.
#[derive(Debug)]
pub struct ServerHandshake {
    state: ServerState,
    complex: bool,
}

impl Default for ServerHandshake {
    fn default() -> Self {
        Self::new()
    }
}

impl ServerHandshake {
    pub fn new() -> Self {
        Self {
            state: ServerState::WaitC0C1,
            complex: false,
        }
    }

    /// Whether the peer used the digest handshake (for logs/tests).
    pub fn is_complex(&self) -> bool {
        self.complex
    }

    pub fn process(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<Progress, HandshakeError> {
        loop {
            match &self.state {
                ServerState::Failed(err) => return Err(err.clone()),
                ServerState::Done => return Ok(Progress::Done),
                ServerState::WaitC0C1 => {
                    // Check C0 as soon as it arrives so a non-RTMP peer is dropped at once.
                    let Some(&version) = input.first() else {
                        return Ok(Progress::InProgress);
                    };
                    if version != RTMP_VERSION {
                        let err = HandshakeError::UnsupportedVersion(version);
                        self.state = ServerState::Failed(err.clone());
                        return Err(err);
                    }
                    if input.len() < 1 + HANDSHAKE_SIZE {
                        return Ok(Progress::InProgress);
                    }
                    input.advance(1);
                    let c1 = take_block(input);
                    self.respond(&c1, out);
                    self.state = ServerState::WaitC2;
                }
                ServerState::WaitC2 => {
                    // C2 is not checked: many clients send garbage there.
                    if input.len() < HANDSHAKE_SIZE {
                        return Ok(Progress::InProgress);
                    }
                    input.advance(HANDSHAKE_SIZE);
                    self.state = ServerState::Done;
                }
            }
        }
    }

    /// Appends S0+S1+S2 at once: clients wait for S2 before sending C2.
    fn respond(&mut self, c1: &[u8; HANDSHAKE_SIZE], out: &mut BytesMut) {
        out.reserve(1 + 2 * HANDSHAKE_SIZE);
        out.put_u8(RTMP_VERSION);
        // Schema 1 first, as FMS and nginx-rtmp do; a random C1 matching both is negligible.
        let client_digest = [Schema::One, Schema::Zero]
            .into_iter()
            .find_map(|schema| find_digest(c1, schema, CLIENT_KEY_TEXT).map(|d| (schema, d)));
        match client_digest {
            Some((schema, c1_digest)) => {
                self.complex = true;
                let mut s1 = [0u8; HANDSHAKE_SIZE];
                imprint_digest(&mut s1, SERVER_VERSION, schema, SERVER_KEY_TEXT);
                out.put_slice(&s1);
                out.put_slice(&signed_response(&c1_digest, &full_key(SERVER_KEY_TEXT)));
            }
            None => {
                self.complex = false;
                let mut s1 = [0u8; HANDSHAKE_SIZE];
                // Time and zero fields stay 0; the rest is random.
                rand::thread_rng().fill_bytes(&mut s1[8..]);
                out.put_slice(&s1);
                out.put_slice(c1);
            }
        }
    }
}

#[derive(Debug)]
enum ClientState {
    Start,
    WaitS0S1S2,
    Done,
    Failed(HandshakeError),
}

/// Client side, for our benchmark tool and tests.
#[derive(Debug)]
pub struct ClientHandshake {
    state: ClientState,
    /// `None` for the simple handshake.
    schema: Option<Schema>,
    /// The digest we put in C1, which the server's S2 must be signed with.
    c1_digest: [u8; DIGEST_LEN],
}

impl ClientHandshake {
    /// `complex`: send a C1 with a digest in schema 0, as ffmpeg and librtmp do; otherwise
    /// a simple C1.
    pub fn new(complex: bool) -> Self {
        Self {
            state: ClientState::Start,
            schema: complex.then_some(Schema::Zero),
            c1_digest: [0; DIGEST_LEN],
        }
    }

    /// A digest handshake with the digest in schema `schema` (0, or 1 for anything else).
    pub fn with_schema(schema: u8) -> Self {
        Self {
            state: ClientState::Start,
            schema: Some(Schema::from_u8(schema)),
            c1_digest: [0; DIGEST_LEN],
        }
    }

    /// Appends C0+C1 to `out`. Does nothing when already started.
    pub fn start(&mut self, out: &mut BytesMut) {
        if !matches!(self.state, ClientState::Start) {
            return;
        }
        let mut c1 = [0u8; HANDSHAKE_SIZE];
        match self.schema {
            Some(schema) => {
                self.c1_digest = imprint_digest(&mut c1, CLIENT_VERSION, schema, CLIENT_KEY_TEXT);
            }
            None => rand::thread_rng().fill_bytes(&mut c1[8..]),
        }
        out.reserve(1 + HANDSHAKE_SIZE);
        out.put_u8(RTMP_VERSION);
        out.put_slice(&c1);
        self.state = ClientState::WaitS0S1S2;
    }

    /// Calls [`start`](Self::start) first if that has not happened yet.
    pub fn process(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<Progress, HandshakeError> {
        match &self.state {
            ClientState::Failed(err) => return Err(err.clone()),
            ClientState::Done => return Ok(Progress::Done),
            ClientState::Start => self.start(out),
            ClientState::WaitS0S1S2 => {}
        }
        let Some(&version) = input.first() else {
            return Ok(Progress::InProgress);
        };
        if version != RTMP_VERSION {
            return self.fail(HandshakeError::UnsupportedVersion(version));
        }
        if input.len() < 1 + 2 * HANDSHAKE_SIZE {
            return Ok(Progress::InProgress);
        }
        input.advance(1);
        let s1 = take_block(input);
        let s2 = take_block(input);
        let c2 = match self.schema {
            None => s1,
            Some(schema) => {
                // Servers answer in our schema; accept the other one too, it costs nothing.
                let other = match schema {
                    Schema::Zero => Schema::One,
                    Schema::One => Schema::Zero,
                };
                let Some(s1_digest) =
                    find_digest(&s1, schema, SERVER_KEY_TEXT).or_else(|| find_digest(&s1, other, SERVER_KEY_TEXT))
                else {
                    return self.fail(HandshakeError::BadS1Digest);
                };
                if !verify_signed_response(&s2, &self.c1_digest, &full_key(SERVER_KEY_TEXT)) {
                    return self.fail(HandshakeError::BadS2Digest);
                }
                signed_response(&s1_digest, &full_key(CLIENT_KEY_TEXT))
            }
        };
        out.put_slice(&c2);
        self.state = ClientState::Done;
        Ok(Progress::Done)
    }

    fn fail(&mut self, err: HandshakeError) -> Result<Progress, HandshakeError> {
        self.state = ClientState::Failed(err.clone());
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs both sides against each other, delivering at most `step` bytes per call, until
    /// both are done. Returns the server and what it left in its input.
    fn run(mut client: ClientHandshake, step: usize, trailing: &[u8]) -> (ServerHandshake, BytesMut) {
        let mut server = ServerHandshake::new();
        let mut to_server = BytesMut::new();
        let mut to_client = BytesMut::new();
        let mut server_in = BytesMut::new();
        let mut client_in = BytesMut::new();
        client.start(&mut to_server);
        let mut client_done = false;
        let mut server_done = false;
        for _ in 0..100_000 {
            if client_done && server_done {
                break;
            }
            let n = step.min(to_server.len());
            server_in.extend_from_slice(&to_server.split_to(n));
            if !server_done {
                server_done = server.process(&mut server_in, &mut to_client).unwrap() == Progress::Done;
            }
            let n = step.min(to_client.len());
            client_in.extend_from_slice(&to_client.split_to(n));
            if !client_done {
                client_done = client.process(&mut client_in, &mut to_server).unwrap() == Progress::Done;
                if client_done {
                    // The first chunks travel in the same segment as C2.
                    to_server.extend_from_slice(trailing);
                }
            }
        }
        assert!(client_done && server_done, "handshake did not finish");
        assert!(client_in.is_empty() && to_client.is_empty());
        server_in.extend_from_slice(&to_server);
        (server, server_in)
    }

    #[test]
    fn simple_handshake() {
        let (server, rest) = run(ClientHandshake::new(false), usize::MAX, b"");
        assert!(!server.is_complex());
        assert!(rest.is_empty());
    }

    #[test]
    fn complex_handshake_both_schemas() {
        for schema in [0, 1] {
            let (server, rest) = run(ClientHandshake::with_schema(schema), usize::MAX, b"");
            assert!(server.is_complex(), "schema {schema}");
            assert!(rest.is_empty());
        }
        let (server, _) = run(ClientHandshake::new(true), usize::MAX, b"");
        assert!(server.is_complex());
    }

    #[test]
    fn one_byte_at_a_time() {
        for client in [
            ClientHandshake::new(false),
            ClientHandshake::with_schema(0),
            ClientHandshake::with_schema(1),
        ] {
            let complex = client.schema.is_some();
            let (server, rest) = run(client, 1, b"");
            assert_eq!(server.is_complex(), complex);
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn bytes_after_c2_are_left_for_the_chunk_decoder() {
        let chunk = [0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x14, 0x00, 0x00, 0x00, 0x00];
        for client in [ClientHandshake::new(false), ClientHandshake::with_schema(1)] {
            let (mut server, rest) = run(client, usize::MAX, &chunk);
            assert_eq!(&rest[..], &chunk[..]);
            // Once done, further calls consume nothing.
            let mut input = rest.clone();
            let mut out = BytesMut::new();
            assert_eq!(server.process(&mut input, &mut out), Ok(Progress::Done));
            assert_eq!(input, rest);
            assert!(out.is_empty());
        }
    }

    #[test]
    fn c0c1_and_c2_in_one_segment_with_chunks() {
        // Some clients pipeline everything before reading a byte; the server must still stop
        // exactly after C2.
        let mut input = BytesMut::new();
        input.put_u8(3);
        input.put_bytes(0, 2 * HANDSHAKE_SIZE);
        input.put_slice(b"chunk");
        let mut server = ServerHandshake::new();
        let mut out = BytesMut::new();
        assert_eq!(server.process(&mut input, &mut out), Ok(Progress::Done));
        assert_eq!(&input[..], b"chunk");
        assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE);
    }

    #[test]
    fn bad_version_is_rejected() {
        for version in [0u8, 6, 0x16, b'G'] {
            let mut server = ServerHandshake::new();
            let mut input = BytesMut::from(&[version][..]);
            let mut out = BytesMut::new();
            let err = HandshakeError::UnsupportedVersion(version);
            assert_eq!(server.process(&mut input, &mut out), Err(err.clone()));
            assert_eq!(server.process(&mut input, &mut out), Err(err));
            assert!(out.is_empty());
        }
    }

    #[test]
    fn simple_server_echoes_c1() {
        let mut server = ServerHandshake::new();
        let mut input = BytesMut::from(&hex(RTMPDUMP_SIMPLE_C0C1)[..]);
        let mut out = BytesMut::new();
        assert_eq!(server.process(&mut input, &mut out), Ok(Progress::InProgress));
        assert_eq!(out[0], RTMP_VERSION);
        assert_eq!(&out[1 + HANDSHAKE_SIZE..], &hex(RTMPDUMP_SIMPLE_C0C1)[1..]);
        assert!(!server.is_complex());
    }

    #[test]
    fn client_rejects_forged_s1() {
        let mut client = ClientHandshake::with_schema(1);
        let mut out = BytesMut::new();
        client.start(&mut out);
        let mut input = BytesMut::new();
        input.put_u8(3);
        input.put_bytes(0x55, 2 * HANDSHAKE_SIZE);
        assert_eq!(client.process(&mut input, &mut out), Err(HandshakeError::BadS1Digest));
    }

    #[test]
    fn client_rejects_s2_not_signed_for_its_c1() {
        let mut client = ClientHandshake::with_schema(0);
        let mut c0c1 = BytesMut::new();
        client.start(&mut c0c1);
        // A valid S1/S2 pair answering someone else's C1.
        let mut other = ClientHandshake::with_schema(0);
        let mut other_c0c1 = BytesMut::new();
        other.start(&mut other_c0c1);
        let mut server = ServerHandshake::new();
        let mut reply = BytesMut::new();
        server.process(&mut other_c0c1, &mut reply).unwrap();
        let mut out = BytesMut::new();
        assert_eq!(client.process(&mut reply, &mut out), Err(HandshakeError::BadS2Digest));
    }

    /// Asserts that our server recognises `c0c1` as a digest handshake and that its S2 is
    /// signed with the key derived from the client's digest, as the client will check.
    fn assert_server_answers_digest(c0c1: &[u8], schema: Schema) {
        let c1: [u8; HANDSHAKE_SIZE] = c0c1[1..].try_into().unwrap();
        let c1_digest = find_digest(&c1, schema, CLIENT_KEY_TEXT).expect("C1 digest in schema");
        let mut server = ServerHandshake::new();
        let mut input = BytesMut::from(c0c1);
        let mut out = BytesMut::new();
        assert_eq!(server.process(&mut input, &mut out), Ok(Progress::InProgress));
        assert!(server.is_complex());
        let s1: [u8; HANDSHAKE_SIZE] = out[1..1 + HANDSHAKE_SIZE].try_into().unwrap();
        let s2: [u8; HANDSHAKE_SIZE] = out[1 + HANDSHAKE_SIZE..].try_into().unwrap();
        assert_ne!(&s1[4..8], &[0, 0, 0, 0]);
        assert!(
            find_digest(&s1, schema, SERVER_KEY_TEXT).is_some(),
            "S1 in client's schema"
        );
        assert!(verify_signed_response(&s2, &c1_digest, &full_key(SERVER_KEY_TEXT)));
    }

    #[test]
    fn real_ffmpeg_c1_is_complex() {
        assert_server_answers_digest(&hex(FFMPEG_C0C1), Schema::Zero);
    }

    #[test]
    fn real_rtmpdump_c1_is_complex() {
        assert_server_answers_digest(&hex(RTMPDUMP_DIGEST_C0C1), Schema::Zero);
    }

    proptest! {
        #[test]
        fn server_never_panics(data in proptest::collection::vec(any::<u8>(), 0..4000), split in 0usize..4000) {
            let mut server = ServerHandshake::new();
            let mut out = BytesMut::new();
            let split = split.min(data.len());
            let mut input = BytesMut::from(&data[..split]);
            let _ = server.process(&mut input, &mut out);
            input.extend_from_slice(&data[split..]);
            let _ = server.process(&mut input, &mut out);
        }

        #[test]
        fn server_never_panics_after_valid_c0(data in proptest::collection::vec(any::<u8>(), 0..4000)) {
            let mut server = ServerHandshake::new();
            let mut out = BytesMut::new();
            let mut input = BytesMut::from(&[RTMP_VERSION][..]);
            input.extend_from_slice(&data);
            let _ = server.process(&mut input, &mut out);
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        s.chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    /// C0+C1 sent by ffmpeg 5.1 (Lavf59.27.100, native rtmp protocol): captured with a python
    /// listener on 127.0.0.1 while running
    /// `ffmpeg -re -f lavfi -i testsrc=size=1280x720:rate=30 -f lavfi -i sine -t 2 -c:v libx264
    /// -c:a aac -ac 2 -f flv rtmp://127.0.0.1:19351/live/test`. Version field 9.0.124.2.
    const FFMPEG_C0C1: &str = "\
        030000000009007c02f778551eceab8e1e362f07c5868a70b266d40220e50861\
        18a22e3697d5fc2b6329c22ee7c7c9b0b5b345dfa8398fea3bc879208a106842\
        5aa1174cb57258cfebe24da42ec4ff9da19c7b406f18c95bfdd04ee48b6f8332\
        14a47b8bf68eb05254e25ae9a9a8b496c5496f6e9cd7c68cb6bcc84169e67f3e\
        372ffe186da8513862c5afdeb5a1218a860baccdd869b253dbab8a0efb59a48c\
        442099875e55b74fd07a1b69af303e099873cb77e2d9e2c4741eb1f506a7f0b2\
        962af91f5051c890a320994f4c8b36a01fa9c0f15f4b7cf7b6c3817da6091861\
        1d3b02ff7cc94038937537d3382e416bd57577834df9caf748352150ce92d0db\
        b40e871fc364e18b7e3569e39876c1ae0cb79ff6d7ab32f9f011869c8da4191e\
        f46d3c1bc6b72d83812f2243d1752a412632d66a2075f5d302f45cdf2b98b802\
        b79805dc4837d84eded1cc42cba7eec3137bf86dd0b2d7f624d521a3ff655bcf\
        0df4101341d230e94651628e45a7abf8183101ce981e5e86a6faec5c79aa7ec7\
        181ea459ed966e0c932a6f9e4bf554ab7b1c905cde054ed40d2fb89bbfc65752\
        e58cfde4f2a04dc3ad1e5ef4fc64d57b071c14146a451f6a043156d2880f5957\
        d78dfd3ff2b880f624ac70f27094f37734eaf1924f66ac3d648ae232930544a4\
        420b65eed4696f7f50fe05fc948516650bfb9b65f953d848e3456965d0d76b62\
        7a84e35e9ddabd8b43f0fadaee458cdf59ebd773922e0ae507d5e64092e90ec6\
        7ed8439e8f221c753a9f9216f1cb85b5107bc7cc7c4fb2c3eed1afc709b192f5\
        0de69c1ffca5650efb523b5fab5997cac4b7ef5af2bf5973e6293bae1fc1da49\
        9be5515077de4ddb3f7fbcd741711c62b7d803b8d054cf578182714d1c445bd6\
        92ba1b839a09e7266fc85daa8fad433dabbd206cde1ea571770c6bfa7956c266\
        ee8435eb01caa6f583c0d83c33eefcf3f97db917bdb299f8a89fb8860ab1cd64\
        4c1e82cce1323a9eb79d25f5dc570b70b40bb20061743353d0536ecdabd82f22\
        77756228cb54fe6932c4c9bd130d2bfc700bf5d85da6946e96f82e0afd8e9c20\
        cfeabf9a6a189bb17bbef539d1d9e73ee966fcb5d6bdbf98444de865be1605e3\
        4087b34cdf04e3aff55bd4137c522d2e3c7bf2634db326b22a474db7f8a0952a\
        b3510de555396c18a378a8390b73bff7772fb2760fa5786a3b0459c45a1d1b0d\
        ff4cbbb65da0ed34f32116c3c2cc2b95825111bcfbb246c1505aa00c970d06d7\
        6cc950ce368b220db20487cba02bb1fc54b36567b42913d6b885062cd7795601\
        d31a4a8e6d56467fa5c52162676fd526122513c3e47f2e6d9d6a19c4f8795431\
        a94ced039221d27ac68a7a770e9305252271459b71d05505c4977b70e9685120\
        8bacdcdf7e682b3848840880f1fec2a32fb1406862bc83cad89adf729f3ba6ff\
        d3fe808e8403e7c6a0f6dcda3211898f6f16505b078cc78b80db600ded2f200f\
        25ff5dcb31d32cbe2056b8bdc31091631abbd2ac28d61fe32480ec5035bbf35f\
        173393f0d59a21d2300b2db4b59eaa63ffe0f93d65dc028516905f22a9c7dff3\
        87c4eb78c6300e7ebbb2a6663cfbe5a9977caf5764ba3f0aba57db4e6051e0ae\
        c6e05b1bdaa649a97875edbc40bcc4214bb7fef72730d4368acbd3e10ab4c764\
        2a1c53f93ca26db9c766555be26fdff0e2a721425b95762b0b776fd3e3eb1731\
        3d53129c9f34003c99a5196a8c6aacb6d64b51dd98b27c5b59a70bd941a1ba03\
        00fb744cfc499d997e6d93392d28a767d116dfbc2cb9eb40540d11eb304ad932\
        2386fdc597d55d3d1c67bc54df35479afb19ea2cd204dd331efb49c1e172f6bb\
        89fbf58207dcae6c12f8a7598bef1e872c0c35f22b4c29df10f9bb1add3aeb88\
        7ab5fb38c036b88346f761c42f295dfe0b437dfb4f30a71276ab7d409ce42496\
        3f9ebb4f1f47e52b18786f279b5a87226f66981dd6d0ad11f49af31055ff6971\
        0fda3457c4b7852db2e3936d0778bf879f1734ad3a24ffb1ae9584760b9cb045\
        2a53ba0962ffe2f605af52830bd211a5488894cc0b052255048711cd198510a9\
        e943bf8b839198455fbd41073005d303990b88d9b63656d43cfec8ed83748f4b\
        0f0fc5120216794b22a054e5bc58abd8c41096070884393453ce509694afbeab\
        e0";

    /// C0+C1 sent by rtmpdump 2.4 (librtmp) the same way, run as
    /// `rtmpdump -r rtmp://127.0.0.1:19352/live/test -w <64 zeros> -x 1 -o /dev/null`:
    /// librtmp only uses the digest handshake when SWF verification (`-w`/`-x`) or RTMPE is on.
    /// Version field 10.0.45.2.
    const RTMPDUMP_DIGEST_C0C1: &str = "\
        03001a2fb20a002d0267458b6bc6237b3269983c647348336651dcb074ff5c49\
        194a94e82aec585562291f8e23cd7ce846ba581b3dabd77e50f241b12efb1eb7\
        41e3a9e27946e145757c005f51c262d05b54082012f827b14d1b231602e8e916\
        1fe7cd90118d43ef66760f0e145a2552332ef99c106372ed0d33c2dc7f9fd7ef\
        1bc9c4a7419a07686b66fb6a4e325de4250d509b51b7d71b4331ba2d3f58e483\
        7ca33071255ad9bb6225616c435d898c6205b13a3317a31d7258a84324e95a1d\
        2d5e846367d4a8a275abbded08b28c8379cdd05343c6e0030b9b769a18b49ee4\
        545424f3711186a82c0ec43608821d900274f8953a4186130821f57f1e3dbd3d\
        7cdc8d7b7387f0ea6c701a2222e9dd16453ec80630a1d44f6141c29a41e1f877\
        55fcad0b44672307053e820438015f46777ec62477972a485ceab96324dc4a88\
        5e6bd3ea519677512d8fd70b5838a43e155c5855382a4ea670ec42236ab07c48\
        2a3bd44e1dfb065a72329ad82cafcce4573c8d6d7a548f584bec892254181be9\
        6ddb7f43385ca4447602f9ff321a484a68fe78945743bb9a74fb40c23dfa26a0\
        1baadea1793ac3c675fb85e61229a52008147f2c415fff7f6063d3870dc4bf6a\
        c52b07847872e1e122bea12917f743f11cbe15011861a85b23898c3947f9e94f\
        355cafb515bb261274a8b6340d993c23100fb66a3f95405761b1570c7eeb35ae\
        77f1e49b57b3500c31057ef85fef5d302ff70ba72500bfba1de984d04aa1ea48\
        1f3a828113e50ab75dca8f0f100b709065cb4a0115d07f5e5f48318a0947029d\
        796447b906bd96c2421f128e16235dba1e1e3f1e66a89ec75d1c470a547beed3\
        7b64c5d951c5fd3e61142bf70b737b44115a3e9642c582030a5eb1f2084b2332\
        1a79d30f3b632feb683b81624970dfb66064eea5062406331411caff7f9e7027\
        1a0911ea71dc590f10aae0b77fd45beb06acd96d6ff21142091b5e8800102127\
        76afa8044c3b701617337ee114cde72232e30ede7450c5eb6848d6f62d47d4b7\
        4615c32a4a5c01ee39bb4ffc576f01c10c2284f1431901ef60ba24f3269b5701\
        7f7d30da49f5a555700b37b85fe11e80501aac88041c01b85f7f8fa76a23bd72\
        76f85ac76f29705f6af8185e7da434355f1b82a1731377e67db5555c55ca2aa6\
        3f4ee7fc14e8d33d6a9812c97132f6da0938992953e0e8bf1f79ca92504d5c54\
        1d3deaad59341a8f28bc5d152a5f6e9f1d4e1b7e0977820851fac5a01ccb4b58\
        536c285e4105fd587cac6ad82386d4e64521fe105c2bfa7f0eaa91593c1a59d8\
        4b556adf78a2aab739be8d0d2b70ec806cb5219e3773e369003b17272c04099b\
        4c5cb7a76ad329f01d36ff75569450d13db312b03dafc90827e2ac255bf0fc5d\
        17e4e3974f9e0a3b054f6bfd3432ff1559158d435649319e51fd4a6e2c82b5a1\
        174e2ef74da9b54650088a885d702c082ad4afc65eb21be2198a85e075291aa6\
        5754c699534813ee209a0627440ae8370bbcf65721d51d4e700ef1d25718aeff\
        0ba8473e0e44f0482eacfed0495b5aee4bf3b951558eabf6244c574c63d79de9\
        242db6312a9bc24918099dff7d42437500e5f3e76906e86d2ac4f816183322df\
        37af9db47acd829f75a34ee761844d7b597f9e810f2dd4c757ad672131d4641b\
        6376e7b578476e4875de4c536e32de0d1a1c8c9665ec3d26464a8c0d26c4d3d4\
        73302e6f74f68ade6f202ec33f23e8c0498536d5146c850f23fb85aa6eb2ec06\
        3f0748593b0423aa6cf42f7c3fec3b41250b0b1817b9289357205e205dbaa8cc\
        1186ab324dc3ac073f3ef6476b054ab45cf180cf16ec5d691cd9aecf3f676885\
        0f33ccb111b7fb222e9946932950584877a3394974e3d2a04f142c1d6bd367b8\
        68d95d7f3f345ae02af74f79325e945454a0dfef4df2d5232110815b13a82749\
        09f6f8cd0d05b1d75294638a2e0104e624bed96a2ab4c1aa0bbcacb23644859d\
        77786eb24afaa2fa2149cf515469ef8161e600643e237e2114d05707711acd15\
        50da794442699e9a1a6a255e477eb38d364c713b6a7e517b32511b461f25cfba\
        29b3ab5b5d486bbf5184630f7e538b4b2b3a41e37294e46a11fbb29434313ab1\
        009995426490161f63323e9725576fad0e44d8c96eeeea495c9bf44a06bc467c\
        39";

    /// C0+C1 sent by plain `rtmpdump -r rtmp://127.0.0.1:19353/live/test -o /dev/null`: a simple
    /// C1 (version field zero).
    const RTMPDUMP_SIMPLE_C0C1: &str = "\
        03001a31c40000000067458b6bc6237b3269983c647348336651dcb074ff5c49\
        194a94e82aec585562291f8e23cd7ce846ba581b3dabd77e50f241b12efb1eb7\
        41e3a9e27946e145757c005f51c262d05b54082012f827b14d1b231602e8e916\
        1fe7cd90118d43ef66760f0e145a2552332ef99c106372ed0d33c2dc7f9fd7ef\
        1bc9c4a7419a07686b66fb6a4e325de4250d509b51b7d71b4331ba2d3f58e483\
        7ca33071255ad9bb6225616c435d898c6205b13a3317a31d7258a84324e95a1d\
        2d5e846367d4a8a275abbded08b28c8379cdd05343c6e0030b9b769a18b49ee4\
        545424f3711186a82c0ec43608821d900274f8953a4186130821f57f1e3dbd3d\
        7cdc8d7b7387f0ea6c701a2222e9dd16453ec80630a1d44f6141c29a41e1f877\
        55fcad0b44672307053e820438015f46777ec62477972a485ceab96324dc4a88\
        5e6bd3ea519677512d8fd70b5838a43e155c5855382a4ea670ec42236ab07c48\
        2a3bd44e1dfb065a72329ad82cafcce4573c8d6d7a548f584bec892254181be9\
        6ddb7f43385ca4447602f9ff321a484a68fe78945743bb9a74fb40c23dfa26a0\
        1baadea1793ac3c675fb85e61229a5c670d1ed0e52e63f4a3705f04e4f3cc1f9\
        237cb79b6494c75a2775653839d80ff11cbe15011861a85b23898c3947f9e94f\
        355cafb515bb261274a8b6340d993c23100fb66a3f95405761b1570c7eeb35ae\
        77f1e49b57b3500c31057ef85fef5d302ff70ba72500bfba1de984d04aa1ea48\
        1f3a828113e50ab75dca8f0f100b709065cb4a0115d07f5e5f48318a0947029d\
        796447b906bd96c2421f128e16235dba1e1e3f1e66a89ec75d1c470a547beed3\
        7b64c5d951c5fd3e61142bf70b737b44115a3e9642c582030a5eb1f2084b2332\
        1a79d30f3b632feb683b81624970dfb66064eea5062406331411caff7f9e7027\
        1a0911ea71dc590f10aae0b77fd45beb06acd96d6ff21142091b5e8800102127\
        76afa8044c3b701617337ee114cde72232e30ede7450c5eb6848d6f62d47d4b7\
        4615c32a4a5c01ee39bb4ffc576f01c10c2284f1431901ef60ba24f3269b5701\
        7f7d30da49f5a555700b37b85fe11e80501aac88041c01b85f7f8fa76a23bd72\
        76f85ac76f29705f6af8185e7da434355f1b82a1731377e67db5555c55ca2aa6\
        3f4ee7fc14e8d33d6a9812c97132f6da0938992953e0e8bf1f79ca92504d5c54\
        1d3deaad59341a8f28bc5d152a5f6e9f1d4e1b7e0977820851fac5a01ccb4b58\
        536c285e4105fd587cac6ad82386d4e64521fe105c2bfa7f0eaa91593c1a59d8\
        4b556adf78a2aab739be8d0d2b70ec806cb5219e3773e369003b17272c04099b\
        4c5cb7a76ad329f01d36ff75569450d13db312b03dafc90827e2ac255bf0fc5d\
        17e4e3974f9e0a3b054f6bfd3432ff1559158d435649319e51fd4a6e2c82b5a1\
        174e2ef74da9b54650088a885d702c082ad4afc65eb21be2198a85e075291aa6\
        5754c699534813ee209a0627440ae8370bbcf65721d51d4e700ef1d25718aeff\
        0ba8473e0e44f0482eacfed0495b5aee4bf3b951558eabf6244c574c63d79de9\
        242db6312a9bc24918099dff7d42437500e5f3e76906e86d2ac4f816183322df\
        37af9db47acd829f75a34ee761844d7b597f9e810f2dd4c757ad672131d4641b\
        6376e7b578476e4875de4c536e32de0d1a1c8c9665ec3d26464a8c0d26c4d3d4\
        73302e6f74f68ade6f202ec33f23e8c0498536d5146c850f23fb85aa6eb2ec06\
        3f0748593b0423aa6cf42f7c3fec3b41250b0b1817b9289357205e205dbaa8cc\
        1186ab324dc3ac073f3ef6476b054ab45cf180cf16ec5d691cd9aecf3f676885\
        0f33ccb111b7fb222e9946932950584877a3394974e3d2a04f142c1d6bd367b8\
        68d95d7f3f345ae02af74f79325e945454a0dfef4df2d5232110815b13a82749\
        09f6f8cd0d05b1d75294638a2e0104e624bed96a2ab4c1aa0bbcacb23644859d\
        77786eb24afaa2fa2149cf515469ef8161e600643e237e2114d05707711acd15\
        50da794442699e9a1a6a255e477eb38d364c713b6a7e517b32511b461f25cfba\
        29b3ab5b5d486bbf5184630f7e538b4b2b3a41e37294e46a11fbb29434313ab1\
        009995426490161f63323e9725576fad0e44d8c96eeeea495c9bf44a06bc467c\
        39";
}
