//! `/records` and `/streams/{app}/{name}/record`: recordings listed (local files and
//! uploaded objects), downloaded with HTTP Range, deleted; API-driven recording started and
//! stopped. Record ids name a file only inside its stream's directory ([`RecordId::parse`]).

use std::collections::{BTreeMap, HashSet};

use axum::body::Body;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::*;
use crate::record::files::{self, RecordId};
use crate::record::RecordError;

/// Filters of `GET /records`.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RecordFilter {
    app: Option<String>,
    stream: Option<String>,
    /// Recordings started at or after this (Unix seconds).
    from: Option<u64>,
    /// Recordings started before this (Unix seconds).
    to: Option<u64>,
}

#[derive(Debug, Serialize)]
struct RecordJson {
    id: String,
    app: String,
    name: String,
    file: String,
    format: &'static str,
    size: u64,
    /// Milliseconds since the epoch (from the file name, UTC).
    start: u64,
    /// `recording`, `local` (finished, not uploaded) or `uploaded`.
    state: &'static str,
    local: bool,
    bucket: Option<String>,
    key: Option<String>,
}

pub(super) async fn list(
    _: Authed,
    State(api): State<Arc<Api>>,
    Query(filter): Query<RecordFilter>,
) -> Result<Response, ApiError> {
    let records = &api.ctx.records;
    let mut out: BTreeMap<RecordId, RecordJson> = BTreeMap::new();
    for app in records.recording_apps() {
        if filter.app.as_ref().is_some_and(|a| *a != app.name) {
            continue;
        }
        let storage = records.storage(&app);
        let (root, name) = (app.record.path.clone(), app.name.clone());
        let local = tokio::task::spawn_blocking(move || files::list_local(&root, &name))
            .await
            .unwrap_or_default();
        // Objects that local files' notes name: listed with their file, not again.
        let mut claimed = HashSet::new();
        for f in local {
            let uploaded = f.note.as_ref().and_then(|n| n.uploaded(f.size)).map(str::to_string);
            let state = match (f.writing, &uploaded) {
                (true, _) => "recording",
                (false, Some(_)) => "uploaded",
                (false, None) => "local",
            };
            let mut j = json_of(&f.id, f.size, state, true);
            if let Some(key) = uploaded {
                j.bucket = storage.as_ref().map(|s| s.bucket().to_string());
                claimed.insert(key.clone());
                j.key = Some(key);
            }
            out.entry(f.id).or_insert(j);
        }
        if let Some(storage) = storage {
            match storage.list(&app.name).await {
                Ok(objects) => {
                    for o in objects {
                        // A local file of the same name without this key in its note is
                        // another recording (another pod's, uploaded under its own name).
                        if claimed.contains(&o.key) || out.contains_key(&o.id) {
                            continue;
                        }
                        let mut j = json_of(&o.id, o.size, "uploaded", false);
                        j.bucket = Some(storage.bucket().to_string());
                        j.key = Some(o.key);
                        out.insert(o.id, j);
                    }
                }
                Err(e) => warn!(app = %app.name, "recordings in object storage not listed: {e}"),
            }
        }
    }
    let list: Vec<RecordJson> = out
        .into_values()
        .filter(|r| filter.stream.as_ref().is_none_or(|s| *s == r.name))
        .filter(|r| filter.from.is_none_or(|t| r.start >= t * 1000))
        .filter(|r| filter.to.is_none_or(|t| r.start < t * 1000))
        .collect();
    Ok(ok(json!(list)))
}

