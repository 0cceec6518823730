//! Recording: every recorder is an ordinary hub subscriber writing one stream's files, in
//! its own task, with the disk work in `spawn_blocking`; finished files go to the app's
//! upload queue. A recorder that falls behind the ring skips like any reader: its file is
//! closed there (counted) and a new one starts at the next keyframe, so a slow or failing
//! disk never reaches the publisher or the players.
//!
//! # Layout
//! - [`writer`]: frames to the bytes of one file (FLV, or fMP4 through the HLS writer), sans-IO.
//! - [`files`]: names, record ids, listing, fragment writes, the faststart rebuild, crash leftovers.
//! - [`upload`]: S3-compatible storage and the per-app upload queues.
//!
//! This module owns the recorders' lifecycle: started when a stream of an `always` app is
//! published or by the API, ended with the publish (one file per publish, or one per
//! `segment_secs`), by the API, or by shutdown (which finalizes every file before exit).

pub mod files;
pub mod upload;
pub mod writer;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{AppConfig, RecordConfig, RecordFormat, RecordMode};
use crate::hub::{FrameKind, Hub, MediaFrame, StreamKey, Subscriber};
use crate::metrics::Metrics;
use crate::webhooks::Webhooks;
use files::{RecordId, FRAG_SUFFIX};
use writer::{Headers, Writer};

/// How often `always` apps are checked for streams to record and recorders for an ended publish.
const TICK: Duration = Duration::from_millis(250);
/// After a file could not be created or written, the next try waits this long.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// How often leftovers of dead writers (a crashed pod's files on a shared volume, an MP4
/// whose rebuild failed) are looked for while the server runs.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// A leftover is taken over while the server runs once it has not changed for this long
/// (a live writer's files are locked anyway; this keeps clear of files just created).
const STALE_AFTER: Duration = Duration::from_secs(60);

/// Why a recording could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("recording is off for this app")]
    Off,
    #[error("stream not found")]
    NotPublished,
    #[error("stream is already being recorded")]
    AlreadyRecording,
    #[error("stream is not being recorded")]
    NotRecording,
    #[error("server is shutting down")]
    ShuttingDown,
}

/// What `doneRecord` reports of a closed file.
#[derive(Debug, Clone, Serialize)]
pub struct Done {
    pub id: String,
    pub app: String,
    pub name: String,
    pub format: &'static str,
    /// The local file; `None` once it was removed after its upload.
    pub path: Option<String>,
    pub bucket: Option<String>,
    /// The object key, once uploaded.
    pub key: Option<String>,
    pub size: u64,
    /// Media seconds.
    pub duration: f64,
    pub codecs: Vec<String>,
    /// Milliseconds since the epoch.
    pub createtime: u64,
    pub endtime: u64,
}

/// A recorder running for a stream.
struct Active {
    stop: watch::Sender<bool>,
    /// The file being written now, if any.
    current: Mutex<Option<(RecordId, PathBuf)>>,
}

