//! Finished recordings to S3-compatible object storage, through `object_store`'s S3 client
//! (SigV4 signing, multipart uploads). One queue per app, worked by one task, one file at a
//! time: an upload that fails is retried with a doubling pause capped at `max_backoff_secs`
//! and never given up while its file exists, so storage that is down only delays uploads.
//! Nothing here is on a media path: recorders hand over a finished file and move on.
//!
//! Credentials are read from their files for every upload round (a rotated Secret is picked
//! up) and never logged.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, RetryConfig, WriteMultipart};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::files::RecordId;
use crate::config::UploadConfig;

/// Files below this go up in one PUT; larger ones in parts of this size.
const PART_SIZE: usize = 8 << 20;

/// Why storage could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("cannot read {what}: {source}")]
    Credentials { what: &'static str, source: std::io::Error },
    #[error("object storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("local file: {0}")]
    Local(#[from] std::io::Error),
}

/// An app's bucket.
#[derive(Clone)]
pub struct Storage {
    config: UploadConfig,
}

/// An object of ours in the bucket.
#[derive(Debug, Clone)]
pub struct StoredObject {
    pub id: RecordId,
    pub key: String,
    pub size: u64,
}

impl Storage {
    pub fn new(config: UploadConfig) -> Storage {
        Storage { config }
    }

    pub fn bucket(&self) -> &str {
        &self.config.bucket
    }

    pub fn key(&self, id: &RecordId) -> String {
        id.key(&self.config.prefix)
    }

    fn store(&self) -> Result<Arc<dyn ObjectStore>, UploadError> {
        let c = &self.config;
        let mut b = AmazonS3Builder::new()
            .with_region(&c.region)
            .with_bucket_name(&c.bucket)
            .with_virtual_hosted_style_request(!c.path_style)
            // Our own loop retries with its own pauses; one attempt per call here.
            .with_retry(RetryConfig {
                max_retries: 0,
                ..RetryConfig::default()
            })
            .with_client_options(
                ClientOptions::new()
                    .with_connect_timeout(Duration::from_secs(5))
                    .with_timeout(Duration::from_secs(120)),
            );
        if !c.endpoint.is_empty() {
            b = b
                .with_endpoint(&c.endpoint)
                .with_allow_http(c.endpoint.starts_with("http://"));
        }
        if let (Some(id), Some(secret)) = (&c.access_key_id_file, &c.secret_access_key_file) {
            let read = |p: &PathBuf, what| {
                std::fs::read_to_string(p)
                    .map(|s| s.trim().to_string())
                    .map_err(|source| UploadError::Credentials { what, source })
            };
            b = b
                .with_access_key_id(read(id, "access_key_id_file")?)
                .with_secret_access_key(read(secret, "secret_access_key_file")?);
        }
        Ok(Arc::new(b.build()?))
    }

    /// Uploads the file at `path` as `id`'s object; returns its size.
    pub async fn put_file(&self, id: &RecordId, path: &std::path::Path) -> Result<u64, UploadError> {
        let store = self.store()?;
        let key = ObjectPath::from(self.key(id));
        let mut file = tokio::fs::File::open(path).await?;
        let size = file.metadata().await?.len();
        if size < PART_SIZE as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            file.read_to_end(&mut buf).await?;
            store.put(&key, Bytes::from(buf).into()).await?;
            return Ok(size);
        }
        let upload = store.put_multipart(&key).await?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; PART_SIZE];
        let sent = async {
            loop {
                w.wait_for_capacity(2).await?;
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                w.write(&buf[..n]);
            }
            Ok::<_, UploadError>(())
        }
        .await;
        match sent {
            Ok(()) => {
                w.finish().await?;
                Ok(size)
            }
            Err(e) => {
                let _ = w.abort().await;
                Err(e)
            }
        }
    }

    /// The size of `id`'s object, if there is one.
    pub async fn size(&self, id: &RecordId) -> Result<Option<u64>, UploadError> {
        match self.store()?.head(&ObjectPath::from(self.key(id))).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Our objects of `app`.
    pub async fn list(&self, app: &str) -> Result<Vec<StoredObject>, UploadError> {
        let store = self.store()?;
        let prefix = ObjectPath::from(format!("{}{app}/", self.config.prefix));
        let mut out = Vec::new();
        let mut stream = store.list(Some(&prefix));
        while let Some(meta) = stream.next().await {
            let meta = meta?;
            let key = meta.location.to_string();
            if let Some(id) = RecordId::from_key(&self.config.prefix, &key) {
                out.push(StoredObject {
                    id,
                    key,
                    size: meta.size,
                });
            }
        }
        Ok(out)
    }

    /// The bytes of `id`'s object in `range` (all when `None`), as a stream.
    pub async fn get(
        &self,
        id: &RecordId,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<Bytes, object_store::Error>>, UploadError> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let got = self.store()?.get_opts(&ObjectPath::from(self.key(id)), opts).await?;
        Ok(got.into_stream())
    }

    pub async fn delete(&self, id: &RecordId) -> Result<(), UploadError> {
        match self.store()?.delete(&ObjectPath::from(self.key(id))).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// A finished file waiting for its upload.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: RecordId,
    pub path: PathBuf,
    /// What the doneRecord event says once the object is in place.
    pub done: super::Done,
}

/// One app's upload queue.
pub struct Queue {
    pub storage: Storage,
    jobs: Mutex<VecDeque<Job>>,
    wake: Notify,
}

impl Queue {
    pub fn new(storage: Storage) -> Arc<Queue> {
        Arc::new(Queue {
            storage,
            jobs: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
        })
    }

    pub fn push(&self, job: Job) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).push_back(job);
        self.wake.notify_one();
    }

    pub fn len(&self) -> usize {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn front(&self) -> Option<Job> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).front().cloned()
    }

    fn pop(&self) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
    }
}

/// Works `queue` until `shutdown`: one file at a time, retried until it is uploaded (or its
/// file is gone).
pub async fn run(
    queue: Arc<Queue>,
    app: String,
    records: Arc<super::Recorders>,
    max_backoff: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let metrics = records.metrics.clone();
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(job) = queue.front() else {
            tokio::select! {
                _ = queue.wake.notified() => continue,
                _ = shutdown.changed() => return,
            }
        };
        if !tokio::fs::try_exists(&job.path).await.unwrap_or(false) {
            queue.pop();
            records.pending_changed();
            continue;
        }
        let result = async {
            // Already there (a restart after the upload, before the local copy went): done.
            let local = tokio::fs::metadata(&job.path).await?.len();
            if queue.storage.size(&job.id).await? == Some(local) {
                return Ok(local);
            }
            queue.storage.put_file(&job.id, &job.path).await
        }
        .await;
        match result {
            Ok(size) => {
                metrics.record_uploads.with_label_values(&[&app, "ok"]).inc();
                metrics.record_upload_bytes.with_label_values(&[&app]).inc_by(size);
                info!(record = %job.id.id(), bytes = size, "recording uploaded");
                queue.pop();
                records.uploaded(&job, size, queue.storage.key(&job.id)).await;
                backoff = Duration::from_secs(1);
            }
            Err(e) => {
                metrics.record_uploads.with_label_values(&[&app, "retry"]).inc();
                warn!(record = %job.id.id(), retry_in_secs = backoff.as_secs(), "recording upload failed: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}