fn json_of(id: &RecordId, size: u64, state: &'static str, local: bool) -> RecordJson {
    RecordJson {
        id: id.id(),
        app: id.app.clone(),
        name: id.name.clone(),
        file: id.file.clone(),
        format: id.format(),
        size,
        start: id.start_ms(),
        state,
        local,
        bucket: None,
        key: None,
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound("record not found".into())
}

/// A record as the API finds it.
struct Found {
    id: RecordId,
    app: AppConfig,
    /// The local file, if there.
    local: Option<std::path::PathBuf>,
    /// A live writer holds it (or its `.frag`).
    writing: bool,
    /// Its object's key: the one the local file's note names, or without a local file the
    /// id's own.
    key: Option<String>,
}

fn resolve(api: &Api, id: &str) -> Result<Found, ApiError> {
    let id = RecordId::parse(id).ok_or_else(not_found)?;
    let app = api.ctx.records.app(&id.app).ok_or_else(not_found)?;
    let path = id.local_path(&app.record.path);
    let meta = std::fs::metadata(&path).ok().filter(|m| m.is_file());
    let writing =
        files::is_being_written(&path) || files::is_being_written(&files::with_suffix(&path, files::FRAG_SUFFIX));
    let storage = api.ctx.records.storage(&app);
    let key = match &meta {
        Some(m) => files::read_note(&path).and_then(|n| n.uploaded(m.len()).map(str::to_string)),
        None => storage.as_ref().map(|s| s.key(&id)),
    };
    Ok(Found {
        local: meta.map(|_| path),
        id,
        app,
        writing,
        key: key.filter(|_| storage.is_some()),
    })
}

/// A single byte range of a `Range` header over `len` bytes: `Ok(None)` for the whole file
/// (no header, or one that is not a valid single byte range: RFC 9110 has it ignored),
/// `Err` when a valid range cannot be satisfied.
fn range(headers: &HeaderMap, len: u64) -> Result<Option<std::ops::Range<u64>>, ()> {
    let Some(v) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    // Several ranges: answered with the whole file, which RFC 9110 allows.
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    let r = if a.is_empty() {
        let Some(n) = Some(b).filter(|b| digits(b)).and_then(|b| b.parse::<u64>().ok()) else {
            return Ok(None);
        };
        if n == 0 {
            return Err(());
        }
        len.saturating_sub(n)..len
    } else {
        let Some(start) = Some(a).filter(|a| digits(a)).and_then(|a| a.parse::<u64>().ok()) else {
            return Ok(None);
        };
        let end = if b.is_empty() {
            len
        } else {
            let Some(last) = Some(b).filter(|b| digits(b)).and_then(|b| b.parse::<u64>().ok()) else {
                return Ok(None);
            };
            if last < start {
                return Ok(None);
            }
            last.saturating_add(1).min(len)
        };
        start..end
    };
    if r.start >= len || r.start >= r.end {
        return Err(());
    }
    Ok(Some(r))
}

pub(super) async fn download(
    _: Authed,
    State(api): State<Arc<Api>>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Found {
        id,
        app,
        local,
        writing,
        key,
    } = resolve(&api, &id)?;
    if writing {
        return Err(ApiError::Conflict("the record is still being written"));
    }
    let content_type = if id.format() == "flv" {
        "video/x-flv"
    } else {
        "video/mp4"
    };
    let (len, body) = match local {
        Some(path) => {
            let mut file = tokio::fs::File::open(&path).await.map_err(|_| not_found())?;
            let len = file.metadata().await.map_err(|_| not_found())?.len();
            let r = match range(&headers, len) {
                Ok(r) => r,
                Err(()) => return Ok(unsatisfiable(len)),
            };
            let span = r.clone().unwrap_or(0..len);
            file.seek(std::io::SeekFrom::Start(span.start))
                .await
                .map_err(|_| ApiError::Internal("record unreadable"))?;
            let stream = tokio_util_free_stream(file.take(span.end - span.start));
            (len, (r, Body::from_stream(stream)))
        }
        None => {
            let storage = api.ctx.records.storage(&app).ok_or_else(not_found)?;
            let key = key.ok_or_else(not_found)?;
            let len = match storage.size(&key).await {
                Ok(Some(n)) => n,
                Ok(None) => return Err(not_found()),
                Err(e) => {
                    warn!(record = %id.id(), "record not read from object storage: {e}");
                    return Err(ApiError::Unavailable("object storage unavailable"));
                }
            };
            let r = match range(&headers, len) {
                Ok(r) => r,
                Err(()) => return Ok(unsatisfiable(len)),
            };
            let stream = storage.get(&key, r.clone()).await.map_err(|e| {
                warn!(record = %id.id(), "record not read from object storage: {e}");
                ApiError::Unavailable("object storage unavailable")
            })?;
            (len, (r, Body::from_stream(stream)))
        }
    };
    let (r, body) = body;
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    h.insert(header::ACCEPT_RANGES, header::HeaderValue::from_static("bytes"));
    let disposition = format!("attachment; filename=\"{}-{}-{}\"", id.app, id.name, id.file);
    if let Ok(v) = header::HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    match r {
        Some(r) => {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = resp.headers_mut();
            h.insert(header::CONTENT_LENGTH, (r.end - r.start).into());
            if let Ok(v) = header::HeaderValue::from_str(&format!("bytes {}-{}/{len}", r.start, r.end - 1)) {
                h.insert(header::CONTENT_RANGE, v);
            }
        }
        None => {
            resp.headers_mut().insert(header::CONTENT_LENGTH, len.into());
        }
    }
    Ok(resp)
}

fn unsatisfiable(len: u64) -> Response {
    let mut resp = ApiError::BadRequest("range not satisfiable".into()).into_response();
    *resp.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
    if let Ok(v) = header::HeaderValue::from_str(&format!("bytes */{len}")) {
        resp.headers_mut().insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// A file's bytes as a body stream, read in 64 KiB pieces.
fn tokio_util_free_stream<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    reader: R,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures_util::stream::unfold(reader, |mut r| async move {
        let mut buf = vec![0u8; 64 << 10];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), r))
            }
            Err(e) => Some((Err(e), r)),
        }
    })
}

