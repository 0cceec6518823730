//! The ladder of one source and the ffmpeg command that makes it (sans-IO): which renditions
//! apply to a source of a given size, and the arguments for the encoder family.
//!
//! Timing rules every argument set keeps, so renditions line up with their source:
//! - `-copyts` and `-enc_time_base 1:1000`: a rendition frame carries the source frame's
//!   millisecond timestamp, so keyframes and HLS segment slots fall at the same instants.
//! - `-output_ts_offset`: the output timeline is lifted by [`TS_OFFSET_MS`] so encoder delays
//!   (AAC priming, B-frame reordering) never make a negative timestamp, which ffmpeg would
//!   "fix" by shifting the whole output; the reader lowers it again.
//! - keyframes are forced where the source has them, or on a grid of the source timeline,
//!   and never inserted by scene-cut detection.

use crate::config::{KeyframeMode, RenditionCodec, RenditionConfig, TranscodeEncoder, TranscodeRule};
use crate::hub::{is_valid_name, StreamKey};

/// Added to every output timestamp by ffmpeg and taken off by the reader.
pub const TS_OFFSET_MS: u32 = 10_000;
/// The first file descriptor of the rendition pipes in the child (0-2 are stdio).
pub const FIRST_OUTPUT_FD: i32 = 3;
/// Longest keyframe interval the encoder may choose itself, in frames (forced keyframes come
/// far sooner; this only bounds a source without keyframes).
const MAX_GOP_FRAMES: u32 = 600;

/// One rendition to make of a source.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub rendition: RenditionConfig,
    /// `/{app}/{name}_{rendition}`.
    pub stream: StreamKey,
}

/// A rendition left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub rendition: String,
    pub reason: &'static str,
}

/// The short side of a picture.
fn short_side(width: u32, height: u32) -> u32 {
    width.min(height)
}

/// The renditions of `rule` for `source`, whose picture is `width`x`height` (0x0: unknown,
/// nothing is skipped for size). A rendition larger than the source is skipped (upscaling
/// only costs bits), as is one whose stream name would be too long.
pub fn plan(rule: &TranscodeRule, source: &StreamKey, width: u32, height: u32) -> (Vec<Planned>, Vec<Skipped>) {
    let mut planned = Vec::new();
    let mut skipped = Vec::new();
    for r in &rule.renditions {
        let name = format!("{}_{}", source.name, r.name);
        let want = if r.width > 0 {
            short_side(r.width, r.height)
        } else {
            r.height
        };
        if width > 0 && height > 0 && want > short_side(width, height) {
            skipped.push(Skipped {
                rendition: r.name.clone(),
                reason: "larger than the source",
            });
            continue;
        }
        if !is_valid_name(&name) {
            skipped.push(Skipped {
                rendition: r.name.clone(),
                reason: "the rendition's stream name would exceed 128 characters",
            });
            continue;
        }
        planned.push(Planned {
            rendition: r.clone(),
            stream: StreamKey {
                app: source.app.clone(),
                name,
            },
        });
    }
    (planned, skipped)
}

/// What the command depends on besides the ladder.
#[derive(Debug, Clone)]
pub struct Command<'a> {
    pub rule: &'a TranscodeRule,
    pub renditions: &'a [RenditionConfig],
    pub has_audio: bool,
    pub vaapi_device: &'a str,
}

