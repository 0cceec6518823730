//! Ready-made situations shared by the test files: a live stream, ffprobe checks.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::env::require_tool;
use crate::process::{describe_output, run_bounded};
use crate::publisher::{Publisher, PublisherBuilder};
use crate::server::{TestServer, TestServerBuilder};

/// How long a fresh publisher may take to be live (ffmpeg start-up on a busy 2-core machine).
pub const LIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A server with one ffmpeg publisher that is live.
#[derive(Debug)]
pub struct Live {
    pub server: TestServer,
    pub publisher: Publisher,
    pub name: String,
}

impl Live {
    /// Default server, default publisher (60 s, GOP 1 s, H.264 720p30 + AAC).
    pub async fn start(prefix: &str) -> Result<Live> {
        Self::start_with(prefix, TestServer::builder(), |p| p).await
    }

    /// A server built from `server`, a publisher configured by `publisher`.
    pub async fn start_with(
        prefix: &str,
        server: TestServerBuilder,
        publisher: impl FnOnce(PublisherBuilder) -> PublisherBuilder,
    ) -> Result<Live> {
        let server = server.start().await?;
        let name = crate::unique_name(prefix);
        let mut publisher = publisher(Publisher::builder(&server.rtmp_url(&name))).start()?;
        if let Err(e) = server.wait_live(&name, LIVE_TIMEOUT).await {
            let st = publisher.try_status();
            bail!("{e:#}\npublisher status: {st:?}, log:\n{}", publisher.log());
        }
        Ok(Live {
            server,
            publisher,
            name,
        })
    }

    pub fn rtmp_url(&self) -> String {
        self.server.rtmp_url(&self.name)
    }
    pub fn flv_url(&self) -> String {
        self.server.flv_url(&self.name)
    }
    pub fn ws_url(&self) -> String {
        self.server.ws_url(&self.name)
    }
}

/// `ffprobe -show_streams` of `input` (a URL or a file) as JSON, bounded by `limit_secs`.
pub async fn ffprobe(input: &str, extra: &[&str], limit_secs: u64) -> Result<Value> {
    require_tool("ffprobe");
    let mut args: Vec<String> = vec!["-v".into(), "error".into()];
    if input.contains("://") {
        args.extend(["-rw_timeout".into(), "5000000".into()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["-show_streams".into(), "-of".into(), "json".into(), input.into()]);
    let out = run_bounded("ffprobe", &args, limit_secs).await?;
    if !out.status.success() {
        bail!("ffprobe {input} failed\n{}", describe_output(&out));
    }
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("ffprobe output is not JSON\n{}", describe_output(&out)))
}

/// Asserts ffprobe found exactly an H.264 1280x720 video stream and an AAC audio stream, and
/// nothing else (in particular no data stream from a stray @setDataFrame).
pub fn assert_h264_720p_and_aac_only(probe: &Value, what: &str) {
    let streams = probe["streams"].as_array().cloned().unwrap_or_default();
    let summary: Vec<String> = streams
        .iter()
        .map(|s| {
            format!(
                "{}:{} {}x{}",
                s["codec_type"].as_str().unwrap_or("?"),
                s["codec_name"].as_str().unwrap_or("?"),
                s["width"],
                s["height"]
            )
        })
        .collect();
    assert_eq!(
        streams.len(),
        2,
        "{what}: expected exactly 2 streams (h264 + aac), ffprobe saw {summary:?}"
    );
    let video: Vec<&Value> = streams.iter().filter(|s| s["codec_type"] == "video").collect();
    let audio: Vec<&Value> = streams.iter().filter(|s| s["codec_type"] == "audio").collect();
    assert_eq!(video.len(), 1, "{what}: one video stream expected, saw {summary:?}");
    assert_eq!(audio.len(), 1, "{what}: one audio stream expected, saw {summary:?}");
    assert_eq!(video[0]["codec_name"], "h264", "{what}: {summary:?}");
    assert_eq!(video[0]["width"], 1280, "{what}: {summary:?}");
    assert_eq!(video[0]["height"], 720, "{what}: {summary:?}");
    assert_eq!(audio[0]["codec_name"], "aac", "{what}: {summary:?}");
    assert_eq!(audio[0]["sample_rate"], "44100", "{what}: {summary:?}");
}
