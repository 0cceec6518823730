//! Transcoding (Node-Media-Server's fission): one supervised ffmpeg per source stream that
//! matches an app's `transcode` rule. ffmpeg decodes the source once and encodes every
//! rendition of the ladder; each rendition comes back on its own pipe as FLV and is published
//! to the hub as `/{app}/{name}_{rendition}`, an ordinary stream (players' auth, HLS, DASH,
//! relays and recording apply) that is never transcoded again.
//!
//! The source is read through a hub subscriber (the publisher never waits on ffmpeg: a
//! transcode that falls behind skips like any slow reader), and renditions are hub publishers
//! claimed through the same path as every producer (in a fleet, the name is claimed
//! fleet-wide). No loopback RTMP publish, so no auth is bypassed.
//!
//! # Layout
//! - [`ladder`]: which renditions a source gets, and ffmpeg's arguments (sans-IO).
//! - [`child`]: the ffmpeg process: pipes, death with the server, kill on drop, CPU time.
//! - [`progress`]: ffmpeg's `-progress` reports (sans-IO).
//! - `job`: the supervised task of one source: feed, read back, restart with backoff, stop.
//!
//! This module owns the lifecycle: a watcher starts a job when a matching stream is published
//! (at most `transcoding.max_processes` at once per pod; beyond it the source is refused,
//! logged and counted until a place frees up), and a job ends with its source stream.

pub mod child;
mod job;
pub mod ladder;
pub mod progress;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch, Semaphore};
use tracing::warn;

use crate::auth::glob_match;
use crate::config::{Config, RenditionConfig, TranscodeRule, TranscodingConfig};
use crate::hub::{is_valid_name, Hub, StreamKey};
use crate::metrics::Metrics;
use crate::server::Context;

/// The publisher protocol of rendition streams: how the watcher knows never to transcode one.
pub const PROTOCOL: &str = "transcode";
/// Renditions per rule, and rules per app.
pub const MAX_RENDITIONS: usize = 8;
pub const MAX_RULES: usize = 16;
/// How often the watcher looks for newly published sources.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Where a transcode stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TranscodeState {
    /// Waiting for the source's first keyframe, or ffmpeg starting.
    Starting,
    /// ffmpeg runs.
    Running,
    /// ffmpeg died; restarting after a backoff.
    Restarting,
    /// ffmpeg failed quickly, without output, several times in a row (missing encoder, no
    /// GPU, an ffmpeg that cannot write the codec): given up until the source is published
    /// anew. Followed by `Stopped`.
    Failed,
    /// The source ended (or the server is stopping); ffmpeg is gone.
    Stopped,
    /// Not started: this pod runs `transcoding.max_processes` transcodes already.
    Refused,
}

/// A transcode state change, as the API's event stream shows it (`event: transcodeState`).
#[derive(Debug, Clone, Serialize)]
pub struct TranscodeEvent {
    pub event: &'static str,
    pub app: String,
    pub name: String,
    pub state: TranscodeState,
    /// The rendition stream names.
    pub renditions: Vec<String>,
    pub pid: Option<u32>,
    pub restarts: u64,
    pub reason: Option<String>,
}

/// One rendition of a running transcode.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendition {
    /// The ladder rung's name (`480p`).
    pub name: String,
    /// `/{app}/{source}_{name}`.
    pub stream: StreamKey,
    pub config: RenditionConfig,
}

/// One source being transcoded.
pub struct Job {
    pub source: StreamKey,
    pub rule: TranscodeRule,
    state: watch::Sender<TranscodeState>,
    /// The ladder planned for the source (empty until its first keyframe).
    renditions: Mutex<Vec<Rendition>>,
    pub restarts: AtomicU64,
    pid: AtomicU32,
    pub started: SystemTime,
}

impl Job {
    pub fn state(&self) -> TranscodeState {
        *self.state.borrow()
    }

    pub fn renditions(&self) -> Vec<Rendition> {
        lock(&self.renditions).clone()
    }

    /// The ffmpeg process id while one runs.
    pub fn pid(&self) -> Option<u32> {
        Some(self.pid.load(Ordering::Relaxed)).filter(|p| *p > 0)
    }

