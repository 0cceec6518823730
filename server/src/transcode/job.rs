//! The supervised task of one source: wait for its first keyframe, plan the ladder, run
//! ffmpeg (source frames in as FLV, rendition FLV back out, each rendition a hub publisher),
//! restart it with capped backoff when it dies, and stop it when the source ends.
//!
//! One hub subscription serves the whole job. While ffmpeg restarts it keeps being read (and
//! the latest metadata and sequence headers kept), so it never lags; a new ffmpeg gets those
//! headers and then the source from its next keyframe on, which lies after everything the
//! renditions already published. Rendition publishers also live for the whole job, so their
//! players ride a restart like a publisher's reconnect.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::ChildStdin;
use tokio::time::{timeout, Instant};
use tracing::{debug, error, info, warn, Instrument};

use super::child::Child;
use super::ladder::{self, Planned, TS_OFFSET_MS};
use super::progress::ProgressParser;
use super::{lock, Job, Rendition, TranscodeState, Transcodes, PROTOCOL};
use crate::codec::amf0;
use crate::codec::flv::{self, FlvReader};
use crate::codec::media::{self, PacketKind};
use crate::hub::{FrameKind, MediaFrame, Publisher, PublisherInfo, ReaderEnd, Subscriber};
use crate::metrics::Metrics;
use crate::relay::backoff::Backoff;
use crate::server::Context;

/// How long a source may take to send its first video keyframe.
const FIRST_KEYFRAME_WAIT: Duration = Duration::from_secs(20);
/// Frames taken from the hub per batch.
const BATCH: usize = 128;
/// A run of ffmpeg this long resets the restart backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(30);
/// A run this short that published no frame is a quick failure; this many in a row give the
/// job up for the publish (a missing encoder or GPU fails every run alike).
const QUICK_FAILURE: Duration = Duration::from_secs(5);
const MAX_QUICK_FAILURES: u32 = 5;
/// ffmpeg stderr lines kept for the failure log, and their length cap.
const STDERR_LINES: usize = 6;
const STDERR_LINE_MAX: usize = 300;
/// Window of the per-rendition fps and speed gauges.
const METER_WINDOW: Duration = Duration::from_secs(2);

/// The latest metadata and sequence headers of the source, for a restarted ffmpeg.
#[derive(Default)]
struct Headers {
    metadata: Option<Arc<MediaFrame>>,
    video: Option<Arc<MediaFrame>>,
    audio: Option<Arc<MediaFrame>>,
}

impl Headers {
    fn note(&mut self, f: &Arc<MediaFrame>) {
        match (f.kind, f.packet) {
            (FrameKind::Data, _) => self.metadata = Some(f.clone()),
            (FrameKind::Video, PacketKind::SequenceHeader) => self.video = Some(f.clone()),
            (FrameKind::Audio, PacketKind::SequenceHeader) => self.audio = Some(f.clone()),
            _ => {}
        }
    }

    fn all(&self) -> impl Iterator<Item = &Arc<MediaFrame>> {
        self.metadata.iter().chain(&self.video).chain(&self.audio)
    }
}

fn is_video_keyframe(f: &MediaFrame) -> bool {
    f.kind == FrameKind::Video && f.keyframe && f.packet == PacketKind::Frame
}

/// How one run of ffmpeg ended.
enum End {
    /// The source stream ended: the job is over.
    SourceEnded,
    /// ffmpeg died, stalled or fell behind: restart. `resubscribe` after a slow-reader end.
    Failed { reason: String, resubscribe: bool },
}

/// Runs the job; `true` when it declined the source (no keyframe in time, or no rendition
/// applies), which is not asked again until the stream is published anew.
pub(super) async fn run(tc: &Transcodes, ctx: &Arc<Context>, job: &Arc<Job>) -> bool {
    let span = tracing::info_span!("transcode", stream = %job.source);
    let declined = supervise(tc, ctx, job).instrument(span).await == Some(Declined);
    // A ladder was planned, so `postTranscode` went out: close it.
    if !job.renditions().is_empty() {
        ctx.webhooks
            .notify(webhook("doneTranscode", job, Some(SystemTime::now())));
    }
    let (app, name) = (job.source.app.as_str(), job.source.name.as_str());
    let _ = tc.metrics.transcode_cpu_seconds.remove_label_values(&[app, name]);
    let _ = tc.metrics.transcode_ffmpeg_speed.remove_label_values(&[app, name]);
    for r in job.renditions() {
        let labels = [app, name, r.name.as_str()];
        let _ = tc.metrics.transcode_fps.remove_label_values(&labels);
        let _ = tc.metrics.transcode_speed.remove_label_values(&labels);
    }
    info!(stream = %job.source, "transcode stopped");
    declined
}