/// Every recorder and upload queue.
pub struct Recorders {
    hub: Hub,
    pub metrics: Arc<Metrics>,
    webhooks: Arc<Webhooks>,
    shutdown: watch::Receiver<bool>,
    active: Mutex<HashMap<StreamKey, Arc<Active>>>,
    /// Streams whose recording the API stopped: not restarted by `always` until their
    /// publisher changes (the value is that publish's start).
    stopped: Mutex<HashMap<StreamKey, SystemTime>>,
    queues: Mutex<HashMap<String, Arc<upload::Queue>>>,
    running: AtomicUsize,
    idle: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Recorders {
    pub fn new(hub: Hub, metrics: Arc<Metrics>, webhooks: Arc<Webhooks>, shutdown: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(Recorders {
            hub,
            metrics,
            webhooks,
            shutdown,
            active: Mutex::new(HashMap::new()),
            stopped: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            running: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// The app's current configuration.
    pub fn app(&self, app: &str) -> Option<AppConfig> {
        self.hub.apps().iter().find(|a| a.name == app).cloned()
    }

    /// Apps with recording or uploads configured.
    pub fn recording_apps(&self) -> Vec<AppConfig> {
        self.hub
            .apps()
            .iter()
            .filter(|a| a.record.mode != RecordMode::Off || a.record.upload.enabled())
            .cloned()
            .collect()
    }

    /// The upload queue of `app`, started on first use; `None` without uploads.
    pub fn queue(self: &Arc<Self>, app: &AppConfig) -> Option<Arc<upload::Queue>> {
        if !app.record.upload.enabled() {
            return None;
        }
        let mut queues = lock(&self.queues);
        if let Some(q) = queues.get(&app.name) {
            return Some(q.clone());
        }
        let q = upload::Queue::new(upload::Storage::new(app.record.upload.clone()));
        queues.insert(app.name.clone(), q.clone());
        tokio::spawn(upload::run(
            q.clone(),
            app.name.clone(),
            self.clone(),
            Duration::from_secs(app.record.upload.max_backoff_secs),
        ));
        Some(q)
    }

    /// The storage of `app`, if it uploads.
    pub fn storage(&self, app: &AppConfig) -> Option<upload::Storage> {
        app.record
            .upload
            .enabled()
            .then(|| upload::Storage::new(app.record.upload.clone()))
    }

    pub(crate) fn pending_changed(&self) {
        let n: usize = lock(&self.queues).values().map(|q| q.len()).sum();
        self.metrics.record_uploads_pending.set(n as i64);
    }

    /// Records `always` apps' streams until shutdown; in a task of its own, tidies what dead
    /// writers left (at start, then every [`SWEEP_EVERY`]).
    pub async fn run(self: Arc<Self>) {
        tokio::spawn(self.clone().sweeper());
        let mut shutdown = self.shutdown.clone();
        let mut tick = tokio::time::interval(TICK);
        // A publish is seen at once through its postPublish event (so the recording starts
        // with the publish's first frame, not from the GOP cache a tick later); the tick
        // catches streams that have no such event (relay pulls) and missed events.
        let mut events = self.webhooks.subscribe();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    for stream in self.hub.streams() {
                        self.consider(&stream);
                    }
                }
                e = events.recv() => {
                    let Ok(e) = e else { continue };
                    if e.event != "postPublish" {
                        continue;
                    }
                    if let Some(stream) = StreamKey::new(&e.app, &e.name).ok().and_then(|k| self.hub.stream(&k)) {
                        self.consider(&stream);
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Starts recording `stream` if its app records always and nothing records it yet.
    fn consider(self: &Arc<Self>, stream: &crate::hub::Stream) {
        let always = self
            .hub
            .apps()
            .iter()
            .any(|a| a.name == stream.key.app && a.record.mode == RecordMode::Always);
        if !always || !stream.is_published() || lock(&self.active).contains_key(&stream.key) {
            return;
        }
        let publisher = stream.info().publisher;
        // In a fleet, the pod with the publisher records; pods that pull the stream from it for
        // their players do not record it again.
        if publisher
            .as_ref()
            .is_some_and(|p| p.protocol == crate::cluster::pull::PROTOCOL)
        {
            return;
        }
        let started = publisher.map(|p| p.started);
        {
            let mut stopped = lock(&self.stopped);
            match (stopped.get(&stream.key), started) {
                (Some(at), Some(s)) if *at == s => return,
                (Some(_), _) => {
                    stopped.remove(&stream.key);
                }
                _ => {}
            }
        }
        let _ = self.start(&stream.key);
    }

    /// At start: finishes what a previous run left (MP4s still in fMP4 form, fMP4s cut
    /// mid-fragment) and queues every file not uploaded yet; then, every [`SWEEP_EVERY`], the
    /// same for files no live process holds that have not changed for [`STALE_AFTER`] (a pod
    /// that died on a shared volume, an MP4 whose rebuild failed).
    async fn sweeper(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let mut first = true;
        loop {
            for app in self.recording_apps() {
                if *shutdown.borrow() {
                    return;
                }
                self.sweep(&app, first).await;
            }
            first = false;
            tokio::select! {
                _ = tokio::time::sleep(SWEEP_EVERY) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn sweep(self: &Arc<Self>, app: &AppConfig, at_start: bool) {
        let (root, name) = (app.record.path.clone(), app.name.clone());
        let uploads = app.record.upload.enabled();
        let finished = files::SweepFinished {
            trim: at_start,
            take: uploads,
        };
        let min_age = if at_start { Duration::ZERO } else { STALE_AFTER };
        let swept = tokio::task::spawn_blocking(move || files::sweep(&root, &name, min_age, finished))
            .await
            .unwrap_or_default();
        if at_start {
            info!(app = %app.name, taken = swept.taken.len(), kept = swept.failed.len(), "recordings left behind swept");
        }
        for (frag, e) in swept.failed {
            self.metrics
                .record_failures
                .with_label_values(&[&app.name, "finalize"])
                .inc();
            warn!(path = %frag.display(), "recording left behind could not be finalized (retried later): {e}");
        }
        for t in swept.taken {
            if t.rebuilt {
                info!(path = %t.path.display(), duration = t.info.duration, "recording left behind finalized");
            }
            let start = t.id.start_ms();
            let done = Done {
                id: t.id.id(),
                app: t.id.app.clone(),
                name: t.id.name.clone(),
                format: t.id.format(),
                path: Some(t.path.display().to_string()),
                bucket: None,
                key: None,
                size: t.size,
                duration: (t.info.duration * 1000.0).round() / 1000.0,
                codecs: t.info.codecs,
                createtime: start,
                endtime: start + (t.info.duration * 1000.0) as u64,
            };
            match self.queue(app) {
                Some(q) => {
                    // Shared from now on: still nobody else's to tidy or delete, but no longer
                    // "being written" in listings.
                    if t.lock.try_lock_shared().is_err() {
                        continue;
                    }
                    q.push(upload::Job {
                        id: t.id,
                        path: t.path,
                        done,
                        lock: Some(Arc::new(t.lock)),
                    });
                    self.pending_changed();
                }
                // Without uploads only a rebuilt MP4 is news (its recorder never closed it).
                None if t.rebuilt => self.done_record(&done),
                None => {}
            }
        }
    }

    pub fn is_recording(&self, key: &StreamKey) -> bool {
        lock(&self.active).contains_key(key)
    }

    /// Files being written now.
    pub fn active_files(&self) -> Vec<(RecordId, PathBuf)> {
        lock(&self.active)
            .values()
            .filter_map(|a| lock(&a.current).clone())
            .collect()
    }

    /// Starts recording `key` (published, on an app with recording configured).
    pub fn start(self: &Arc<Self>, key: &StreamKey) -> Result<(), RecordError> {
        if *self.shutdown.borrow() {
            return Err(RecordError::ShuttingDown);
        }
        let app = self.app(&key.app).ok_or(RecordError::NotPublished)?;
        if app.record.mode == RecordMode::Off {
            return Err(RecordError::Off);
        }
        if !self.hub.stream(key).is_some_and(|s| s.is_published()) {
            return Err(RecordError::NotPublished);
        }
        let mut active = lock(&self.active);
        if active.contains_key(key) {
            return Err(RecordError::AlreadyRecording);
        }
        let sub = self.hub.subscribe(key).map_err(|_| RecordError::NotPublished)?;
        let (stop, stop_rx) = watch::channel(false);
        let a = Arc::new(Active {
            stop,
            current: Mutex::new(None),
        });
        active.insert(key.clone(), a.clone());
        drop(active);
        lock(&self.stopped).remove(key);
        self.task_started();
        info!(stream = %key, format = app.record.format.as_str(), "recording started");
        let me = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let recorder = Recorder {
                key: key.clone(),
                app,
                records: me.clone(),
                active: a.clone(),
            };
            recorder.run(sub, stop_rx).await;
            {
                let mut active = lock(&me.active);
                if active.get(&key).is_some_and(|cur| Arc::ptr_eq(cur, &a)) {
                    active.remove(&key);
                }
            }
            me.task_ended();
        });
        Ok(())
    }

    /// Stops recording `key` (its file is closed and finalized).
    pub fn stop(&self, key: &StreamKey) -> Result<(), RecordError> {
        let a = lock(&self.active).get(key).cloned().ok_or(RecordError::NotRecording)?;
        if let Some(p) = self.hub.stream(key).and_then(|s| s.info().publisher) {
            lock(&self.stopped).insert(key.clone(), p.started);
        }
        let _ = a.stop.send(true);
        Ok(())
    }

    /// Completes once every queued upload is done (or its file gone). Uploads continue after
    /// shutdown began, so the server awaits this within its grace period.
    pub async fn uploads_drained(&self) {
        loop {
            self.pending_changed();
            if lock(&self.queues).values().all(|q| q.is_empty()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn task_started(&self) {
        self.running.fetch_add(1, Ordering::AcqRel);
    }

    fn task_ended(&self) {
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// Completes once no recorder runs and no file is being finalized (every file closed,
    /// rebuilt and handed to its upload queue).
    pub async fn finished(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.running.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    fn post_record(&self, id: &RecordId, path: &std::path::Path, format: RecordFormat, created: SystemTime) {
        let body = serde_json::json!({
            "event": "postRecord",
            "id": id.id(),
            "app": id.app,
            "name": id.name,
            "format": format.as_str(),
            "path": path.display().to_string(),
            "createtime": crate::webhooks::millis(created),
        });
        self.webhooks.notify_other("postRecord", &id.app, body);
    }

    fn done_record(&self, done: &Done) {
        let mut body = serde_json::to_value(done).unwrap_or_default();
        body["event"] = "doneRecord".into();
        self.webhooks.notify_other("doneRecord", &done.app, body);
    }

    /// A file is closed: upload it, or report it done. `lock`: the file's descriptor, its
    /// lock made shared here and held until the upload is done.
    fn closed(self: &Arc<Self>, app: &AppConfig, id: RecordId, path: PathBuf, done: Done, lock: std::fs::File) {
        match self.queue(app) {
            Some(q) => {
                let _ = lock.try_lock_shared();
                q.push(upload::Job {
                    id,
                    path,
                    done,
                    lock: Some(Arc::new(lock)),
                });
                self.pending_changed();
            }
            None => self.done_record(&done),
        }
    }

    /// An upload finished: the local copy goes if configured, and doneRecord is sent unless
    /// `announce` is false (a file found already uploaded by an earlier run).
    pub(crate) async fn uploaded(&self, job: &upload::Job, size: u64, key: String, announce: bool) {
        let app = self.app(&job.id.app);
        let mut done = job.done.clone();
        done.size = size;
        done.key = Some(key);
        done.bucket = app.as_ref().map(|a| a.record.upload.bucket.clone());
        if app.is_some_and(|a| a.record.upload.remove_local) {
            match tokio::fs::remove_file(&job.path).await {
                Ok(()) => {
                    done.path = None;
                    files::remove_note(&job.path);
                }
                Err(e) => warn!(path = %job.path.display(), "uploaded recording not removed: {e}"),
            }
        }
        self.pending_changed();
        if announce {
            self.done_record(&done);
        }
    }
}

/// The file a recorder writes now.
struct OpenFile {
    id: RecordId,
    /// Where the bytes go (`.frag` for an MP4 until it closes).
    writing: PathBuf,
    /// The file's final path.
    path: PathBuf,
    /// Holds the file's exclusive lock (taken by [`files::create`]) until it is finished.
    file: Option<std::fs::File>,
    writer: Writer,
    bytes: u64,
    created: SystemTime,
    codecs: Vec<String>,
    /// A write failed: nothing more goes to this file.
    failed: bool,
}

/// Why a file was not opened.
enum OpenError {
    /// The stream's codecs cannot go into this format: no retry for this publish.
    Codec(String),
    Io(std::io::Error),
}

/// What a recorder keeps between frames.
#[derive(Default)]
struct State {
    headers: Headers,
    file: Option<OpenFile>,
    retry_at: Option<Instant>,
    /// The stream's codecs cannot be recorded in this format (until a new configuration).
    unsupported: bool,
    /// An audio codec MP4 has no place for was reported (its audio is left out).
    audio_left_out: bool,
}

/// One stream's recorder.
#[derive(Clone)]
struct Recorder {
    key: StreamKey,
    app: AppConfig,
    records: Arc<Recorders>,
    active: Arc<Active>,
}

impl Recorder {
    fn cfg(&self) -> &RecordConfig {
        &self.app.record
    }

    fn count_failure(&self, reason: &str) {
        self.records
            .metrics
            .record_failures
            .with_label_values(&[&self.app.name, reason])
            .inc();
    }

    async fn run(&self, mut sub: Subscriber, mut stop: watch::Receiver<bool>) {
        let mut st = State::default();
        let mut dropped = sub.dropped();
        // Whether the stream has video (files then start at keyframes); refreshed each tick
        // rather than read under the stream's lock for every frame.
        let mut has_video = sub.stream().info().has_video;
        let mut tick = tokio::time::interval(TICK);
        let why = loop {
            let f = tokio::select! {
                r = sub.recv() => match r {
                    Ok(f) => f,
                    Err(e) => break e.to_string(),
                },
                _ = stop.changed() => break "stopped".to_string(),
                _ = tick.tick() => {
                    if sub.stream().is_published() {
                        has_video = sub.stream().info().has_video;
                        continue;
                    }
                    // The publish ended: write what is left in the ring, then close.
                    while let Ok(Some(f)) = sub.try_recv() {
                        self.frame(&f, has_video, &mut st).await;
                    }
                    break "publish ended".to_string();
                }
            };
            if sub.dropped() != dropped {
                dropped = sub.dropped();
                if let Some(open) = st.file.take() {
                    warn!(stream = %self.key, "recorder fell behind the stream; file cut, the next starts at a keyframe");
                    self.count_failure("behind");
                    self.close(open, None);
                }
            }
            self.frame(&f, has_video, &mut st).await;
        };
        if let Some(open) = st.file.take() {
            self.close(open, None);
        }
        info!(stream = %self.key, reason = why, "recording stopped");
    }

    async fn frame(&self, f: &Arc<MediaFrame>, stream_has_video: bool, st: &mut State) {
        if st.headers.update(f) {
            // A new codec configuration: this file is done; the next starts at a keyframe.
            st.unsupported = false;
            if let Some(open) = st.file.take() {
                self.close(open, None);
            }
        }
        let mp4 = self.cfg().format != RecordFormat::Flv;
        if f.kind == FrameKind::Data {
            // FLV keeps metadata updates as published; MP4 has no place for them.
            if let Some(open) = st.file.as_mut().filter(|o| matches!(o.writer, Writer::Flv(_))) {
                let mut out = Vec::new();
                let _ = open.writer.push(f, &mut out);
                if !out.is_empty() && !self.write(open, out).await {
                    st.retry_at = Some(Instant::now() + RETRY_AFTER);
                }
            }
            return;
        }
        if f.multitrack || f.packet != crate::codec::media::PacketKind::Frame {
            return;
        }
        // Audio configured by its frames that still has no setup (G.711) has no MP4 sample
        // entry: said once per publish rather than dropped silently.
        if mp4
            && f.kind == FrameKind::Audio
            && st.headers.audio_setup.is_none()
            && !crate::hls::track::audio_has_sequence_header(f.codec)
            && !st.audio_left_out
        {
            st.audio_left_out = true;
            warn!(stream = %self.key, codec = f.codec.name(), "audio codec not supported in MP4: recorded without audio");
            self.count_failure("codec");
        }
        let headers = &st.headers;
        let has_video = headers.video.is_some() || stream_has_video;
        let starts = if has_video {
            f.kind == FrameKind::Video && f.keyframe && headers.video.is_some()
        } else {
            f.kind == FrameKind::Audio && headers.audio_setup.is_some()
        };
        let segment_ms = self.cfg().segment_secs.saturating_mul(1000) as i64;
        if starts
            && segment_ms > 0
            && st
                .file
                .as_ref()
                .is_some_and(|o| o.writer.elapsed_ms(f.timestamp) >= segment_ms)
        {
            if let Some(open) = st.file.take() {
                self.close(open, Some(f.timestamp));
            }
        }
        if st.file.is_none() && starts && !st.unsupported && st.retry_at.is_none_or(|t| Instant::now() >= t) {
            match self.open(&st.headers, f.timestamp).await {
                Ok(open) => {
                    st.retry_at = None;
                    st.file = Some(open);
                }
                Err(OpenError::Codec(e)) => {
                    warn!(stream = %self.key, format = self.cfg().format.as_str(), "stream not recorded, its codecs do not fit the format: {e}");
                    self.count_failure("codec");
                    st.unsupported = true;
                    return;
                }
                Err(OpenError::Io(e)) => {
                    warn!(stream = %self.key, path = %self.cfg().path.display(), "recording file not created: {e}");
                    self.count_failure("io");
                    st.retry_at = Some(Instant::now() + RETRY_AFTER);
                    return;
                }
            }
        }
        let Some(open) = st.file.as_mut() else { return };
        let mut out = Vec::new();
        if let Err(e) = open.writer.push(f, &mut out) {
            warn!(stream = %self.key, "recording frame not written: {e}");
            self.count_failure("codec");
            return;
        }
        if !out.is_empty() && !self.write(open, out).await {
            st.retry_at = Some(Instant::now() + RETRY_AFTER);
            if let Some(open) = st.file.take() {
                self.close(open, None);
            }
        }
    }

    async fn open(&self, headers: &Headers, first_ms: u32) -> Result<OpenFile, OpenError> {
        let cfg = self.cfg().clone();
        let mut start = Vec::new();
        let mp4 = cfg.format != RecordFormat::Flv;
        let writer = Writer::start(cfg.format, headers, first_ms, cfg.fragment_ms, &mut start)
            .map_err(|e| OpenError::Codec(format!("{} ({e})", headers.codecs(false).join(", "))))?;
        let (app, name) = (self.key.app.clone(), self.key.name.clone());
        let created = SystemTime::now();
        let (id, file, writing, path) = tokio::task::spawn_blocking(move || {
            let (ext, suffix) = match cfg.format {
                RecordFormat::Flv => ("flv", ""),
                RecordFormat::Fmp4 => ("mp4", ""),
                RecordFormat::Mp4 => ("mp4", FRAG_SUFFIX),
            };
            let (id, mut file) = files::create(&cfg.path, &app, &name, created, ext, suffix)?;
            let path = id.local_path(&cfg.path);
            let writing = files::with_suffix(&path, suffix);
            if let Err(e) = files::append(&mut file, &start, cfg.fsync) {
                let _ = std::fs::remove_file(&writing);
                return Err(e);
            }
            Ok::<_, std::io::Error>((id, file, writing, path))
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r)
        .map_err(OpenError::Io)?;
        let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.records
            .metrics
            .recordings_active
            .with_label_values(&[&self.app.name])
            .inc();
        self.records
            .metrics
            .record_bytes
            .with_label_values(&[&self.app.name])
            .inc_by(bytes);
        *lock(&self.active.current) = Some((id.clone(), path.clone()));
        info!(stream = %self.key, path = %path.display(), "recording file opened");
        self.records.post_record(&id, &path, self.cfg().format, created);
        Ok(OpenFile {
            id,
            writing,
            path,
            file: Some(file),
            writer,
            bytes,
            created,
            codecs: headers.codecs(mp4),
            failed: false,
        })
    }

    /// Writes `out` to the file (fsynced when configured); false when the write failed.
    async fn write(&self, open: &mut OpenFile, out: Vec<u8>) -> bool {
        if open.failed {
            return false;
        }
        let Some(mut file) = open.file.take() else { return false };
        let sync = self.cfg().fsync;
        let n = out.len() as u64;
        let (file, res) = match tokio::task::spawn_blocking(move || {
            let r = files::append(&mut file, &out, sync);
            (file, r)
        })
        .await
        {
            Ok(x) => x,
            Err(_) => return false,
        };
        open.file = Some(file);
        match res {
            Ok(()) => {
                open.bytes += n;
                self.records
                    .metrics
                    .record_bytes
                    .with_label_values(&[&self.app.name])
                    .inc_by(n);
                true
            }
            Err(e) => {
                warn!(stream = %self.key, path = %open.writing.display(), "recording write failed: {e}");
                self.count_failure("io");
                open.failed = true;
                false
            }
        }
    }

    /// Ends a file in a task of its own (an MP4's rebuild copies the whole file), so the
    /// recorder opens the next at once; shutdown awaits it through [`Recorders::finished`].
    fn close(&self, open: OpenFile, next_video_ms: Option<u32>) {
        *lock(&self.active.current) = None;
        self.records
            .metrics
            .recordings_active
            .with_label_values(&[&self.app.name])
            .dec();
        self.records.task_started();
        let me = self.clone();
        tokio::spawn(async move {
            me.finish(open, next_video_ms).await;
            me.records.task_ended();
        });
    }

    /// The rest is written, an fMP4 whose write failed is cut after its last whole box, an
    /// MP4 is rebuilt with its moov first, and the file goes to upload (or doneRecord is sent).
    async fn finish(&self, mut open: OpenFile, next_video_ms: Option<u32>) {
        let mut out = Vec::new();
        if let Err(e) = open.writer.finish(next_video_ms, &mut out) {
            warn!(stream = %self.key, "recording end not written: {e}");
        }
        if !out.is_empty() {
            self.write(&mut open, out).await;
        }
        let mut duration = open.writer.duration_secs();
        let format = self.cfg().format;
        let (file, failed) = (open.file.take(), open.failed);
        let (writing, path) = (open.writing.clone(), open.path.clone());
        let finished = tokio::task::spawn_blocking(move || {
            let file = match file {
                Some(f) => f,
                None => files::try_lock(&writing)?.ok_or_else(|| std::io::Error::other("file taken"))?,
            };
            let _ = file.sync_all();
            match format {
                RecordFormat::Mp4 => files::finalize_mp4(&writing, &path).map(|(info, out)| (Some(info.duration), out)),
                RecordFormat::Fmp4 => {
                    // A failed write may have left half a fragment: cut before it is uploaded.
                    if failed {
                        if let Err(e) = files::trim_fmp4(&path) {
                            warn!(path = %path.display(), "recording not trimmed after a failed write: {e}");
                        }
                    }
                    Ok((None, file))
                }
                RecordFormat::Flv => Ok((None, file)),
            }
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        let lock = match finished {
            Ok((secs, lock)) => {
                duration = secs.unwrap_or(duration);
                lock
            }
            Err(e) => {
                warn!(stream = %self.key, path = %open.writing.display(), "recording not finalized (kept, retried later): {e}");
                self.count_failure("finalize");
                return;
            }
        };
        let size = lock.metadata().map(|m| m.len()).unwrap_or(open.bytes);
        self.records
            .metrics
            .record_files
            .with_label_values(&[&self.app.name, format.as_str()])
            .inc();
        info!(stream = %self.key, path = %open.path.display(), bytes = size, duration, "recording file closed");
        let done = Done {
            id: open.id.id(),
            app: open.id.app.clone(),
            name: open.id.name.clone(),
            format: format.as_str(),
            path: Some(open.path.display().to_string()),
            bucket: None,
            key: None,
            size,
            duration: (duration * 1000.0).round() / 1000.0,
            codecs: open.codecs.clone(),
            createtime: crate::webhooks::millis(open.created),
            endtime: crate::webhooks::millis(SystemTime::now()),
        };
        self.records.closed(&self.app, open.id, open.path, done, lock);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::hub::{HubSettings, Publisher, PublisherInfo};
    use bytes::Bytes;

    /// The avcC of writer's tests, as an FLV sequence header body.
    fn avc_header() -> Bytes {
        let avcc: &[u8] = &[
            0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a, 0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb,
            0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60, 0x01, 0x00,
            0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0,
        ];
        let mut p = vec![0x17, 0, 0, 0, 0];
        p.extend_from_slice(avcc);
        Bytes::from(p)
    }

    fn frame(key: bool) -> Bytes {
        Bytes::from(vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0])
    }

    /// Recorders on a hub made from `yaml`, wired as the server wires them.
    struct Rig {
        hub: Hub,
        metrics: Arc<Metrics>,
        records: Arc<Recorders>,
        events: tokio::sync::broadcast::Receiver<crate::webhooks::OtherEvent>,
        _shutdown: watch::Sender<bool>,
    }

    fn rig(yaml: &str) -> Rig {
        let config = Config::from_yaml(yaml, "t").unwrap();
        let hub = Hub::new(HubSettings::from_config(&config));
        let metrics = Arc::new(Metrics::new());
        let webhooks = Webhooks::start(&config.webhooks, metrics.clone()).unwrap();
        let events = webhooks.subscribe_other();
        let (shutdown_tx, shutdown) = watch::channel(false);
        let records = Recorders::new(hub.clone(), metrics.clone(), webhooks, shutdown);
        Rig {
            hub,
            metrics,
            records,
            events,
            _shutdown: shutdown_tx,
        }
    }

    fn publish(hub: &Hub, name: &str) -> (StreamKey, Publisher) {
        let key = hub.key("live", name).unwrap();
        let info = PublisherInfo {
            session_id: 1,
            protocol: "rtmp",
            remote: "127.0.0.1:1".into(),
            started: SystemTime::now(),
        };
        let p = hub.publish(&key, info).unwrap();
        (key, p)
    }

    /// A rig with `live/{name}` published and being recorded.
    fn recording(yaml: &str, name: &str) -> (Rig, StreamKey, Publisher) {
        let rig = rig(yaml);
        let (key, p) = publish(&rig.hub, name);
        rig.records.start(&key).unwrap();
        (rig, key, p)
    }

    async fn until(what: &str, mut ok: impl FnMut() -> bool) {
        for _ in 0..200 {
            if ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("{what}");
    }

    /// On a single-threaded runtime the recorder runs only when the test yields, so frames
    /// pushed without yielding overrun its place in the ring: it must cut its file and carry
    /// on from the next keyframe, while the publisher never waited.
    #[tokio::test]
    async fn a_recorder_that_falls_behind_cuts_its_file_and_continues_at_a_keyframe() {
        let root = std::env::temp_dir().join(format!("ferrocast-behind-{}", rand::random::<u64>()));
        let yaml = format!(
            "hub: {{reader_queue_frames: 16, slow_reader_max_skips: 100}}\n\
             apps: [{{name: live, record: {{mode: api, format: fmp4, fsync: false, path: {root:?}}}}}]\n"
        );
        let (rig, key, p) = recording(&yaml, "cam");
        let (metrics, records) = (&rig.metrics, &rig.records);
        p.push_video(0, avc_header()).unwrap();
        let mut ts = 0;
        let mut push = |n: u32| {
            for i in 0..n {
                p.push_video(ts, frame(i % 30 == 0)).unwrap();
                ts += 33;
            }
        };
        push(5);
        let dir = root.join("live").join("cam");
        until("the first file opens", || {
            dir.exists() && records.active_files().len() == 1
        })
        .await;
        let first = records.active_files()[0].0.clone();
        // 200 frames without letting the recorder run: it falls 16 frames behind at most.
        push(200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        // The next keyframe (each push starts with one), then a few frames after it.
        push(1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        push(5);
        until("a second file opens", || {
            records.active_files().first().is_some_and(|(id, _)| *id != first)
        })
        .await;
        assert_eq!(
            metrics.record_failures.with_label_values(&["live", "behind"]).get(),
            1,
            "the cut is counted"
        );
        records.stop(&key).unwrap();
        tokio::time::timeout(Duration::from_secs(10), records.finished())
            .await
            .unwrap();
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(files.len(), 2, "{files:?}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// A codec the format cannot carry (VP8 in MP4) is counted once as `codec`, not as a
    /// disk failure, and not retried at every keyframe of the publish.
    #[tokio::test(start_paused = true)]
    async fn a_codec_mp4_cannot_carry_is_counted_once_and_not_retried() {
        let root = std::env::temp_dir().join(format!("ferrocast-vp8-{}", rand::random::<u64>()));
        let yaml = format!("apps: [{{name: live, record: {{mode: api, format: mp4, path: {root:?}}}}}]\n");
        let (rig, key, p) = recording(&yaml, "vp8");
        let (metrics, records) = (&rig.metrics, &rig.records);
        // Enhanced RTMP: [ex | keyframe | packet type][FourCC vp08][data].
        p.push_video(0, Bytes::from_static(b"\x90vp08\x01\x02")).unwrap();
        let mut ts = 0;
        for round in 0..3 {
            for i in 0..60u32 {
                let b0 = if i % 30 == 0 { 0x91u8 } else { 0xa1 };
                let mut f = vec![b0];
                f.extend_from_slice(b"vp08\x00\x01\x02");
                p.push_video(ts, Bytes::from(f)).unwrap();
                ts += 33;
            }
            // Past the 5 s after which a failed file creation is tried again.
            tokio::time::sleep(Duration::from_secs(6)).await;
            let count = |r: &str| metrics.record_failures.with_label_values(&["live", r]).get();
            assert_eq!((count("codec"), count("io")), (1, 0), "after round {round}");
        }
        assert!(records.is_recording(&key), "the recorder keeps following the publish");
        assert!(!root.join("live").join("vp8").exists(), "no file was created");
    }

    /// While the server runs, a leftover no process holds (a pod that died on a shared
    /// volume, a rebuild that failed) is finished once it has not changed for a minute,
    /// without a restart; one another descriptor locks is left alone.
    #[tokio::test(start_paused = true)]
    async fn a_running_server_sweeps_stale_leftovers_that_nobody_holds() {
        use crate::codec::media::{FourCc, PacketKind};
        let root = std::env::temp_dir().join(format!("ferrocast-sweep-{}", rand::random::<u64>()));
        let yaml = format!("apps: [{{name: live, record: {{mode: api, format: mp4, path: {root:?}}}}}]\n");
        let Rig {
            records,
            mut events,
            _shutdown,
            ..
        } = rig(&yaml);
        tokio::spawn(records.clone().run());
        // Let the sweep at start find the directory empty.
        for _ in 0..20 {
            tokio::task::yield_now().await;
            std::thread::sleep(Duration::from_millis(10));
        }

        // Two MP4s a dead writer left in their fMP4 form, two seconds of H.264 each.
        let video = |ts: u32, key: bool, packet: PacketKind, payload: Bytes| {
            Arc::new(MediaFrame::new(
                FrameKind::Video,
                FourCc::AVC,
                ts,
                0,
                key,
                packet,
                payload,
            ))
        };
        let mut headers = Headers::default();
        headers.update(&video(0, true, PacketKind::SequenceHeader, avc_header()));
        let mut fmp4 = Vec::new();
        let mut w = Writer::start(RecordFormat::Fmp4, &headers, 0, 1000, &mut fmp4).unwrap();
        for i in 0..60u32 {
            w.push(
                &video(i * 33, i % 30 == 0, PacketKind::Frame, frame(i % 30 == 0)),
                &mut fmp4,
            )
            .unwrap();
        }
        w.finish(None, &mut fmp4).unwrap();
        let dir = root.join("live").join("cam");
        std::fs::create_dir_all(&dir).unwrap();
        let old = SystemTime::now() - Duration::from_secs(120);
        let leftover = |file: &str| {
            let path = dir.join(format!("{file}{FRAG_SUFFIX}"));
            let f = std::fs::File::create(&path).unwrap();
            std::io::Write::write_all(&mut &f, &fmp4).unwrap();
            f.set_modified(old).unwrap();
            (path, f)
        };
        let (free, _) = leftover("20261130T000000Z.mp4");
        let (held, held_file) = leftover("20261130T000100Z.mp4");
        held_file.lock().unwrap();

        tokio::time::sleep(SWEEP_EVERY + Duration::from_secs(1)).await;
        until("the free leftover is rebuilt", || {
            dir.join("20261130T000000Z.mp4").exists()
        })
        .await;
        assert!(!free.exists());
        let done = loop {
            let e = tokio::time::timeout(Duration::from_secs(5), events.recv())
                .await
                .unwrap()
                .unwrap();
            if e.event == "doneRecord" {
                break e.body;
            }
        };
        assert_eq!(done["id"], "live~cam~20261130T000000Z.mp4");
        assert_eq!(done["codecs"], serde_json::json!(["h264"]));
        let duration = done["duration"].as_f64().unwrap();
        assert!((duration - 2.0).abs() < 0.1, "{duration}");
        assert!(held.exists(), "a leftover another descriptor holds is not touched");
        assert!(!dir.join("20261130T000100Z.mp4").exists());
        drop(held_file);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
