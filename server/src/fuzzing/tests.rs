//! Replays the committed fuzz corpus and every crash found through the fuzz entry points,
//! and builds the seed corpus from the real captures in `codec/testdata`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bytes::BytesMut;

use super::*;
use crate::codec::amf0::Amf0Value;
use crate::codec::flv;
use crate::codec::handshake::ClientHandshake;
use crate::codec::message::Command;

/// `fuzz/` at the repository root.
fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Files directly under `dir` (none when it does not exist), sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs every file of `dirs` through each target's entry; returns what panicked.
fn replay(dirs: &[&str]) -> (usize, Vec<String>) {
    let mut ran = 0;
    let mut failures = Vec::new();
    for t in TARGETS {
        for dir in dirs {
            for file in files(&fuzz_dir().join(dir).join(t.name)) {
                let data = std::fs::read(&file).unwrap();
                ran += 1;
                if catch_unwind(AssertUnwindSafe(|| (t.run)(&data))).is_err() {
                    failures.push(format!("{}: {}", t.name, file.display()));
                }
            }
        }
    }
    (ran, failures)
}

#[test]
fn every_fuzz_target_has_a_seed_corpus_and_a_cargo_fuzz_binary() {
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap();
    for t in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(t.name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{} is empty", t.name);
        assert!(
            manifest.contains(&format!("name = \"{}\"", t.name)),
            "fuzz/Cargo.toml has no [[bin]] for {}",
            t.name
        );
        let source = std::fs::read_to_string(fuzz_dir().join("fuzz_targets").join(format!("{}.rs", t.name))).unwrap();
        assert!(
            source.contains(&format!("fuzzing::{}", fn_name(t.name))),
            "fuzz_targets/{}.rs does not call its entry",
            t.name
        );
    }
}

/// The entry function's name for a target (the same but where it would shadow a module).
fn fn_name(target: &str) -> &str {
    match target {
        "amf0" => "amf0_values",
        other => other,
    }
}

#[test]
fn committed_fuzz_corpus_replays_without_a_panic() {
    let (ran, failures) = replay(&["corpus"]);
    assert!(ran >= TARGETS.len(), "only {ran} corpus files found");
    assert!(
        failures.is_empty(),
        "corpus inputs that panic:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_crash_the_fuzzers_found_stays_fixed() {
    let (_, failures) = replay(&["artifacts-regressions"]);
    assert!(failures.is_empty(), "regressions:\n{}", failures.join("\n"));
}

#[test]
fn built_seeds_run_clean() {
    for (target, name, data) in seeds() {
        let run = super::target(target).unwrap_or_else(|| panic!("no target {target}"));
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            panic!("seed {target}/{name} panics");
        }
    }
}

/// The player seed reaches the checks on requests the lean path takes: all four are taken.
#[test]
fn the_player_seed_is_taken_by_the_lean_path_request_by_request() {
    let (_, _, data) = seeds()
        .into_iter()
        .find(|(t, n, _)| *t == "http_request" && n == "players")
        .unwrap();
    let mut buf = &data[1..];
    let mut taken = 0;
    while let Parsed::Lean(head) = h1::parse(buf, |_| false) {
        taken += 1;
        buf = &buf[head.len..];
    }
    assert_eq!((taken, buf.len()), (4, 0));
}

/// Writes [`seeds`] into `fuzz/corpus/<target>/seed-<name>`. Run by hand when the seeds
/// change: `cargo test -p ferrocast-server --lib fuzzing::tests::write_seed_corpus -- --ignored`.
#[test]
#[ignore = "writes files into fuzz/corpus"]
fn write_seed_corpus() {
    for (target, name, data) in seeds() {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    }
}

macro_rules! testdata {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_bytes!(concat!("../codec/testdata/", $name)) as &[u8])),*]
    };
}