/// A transcode's webhook event, in the lifecycle events' shape (`protocol` and `action`
/// `transcode`; `name` is the source; no client, so no id, address or query).
fn webhook(event: &'static str, job: &Job, end: Option<SystemTime>) -> crate::webhooks::Event {
    crate::webhooks::Event {
        event,
        id: 0,
        ip: String::new(),
        app: job.source.app.clone(),
        name: job.source.name.clone(),
        query: crate::redact::Query::new(""),
        protocol: PROTOCOL,
        createtime: crate::webhooks::millis(job.started),
        endtime: end.map(crate::webhooks::millis),
        inbytes: 0,
        outbytes: 0,
        action: "transcode",
    }
}

/// The job gave up on its source for good (for this publish).
#[derive(Debug, PartialEq, Eq)]
struct Declined;

async fn supervise(tc: &Transcodes, ctx: &Arc<Context>, job: &Arc<Job>) -> Option<Declined> {
    let Ok(mut sub) = ctx.hub.subscribe(&job.source) else {
        return None;
    };
    let mut headers = Headers::default();
    // The picture size of the first keyframe's sequence header decides the ladder.
    let first = loop {
        match timeout(FIRST_KEYFRAME_WAIT, sub.recv()).await {
            Err(_) => {
                warn!("no video keyframe from the source within {FIRST_KEYFRAME_WAIT:?}; not transcoded");
                return Some(Declined);
            }
            Ok(Err(_)) => return None,
            Ok(Ok(f)) => {
                headers.note(&f);
                if is_video_keyframe(&f) {
                    break f;
                }
            }
        }
    };
    let info = sub.stream().info();
    let (width, height) = info.video.as_ref().map_or((0, 0), |v| (v.width, v.height));
    let (planned, skipped) = ladder::plan(&job.rule, &job.source, width, height);
    for s in &skipped {
        info!(rendition = %s.rendition, "rendition skipped: {}", s.reason);
    }
    if planned.is_empty() {
        info!("no rendition applies to this source; not transcoded");
        return Some(Declined);
    }
    *lock(&job.renditions) = planned
        .iter()
        .map(|p| Rendition {
            name: p.rendition.name.clone(),
            stream: p.stream.clone(),
            config: p.rendition.clone(),
        })
        .collect();
    let renditions: Vec<_> = planned.iter().map(|p| p.rendition.clone()).collect();
    let vaapi = tc.settings.vaapi_device.display().to_string();
    let args = ladder::Command {
        rule: &job.rule,
        renditions: &renditions,
        has_audio: info.has_audio,
        vaapi_device: &vaapi,
    }
    .args();
    debug!(ffmpeg = %tc.settings.ffmpeg.display(), args = ?args, "ffmpeg command");
    let mut outputs: Vec<Output> = planned
        .iter()
        .map(|p| Output::new(p, &tc.metrics, &job.source.name))
        .collect();
    let mut backoff = Backoff::default();
    let mut quick_failures = 0;
    let mut resume = vec![first];
    ctx.webhooks.notify(webhook("postTranscode", job, None));
    loop {
        let started = Instant::now();
        let end = attempt(
            tc,
            ctx,
            job,
            &args,
            &mut sub,
            &mut headers,
            &mut outputs,
            &planned,
            resume,
        )
        .await;
        resume = Vec::new();
        let (reason, resubscribe) = match end {
            End::SourceEnded => return None,
            End::Failed { reason, resubscribe } => (reason, resubscribe),
        };
        let mut produced = false;
        for o in outputs.iter_mut() {
            produced |= std::mem::take(&mut o.produced);
        }
        if produced || started.elapsed() >= QUICK_FAILURE {
            quick_failures = 0;
        } else {
            quick_failures += 1;
        }
        if quick_failures >= MAX_QUICK_FAILURES {
            error!(
                "transcode given up: ffmpeg failed {quick_failures} times in a row within {QUICK_FAILURE:?} \
                 without output (retried when the source is published anew): {reason}"
            );
            tc.metrics
                .transcode_failures
                .with_label_values(&[&job.source.app])
                .inc();
            tc.set_state(job, TranscodeState::Failed, Some(reason));
            return Some(Declined);
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        job.restarts.fetch_add(1, Ordering::Relaxed);
        tc.metrics
            .transcode_restarts
            .with_label_values(&[&job.source.app])
            .inc();
        warn!("ffmpeg failed, restarting in {delay:?}: {reason}");
        tc.set_state(job, TranscodeState::Restarting, Some(reason));
        if resubscribe {
            if ctx.hub.stream(&job.source).is_none_or(|s| !s.is_published()) {
                return None;
            }
            match ctx.hub.subscribe(&job.source) {
                Ok(s) => sub = s,
                Err(_) => return None,
            }
        }
        // Keep reading the source meanwhile: the subscription neither lags nor misses a
        // header change, and the source's end ends the job at once.
        let drained = timeout(delay, async {
            loop {
                match sub.recv().await {
                    Ok(f) => headers.note(&f),
                    Err(e) => return e,
                }
            }
        })
        .await;
        match drained {
            Err(_) => {}
            Ok(ReaderEnd::StreamEnded) => return None,
            Ok(ReaderEnd::TooSlow(_)) => match ctx.hub.subscribe(&job.source) {
                Ok(s) => sub = s,
                Err(_) => return None,
            },
        }
    }
}

/// Writes FLV to ffmpeg's stdin, each write bounded (a stalled ffmpeg is a failed one).
struct Feeder {
    stdin: ChildStdin,
    limit: Duration,
    /// After a restart: nothing but headers until the source's next video keyframe.
    await_keyframe: bool,
}

impl Feeder {
    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        match timeout(self.limit, self.stdin.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("writing to ffmpeg: {e}")),
            Err(_) => Err(format!("ffmpeg took no input for {:?}", self.limit)),
        }
    }

    async fn frame(&mut self, f: &MediaFrame) -> Result<(), String> {
        let header = f.kind == FrameKind::Data || f.packet != PacketKind::Frame;
        if self.await_keyframe && !header {
            if !is_video_keyframe(f) {
                return Ok(());
            }
            self.await_keyframe = false;
        }
        self.write(&f.flv_tag()).await
    }
}

