//! Finished recordings to S3-compatible object storage, through `object_store`'s S3 client
//! (SigV4 signing, multipart uploads). One queue per app, worked by one task, one file at a
//! time: an upload that fails is retried with a doubling pause capped at `max_backoff_secs`
//! and never given up while its file exists, so storage that is down only delays uploads.
//! Nothing here is on a media path: recorders hand over a finished file and move on.
//!
//! Objects are only ever created, never overwritten: a key another file holds (another pod's
//! recording of the same name, with separate scratch volumes) makes the upload take the next
//! name, `{stamp}-N`. Each file's note ([`files::UploadNote`]) records a random token, stored
//! with the object as metadata, and the key once uploaded: a restart skips what it uploaded
//! before, and an object found under the key counts as this file only with its token and size.
//!
//! Credentials are read from their files for every upload round (a rotated Secret is picked
//! up) and never logged; without credential files requests are unsigned.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::aws::S3ConditionalPut;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ClientOptions, GetOptions, GetRange, ObjectStore, PutMode, PutMultipartOptions, PutOptions,
    RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::files::{self, RecordId, UploadNote};
use crate::config::UploadConfig;

/// Files below this go up in one PUT; larger ones in parts of this size.
const PART_SIZE: usize = 8 << 20;
/// Object metadata (`x-amz-meta-ferrocast-upload`) holding the uploading file's token.
const TOKEN_META: &str = "ferrocast-upload";
/// Names tried for one file before giving up (retried later).
const MAX_NAMES: u32 = 100;