pub(super) async fn remove(
    _: Authed,
    State(api): State<Arc<Api>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let Found {
        id,
        app,
        local,
        writing,
        key,
    } = resolve(&api, &id)?;
    if writing {
        return Err(ApiError::Conflict("the record is still being written; stop it first"));
    }
    let mut found = false;
    if let Some(path) = local {
        // Held while it is deleted: a file another process holds (its upload is pending, or
        // another pod finalizes it) is left alone.
        let lock = files::try_lock(&path).map_err(|_| not_found())?;
        if lock.is_none() {
            return Err(ApiError::Conflict("the record is in use (its upload is pending)"));
        }
        tokio::fs::remove_file(&path)
            .await
            .map_err(|_| ApiError::Internal("record not removed"))?;
        files::remove_note(&path);
        found = true;
    }
    if let (Some(storage), Some(key)) = (api.ctx.records.storage(&app), key) {
        match storage.size(&key).await {
            Ok(Some(_)) => {
                storage.delete(&key).await.map_err(|e| {
                    warn!(record = %id.id(), "record not deleted from object storage: {e}");
                    ApiError::Unavailable("object storage unavailable")
                })?;
                found = true;
            }
            Ok(None) => {}
            Err(e) => {
                warn!(record = %id.id(), "object storage not reached: {e}");
                return Err(ApiError::Unavailable("object storage unavailable"));
            }
        }
    }
    if !found {
        return Err(not_found());
    }
    info!(record = %id.id(), "record deleted");
    Ok(ok(json!({"id": id.id()})))
}

fn record_error(e: RecordError) -> ApiError {
    match e {
        RecordError::NotPublished | RecordError::NotRecording => ApiError::NotFound(e.to_string()),
        RecordError::ShuttingDown => ApiError::Unavailable("server is shutting down"),
        RecordError::Off | RecordError::AlreadyRecording => ApiError::BadRequest(e.to_string()),
    }
}

pub(super) async fn start(
    _: Authed,
    State(api): State<Arc<Api>>,
    UrlPath((app, name)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let key = stream_key(&api, &app, &name)?;
    api.ctx.records.start(&key).map_err(record_error)?;
    Ok(ok(json!({"app": key.app, "name": key.name, "recording": true})))
}

pub(super) async fn stop(
    _: Authed,
    State(api): State<Arc<Api>>,
    UrlPath((app, name)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let key = stream_key(&api, &app, &name)?;
    api.ctx.records.stop(&key).map_err(record_error)?;
    Ok(ok(json!({"app": key.app, "name": key.name, "recording": false})))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_range(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, v.parse().unwrap());
        h
    }

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        assert_eq!(range(&HeaderMap::new(), 100), Ok(None));
        assert_eq!(range(&with_range("bytes=0-9"), 100), Ok(Some(0..10)));
        assert_eq!(range(&with_range("bytes=90-"), 100), Ok(Some(90..100)));
        assert_eq!(range(&with_range("bytes=-5"), 100), Ok(Some(95..100)));
        assert_eq!(range(&with_range("bytes=50-500"), 100), Ok(Some(50..100)));
        assert_eq!(range(&with_range("bytes=100-"), 100), Err(()));
        assert_eq!(range(&with_range("bytes=-0"), 100), Err(()));
        // Not a valid byte range: ignored, the whole file.
        assert_eq!(range(&with_range("bytes=9-3"), 100), Ok(None));
        assert_eq!(range(&with_range("bytes=x-3"), 100), Ok(None));
        assert_eq!(range(&with_range("bytes=5"), 100), Ok(None));
        assert_eq!(range(&with_range("bytes=+1-3"), 100), Ok(None));
        assert_eq!(range(&with_range("items=0-3"), 100), Ok(None));
        assert_eq!(range(&with_range("bytes=0-1,5-6"), 100), Ok(None));
    }
}