/// One run of ffmpeg, from spawn to reaped, with its readers joined.
#[allow(clippy::too_many_arguments)]
async fn attempt(
    tc: &Transcodes,
    ctx: &Arc<Context>,
    job: &Arc<Job>,
    args: &[String],
    sub: &mut Subscriber,
    headers: &mut Headers,
    outputs: &mut Vec<Output>,
    planned: &[Planned],
    resume: Vec<Arc<MediaFrame>>,
) -> End {
    let app = job.source.app.as_str();
    let mut child = match Child::spawn(&tc.settings.ffmpeg, args, outputs.len() + 1) {
        Ok(c) => c,
        Err(e) => {
            return End::Failed {
                reason: format!("cannot start {}: {e}", tc.settings.ffmpeg.display()),
                resubscribe: false,
            }
        }
    };
    job.pid.store(child.pid(), Ordering::Relaxed);
    tc.metrics.transcodes_running.with_label_values(&[app]).inc();
    tc.set_state(job, TranscodeState::Running, None);
    info!(pid = child.pid(), renditions = ?outputs.iter().map(|o| o.rendition.as_str()).collect::<Vec<_>>(), "ffmpeg started");

    let mut pipes = std::mem::take(&mut child.pipes);
    let progress_pipe = pipes.pop();
    let max_tag = ctx.config.rtmp.max_message_size as usize;
    let readers: Vec<_> = outputs
        .drain(..)
        .zip(pipes)
        .map(|(out, pipe)| tokio::spawn(read_output(ctx.clone(), out, pipe, max_tag)))
        .collect();
    let speed_gauge = tc
        .metrics
        .transcode_ffmpeg_speed
        .with_label_values(&[app, &job.source.name]);
    let progress = progress_pipe.map(|p| {
        tokio::spawn(async move {
            let mut p = p;
            let mut parser = ProgressParser::default();
            let mut buf = [0u8; 4096];
            while let Ok(n) = p.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                for r in parser.feed(&buf[..n]) {
                    if let Some(s) = r.speed {
                        speed_gauge.set(s);
                    }
                }
            }
        })
    });
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let stderr = child.stderr.take().map(|e| tokio::spawn(read_stderr(e, tail.clone())));
    let cpu = tc
        .metrics
        .transcode_cpu_seconds
        .with_label_values(&[app, &job.source.name]);
    let mut cpu_seen = 0.0;
    let mut account_cpu = |child: &Child| {
        if let Some(now) = child.cpu_seconds() {
            if now > cpu_seen {
                cpu.inc_by(now - cpu_seen);
                cpu_seen = now;
            }
        }
    };

    let mut feeder = Feeder {
        stdin: child.stdin.take().expect("spawned with a piped stdin"),
        limit: Duration::from_secs(ctx.config.hub.write_timeout_secs.max(1)),
        await_keyframe: resume.is_empty(),
    };
    let end = {
        let feeding = async {
            let info = sub.stream().info();
            let failed = |reason: String| (reason, false);
            feeder
                .write(&flv::header(info.has_audio, info.has_video))
                .await
                .map_err(failed)?;
            for h in headers.all() {
                feeder.write(&h.flv_tag()).await.map_err(failed)?;
            }
            for f in &resume {
                feeder.frame(f).await.map_err(failed)?;
            }
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                match sub.recv_batch(&mut batch, BATCH).await {
                    Ok(()) => {}
                    Err(ReaderEnd::StreamEnded) => return Ok(()),
                    Err(e @ ReaderEnd::TooSlow(_)) => {
                        return Err((format!("ffmpeg fell behind the source: {e}"), true));
                    }
                }
                for f in batch.drain(..) {
                    headers.note(&f);
                    feeder.frame(&f).await.map_err(failed)?;
                }
            }
        };
        tokio::pin!(feeding);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                r = &mut feeding => break match r {
                    Ok(()) => End::SourceEnded,
                    Err((reason, resubscribe)) => End::Failed { reason, resubscribe },
                },
                status = child.wait() => break End::Failed {
                    reason: match status {
                        Ok(s) => format!("ffmpeg exited ({s})"),
                        Err(e) => format!("waiting for ffmpeg: {e}"),
                    },
                    resubscribe: false,
                },
                _ = tick.tick() => account_cpu(&child),
            }
        }
    };
    match end {
        End::SourceEnded => {
            // End of input: ffmpeg flushes its encoders and writes what is left.
            drop(feeder);
            let limit = Duration::from_secs(tc.settings.stop_timeout_secs);
            if timeout(limit, child.wait()).await.is_err() {
                warn!("ffmpeg did not exit within {limit:?} of its input's end; killed");
            }
        }
        End::Failed { .. } => drop(feeder),
    }
    account_cpu(&child);
    child.kill().await;
    tc.metrics.transcodes_running.with_label_values(&[app]).dec();
    job.pid.store(0, Ordering::Relaxed);
    for (i, r) in readers.into_iter().enumerate() {
        match r.await {
            Ok(out) => outputs.push(out),
            // A reader that panicked lost its publisher: start that rendition afresh.
            Err(_) => outputs.push(Output::new(&planned[i], &tc.metrics, &job.source.name)),
        }
    }
    if let Some(p) = progress {
        p.abort();
    }
    if let Some(e) = stderr {
        let _ = timeout(Duration::from_secs(1), e).await;
    }
    match end {
        End::Failed { reason, resubscribe } => {
            let lines: Vec<String> = lock(&tail).iter().cloned().collect();
            let reason = if lines.is_empty() {
                reason
            } else {
                format!("{reason}; ffmpeg said: {}", lines.join(" | "))
            };
            End::Failed { reason, resubscribe }
        }
        e => e,
    }
}