/// Why storage could not be used.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("cannot read {what}: {source}")]
    Credentials { what: &'static str, source: std::io::Error },
    #[error("object storage: {0}")]
    Store(#[from] object_store::Error),
    #[error("local file: {0}")]
    Local(#[from] std::io::Error),
    #[error("no free object name")]
    NoFreeName,
}

/// How a file's upload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uploaded {
    /// The object was created now (or an earlier attempt's object was found): announce it.
    Sent { key: String, size: u64 },
    /// The file's note says an earlier run uploaded it: nothing to announce.
    Known { key: String, size: u64 },
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
            // `If-None-Match: *`: an object is created, never replaced.
            .with_conditional_put(S3ConditionalPut::ETagMatch)
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
        } else {
            // As documented: no credential files, unsigned requests (object_store would
            // otherwise look for credentials in the environment and instance metadata).
            b = b.with_skip_signature(true);
        }
        Ok(Arc::new(b.build()?))
    }

    /// Uploads `id`'s file at `path` unless its note says it is in the bucket already.
    pub async fn upload(&self, id: &RecordId, path: &std::path::Path) -> Result<Uploaded, UploadError> {
        let size = tokio::fs::metadata(path).await?.len();
        let at = path.to_path_buf();
        let note = tokio::task::spawn_blocking(move || files::read_note(&at))
            .await
            .ok()
            .flatten();
        if let Some(key) = note.as_ref().and_then(|n| n.uploaded(size)) {
            return Ok(Uploaded::Known {
                key: key.to_string(),
                size,
            });
        }
        let token = match note {
            Some(n) => n.token,
            None => {
                let note = UploadNote {
                    token: format!("{:032x}", rand::random::<u128>()),
                    ..UploadNote::default()
                };
                // Without its note (a full disk) the upload still goes ahead: a crash right
                // after it would then upload the file again under the next name, never lose it.
                if let Err(e) = write_note(path, &note).await {
                    warn!(path = %path.display(), "upload note not written: {e}");
                }
                note.token
            }
        };
        let store = self.store()?;
        for n in 0..MAX_NAMES {
            let Some(named) = id.numbered(n) else { break };
            let key = self.key(&named);
            let at = ObjectPath::from(key.as_str());
            let created = self.create(&store, &at, path, size, &token).await?;
            if !created
                && head(&store, &at)
                    .await?
                    .is_none_or(|(s, t)| s != size || t.as_deref() != Some(&token))
            {
                continue;
            }
            let note = UploadNote {
                token,
                key: Some(key.clone()),
                size: Some(size),
            };
            if let Err(e) = write_note(path, &note).await {
                warn!(path = %path.display(), "upload note not written: {e}");
            }
            return Ok(Uploaded::Sent { key, size });
        }
        Err(UploadError::NoFreeName)
    }

    /// Creates the object `at` from the file; false when an object is there already.
    async fn create(
        &self,
        store: &Arc<dyn ObjectStore>,
        at: &ObjectPath,
        path: &std::path::Path,
        size: u64,
        token: &str,
    ) -> Result<bool, UploadError> {
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::Metadata(TOKEN_META.into()), token.to_string().into());
        let mut file = tokio::fs::File::open(path).await?;
        if size < PART_SIZE as u64 {
            let mut buf = Vec::with_capacity(size as usize);
            file.read_to_end(&mut buf).await?;
            let opts = PutOptions {
                mode: PutMode::Create,
                attributes,
                ..PutOptions::default()
            };
            return match store.put_opts(at, Bytes::from(buf).into(), opts).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
                Err(e) => Err(e.into()),
            };
        }
        // object_store completes multipart uploads unconditionally: look first (a race with
        // another pod uploading the same name in the same moment remains).
        if head(store, at).await?.is_some() {
            return Ok(false);
        }
        let opts = PutMultipartOptions {
            attributes,
            ..PutMultipartOptions::default()
        };
        let upload = store.put_multipart_opts(at, opts).await?;
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
                Ok(true)
            }
            Err(e) => {
                let _ = w.abort().await;
                Err(e)
            }
        }
    }

    /// The size of the object `key`, if there is one.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, UploadError> {
        Ok(head(&self.store()?, &ObjectPath::from(key))
            .await?
            .map(|(size, _)| size))
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

    /// The bytes of the object `key` in `range` (all when `None`), as a stream.
    pub async fn get(
        &self,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<futures_util::stream::BoxStream<'static, Result<Bytes, object_store::Error>>, UploadError> {
        let opts = GetOptions {
            range: range.map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let got = self.store()?.get_opts(&ObjectPath::from(key), opts).await?;
        Ok(got.into_stream())
    }

    pub async fn delete(&self, key: &str) -> Result<(), UploadError> {
        match self.store()?.delete(&ObjectPath::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Size and upload token of the object `at`, if there is one.
async fn head(store: &Arc<dyn ObjectStore>, at: &ObjectPath) -> Result<Option<(u64, Option<String>)>, UploadError> {
    let opts = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    match store.get_opts(at, opts).await {
        Ok(got) => {
            let token = got
                .attributes
                .get(&Attribute::Metadata(TOKEN_META.into()))
                .map(|v| v.to_string());
            Ok(Some((got.meta.size, token)))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn write_note(path: &std::path::Path, note: &UploadNote) -> std::io::Result<()> {
    let (path, note) = (path.to_path_buf(), note.clone());
    tokio::task::spawn_blocking(move || files::write_note(&path, &note))
        .await
        .map_err(std::io::Error::other)?
}

/// A finished file waiting for its upload.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: RecordId,
    pub path: PathBuf,
    /// What the doneRecord event says once the object is in place.
    pub done: super::Done,
    /// The file's descriptor holding its shared lock while it waits and is uploaded, so no
    /// other pod's sweep takes it and the records API does not delete it.
    pub lock: Option<Arc<std::fs::File>>,
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

/// Works `queue`: one file at a time, retried until it is uploaded (or its file is gone).
/// It keeps working after shutdown began: the server waits for the queue within its grace.
pub async fn run(queue: Arc<Queue>, app: String, records: Arc<super::Recorders>, max_backoff: Duration) {
    let metrics = records.metrics.clone();
    let mut backoff = Duration::from_secs(1);
    loop {
        let Some(job) = queue.front() else {
            queue.wake.notified().await;
            continue;
        };
        if !tokio::fs::try_exists(&job.path).await.unwrap_or(false) {
            queue.pop();
            records.pending_changed();
            continue;
        }
        match queue.storage.upload(&job.id, &job.path).await {
            Ok(Uploaded::Sent { key, size }) => {
                metrics.record_uploads.with_label_values(&[&app, "ok"]).inc();
                metrics.record_upload_bytes.with_label_values(&[&app]).inc_by(size);
                info!(record = %job.id.id(), key, bytes = size, "recording uploaded");
                queue.pop();
                records.uploaded(&job, size, key, true).await;
                backoff = Duration::from_secs(1);
            }
            Ok(Uploaded::Known { key, size }) => {
                queue.pop();
                records.uploaded(&job, size, key, false).await;
            }
            Err(e) => {
                metrics.record_uploads.with_label_values(&[&app, "retry"]).inc();
                warn!(record = %job.id.id(), retry_in_secs = backoff.as_secs(), "recording upload failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}