    pub fn json(&self) -> Value {
        json!({
            "state": self.state(),
            "pid": self.pid(),
            "restarts": self.restarts.load(Ordering::Relaxed),
            "encoder": self.rule.encoder,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every transcode of this server.
pub struct Transcodes {
    hub: Hub,
    metrics: Arc<Metrics>,
    settings: TranscodingConfig,
    /// Places for ffmpeg processes (`max_processes`); a job holds one for its whole life.
    slots: Arc<Semaphore>,
    jobs: Mutex<HashMap<StreamKey, Arc<Job>>>,
    /// Sources refused for want of a place, with their publish time: counted once per publish.
    refused: Mutex<HashMap<StreamKey, SystemTime>>,
    /// Sources a job declined (no keyframe, no rendition applies), with their publish time:
    /// not tried again until published anew.
    declined: Mutex<HashMap<StreamKey, SystemTime>>,
    events: broadcast::Sender<TranscodeEvent>,
    /// Signalled whenever a job ends (shutdown waits for the last one).
    ended: tokio::sync::Notify,
}

impl Transcodes {
    pub fn new(config: &Config, hub: Hub, metrics: Arc<Metrics>) -> Arc<Transcodes> {
        Arc::new(Transcodes {
            hub,
            metrics,
            settings: config.transcoding.clone(),
            slots: Arc::new(Semaphore::new(config.transcoding.max_processes)),
            jobs: Mutex::new(HashMap::new()),
            refused: Mutex::new(HashMap::new()),
            declined: Mutex::new(HashMap::new()),
            events: broadcast::channel(256).0,
            ended: tokio::sync::Notify::new(),
        })
    }

    /// State changes of every transcode (a lagging receiver misses some).
    pub fn subscribe(&self) -> broadcast::Receiver<TranscodeEvent> {
        self.events.subscribe()
    }

    pub fn jobs(&self) -> Vec<Arc<Job>> {
        lock(&self.jobs).values().cloned().collect()
    }

    pub fn job(&self, source: &StreamKey) -> Option<Arc<Job>> {
        lock(&self.jobs).get(source).cloned()
    }

    /// The renditions of `source` that are live now (published here), in ladder order.
    pub fn live_renditions(&self, source: &StreamKey) -> Vec<Rendition> {
        let Some(job) = self.job(source) else {
            return Vec::new();
        };
        job.renditions()
            .into_iter()
            .filter(|r| {
                self.hub
                    .stream(&r.stream)
                    .is_some_and(|s| s.info().publisher.is_some_and(|p| p.protocol == PROTOCOL))
            })
            .collect()
    }

    /// The renditions the rules give `source` (before any is skipped for size): what another
    /// pod of the fleet, which runs the same rules, publishes for a source it has.
    pub fn ruled_renditions(&self, source: &StreamKey) -> Vec<Rendition> {
        let Some(rule) = self.rule_for(&source.app, &source.name) else {
            return Vec::new();
        };
        ladder::plan(&rule, source, 0, 0)
            .0
            .into_iter()
            .map(|p| Rendition {
                name: p.rendition.name.clone(),
                stream: p.stream,
                config: p.rendition,
            })
            .collect()
    }

    /// The source and rendition name of a rendition stream.
    pub fn source_of(&self, key: &StreamKey) -> Option<(StreamKey, String)> {
        lock(&self.jobs).values().find_map(|j| {
            lock(&j.renditions)
                .iter()
                .find(|r| r.stream == *key)
                .map(|r| (j.source.clone(), r.name.clone()))
        })
    }

    /// Resolves once no transcode runs (each ends with its source; the hub's shutdown ends
    /// every source).
    pub async fn stopped(&self) {
        loop {
            let notified = self.ended.notified();
            if lock(&self.jobs).is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// The rule of `app` that transcodes `name`, if any.
    fn rule_for(&self, app: &str, name: &str) -> Option<TranscodeRule> {
        if name.len() > crate::hub::MAX_NAME_LEN {
            return None;
        }
        let apps = self.hub.apps();
        let app = apps.iter().find(|a| a.name == app)?;
        app.transcode
            .iter()
            .find(|r| !r.renditions.is_empty() && glob_match(&r.rule, name))
            .cloned()
    }

    /// Starts transcodes as matching streams are published; runs until shutdown.
    pub async fn run(self: Arc<Self>, ctx: Arc<Context>) {
        let mut shutdown = ctx.shutdown.clone();
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if self.hub.apps().iter().all(|a| a.transcode.is_empty()) {
                continue;
            }
            for stream in self.hub.streams() {
                let info = stream.info();
                let Some(publisher) = info.publisher else { continue };
                // Renditions are never transcoded again; a stream pulled from a peer pod is
                // transcoded by the pod that has its publisher.
                if publisher.protocol == PROTOCOL || publisher.protocol == crate::cluster::pull::PROTOCOL {
                    continue;
                }
                if !info.has_video
                    || lock(&self.jobs).contains_key(&stream.key)
                    || lock(&self.declined).get(&stream.key) == Some(&publisher.started)
                {
                    continue;
                }
                let Some(rule) = self.rule_for(&stream.key.app, &stream.key.name) else {
                    continue;
                };
                let Ok(slot) = self.slots.clone().try_acquire_owned() else {
                    self.refuse(&stream.key, publisher.started);
                    continue;
                };
                lock(&self.refused).remove(&stream.key);
                let job = Arc::new(Job {
                    source: stream.key.clone(),
                    rule,
                    state: watch::channel(TranscodeState::Starting).0,
                    renditions: Mutex::new(Vec::new()),
                    restarts: AtomicU64::new(0),
                    pid: AtomicU32::new(0),
                    started: SystemTime::now(),
                });
                lock(&self.jobs).insert(stream.key.clone(), job.clone());
                self.emit(&job, None);
                let me = self.clone();
                let ctx = ctx.clone();
                let published = publisher.started;
                tokio::spawn(async move {
                    if job::run(&me, &ctx, &job).await {
                        lock(&me.declined).insert(job.source.clone(), published);
                    }
                    me.finish(&job);
                    drop(slot);
                });
            }
            // Forget refusals of streams no longer published.
            let published = |k: &StreamKey| self.hub.stream(k).is_some_and(|s| s.is_published());
            lock(&self.refused).retain(|k, _| published(k));
            lock(&self.declined).retain(|k, _| published(k));
        }
    }

    /// Counts and logs a source refused for want of a place, once per publish.
    fn refuse(&self, key: &StreamKey, published: SystemTime) {
        if lock(&self.refused).insert(key.clone(), published) == Some(published) {
            return;
        }
        warn!(
            stream = %key,
            max_processes = self.settings.max_processes,
            "transcode refused: this pod runs transcoding.max_processes transcodes already (retried when one ends)"
        );
        self.metrics.transcodes_refused.with_label_values(&[&key.app]).inc();
        let _ = self.events.send(TranscodeEvent {
            event: "transcodeState",
            app: key.app.clone(),
            name: key.name.clone(),
            state: TranscodeState::Refused,
            renditions: Vec::new(),
            pid: None,
            restarts: 0,
            reason: Some("transcoding.max_processes reached".into()),
        });
    }

    fn finish(&self, job: &Arc<Job>) {
        job.state.send_replace(TranscodeState::Stopped);
        job.pid.store(0, Ordering::Relaxed);
        self.emit(job, None);
        let mut jobs = lock(&self.jobs);
        if jobs.get(&job.source).is_some_and(|j| Arc::ptr_eq(j, job)) {
            jobs.remove(&job.source);
        }
        drop(jobs);
        self.ended.notify_waiters();
    }

    fn set_state(&self, job: &Job, state: TranscodeState, reason: Option<String>) {
        job.state.send_replace(state);
        self.emit(job, reason);
    }

    fn emit(&self, job: &Job, reason: Option<String>) {
        let _ = self.events.send(TranscodeEvent {
            event: "transcodeState",
            app: job.source.app.clone(),
            name: job.source.name.clone(),
            state: job.state(),
            renditions: job.renditions().into_iter().map(|r| r.stream.name).collect(),
            pid: job.pid(),
            restarts: job.restarts.load(Ordering::Relaxed),
            reason,
        });
    }
}

/// Checks one `transcode` rule: `(key, message)` on error.
pub fn check_rule(rule: &TranscodeRule) -> Result<(), (String, String)> {
    let bad = |k: &str, m: &str| Err((k.to_string(), m.to_string()));
    if rule.rule.is_empty() || rule.rule.len() > 128 {
        return bad("rule", "a stream name or glob of 1-128 characters");
    }
    if rule.renditions.is_empty() || rule.renditions.len() > MAX_RENDITIONS {
        return bad("renditions", "between 1 and 8 renditions");
    }
    if !(250..=60_000).contains(&rule.gop_ms) {
        return bad("gop_ms", "must be between 250 and 60000");
    }
    let mut names = std::collections::HashSet::new();
    for (i, r) in rule.renditions.iter().enumerate() {
        let key = |k: &str| format!("renditions[{i}].{k}");
        if r.name.is_empty() || r.name.len() > 32 || !is_valid_name(&r.name) {
            return Err((key("name"), "1-32 characters of A-Z a-z 0-9 _ - .".into()));
        }
        if !names.insert(r.name.as_str()) {
            return Err((key("name"), "duplicate rendition name".into()));
        }
        if !(16..=8192).contains(&r.height) {
            return Err((key("height"), "must be between 16 and 8192".into()));
        }
        if r.width != 0 && !(16..=8192).contains(&r.width) {
            return Err((key("width"), "0 (keep the aspect ratio) or between 16 and 8192".into()));
        }
        if r.width % 2 == 1 || r.height % 2 == 1 {
            return Err((key("width"), "width and height must be even (4:2:0 video)".into()));
        }
        if !(50..=100_000).contains(&r.video_kbps) {
            return Err((key("video_kbps"), "must be between 50 and 100000".into()));
        }
        if r.max_kbps != 0 && !(r.video_kbps..=200_000).contains(&r.max_kbps) {
            return Err((key("max_kbps"), "0 or between video_kbps and 200000".into()));
        }
        if r.fps > 240 {
            return Err((key("fps"), "0 (the source's) or at most 240".into()));
        }
        if !(16..=512).contains(&r.audio_kbps) {
            return Err((key("audio_kbps"), "must be between 16 and 512".into()));
        }
        if let Some(p) = &r.preset {
            if p.is_empty() || p.len() > 32 || !p.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err((key("preset"), "an encoder preset name such as veryfast or p4".into()));
            }
        }
    }
    Ok(())
}

/// Checks the `transcoding` section: `(key, message)` on error.
pub fn check_settings(t: &TranscodingConfig) -> Result<(), (String, String)> {
    if t.ffmpeg.as_os_str().is_empty() {
        return Err(("ffmpeg".into(), "name the ffmpeg binary".into()));
    }
    if !(1..=256).contains(&t.max_processes) {
        return Err(("max_processes".into(), "must be between 1 and 256".into()));
    }
    if !(1..=60).contains(&t.stop_timeout_secs) {
        return Err(("stop_timeout_secs".into(), "must be between 1 and 60".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(app: &str) -> Result<Config, String> {
        Config::from_yaml(&format!("apps: [{{name: live, transcode: [{app}]}}]\n"), "t").map_err(|e| e.to_string())
    }

    #[test]
    fn rules_parse_with_defaults_and_bad_keys_are_named() {
        let c = yaml("{rule: 'game*', renditions: [{name: 480p, height: 480, video_kbps: 800}]}").unwrap();
        let r = &c.apps[0].transcode[0];
        assert_eq!(r.rule, "game*");
        assert_eq!(r.renditions[0].audio_kbps, 96);
        assert_eq!(r.renditions[0].codec, crate::config::RenditionCodec::H264);
        let cases: &[(&str, &str)] = &[
            ("{renditions: []}", "apps[0].transcode[0].renditions"),
            (
                "{renditions: [{name: 'a/b', height: 480}]}",
                "apps[0].transcode[0].renditions[0].name",
            ),
            (
                "{renditions: [{name: a, height: 480}, {name: a, height: 360}]}",
                "apps[0].transcode[0].renditions[1].name",
            ),
            (
                "{renditions: [{name: a, height: 0}]}",
                "apps[0].transcode[0].renditions[0].height",
            ),
            (
                "{renditions: [{name: a, height: 480, max_kbps: 10}]}",
                "apps[0].transcode[0].renditions[0].max_kbps",
            ),
            (
                "{renditions: [{name: a, height: 480, preset: 'fast;rm'}]}",
                "apps[0].transcode[0].renditions[0].preset",
            ),
            (
                "{gop_ms: 5, renditions: [{name: a, height: 480}]}",
                "apps[0].transcode[0].gop_ms",
            ),
            ("{encoder: cuda, renditions: [{name: a, height: 480}]}", "encoder"),
        ];
        for (rule, key) in cases {
            let err = yaml(rule).unwrap_err();
            assert!(err.contains(key), "{rule}: {err}");
        }
        let err = Config::from_yaml("transcoding: {max_processes: 0}\n", "t").unwrap_err();
        assert!(err.to_string().contains("transcoding.max_processes"), "{err}");
    }
}