/// Keeps the last lines ffmpeg printed (each capped) and logs them at debug level.
async fn read_stderr(mut err: impl AsyncRead + Unpin, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut line = Vec::new();
    loop {
        buf.clear();
        match err.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        for &b in buf.iter() {
            if b == b'\n' || b == b'\r' {
                if !line.is_empty() {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    debug!("ffmpeg: {text}");
                    let mut t = lock(&tail);
                    if t.len() == STDERR_LINES {
                        t.pop_front();
                    }
                    t.push_back(text);
                    line.clear();
                }
            } else if line.len() < STDERR_LINE_MAX {
                line.push(b);
            }
        }
    }
}

/// One rendition's way back into the hub; lives for the whole job.
struct Output {
    rendition: String,
    stream: crate::hub::StreamKey,
    publisher: Option<Publisher>,
    /// The name could not be claimed this run (someone else publishes it).
    refused: bool,
    /// A timestamp at or past [`TS_OFFSET_MS`] was seen: smaller ones are not negative but
    /// the 32-bit millisecond clock wrapping.
    seen_high: bool,
    last_video: Option<u32>,
    last_audio: Option<u32>,
    meter: Meter,
    /// A media frame was published since the job last looked.
    produced: bool,
    /// The rung's frame rate cap (0: none).
    fps_cap: u32,
    fps: prometheus::Gauge,
    speed: prometheus::Gauge,
}

