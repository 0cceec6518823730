//! A modern FFmpeg (9.0.2, from the PyPI package imageio-ffmpeg in `.tools/venv`) for the codecs
//! Debian's FFmpeg 5.1 cannot put in FLV: HEVC, AV1 and VP9 in enhanced RTMP, Opus in enhanced
//! audio. It has no ffprobe, so streams are read back with `ffmpeg -i INPUT -f null -` and its
//! log is parsed ([`decode`]).

use std::path::{Path, PathBuf};
use std::sync::{LazyLock, OnceLock};

use anyhow::{bail, Result};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::env::{tools_dir, TempDir};
use crate::process::{describe_output, run_bounded, tail, Proc};

/// The modern ffmpeg: `FERROCAST_MODERN_FFMPEG` (set by `scripts/test.sh`), else what
/// `.tools/venv/bin/python -c 'import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())'`
/// prints. Panics naming imageio-ffmpeg when it is missing.
pub fn modern_ffmpeg() -> PathBuf {
    static FFMPEG: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    match FFMPEG.get_or_init(locate_modern_ffmpeg) {
        Ok(p) => p.clone(),
        Err(e) => panic!(
            "missing tool imageio-ffmpeg (PyPI package imageio-ffmpeg==0.8.1 in {}): {e}: run scripts/test.sh",
            tools_dir().join("venv").display()
        ),
    }
}

fn locate_modern_ffmpeg() -> std::result::Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FERROCAST_MODERN_FFMPEG").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("FERROCAST_MODERN_FFMPEG={} does not exist", p.display()))
        };
    }
    let python = tools_dir().join("venv").join("bin").join("python");
    if !python.is_file() {
        return Err(format!("no venv python at {}", python.display()));
    }
    // Bounded like every external process (a plain std command: this runs outside any runtime).
    let out = std::process::Command::new("timeout")
        .args(["-k", "2", "30"])
        .arg(&python)
        .args(["-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`import imageio_ffmpeg` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if p.is_file() {
        Ok(p)
    } else {
        Err(format!(
            "imageio_ffmpeg.get_ffmpeg_exe() gave {}, which does not exist",
            p.display()
        ))
    }
}

/// At most two software encoders at once across all tests of a binary (2 CPU cores): hold the
/// permit while an encoder runs.
pub async fn encoder_slot() -> SemaphorePermit<'static> {
    static SLOTS: LazyLock<Semaphore> = LazyLock::new(|| Semaphore::new(2));
    SLOTS.acquire().await.expect("the semaphore is never closed")
}

/// Video encoder arguments for a 640x360@30 test picture with a keyframe every 30 frames.
pub fn video_args(codec: &str) -> Vec<String> {
    let enc: &[&str] = match codec {
        "hevc" => &[
            "-c:v",
            "libx265",
            "-preset",
            "ultrafast",
            "-x265-params",
            "log-level=error",
        ],
        "av1" => &["-c:v", "libaom-av1", "-cpu-used", "8", "-usage", "realtime"],
        "vp9" => &["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"],
        "h264" => &["-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency"],
        other => panic!("no encoder for video codec {other}"),
    };
    let mut a: Vec<String> = enc.iter().map(|s| s.to_string()).collect();
    a.extend(
        ["-g", "30", "-keyint_min", "30", "-pix_fmt", "yuv420p"]
            .iter()
            .map(|s| s.to_string()),
    );
    a
}

/// Audio encoder arguments (48 kHz mono sine).
pub fn audio_args(codec: &str) -> Vec<String> {
    let enc: &[&str] = match codec {
        "aac" => &["-c:a", "aac", "-b:a", "64k"],
        "opus" => &["-c:a", "libopus", "-b:a", "64k"],
        other => panic!("no encoder for audio codec {other}"),
    };
    enc.iter().map(|s| s.to_string()).collect()
}

/// ffmpeg arguments encoding `secs` seconds of testsrc 640x360@30 + a 48 kHz sine with
/// `video` / `audio` (codec names of [`video_args`] / [`audio_args`]) to FLV at `output`;
/// `realtime` adds `-re` (a live publisher).
pub fn encode_args(video: &str, audio: Option<&str>, secs: u32, realtime: bool, output: &str) -> Vec<String> {
    let mut a: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if realtime {
        a.push("-re".into());
    }
    a.extend(
        ["-f", "lavfi", "-i", "testsrc=size=640x360:rate=30"]
            .iter()
            .map(|s| s.to_string()),
    );
    if audio.is_some() {
        a.extend(
            ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
                .iter()
                .map(|s| s.to_string()),
        );
    }
    a.extend(video_args(video));
    if let Some(audio) = audio {
        a.extend(audio_args(audio));
    }
    a.extend(["-t".to_string(), secs.to_string(), "-f".into(), "flv".into()]);
    if output.contains("://") {
        a.extend(["-rw_timeout".into(), "5000000".into()]);
    } else {
        a.push("-y".into());
    }
    a.push(output.into());
    a
}