impl Command<'_> {
    /// The descriptor ffmpeg writes `-progress` to (after the rendition pipes).
    pub fn progress_fd(&self) -> i32 {
        FIRST_OUTPUT_FD + self.renditions.len() as i32
    }

    /// ffmpeg's arguments: FLV on stdin, rendition `i` as FLV on descriptor 3 + i, progress
    /// after them.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        push(
            &mut a,
            &["-hide_banner", "-nostdin", "-loglevel", "warning", "-nostats"],
        );
        push(
            &mut a,
            &[
                "-progress",
                &format!("pipe:{}", self.progress_fd()),
                "-stats_period",
                "1",
            ],
        );
        match self.rule.encoder {
            TranscodeEncoder::Vaapi => push(&mut a, &["-vaapi_device", self.vaapi_device]),
            TranscodeEncoder::Qsv => push(&mut a, &["-init_hw_device", "qsv=hw", "-filter_hw_device", "hw"]),
            TranscodeEncoder::Software | TranscodeEncoder::Nvenc => {}
        }
        push(&mut a, &["-copyts", "-f", "flv", "-i", "pipe:0"]);
        push(&mut a, &["-filter_complex", &self.filter_graph()]);
        for (i, r) in self.renditions.iter().enumerate() {
            push(&mut a, &["-map", &format!("[v{i}]")]);
            if self.has_audio {
                push(&mut a, &["-map", "0:a:0"]);
            }
            a.extend(video_args(self.rule, r));
            let keyframes = match self.rule.keyframes {
                KeyframeMode::Source => "source".to_string(),
                KeyframeMode::Interval => {
                    // The first frame at or after each multiple of the interval on the source
                    // timeline: the same instants in every rendition and every restart.
                    let g = self.rule.gop_ms as f64 / 1000.0;
                    format!("expr:if(isnan(prev_forced_t),1,gte(floor(t/{g}),floor(prev_forced_t/{g})+1))")
                }
            };
            push(&mut a, &["-force_key_frames", &keyframes]);
            push(&mut a, &["-fps_mode", "passthrough", "-enc_time_base:v", "1:1000"]);
            if self.has_audio {
                push(
                    &mut a,
                    &["-c:a", "aac", "-b:a", &format!("{}k", r.audio_kbps), "-ac", "2"],
                );
            }
            let offset = format!("{}", f64::from(TS_OFFSET_MS) / 1000.0);
            push(&mut a, &["-output_ts_offset", &offset]);
            push(&mut a, &["-f", "flv", &format!("pipe:{}", FIRST_OUTPUT_FD + i as i32)]);
        }
        a
    }

    /// Decode once, split, and per rendition: frame rate, size, pixel format, upload.
    fn filter_graph(&self) -> String {
        let n = self.renditions.len();
        let mut g = String::new();
        if n == 1 {
            g.push_str("[0:v:0]null[s0];");
        } else {
            g.push_str(&format!("[0:v:0]split={n}"));
            for i in 0..n {
                g.push_str(&format!("[s{i}]"));
            }
            g.push(';');
        }
        for (i, r) in self.renditions.iter().enumerate() {
            let mut chain = Vec::new();
            if r.fps > 0 {
                chain.push(frame_rate_cap(r.fps));
            }
            chain.push(scale(r));
            match self.rule.encoder {
                TranscodeEncoder::Software | TranscodeEncoder::Nvenc => chain.push("format=yuv420p".into()),
                TranscodeEncoder::Vaapi => chain.push("format=nv12,hwupload".into()),
                TranscodeEncoder::Qsv => chain.push("format=nv12,hwupload=extra_hw_frames=64".into()),
            }
            g.push_str(&format!("[s{i}]{}[v{i}]", chain.join(",")));
            if i + 1 < n {
                g.push(';');
            }
        }
        g
    }
}

fn push(a: &mut Vec<String>, items: &[&str]) {
    a.extend(items.iter().map(|s| s.to_string()));
}

/// Lowers the frame rate to at most `fps`: keeps the first frame of each 1/`fps` slot of the
/// stream time, and every source keyframe, at its own timestamp. Not the `fps` filter: that one
/// retimes frames onto its own grid and loses the keyframe flag, so `-force_key_frames source`
/// would see none (ffmpeg 5.1 and 9: one keyframe in 6 s of a 1 s GOP) and the rung's
/// keyframes would leave the other renditions' instants. The quarter-slot shift keeps slot
/// edges off the frame times of a source whose rate is a multiple of `fps`: its millisecond
/// timestamps straddle unshifted edges (30 fps to 15 would keep 0, 67, 167, 200 ms).
fn frame_rate_cap(fps: u32) -> String {
    format!("select='if(key+isnan(prev_selected_t),1,gt(floor(t*{fps}+0.25),floor(prev_selected_t*{fps}+0.25)))'")
}

/// The scale filter: an exact size, or the short side with the aspect ratio kept (even width
/// and height, as 4:2:0 needs). An exact size is a box turned to the source's orientation: a
/// `640x360` rung makes 360x640 of a portrait source instead of squashing it (the configured
/// sizes are even, so the swapped ones are too).
fn scale(r: &RenditionConfig) -> String {
    if r.width > 0 {
        let (long, short) = (r.width.max(r.height), r.width.min(r.height));
        return format!("scale=w='if(gte(iw,ih),{long},{short})':h='if(gte(iw,ih),{short},{long})'");
    }
    let h = r.height;
    format!("scale=w='if(gte(iw,ih),-2,{h})':h='if(gte(iw,ih),{h},-2)'")
}