/// Output frames and media time over a window of wall-clock time.
#[derive(Default)]
struct Meter {
    start: Option<Instant>,
    frames: u32,
    first_ts: u32,
}

impl Output {
    fn new(p: &Planned, metrics: &Metrics, source: &str) -> Output {
        let labels = [p.stream.app.as_str(), source, p.rendition.name.as_str()];
        Output {
            rendition: p.rendition.name.clone(),
            stream: p.stream.clone(),
            publisher: None,
            refused: false,
            seen_high: false,
            last_video: None,
            last_audio: None,
            meter: Meter::default(),
            produced: false,
            fps_cap: p.rendition.fps,
            fps: metrics.transcode_fps.with_label_values(&labels),
            speed: metrics.transcode_speed.with_label_values(&labels),
        }
    }

    /// ffmpeg's timestamp back on the source timeline; `None` for one before its start
    /// (encoder priming), which has no place there.
    fn lower(&mut self, ts: u32) -> Option<u32> {
        if ts >= TS_OFFSET_MS {
            self.seen_high = true;
        } else if !self.seen_high {
            return None;
        }
        Some(ts.wrapping_sub(TS_OFFSET_MS))
    }

    fn measure(&mut self, ts: u32) {
        let now = Instant::now();
        let Some(start) = self.meter.start else {
            self.meter = Meter {
                start: Some(now),
                frames: 0,
                first_ts: ts,
            };
            return;
        };
        self.meter.frames += 1;
        let elapsed = now.duration_since(start);
        if elapsed >= METER_WINDOW {
            let secs = elapsed.as_secs_f64();
            self.fps.set(f64::from(self.meter.frames) / secs);
            self.speed
                .set(f64::from(ts.wrapping_sub(self.meter.first_ts)) / 1000.0 / secs);
            self.meter = Meter {
                start: Some(now),
                frames: 0,
                first_ts: ts,
            };
        }
    }

