//! An ffmpeg publisher of a generated 1280x720@30 (or another size) H.264 + 44.1 kHz AAC stream, over RTMP(S) or,
//! to an `http(s)://` URL, as an FLV push (HTTP POST). ffmpeg does not verify TLS certificates
//! unless told to (`tls_verify` defaults to 0), so test certificates need no setup.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Result;

use crate::env::{require_tool, TempDir};
use crate::process::{tail, Proc};

/// Options of a [`Publisher`].
#[derive(Debug, Clone)]
pub struct PublisherBuilder {
    url: String,
    duration_secs: u64,
    gop: u32,
    /// Picture size.
    size: (u32, u32),
    /// Video bitrate in kbit/s (0: x264's default quality, about 0.6 Mbit/s of this picture).
    video_kbps: u32,
    audio: bool,
    video: bool,
}

impl PublisherBuilder {
    /// Media duration (ffmpeg `-t`); the process is bounded a little beyond it.
    pub fn duration_secs(mut self, s: u64) -> Self {
        self.duration_secs = s;
        self
    }
    /// Keyframe interval in frames (30 fps).
    pub fn gop(mut self, frames: u32) -> Self {
        self.gop = frames;
        self
    }
    /// The picture size (1280x720 unless set; 720x1280 makes a portrait stream).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }
    /// Encode at this video bitrate (kbit/s) instead of x264's default quality.
    pub fn video_kbps(mut self, kbps: u32) -> Self {
        self.video_kbps = kbps;
        self
    }
    pub fn audio(mut self, on: bool) -> Self {
        self.audio = on;
        self
    }
    pub fn video(mut self, on: bool) -> Self {
        self.video = on;
        self
    }

    /// The ffmpeg arguments.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = ["-hide_banner", "-nostdin", "-loglevel", "error", "-re"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut push = |s: &[&str]| a.extend(s.iter().map(|s| s.to_string()));
        if self.video {
            let src = format!("testsrc=size={}x{}:rate=30", self.size.0, self.size.1);
            push(&["-f", "lavfi", "-i", &src]);
        }
        if self.audio {
            push(&["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]);
        }
        if self.video {
            let g = self.gop.to_string();
            push(&[
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
                "-g",
                &g,
                "-keyint_min",
                &g,
                "-sc_threshold",
                "0",
                "-pix_fmt",
                "yuv420p",
            ]);
            if self.video_kbps > 0 {
                let (rate, buf) = (format!("{}k", self.video_kbps), format!("{}k", self.video_kbps * 2));
                push(&["-b:v", &rate, "-maxrate", &rate, "-bufsize", &buf]);
            }
        }
        if self.audio {
            push(&["-c:a", "aac", "-b:a", "128k"]);
        }
        let t = self.duration_secs.to_string();
        push(&["-t", &t, "-f", "flv", "-rw_timeout", "5000000"]);
        if self.url.starts_with("http://") || self.url.starts_with("https://") {
            // FLV push: the stream is the body of a (chunked) POST to /{app}/{name}.flv.
            push(&["-method", "POST"]);
        }
        push(&[&self.url]);
        a
    }

    /// Spawns ffmpeg. It starts sending within a second or so; use
    /// [`crate::TestServer::wait_live`] to know when the stream is live.
    pub fn start(self) -> Result<Publisher> {
        require_tool("ffmpeg");
        let dir = TempDir::new("ferrocast-pub")?;
        let proc = Proc::spawn(
            "ffmpeg publisher",
            "ffmpeg",
            &self.args(),
            self.duration_secs + 20,
            &dir.join("ffmpeg.log"),
        )?;
        Ok(Publisher {
            proc,
            _dir: dir,
            url: self.url,
        })
    }
}

/// A running ffmpeg publisher, killed (abruptly) on drop.
#[derive(Debug)]
pub struct Publisher {
    proc: Proc,
    _dir: TempDir,
    url: String,
}

impl Publisher {
    /// Options: 60 s of media, GOP 30 (1 s), audio and video.
    pub fn builder(url: &str) -> PublisherBuilder {
        PublisherBuilder {
            url: url.to_string(),
            duration_secs: 60,
            gop: 30,
            size: (1280, 720),
            video_kbps: 0,
            audio: true,
            video: true,
        }
    }

    /// Publishes with default options.
    pub fn start(url: &str) -> Result<Publisher> {
        Self::builder(url).start()
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.proc.try_status()
    }

    pub async fn wait_within(&mut self, d: Duration) -> Option<ExitStatus> {
        self.proc.wait_within(d).await
    }

    /// SIGKILL: the TCP connection drops without a goodbye (like an encoder crash).
    pub async fn kill(&mut self) {
        self.proc.kill_and_wait().await;
    }

    /// SIGINT: ffmpeg finishes the stream politely (FCUnpublish / deleteStream).
    pub async fn stop_gracefully(&mut self) -> Option<ExitStatus> {
        self.proc.signal("INT");
        let st = self.proc.wait_within(Duration::from_secs(5)).await;
        if st.is_none() {
            self.proc.kill_and_wait().await;
        }
        st
    }

    /// ffmpeg's log (errors only).
    pub fn log(&self) -> String {
        tail(&self.proc.log_text(), 4000).to_string()
    }
}

/// Whether an ffmpeg publish to `url` is accepted: it keeps running (accepted) or exits at
/// once with an error (refused).
pub async fn publish_accepted(url: &str) -> bool {
    let mut p = Publisher::builder(url).duration_secs(6).start().expect("ffmpeg starts");
    let refused = p
        .wait_within(std::time::Duration::from_secs(3))
        .await
        .is_some_and(|s| !s.success());
    p.kill().await;
    !refused
}