/// A modern-ffmpeg publisher (`-re`) of `secs` seconds of `video` + `audio` to `url`, killed on
/// drop. Its log is in [`Proc::log_text`].
pub fn start_publisher(url: &str, video: &str, audio: &str, secs: u32, dir: &TempDir) -> Result<Proc> {
    let ffmpeg = modern_ffmpeg();
    Proc::spawn(
        &format!("ffmpeg 9 publisher ({video} + {audio})"),
        &ffmpeg.display().to_string(),
        &encode_args(video, Some(audio), secs, true, url),
        u64::from(secs) + 20,
        &dir.join(&format!("publish-{video}-{audio}.log")),
    )
}

/// Encodes `secs` seconds to the FLV file `path` (as fast as possible).
pub async fn encode_file(video: &str, audio: Option<&str>, secs: u32, path: &Path) -> Result<()> {
    let ffmpeg = modern_ffmpeg();
    let args = encode_args(video, audio, secs, false, &path.display().to_string());
    let out = run_bounded(&ffmpeg.display().to_string(), &args, 60).await?;
    if !out.status.success() || !path.is_file() {
        bail!("encoding {} failed\n{}", path.display(), describe_output(&out));
    }
    Ok(())
}

/// A stream as ffmpeg's log describes an input stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamLine {
    /// The codec name (`hevc`, `av1`, `vp9`, `h264`, `aac`, `opus` ...).
    pub codec: String,
    /// Video size, when the line has one.
    pub size: Option<(u32, u32)>,
    /// The whole line, for messages.
    pub line: String,
}

/// What `ffmpeg -i INPUT -f null -` made of an input.
#[derive(Debug, Clone)]
pub struct DecodeReport {
    pub input: String,
    pub success: bool,
    /// The first video and audio streams of input #0.
    pub video: Option<StreamLine>,
    pub audio: Option<StreamLine>,
    /// Video frames decoded (the last `frame=` of the progress report).
    pub frames: u64,
    /// Log lines that tell of decoding or demuxing trouble.
    pub problems: Vec<String>,
    /// ffmpeg's log.
    pub log: String,
}

impl DecodeReport {
    /// Asserts that the input had a `video` stream (of `size` when given) and an `audio`
    /// stream, that ffmpeg exited successfully, decoded at least `min_frames` video frames
    /// and logged no decoding trouble.
    pub fn assert_decoded(&self, what: &str, video: &str, size: Option<(u32, u32)>, audio: &str, min_frames: u64) {
        let ctx = || format!("{what} ({}); ffmpeg log:\n{}", self.input, tail(&self.log, 5000));
        assert!(self.success, "{what}: ffmpeg failed: {}", ctx());
        let v = self
            .video
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no video stream: {}", ctx()));
        assert_eq!(v.codec, video, "{what}: video codec: {}", ctx());
        if size.is_some() {
            assert_eq!(v.size, size, "{what}: video size: {}", ctx());
        }
        let a = self
            .audio
            .as_ref()
            .unwrap_or_else(|| panic!("{what}: no audio stream: {}", ctx()));
        assert_eq!(a.codec, audio, "{what}: audio codec: {}", ctx());
        assert!(
            self.frames >= min_frames,
            "{what}: {} video frames decoded, expected at least {min_frames}: {}",
            self.frames,
            ctx()
        );
        assert!(
            self.problems.is_empty(),
            "{what}: decoding trouble: {:?}: {}",
            self.problems,
            ctx()
        );
    }
}

/// `ffmpeg -i INPUT [-t SECS] -f null -` with `ffmpeg` (modern or Debian), bounded by
/// `limit_secs`; URLs get `-rw_timeout 5000000`.
pub async fn decode(ffmpeg: &Path, input: &str, secs: Option<u32>, limit_secs: u64) -> Result<DecodeReport> {
    let mut args: Vec<String> = vec!["-hide_banner".into(), "-nostdin".into()];
    if input.contains("://") {
        args.extend(["-rw_timeout".into(), "5000000".into()]);
    }
    args.extend(["-i".into(), input.into()]);
    if let Some(s) = secs {
        args.extend(["-t".into(), s.to_string()]);
    }
    args.extend(["-f".into(), "null".into(), "-".into()]);
    let out = run_bounded(&ffmpeg.display().to_string(), &args, limit_secs).await?;
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut r = parse_decode_log(&log);
    r.input = input.to_string();
    r.success = out.status.success();
    Ok(r)
}