/// Every capture in `codec/testdata` (message bodies as FFmpeg sent them over RTMP/FLV).
const CAPTURES: &[(&str, &[u8])] = testdata!(
    "ac3_48k_stereo.frame.bin",
    "av1_1280x720_main.bin",
    "av1_1920x1080_main_10.bin",
    "av1_320x240_main_gray.bin",
    "av1_320x240_pro_420_12.bin",
    "av1_426x240_pro_422.bin",
    "av1_640x360_high_444.bin",
    "eac3_48k_5.1.frame.bin",
    "flac_44k_stereo_16.bin",
    "flac_96k_mono_24.bin",
    "hevc_1280x720_main.bin",
    "hevc_1920x1080_main10.bin",
    "hevc_640x360_rext_422_10.bin",
    "hevc_854x480_main_cropped.bin",
    "hevc_854x480_rext_444.bin",
    "mp3_22k_mono.frame.bin",
    "mp3_44k_stereo.frame.bin",
    "opus_16k_mono.bin",
    "opus_48k_5.1.bin",
    "opus_48k_mono.bin",
    "opus_48k_stereo.bin",
    "vp9_1280x720_p0.bin",
    "vp9_1280x720_p0.frame.bin",
    "vp9_320x240_p1_gbrp.bin",
    "vp9_320x240_p1_gbrp.frame.bin",
    "vp9_320x240_p3_444_12.bin",
    "vp9_320x240_p3_444_12.frame.bin",
    "vp9_640x360_p1_444.bin",
    "vp9_640x360_p1_444.frame.bin",
    "vp9_854x480_p2_10.bin",
    "vp9_854x480_p2_10.frame.bin",
);

/// An AVC sequence header message body from FFmpeg 5.1 / libx264 (1280x720 Baseline 3.1),
/// the first vector of `info.rs`.
const AVC_HEADER: &str = "17000000000142c01fffe100196742c01fd9005005bb0110000003001000000303c0f183248001000568cb83cb20";
/// A legacy AAC sequence header (AudioSpecificConfig LC 48 kHz mono) from FFmpeg.
const AAC_HEADER: &[u8] = b"\xaf\x00\x11\x88\x56\xe5\x00";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn captures(prefix: &str) -> impl Iterator<Item = (&'static str, &'static [u8])> + '_ {
    CAPTURES.iter().copied().filter(move |(n, _)| n.starts_with(prefix))
}

/// `packet` (an enhanced-RTMP message body) wrapped in a ModEx TimestampOffsetNano.
fn modex(packet: &[u8]) -> Vec<u8> {
    let mut p = vec![(packet[0] & 0xf0) | 7, 2, 0x01, 0x86, 0xa0, packet[0] & 0x0f];
    p.extend_from_slice(&packet[1..]);
    p
}

fn command(name: &str, txid: f64, object: Amf0Value, args: Vec<Amf0Value>) -> Message {
    Message::Command(Command {
        name: name.into(),
        transaction_id: txid,
        object,
        args,
    })
}

/// The `connect` ffmpeg 5.1 sends (as captured in `amf0.rs`).
fn ffmpeg_connect() -> Message {
    command(
        "connect",
        1.0,
        Amf0Value::object([
            ("app", Amf0Value::from("live")),
            ("type", "nonprivate".into()),
            ("flashVer", "FMLE/3.0 (compatible; Lavf59.27.100)".into()),
            ("tcUrl", "rtmp://127.0.0.1:19351/live".into()),
        ]),
        vec![],
    )
}

/// The `@setDataFrame onMetaData` ffmpeg 5.1 sends (as captured in `amf0.rs`).
fn ffmpeg_metadata() -> Message {
    let n = Amf0Value::Number;
    Message::Data(vec![
        "@setDataFrame".into(),
        "onMetaData".into(),
        Amf0Value::EcmaArray(vec![
            ("duration".into(), n(2.0)),
            ("width".into(), n(1280.0)),
            ("height".into(), n(720.0)),
            ("videodatarate".into(), n(0.0)),
            ("framerate".into(), n(30.0)),
            ("videocodecid".into(), n(7.0)),
            ("audiodatarate".into(), n(125.0)),
            ("audiosamplerate".into(), n(44100.0)),
            ("audiosamplesize".into(), n(16.0)),
            ("stereo".into(), true.into()),
            ("audiocodecid".into(), n(10.0)),
            ("encoder".into(), "Lavf59.27.100".into()),
            ("filesize".into(), n(0.0)),
        ]),
    ])
}

/// Media a publisher sends: legacy AVC + AAC, then each enhanced capture, plain and in
/// ModEx: (message type, body).
fn media_messages() -> Vec<(u8, Vec<u8>)> {
    let mut v = vec![
        (9, hex(AVC_HEADER)),
        (8, AAC_HEADER.to_vec()),
        (9, b"\x17\x01\x00\x00\x00\x00\x00\x00\x02\x09\x10".to_vec()),
        (8, b"\xaf\x01\x21\x10\x04".to_vec()),
    ];
    for (name, body) in CAPTURES {
        let t = if name.starts_with("hevc") || name.starts_with("av1") || name.starts_with("vp9") {
            9
        } else {
            8
        };
        v.push((t, body.to_vec()));
        if body[0] & 0x80 != 0 && (t == 9 || body[0] >> 4 == 9) {
            v.push((t, modex(body)));
        }
    }
    v
}