/// The encoder, its rate control and its keyframe settings for one rendition.
fn video_args(rule: &TranscodeRule, r: &RenditionConfig) -> Vec<String> {
    let max = if r.max_kbps > 0 { r.max_kbps } else { r.video_kbps };
    let rate = [
        "-b:v".to_string(),
        format!("{}k", r.video_kbps),
        "-maxrate".into(),
        format!("{max}k"),
        "-bufsize".into(),
        format!("{}k", max * 2),
    ];
    let gop = MAX_GOP_FRAMES.to_string();
    let h265 = r.codec == RenditionCodec::H265;
    let mut a: Vec<String> = Vec::new();
    match rule.encoder {
        TranscodeEncoder::Software => {
            let preset = r.preset.as_deref().unwrap_or("veryfast");
            if h265 {
                let params = format!("scenecut=0:open-gop=0:keyint={gop}:log-level=warning");
                push(&mut a, &["-c:v", "libx265", "-preset", preset, "-x265-params", &params]);
            } else {
                push(
                    &mut a,
                    &["-c:v", "libx264", "-preset", preset, "-g", &gop, "-sc_threshold", "0"],
                );
            }
        }
        TranscodeEncoder::Nvenc => {
            let preset = r.preset.as_deref().unwrap_or("p4");
            let codec = if h265 { "hevc_nvenc" } else { "h264_nvenc" };
            push(&mut a, &["-c:v", codec, "-preset", preset, "-rc", "vbr", "-g", &gop]);
            // Forced keyframes become IDR frames, and none are added at scene cuts.
            push(&mut a, &["-forced-idr", "1", "-no-scenecut", "1"]);
        }
        TranscodeEncoder::Vaapi => {
            let codec = if h265 { "hevc_vaapi" } else { "h264_vaapi" };
            push(&mut a, &["-c:v", codec, "-rc_mode", "VBR", "-g", &gop]);
        }
        TranscodeEncoder::Qsv => {
            let preset = r.preset.as_deref().unwrap_or("veryfast");
            let codec = if h265 { "hevc_qsv" } else { "h264_qsv" };
            push(
                &mut a,
                &["-c:v", codec, "-preset", preset, "-g", &gop, "-forced_idr", "1"],
            );
        }
    }
    a.extend(rate);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendition(name: &str, height: u32, kbps: u32) -> RenditionConfig {
        RenditionConfig {
            name: name.into(),
            height,
            video_kbps: kbps,
            ..RenditionConfig::default()
        }
    }

    fn rule() -> TranscodeRule {
        TranscodeRule {
            renditions: vec![
                rendition("720p", 720, 2500),
                rendition("480p", 480, 800),
                rendition("360p", 360, 400),
            ],
            ..TranscodeRule::default()
        }
    }

    fn names(p: &[Planned]) -> Vec<&str> {
        p.iter().map(|p| p.stream.name.as_str()).collect()
    }

    #[test]
    fn renditions_larger_than_the_source_are_skipped_portrait_by_its_short_side() {
        let key = StreamKey::new("live", "cam").unwrap();
        let cases: &[(&str, u32, u32, &[&str])] = &[
            (
                "720p landscape keeps all",
                1280,
                720,
                &["cam_720p", "cam_480p", "cam_360p"],
            ),
            ("540p landscape drops 720p", 960, 540, &["cam_480p", "cam_360p"]),
            (
                "720x1280 portrait keeps all",
                720,
                1280,
                &["cam_720p", "cam_480p", "cam_360p"],
            ),
            ("unknown size keeps all", 0, 0, &["cam_720p", "cam_480p", "cam_360p"]),
        ];
        for (what, w, h, want) in cases {
            let (planned, skipped) = plan(&rule(), &key, *w, *h);
            assert_eq!(names(&planned), *want, "{what}");
            assert_eq!(planned.len() + skipped.len(), 3, "{what}");
        }
    }

    #[test]
    fn a_rendition_name_past_the_stream_name_limit_is_skipped() {
        let key = StreamKey::new("live", &"n".repeat(125)).unwrap();
        let (planned, skipped) = plan(&rule(), &key, 0, 0);
        assert!(planned.is_empty());
        assert_eq!(skipped.len(), 3);
    }

    fn args(rule: &TranscodeRule, has_audio: bool) -> Vec<String> {
        Command {
            rule,
            renditions: &rule.renditions,
            has_audio,
            vaapi_device: "/dev/dri/renderD128",
        }
        .args()
    }

    /// The value after each occurrence of `flag`.
    fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn one_decode_feeds_every_rendition_on_its_own_pipe_with_source_timestamps() {
        let r = rule();
        let a = args(&r, true);
        assert_eq!(values(&a, "-i"), ["pipe:0"]);
        assert!(a.contains(&"-copyts".to_string()));
        let graph = values(&a, "-filter_complex")[0];
        assert!(graph.starts_with("[0:v:0]split=3[s0][s1][s2];"), "{graph}");
        assert!(graph.contains("[s2]scale=w='if(gte(iw,ih),-2,360)':h='if(gte(iw,ih),360,-2)',format=yuv420p[v2]"));
        assert_eq!(values(&a, "-f"), ["flv", "flv", "flv", "flv"]);
        assert_eq!(
            a.iter().filter(|x| x.starts_with("pipe:")).count(),
            5,
            "input, 3 outputs, progress"
        );
        assert_eq!(values(&a, "-progress"), ["pipe:6"]);
        assert_eq!(a.last().unwrap(), "pipe:5");
        assert_eq!(values(&a, "-b:v"), ["2500k", "800k", "400k"]);
        assert_eq!(values(&a, "-bufsize"), ["5000k", "1600k", "800k"]);
        assert_eq!(values(&a, "-map"), ["[v0]", "0:a:0", "[v1]", "0:a:0", "[v2]", "0:a:0"]);
        assert_eq!(values(&a, "-force_key_frames"), ["source"; 3]);
        assert_eq!(values(&a, "-enc_time_base:v"), ["1:1000"; 3]);
        assert_eq!(values(&a, "-output_ts_offset"), ["10"; 3]);
        assert_eq!(values(&a, "-sc_threshold"), ["0"; 3]);
    }

    #[test]
    fn interval_keyframes_sit_on_the_source_timeline_grid() {
        let r = TranscodeRule {
            keyframes: KeyframeMode::Interval,
            gop_ms: 2000,
            ..rule()
        };
        let a = args(&r, false);
        assert_eq!(
            values(&a, "-force_key_frames")[0],
            "expr:if(isnan(prev_forced_t),1,gte(floor(t/2),floor(prev_forced_t/2)+1))"
        );
        assert!(values(&a, "-c:a").is_empty(), "no audio track, no audio encoder");
        assert_eq!(values(&a, "-map"), ["[v0]", "[v1]", "[v2]"]);
    }

    #[test]
    fn encoder_families_pick_their_codecs_and_uploads() {
        let cases: &[(TranscodeEncoder, RenditionCodec, &str, &str)] = &[
            (
                TranscodeEncoder::Software,
                RenditionCodec::H264,
                "libx264",
                "format=yuv420p[v0]",
            ),
            (
                TranscodeEncoder::Software,
                RenditionCodec::H265,
                "libx265",
                "format=yuv420p[v0]",
            ),
            (
                TranscodeEncoder::Nvenc,
                RenditionCodec::H264,
                "h264_nvenc",
                "format=yuv420p[v0]",
            ),
            (
                TranscodeEncoder::Vaapi,
                RenditionCodec::H265,
                "hevc_vaapi",
                "format=nv12,hwupload[v0]",
            ),
            (
                TranscodeEncoder::Qsv,
                RenditionCodec::H264,
                "h264_qsv",
                "hwupload=extra_hw_frames=64[v0]",
            ),
        ];
        for (encoder, codec, want, upload) in cases {
            let r = TranscodeRule {
                encoder: *encoder,
                renditions: vec![RenditionConfig {
                    codec: *codec,
                    fps: 15,
                    ..rendition("480p", 480, 800)
                }],
                ..TranscodeRule::default()
            };
            let a = args(&r, true);
            assert_eq!(values(&a, "-c:v"), [*want], "{encoder:?}");
            let graph = values(&a, "-filter_complex")[0];
            assert!(graph.starts_with("[0:v:0]null[s0];[s0]select='"), "{graph}");
            assert!(graph.ends_with(upload), "{graph}");
        }
        let vaapi = TranscodeRule {
            encoder: TranscodeEncoder::Vaapi,
            ..rule()
        };
        assert_eq!(values(&args(&vaapi, true), "-vaapi_device"), ["/dev/dri/renderD128"]);
    }

    #[test]
    fn a_lower_frame_rate_keeps_the_source_keyframes_where_they_are() {
        let r = TranscodeRule {
            renditions: vec![
                rendition("480p", 480, 800),
                RenditionConfig {
                    fps: 15,
                    ..rendition("360p", 360, 400)
                },
            ],
            ..TranscodeRule::default()
        };
        let a = args(&r, true);
        let graph = values(&a, "-filter_complex")[0];
        assert!(
            graph.contains(
                "[s1]select='if(key+isnan(prev_selected_t),1,\
                 gt(floor(t*15+0.25),floor(prev_selected_t*15+0.25)))',scale="
            ),
            "{graph}"
        );
        assert!(
            !graph.contains("fps="),
            "the fps filter drops the keyframe flag: {graph}"
        );
        assert!(graph.starts_with("[0:v:0]split=2[s0][s1];[s0]scale="), "{graph}");
        // Keyframes are still the source's, and frames keep their timestamps.
        assert_eq!(values(&a, "-force_key_frames"), ["source"; 2]);
        assert_eq!(values(&a, "-fps_mode"), ["passthrough"; 2]);
    }

    #[test]
    fn an_exact_size_is_turned_to_the_sources_orientation() {
        let landscape_box = "scale=w='if(gte(iw,ih),640,360)':h='if(gte(iw,ih),360,640)'";
        for (w, h) in [(640, 360), (360, 640)] {
            let r = RenditionConfig {
                width: w,
                height: h,
                ..RenditionConfig::default()
            };
            assert_eq!(scale(&r), landscape_box, "{w}x{h}");
        }
    }
}