/// Words in an ffmpeg log line that tell of decoding or demuxing trouble.
const TROUBLE: &[&str] = &[
    "error",
    "invalid",
    "corrupt",
    "missing",
    "non-existing",
    "could not find ref",
    "no frame",
    "not available",
    "mismatch",
    "concealing",
    "exhausted",
    "truncat",
    "skipping",
    "discarding",
];

/// Parses ffmpeg's log: input #0's stream lines, the last `frame=`, trouble lines.
pub fn parse_decode_log(log: &str) -> DecodeReport {
    let mut r = DecodeReport {
        input: String::new(),
        success: false,
        video: None,
        audio: None,
        frames: 0,
        problems: Vec::new(),
        log: log.to_string(),
    };
    let mut in_input = false;
    for line in log.split(['\n', '\r']) {
        let t = line.trim();
        if t.starts_with("Input #0") {
            in_input = true;
            continue;
        }
        if t.starts_with("Output #") || t.starts_with("Stream mapping") || t.starts_with("Input #1") {
            in_input = false;
        }
        if in_input && t.starts_with("Stream #0:") {
            for (kind, slot) in [("Video: ", &mut r.video), ("Audio: ", &mut r.audio)] {
                if let Some(i) = t.find(kind) {
                    if slot.is_none() {
                        *slot = Some(parse_stream_line(t, &t[i + kind.len()..]));
                    }
                }
            }
            continue;
        }
        if let Some(i) = t.rfind("frame=") {
            if let Some(n) = t[i + 6..].split_whitespace().next().and_then(|n| n.parse().ok()) {
                r.frames = n;
            }
            continue;
        }
        // The null muxer's complaints are about ffmpeg's own output timestamps: millisecond
        // FLV times rounded into a 1/30 s time base collide when video starts a few ms after
        // audio. They say nothing about the input.
        if t.starts_with("[null @") {
            continue;
        }
        let lower = t.to_ascii_lowercase();
        if TROUBLE.iter().any(|w| lower.contains(w)) {
            r.problems.push(t.to_string());
        }
    }
    r
}

fn parse_stream_line(line: &str, rest: &str) -> StreamLine {
    let codec = rest.split([' ', ',']).next().unwrap_or_default().to_string();
    let size = rest.split([',', ' ']).find_map(|part| {
        let (w, h) = part.trim().split_once('x')?;
        if w.is_empty()
            || h.is_empty()
            || !w.bytes().all(|b| b.is_ascii_digit())
            || !h.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some((w.parse().ok()?, h.parse().ok()?))
    });
    StreamLine {
        codec,
        size,
        line: line.to_string(),
    }
}

/// The text without ANSI colour escapes (the server colours its human log).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_ffmpeg_9_log() {
        let log = "Input #0, flv, from 'rtmp://127.0.0.1:1/live/x':\n  Metadata:\n    encoder         : Lavf63.1.102\n  Duration: 00:00:12.00, start: 2.968000, bitrate: N/A\n  Stream #0:0: Video: hevc (Main), yuv420p(tv, gbr/unknown/unknown), 640x360 [SAR 1:1 DAR 16:9], 30 fps, 30 tbr, 1k tbn, start 3.067000\n  Stream #0:1: Audio: aac (LC), 48000 Hz, mono, fltp, 69 kb/s, start 2.968000\nStream mapping:\n  Stream #0:0 -> #0:0 (hevc (native) -> wrapped_avframe (native))\nOutput #0, null, to 'pipe:':\n  Stream #0:0: Video: wrapped_avframe, yuv420p(tv, progressive), 640x360\nframe=   50 fps=0.0 q=-0.0 size=N/A time=00:00:01.81 bitrate=N/A speed=3.63x\r[out#0/null @ 0x55a85fcf2040] video:24KiB audio:187KiB subtitle:0KiB other streams:0KiB global headers:0KiB muxing overhead: unknown\nframe=   57 fps=0.0 q=-0.0 Lsize=N/A time=00:00:02.00 bitrate=N/A speed=2.61x elapsed=0:00:00.76\n";
        let r = parse_decode_log(log);
        let v = r.video.unwrap();
        assert_eq!((v.codec.as_str(), v.size), ("hevc", Some((640, 360))));
        assert_eq!(r.audio.unwrap().codec, "aac");
        assert_eq!(r.frames, 57);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let bad = parse_decode_log("[hevc @ 0x1] Could not find ref with POC 3\nframe=  1\n[null @ 0x2] Application provided invalid, non monotonically increasing dts to muxer in stream 0: 5 >= 5\n");
        assert_eq!(bad.problems, ["[hevc @ 0x1] Could not find ref with POC 3"]);
    }

    #[test]
    fn strips_ansi_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m video track \u{1b}[3mcodec\u{1b}[0m\u{1b}[2m=\u{1b}[0m\"hevc\""),
            "2026  INFO video track codec=\"hevc\""
        );
    }
}