/// A publisher's whole conversation as one chunk stream at chunk size 4096.
fn publish_conversation() -> Vec<u8> {
    let mut out = BytesMut::new();
    Message::SetChunkSize(4096).encode(&mut out, 0, 0, 128);
    for m in [
        ffmpeg_connect(),
        command("releaseStream", 2.0, Amf0Value::Null, vec!["cam".into()]),
        command("FCPublish", 3.0, Amf0Value::Null, vec!["cam".into()]),
        command("createStream", 4.0, Amf0Value::Null, vec![]),
    ] {
        m.encode(&mut out, 0, 0, 4096);
    }
    command("publish", 5.0, Amf0Value::Null, vec!["cam".into(), "live".into()]).encode(&mut out, 0, 1, 4096);
    ffmpeg_metadata().encode(&mut out, 0, 1, 4096);
    for (i, (t, body)) in media_messages().into_iter().enumerate() {
        encode_message(&mut out, if t == 9 { 6 } else { 4 }, 40 * i as u32, t, 1, &body, 4096);
    }
    command("FCUnpublish", 6.0, Amf0Value::Null, vec!["cam".into()]).encode(&mut out, 0, 1, 4096);
    command("deleteStream", 7.0, Amf0Value::Null, vec![1.0.into()]).encode(&mut out, 0, 0, 4096);
    out.to_vec()
}

/// A player's conversation: connect, createStream, play, a ping, then stop.
fn play_conversation() -> Vec<u8> {
    let mut out = BytesMut::new();
    ffmpeg_connect().encode(&mut out, 0, 0, 128);
    Message::WindowAckSize(5_000_000).encode(&mut out, 0, 0, 128);
    command("createStream", 2.0, Amf0Value::Null, vec![]).encode(&mut out, 0, 0, 128);
    command("play", 0.0, Amf0Value::Null, vec!["cam".into(), (-2.0).into()]).encode(&mut out, 0, 1, 128);
    Message::UserControl(crate::codec::message::UserControl::SetBufferLength {
        stream_id: 1,
        millis: 3000,
    })
    .encode(&mut out, 0, 0, 128);
    command("closeStream", 0.0, Amf0Value::Null, vec![]).encode(&mut out, 0, 1, 128);
    out.to_vec()
}

/// An FLV stream of the publisher's metadata and media.
fn flv_stream() -> Vec<u8> {
    let mut out = flv::header(true, true).to_vec();
    let (_, meta) = ffmpeg_metadata().to_body();
    out.extend_from_slice(&flv::encode_tag(flv::TAG_SCRIPT, 0, &meta));
    for (i, (t, body)) in media_messages().into_iter().enumerate() {
        out.extend_from_slice(&flv::encode_tag(t, 40 * i as u32, &body));
    }
    out
}

fn with_control(control: u8, data: &[u8]) -> Vec<u8> {
    let mut v = vec![control];
    v.extend_from_slice(data);
    v
}

