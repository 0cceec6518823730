//! The fMP4 and TS writers checked by a real reader: ffprobe opens what they write and
//! names the codec, picture size, sample rate and channels the configuration says.

use std::path::PathBuf;
use std::process::Command;

use ferrocast_media::ac3::Ac3Config;
use ferrocast_media::fmp4::{
    fragment, init_segment, CodecConfig, OpusConfig, Sample, TrackConfig, TrackKind, TrackRun,
};
use ferrocast_media::ts::{ParameterSets, TsAudio, TsVideo, TsWriter};

/// x264's avcC for 1280x720 High@3.1.
const AVCC: &[u8] = &[
    0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01,
    0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60, 0x01, 0x00, 0x06, 0x68,
    0xeb, 0xe3, 0xcb, 0x22, 0xc0,
];

fn ffprobe(bytes: &[u8], name: &str) -> serde_like::Streams {
    let dir = std::env::temp_dir().join(format!("ferrocast-media-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height,sample_rate,channels",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .expect("missing tool ffprobe (apt package ffmpeg): run scripts/test.sh");
    assert!(
        out.status.success(),
        "ffprobe failed on {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_like::Streams(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect(),
    )
}

/// ffprobe's CSV lines, one per stream.
mod serde_like {
    #[derive(Debug)]
    pub struct Streams(pub Vec<String>);
    impl Streams {
        pub fn has(&self, want: &str) -> bool {
            self.0
                .iter()
                .any(|l| l.trim_end_matches(',') == want || l.starts_with(want))
        }
    }
}

fn write(tracks: &[TrackConfig], samples: &[(u32, &[u8])]) -> Vec<u8> {
    let mut out = init_segment(tracks).unwrap();
    for seq in 0..3u32 {
        let runs: Vec<TrackRun> = tracks
            .iter()
            .map(|t| TrackRun {
                track_id: t.track_id,
                base_decode_time: u64::from(seq) * 3000,
                samples: samples
                    .iter()
                    .filter(|(id, _)| *id == t.track_id)
                    .map(|(_, data)| Sample {
                        duration: 3000,
                        composition_offset: 0,
                        keyframe: true,
                        data,
                    })
                    .collect(),
            })
            .collect();
        out.extend(fragment(seq + 1, &runs).unwrap());
    }
    out
}

#[test]
fn ffprobe_reads_every_codecs_sample_entry() {
    let video = |w, h| TrackKind::Video { width: w, height: h };
    let stereo = TrackKind::Audio {
        sample_rate: 48_000,
        channels: 2,
    };
    let hvcc = vec![
        0x01, 0x01, 0x60, 0x00, 0x00, 0x00, 0xb0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5d, 0xf0, 0x00, 0xfc, 0xfd, 0xf8,
        0xf8, 0x00, 0x00, 0x0f, 0x00,
    ];
    let mut streaminfo = vec![0x10, 0x00, 0x10, 0x00, 0, 0, 0, 0, 0, 0];
    // 48000 Hz, 2 channels, 16 bits, 0 samples
    streaminfo.extend_from_slice(&[0x0b, 0xb8, 0x02, 0xf0, 0, 0, 0, 0]);
    streaminfo.extend_from_slice(&[0; 16]);
    let ac3 = Ac3Config::parse(&[0x0b, 0x77, 0x00, 0x00, 0x1c, 0x40, 0x40, 0x00]).unwrap();
    let cases: Vec<(&str, CodecConfig, TrackKind, &str)> = vec![
        (
            "h264",
            CodecConfig::Avc(AVCC.to_vec()),
            video(1280, 720),
            "h264,1280,720",
        ),
        ("hevc", CodecConfig::Hevc(hvcc), video(640, 360), "hevc,640,360"),
        (
            "av1",
            CodecConfig::Av1(vec![0x81, 0x04, 0x0c, 0x00]),
            video(640, 360),
            "av1,640,360",
        ),
        (
            "vp9",
            CodecConfig::Vp9(vec![1, 0, 0, 0, 0, 31, 0x80, 0x02, 0x02, 0x02, 0, 0]),
            video(640, 360),
            "vp9,640,360",
        ),
        ("aac", CodecConfig::Aac(vec![0x11, 0x90]), stereo, "aac,48000,2"),
        (
            "opus",
            CodecConfig::Opus(OpusConfig {
                channels: 2,
                pre_skip: 312,
                input_sample_rate: 48_000,
                output_gain: 0,
                mapping_family: 0,
                stream_count: 1,
                coupled_count: 1,
                channel_mapping: vec![],
            }),
            stereo,
            "opus,48000,2",
        ),
        ("flac", CodecConfig::Flac(streaminfo), stereo, "flac,48000,2"),
        ("ac3", CodecConfig::Ac3(ac3), stereo, "ac3,48000,2"),
        ("mp3", CodecConfig::Mp3, stereo, "mp3,48000,2"),
    ];
    for (name, codec, kind, want) in cases {
        let track = TrackConfig {
            track_id: 1,
            timescale: 90_000,
            kind,
            codec,
        };
        let bytes = write(&[track], &[]);
        let got = ffprobe(&bytes, &format!("{name}.mp4"));
        assert!(got.has(want), "{name}: ffprobe says {:?}, want {want}", got.0);
    }
}

#[test]
fn ffprobe_reads_a_two_track_fragmented_file() {
    let tracks = [
        TrackConfig {
            track_id: 1,
            timescale: 90_000,
            kind: TrackKind::Video {
                width: 1280,
                height: 720,
            },
            codec: CodecConfig::Avc(AVCC.to_vec()),
        },
        TrackConfig {
            track_id: 2,
            timescale: 48_000,
            kind: TrackKind::Audio {
                sample_rate: 48_000,
                channels: 2,
            },
            codec: CodecConfig::Aac(vec![0x11, 0x90]),
        },
    ];
    let idr: &[u8] = &[0, 0, 0, 2, 0x65, 0x88];
    let aac: &[u8] = &[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c];
    let bytes = write(&tracks, &[(1, idr), (2, aac)]);
    let got = ffprobe(&bytes, "av.mp4");
    assert!(got.has("h264,1280,720"), "{:?}", got.0);
    assert!(got.has("aac,48000,2"), "{:?}", got.0);
}

#[test]
fn ffprobe_reads_the_ts_writer() {
    let params = ParameterSets::from_avc_record(AVCC).unwrap();
    let mut w = TsWriter::new(Some(TsVideo::Avc(params)), Some(TsAudio::aac(&[0x11, 0x90]).unwrap()));
    for i in 0..10u64 {
        w.video(i * 3000, i * 3000, i == 0, &[0, 0, 0, 2, 0x65, 0x88]).unwrap();
        w.audio(i * 1920, &[0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c]).unwrap();
    }
    let got = ffprobe(&w.finish(), "seg.ts");
    // The picture size of TS comes from decoding, and these slices are not real pictures
    // (end-to-end tests decode real streams); the stream types and ADTS headers are checked here.
    assert!(got.has("h264,"), "{:?}", got.0);
    assert!(got.has("aac,48000,2"), "{:?}", got.0);
}