    async fn publish(&mut self, ctx: &Context, tag: flv::Tag) {
        if self.refused || tag.body.is_empty() {
            return;
        }
        if self.publisher.is_none() {
            let info = PublisherInfo {
                session_id: 0,
                protocol: PROTOCOL,
                remote: "ffmpeg".into(),
                started: SystemTime::now(),
            };
            match ctx.publish(&self.stream, info, Vec::new()).await {
                Ok(p) => {
                    info!(rendition = %self.stream, "rendition live");
                    self.publisher = Some(p);
                }
                Err(e) => {
                    warn!(rendition = %self.stream, "rendition not published: {e}");
                    self.refused = true;
                    return;
                }
            }
        }
        // Where the tag goes on the source timeline; `None`: dropped.
        let ts = match tag.tag_type {
            flv::TAG_VIDEO | flv::TAG_AUDIO => {
                let video = tag.tag_type == flv::TAG_VIDEO;
                let frame = if video {
                    media::parse_video_header(&tag.body).is_ok_and(|h| h.kind == PacketKind::Frame)
                } else {
                    media::parse_audio_header(&tag.body).is_ok_and(|h| h.kind == PacketKind::Frame)
                };
                match (self.lower(tag.timestamp), frame) {
                    (None, true) => None,
                    (ts, false) => Some(ts.unwrap_or(0)),
                    (Some(ts), true) => {
                        let last = if video {
                            &mut self.last_video
                        } else {
                            &mut self.last_audio
                        };
                        // Never back in time (the first frames after a restart overlap a little).
                        if last.is_some_and(|l| ts < l && l - ts < u32::MAX / 2) {
                            None
                        } else {
                            *last = Some(ts);
                            self.produced = true;
                            if video {
                                self.measure(ts);
                            }
                            Some(ts)
                        }
                    }
                }
            }
            _ => Some(0),
        };
        let (Some(ts), Some(p)) = (ts, &self.publisher) else {
            return;
        };
        let result = match tag.tag_type {
            flv::TAG_VIDEO => p.push_video(ts, tag.body),
            flv::TAG_AUDIO => p.push_audio(ts, tag.body),
            flv::TAG_SCRIPT => {
                if let Ok(values) = amf0::decode_all(&tag.body) {
                    let mut it = values.into_iter().skip_while(|v| v.as_str() == Some("@setDataFrame"));
                    if it.next().as_ref().and_then(|v| v.as_str()) == Some("onMetaData") {
                        let mut values: Vec<_> = it.collect();
                        if let Some(meta) = values.first_mut() {
                            cap_framerate(meta, self.fps_cap);
                        }
                        p.push_metadata(&values);
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            debug!(rendition = %self.stream, "dropping an ffmpeg tag: {e}");
        }
    }
}

/// ffmpeg announces its input's frame rate for a rung whose rate it lowered (the `select`
/// filter keeps the rate of its input): the rung's cap is what comes out.
fn cap_framerate(meta: &mut amf0::Amf0Value, cap: u32) {
    let (amf0::Amf0Value::EcmaArray(props) | amf0::Amf0Value::Object(props)) = meta else {
        return;
    };
    if cap == 0 {
        return;
    }
    for (key, value) in props.iter_mut() {
        if let (true, amf0::Amf0Value::Number(n)) = (key == "framerate" || key == "videoframerate", &mut *value) {
            *n = n.min(f64::from(cap));
        }
    }
}

/// Reads one rendition's FLV from its pipe into the hub until ffmpeg closes it.
async fn read_output(ctx: Arc<Context>, mut out: Output, mut pipe: impl AsyncRead + Unpin, max_tag: usize) -> Output {
    let mut reader = FlvReader::new(max_tag);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    out.refused = false;
    loop {
        match pipe.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(_) => {}
        }
        loop {
            match reader.next_tag(&mut buf) {
                Ok(Some(tag)) => out.publish(&ctx, tag).await,
                Ok(None) => break,
                Err(e) => {
                    // ffmpeg writes FLV; anything else means it is broken: stop reading, and
                    // its next write to this pipe fails it.
                    warn!(rendition = %out.stream, "unreadable ffmpeg output: {e}");
                    return out;
                }
            }
        }
        if buf.capacity() > 4 * max_tag.max(64 * 1024) && buf.is_empty() {
            buf = BytesMut::with_capacity(64 * 1024);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amf0::Amf0Value;

    #[test]
    fn a_capped_rung_announces_its_own_frame_rate() {
        let meta = || Amf0Value::EcmaArray(vec![("framerate".into(), Amf0Value::Number(30.0))]);
        for (cap, want) in [(15, 15.0), (60, 30.0), (0, 30.0)] {
            let mut m = meta();
            cap_framerate(&mut m, cap);
            assert_eq!(m.get("framerate").and_then(Amf0Value::as_f64), Some(want), "cap {cap}");
        }
    }
}