/// The seed corpus: (target, name, input), built from the captures with our encoders.
fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut s: Vec<(&'static str, String, Vec<u8>)> = Vec::new();
    let mut add = |target: &'static str, name: &str, data: Vec<u8>| s.push((target, name.to_string(), data));

    for (name, complex) in [("simple", false), ("complex", true)] {
        let mut c0c1 = BytesMut::new();
        ClientHandshake::new(complex).start(&mut c0c1);
        let mut all = c0c1.to_vec();
        all.extend_from_slice(&[0x5a; HANDSHAKE_SIZE]);
        add("handshake", name, with_control(40, &all));
    }

    let publish = publish_conversation();
    // Control 15: chunk size 121, so messages span several chunks.
    let mut chunks = BytesMut::new();
    for m in [
        ffmpeg_connect(),
        ffmpeg_metadata(),
        Message::Abort(6),
        Message::Acknowledgement(1),
    ] {
        m.encode(&mut chunks, 0, 0, 121);
    }
    for (t, body) in media_messages().into_iter().take(6) {
        encode_message(&mut chunks, 70_000 % 65_536, 0x0100_0000, t, 1, &body, 121);
    }
    add("chunk_stream", "commands-and-media", with_control(15, &chunks));

    let (_, connect) = ffmpeg_connect().to_body();
    let (_, metadata) = ffmpeg_metadata().to_body();
    add("amf0", "ffmpeg-connect", connect.to_vec());
    add("amf0", "ffmpeg-set-data-frame", metadata.to_vec());

    add("rtmp_message", "connect", with_control(20, &connect));
    add(
        "rtmp_message",
        "connect-amf3",
        with_control(17, &with_control(0, &connect)),
    );
    add("rtmp_message", "metadata", with_control(18, &metadata));
    add(
        "rtmp_message",
        "user-control",
        with_control(4, &[0, 3, 0, 0, 0, 1, 0, 0, 0x0b, 0xb8]),
    );
    let flv = flv_stream();
    add("rtmp_message", "aggregate", with_control(22, &flv[flv::HEADER_LEN..]));

    add("rtmp_session", "publish", with_control(255, &publish));
    add("rtmp_session", "publish-small-reads", with_control(1, &publish));
    add("rtmp_session", "play", with_control(255, &play_conversation()));

    add("flv_tags", "stream", with_control(255, &flv));
    add("flv_push", "stream", with_control(255, &flv));
    add("flv_push", "stream-small-reads", with_control(3, &flv));

    for (t, body) in media_messages() {
        add("media_header", &format!("{t}-{}", s_len_name(&body)), body);
    }

    add("avc", "record-720p-baseline", hex(AVC_HEADER)[5..].to_vec());
    for (name, body) in captures("hevc") {
        add("hevc", name, body[5..].to_vec());
    }
    for (name, body) in captures("av1") {
        add("av1", name, body[5..].to_vec());
    }
    for (name, body) in captures("vp9") {
        add("vp9", name, body[5..].to_vec());
    }
    add("aac", "lc-48k-mono", AAC_HEADER[2..].to_vec());
    add("aac", "lc-44k-stereo", vec![0x12, 0x10]);
    add("aac", "he-aac-explicit", vec![0x2b, 0x92, 0x08, 0x00]);
    for (name, body) in captures("opus") {
        add("opus", name, body[5..].to_vec());
    }
    for prefix in ["flac", "ac3", "eac3", "mp3"] {
        for (name, body) in captures(prefix) {
            let start = if prefix == "mp3" { 1 } else { 5 };
            add("audio_config", name, body[start..].to_vec());
        }
    }

    let mut ws = BytesMut::new();
    for (i, piece) in flv.chunks(1000).enumerate() {
        let opcode = if i == 0 { ws::OP_BINARY } else { ws::OP_CONTINUATION };
        let mut header = ws::frame_header(opcode, piece.len()).to_vec();
        header[1] |= 0x80; // client frames are masked; a zero key leaves the payload as is
        ws.extend_from_slice(&header);
        ws.extend_from_slice(&[0, 0, 0, 0]);
        ws.extend_from_slice(piece);
    }
    ws.extend_from_slice(&[0x89, 0x80, 1, 2, 3, 4]); // ping
    ws.extend_from_slice(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]); // close 1000
    add("ws_frames", "flv-push", ws.to_vec());

    // What players send: hls.js and Safari keep-alive GETs, a blocking LL-HLS reload with a
    // session token, HEAD, pipelining, then requests the lean path leaves to the router.
    let session = format!("hs={:016x}.{:x}.{}", 7, 1_700_000_000, "ab".repeat(16));
    let player = format!(
        "GET /live/cam/index.m3u8 HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\
         Origin: http://example.com\r\nConnection: keep-alive\r\n\r\n\
         GET /live/cam/video.m3u8?{session}&_HLS_msn=12&_HLS_part=3 HTTP/1.1\r\nHost: x\r\n\r\n\
         HEAD /live/cam/video-init-0.mp4?{session} HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /live/cam/video-0-12.3.m4s?{session} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    add("http_request", "players", with_control(5, player.as_bytes()));
    let others = "GET /live/cam/ts-0-4.ts HTTP/1.1\r\nHost: x\r\n\r\n\
                  GET /live/cam/index.mpd HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n\
                  GET /api/v1/streams HTTP/1.1\r\nHost: x\r\n\r\n";
    add("http_request", "others", with_control(200, others.as_bytes()));
    add(
        "http_request",
        "upgrade",
        with_control(
            1,
            b"GET /live/cam.flv HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ),
    );
    s
}

/// A short stable name for a media body: its first bytes in hex and its length.
fn s_len_name(body: &[u8]) -> String {
    let head: String = body.iter().take(6).map(|b| format!("{b:02x}")).collect();
    format!("{head}-{}", body.len())
}
