//! Recording files on the scratch disk: their names (`{path}/{app}/{name}/{UTC start}.{ext}`,
//! never overwritten), record ids, listing, and the blocking work done off the runtime:
//! writing fragments, rebuilding an MP4 with its `moov` first, and tidying up what a crash
//! left behind. Everything here runs in `spawn_blocking`.
//!
//! # Locks
//! The scratch volume may be shared by several pods (a ReadWriteMany PVC). A file a live
//! process owns carries an advisory lock (`flock`) on an open descriptor: exclusive while it
//! is written or rebuilt, shared once it is finished and waits in an upload queue. Whoever
//! tidies, uploads, lists or deletes takes the exclusive lock first and leaves a locked file
//! alone; a process that dies releases its locks with its descriptors.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrocast_media::faststart::{box_header, Index, MAX_META_BOX};

use crate::hub::is_valid_name;

/// Suffix of the crash-safe fMP4 an MP4 recording is written as until it closes.
pub const FRAG_SUFFIX: &str = ".frag";
/// Suffix of an MP4 being rebuilt (removed if a crash interrupts it: the `.frag` remains).
pub const TMP_SUFFIX: &str = ".tmp";
/// Suffix of the note beside a file that tells its upload apart ([`UploadNote`]).
pub const UPLOAD_SUFFIX: &str = ".upload";
/// An empty file younger than this may have just been created by another pod that has not
/// locked it yet: it is no leftover.
const FRESH: Duration = Duration::from_secs(60);

/// Takes the exclusive lock of the file at `path` on a new descriptor; `None` when another
/// descriptor (this process's or another pod's) holds a lock on it.
pub fn try_lock(path: &Path) -> io::Result<Option<File>> {
    let f = File::open(path)?;
    match f.try_lock() {
        Ok(()) => Ok(Some(f)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Whether a live writer holds the exclusive lock of `path` (a file being recorded or
/// rebuilt; a finished file waiting for its upload holds a shared one).
pub fn is_being_written(path: &Path) -> bool {
    File::open(path).is_ok_and(|f| matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock)))
}

/// Whether a file found unlocked may be taken over: older than `min_age`, and not an empty
/// file just created (its creator locks it a moment later).
fn takeable(meta: &fs::Metadata, min_age: Duration) -> bool {
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    age >= min_age && !(meta.len() == 0 && age < FRESH)
}

/// `20261130T031500Z` for a time (UTC).
pub fn utc_stamp(t: SystemTime) -> String {
    let u = crate::utc::Utc::of(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        u.year, u.month, u.day, u.hour, u.minute, u.second
    )
}

/// Whether `file` is a recording's file name as we make them: a UTC stamp, an optional
/// `-N` to keep names unique, and `.flv` or `.mp4`.
pub fn is_record_file(file: &str) -> bool {
    let Some((stem, ext)) = file.rsplit_once('.') else {
        return false;
    };
    if ext != "flv" && ext != "mp4" {
        return false;
    }
    let (stamp, n) = stem.split_once('-').unwrap_or((stem, "1"));
    let b = stamp.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
        && !n.is_empty()
        && n.len() <= 6
        && n.bytes().all(|c| c.is_ascii_digit())
}

/// A record's identity: app, stream and file name; its id is `{app}~{name}~{file}` (`~` is
/// in none of them), so an id can only ever name a file inside its stream's directory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    pub app: String,
    pub name: String,
    pub file: String,
}

impl RecordId {
    pub fn parse(id: &str) -> Option<RecordId> {
        let mut parts = id.split('~');
        let (app, name, file) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !is_valid_name(app) || !is_valid_name(name) || !is_record_file(file) {
            return None;
        }
        Some(RecordId {
            app: app.into(),
            name: name.into(),
            file: file.into(),
        })
    }

    pub fn id(&self) -> String {
        format!("{}~{}~{}", self.app, self.name, self.file)
    }

    pub fn local_path(&self, root: &Path) -> PathBuf {
        root.join(&self.app).join(&self.name).join(&self.file)
    }

    /// The `n`th other name of this file (`n` = 0: itself), for an object key another file
    /// holds: `{stamp}-{m+n}` where the file is `{stamp}-{m}` (`m` = 1 without a number).
    pub fn numbered(&self, n: u32) -> Option<RecordId> {
        if n == 0 {
            return Some(self.clone());
        }
        let (stem, ext) = self.file.rsplit_once('.')?;
        let (stamp, m) = match stem.split_once('-') {
            Some((s, m)) => (s, m.parse::<u32>().ok()?),
            None => (stem, 1),
        };
        let file = format!("{stamp}-{}.{ext}", m.checked_add(n)?);
        is_record_file(&file).then(|| RecordId { file, ..self.clone() })
    }

    /// The object key under `prefix`.
    pub fn key(&self, prefix: &str) -> String {
        format!("{prefix}{}/{}/{}", self.app, self.name, self.file)
    }

    /// The id of an object key under `prefix`, if it is one of ours.
    pub fn from_key(prefix: &str, key: &str) -> Option<RecordId> {
        let rest = key.strip_prefix(prefix)?;
        let mut parts = rest.split('/');
        let (app, name, file) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        RecordId::parse(&format!("{app}~{name}~{file}"))
    }

    pub fn format(&self) -> &'static str {
        if self.file.ends_with(".flv") {
            "flv"
        } else {
            "mp4"
        }
    }

    /// Milliseconds since the epoch of the stamp in the name.
    pub fn start_ms(&self) -> u64 {
        let s = self.file.as_bytes();
        let num = |r: std::ops::Range<usize>| -> i64 {
            std::str::from_utf8(&s[r])
                .ok()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0)
        };
        let u = crate::utc::Utc {
            year: num(0..4),
            month: num(4..6),
            day: num(6..8),
            hour: num(9..11),
            minute: num(11..13),
            second: num(13..15),
            millis: 0,
        };
        u.to_system_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Creates a new file for a recording of `app/name` started at `start`, never replacing one:
/// a name taken gets `-2`, `-3`, ... `suffix` is added to the created file's name (`.frag`
/// for MP4s still being written). Returns the record id and the open file.
pub fn create(
    root: &Path,
    app: &str,
    name: &str,
    start: SystemTime,
    ext: &str,
    suffix: &str,
) -> io::Result<(RecordId, File)> {
    let dir = root.join(app).join(name);
    fs::create_dir_all(&dir)?;
    let stamp = utc_stamp(start);
    for n in 1..1000 {
        let file = if n == 1 {
            format!("{stamp}.{ext}")
        } else {
            format!("{stamp}-{n}.{ext}")
        };
        // Neither the final name nor a file still being written may exist.
        if dir.join(&file).exists() {
            continue;
        }
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(format!("{file}{suffix}")))
        {
            Ok(f) => {
                // Held until the file is finished; another pod's tidying that grabbed the
                // new, empty file first makes us take the next name.
                match f.try_lock() {
                    Ok(()) => {}
                    Err(TryLockError::WouldBlock) => continue,
                    Err(TryLockError::Error(e)) => return Err(e),
                }
                let id = RecordId {
                    app: app.into(),
                    name: name.into(),
                    file,
                };
                return Ok((id, f));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free file name"))
}

/// Appends `bytes` and, with `sync`, makes them durable before returning.
pub fn append(file: &mut File, bytes: &[u8], sync: bool) -> io::Result<()> {
    file.write_all(bytes)?;
    if sync {
        file.sync_data()?;
    }
    Ok(())
}

/// The sample index of the fMP4 at `src` (complete fragments only).
fn index_fmp4(src: &mut File) -> io::Result<(Index, Vec<u8>)> {
    let len = src.metadata()?.len();
    let mut index = Index::new();
    let mut moov = Vec::new();
    let mut at = 0u64;
    let mut head = [0u8; 16];
    while at + 8 <= len {
        src.seek(SeekFrom::Start(at))?;
        let n = read_up_to(src, &mut head)?;
        let Some(h) = box_header(&head[..n]).map_err(invalid)? else {
            break;
        };
        let size = h.size.unwrap_or(len - at);
        let complete = at + size <= len;
        match &h.kind {
            b"moov" | b"moof" if complete => {
                if size > MAX_META_BOX {
                    return Err(invalid("metadata box too large"));
                }
                let mut b = vec![0u8; size as usize];
                src.seek(SeekFrom::Start(at))?;
                src.read_exact(&mut b)?;
                if &h.kind == b"moov" {
                    index.push_moov(&b).map_err(invalid)?;
                    moov = b;
                } else {
                    index.push_moof(at, &b).map_err(invalid)?;
                }
            }
            b"mdat" => index.push_mdat(at + h.header_len, size.min(len - at) - h.header_len),
            _ => {}
        }
        if !complete {
            break;
        }
        at += size;
    }
    Ok((index, moov))
}

/// What a finished file holds: media seconds and codec names (`h264`, `aac`, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MediaInfo {
    pub duration: f64,
    pub codecs: Vec<String>,
}

/// Rebuilds the fMP4 at `frag` into a faststart MP4 at `out` (written to `out.tmp`, synced,
/// then renamed), and removes `frag`. Returns what the file holds and the new file, which
/// stays exclusively locked while the descriptor is open. The caller holds `frag`'s lock.
pub fn finalize_mp4(frag: &Path, out: &Path) -> io::Result<(MediaInfo, File)> {
    let mut src = File::open(frag)?;
    let (index, moov) = index_fmp4(&mut src)?;
    let plan = index.finish().map_err(invalid)?;
    let tmp = with_suffix(out, TMP_SUFFIX);
    let mut dst = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    if dst.try_lock().is_err() {
        let _ = fs::remove_file(&tmp);
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "rebuild taken by another process",
        ));
    }
    let copied = (|| -> io::Result<()> {
        let mut w = io::BufWriter::with_capacity(1 << 20, &mut dst);
        w.write_all(&plan.head)?;
        let mut buf = vec![0u8; 1 << 20];
        for (offset, len) in &plan.copies {
            src.seek(SeekFrom::Start(*offset))?;
            let mut left = *len;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                src.read_exact(&mut buf[..n])?;
                w.write_all(&buf[..n])?;
                left -= n as u64;
            }
        }
        w.flush()?;
        drop(w);
        dst.sync_all()
    })();
    if let Err(e) = copied {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, out)?;
    if let Some(dir) = out.parent() {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    fs::remove_file(frag)?;
    let info = MediaInfo {
        duration: plan.duration_secs,
        codecs: mp4_codecs(&moov),
    };
    Ok((info, dst))
}

/// Duration and codecs of a finished recording, read from the file (for files a previous
/// run or another pod left, whose recorder is gone).
pub fn media_info(path: &Path) -> io::Result<MediaInfo> {
    let mut f = File::open(path)?;
    if path.extension().is_some_and(|e| e == "flv") {
        return flv_info(&mut f);
    }
    let (index, moov) = index_fmp4(&mut f)?;
    if index.sample_count() > 0 {
        let plan = index.finish().map_err(invalid)?;
        return Ok(MediaInfo {
            duration: plan.duration_secs,
            codecs: mp4_codecs(&moov),
        });
    }
    // A faststart MP4: its moov has the sample tables, and mvhd the duration.
    Ok(MediaInfo {
        duration: mvhd_duration(&moov).unwrap_or(0.0),
        codecs: mp4_codecs(&moov),
    })
}

/// The children of a box body, as (type, body).
fn children(mut b: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        let h = box_header(b).ok().flatten()?;
        let size = usize::try_from(h.size.unwrap_or(b.len() as u64)).ok()?;
        if size < h.header_len as usize || size > b.len() {
            return None;
        }
        let body = &b[h.header_len as usize..size];
        b = &b[size..];
        Some((h.kind, body))
    })
}

fn child<'a>(b: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(b).find(|(k, _)| k == kind).map(|(_, body)| body)
}

/// The sample entry of each track of a `moov` box, as codec names.
fn mp4_codecs(moov: &[u8]) -> Vec<String> {
    let Some((_, body)) = children(moov).next() else {
        return Vec::new();
    };
    children(body)
        .filter(|(k, _)| k == b"trak")
        .filter_map(|(_, trak)| {
            let stbl = child(trak, b"mdia")
                .and_then(|m| child(m, b"minf"))
                .and_then(|m| child(m, b"stbl"))?;
            // stsd: version and flags, entry count, then the first sample entry's header.
            let stsd = child(stbl, b"stsd")?;
            let kind: [u8; 4] = stsd.get(12..16)?.try_into().ok()?;
            Some(crate::codec::media::FourCc(kind).name().to_string())
        })
        .collect()
}

fn mvhd_duration(moov: &[u8]) -> Option<f64> {
    let (_, body) = children(moov).next()?;
    let mvhd = child(body, b"mvhd")?;
    let be32 = |at: usize| {
        mvhd.get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap_or_default()))
    };
    let (timescale, duration) = if mvhd.first() == Some(&1) {
        let d = mvhd.get(24..32)?;
        (be32(20)?, u64::from_be_bytes(d.try_into().ok()?))
    } else {
        (be32(12)?, u64::from(be32(16)?))
    };
    (timescale > 0).then(|| duration as f64 / f64::from(timescale))
}

/// Duration (last tag's timestamp) and codecs of an FLV, tag header by tag header.
fn flv_info(f: &mut File) -> io::Result<MediaInfo> {
    use crate::codec::flv::{TAG_AUDIO, TAG_VIDEO};
    use crate::codec::media::{parse_audio_header, parse_video_header};
    let len = f.metadata()?.len();
    let mut at = 9 + 4;
    let (mut video, mut audio, mut last) = (None, None, 0u32);
    let mut head = [0u8; 11 + 16];
    while at + 11 <= len {
        f.seek(SeekFrom::Start(at))?;
        let n = read_up_to(f, &mut head)?;
        if n < 11 {
            break;
        }
        let size = u64::from(u32::from_be_bytes([0, head[1], head[2], head[3]]));
        if at + 11 + size > len {
            break;
        }
        let ts = u32::from_be_bytes([head[7], head[4], head[5], head[6]]);
        let body = &head[11..n.min(11 + size as usize)];
        match head[0] {
            TAG_VIDEO => {
                last = last.max(ts);
                if video.is_none() {
                    video = parse_video_header(body).ok().map(|h| h.codec.name());
                }
            }
            TAG_AUDIO => {
                last = last.max(ts);
                if audio.is_none() {
                    audio = parse_audio_header(body).ok().map(|h| h.codec.name());
                }
            }
            _ => {}
        }
        at += 11 + size + 4;
    }
    Ok(MediaInfo {
        duration: f64::from(last) / 1000.0,
        codecs: video.into_iter().chain(audio).map(String::from).collect(),
    })
}

/// Cuts an fMP4 after its last complete top-level box (what a crash mid-fragment leaves).
pub fn trim_fmp4(path: &Path) -> io::Result<()> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let mut at = 0u64;
    let mut head = [0u8; 16];
    while at < len {
        f.seek(SeekFrom::Start(at))?;
        let n = read_up_to(&mut f, &mut head)?;
        let size = match box_header(&head[..n]) {
            Ok(Some(h)) => h.size.unwrap_or(u64::MAX),
            _ => break,
        };
        if size == 0 || at.saturating_add(size) > len {
            break;
        }
        at += size;
    }
    // A moof whose mdat is missing is dropped too: fragments end with their mdat.
    if at < len {
        let end = last_mdat_end(&mut f, at)?;
        f.set_len(end)?;
        f.sync_all()?;
    }
    Ok(())
}

/// The end of the last `mdat` (or of the `moov`) before `limit`.
fn last_mdat_end(f: &mut File, limit: u64) -> io::Result<u64> {
    let mut at = 0u64;
    let mut end = 0u64;
    let mut head = [0u8; 16];
    while at < limit {
        f.seek(SeekFrom::Start(at))?;
        let n = read_up_to(f, &mut head)?;
        let Ok(Some(h)) = box_header(&head[..n]) else { break };
        let size = h.size.unwrap_or(limit - at);
        if matches!(&h.kind, b"mdat" | b"moov" | b"ftyp") {
            end = at + size;
        }
        at += size;
    }
    Ok(end)
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

pub fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// What is known of a file's upload, kept beside it in `{file}.upload`. The token is set
/// before the first attempt and stored with the object (as metadata), so an object found
/// under the key can be told to be this file's own earlier upload rather than another pod's
/// file of the same name; `key` is set once the object is in place.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UploadNote {
    pub token: String,
    pub key: Option<String>,
    pub size: Option<u64>,
}

impl UploadNote {
    /// Whether the file of `size` bytes is in the bucket already (uploaded by us).
    pub fn uploaded(&self, size: u64) -> Option<&str> {
        self.key.as_deref().filter(|_| self.size == Some(size))
    }
}

pub fn read_note(file: &Path) -> Option<UploadNote> {
    let bytes = fs::read(with_suffix(file, UPLOAD_SUFFIX)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes the note of `file` (whole or not at all: written aside, synced, renamed).
pub fn write_note(file: &Path, note: &UploadNote) -> io::Result<()> {
    let path = with_suffix(file, UPLOAD_SUFFIX);
    let tmp = with_suffix(&path, TMP_SUFFIX);
    let mut f = File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(note).map_err(invalid)?)?;
    f.sync_all()?;
    fs::rename(&tmp, &path)
}

pub fn remove_note(file: &Path) {
    let _ = fs::remove_file(with_suffix(file, UPLOAD_SUFFIX));
}

/// A recording file found on disk.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub id: RecordId,
    pub path: PathBuf,
    pub size: u64,
    /// A live writer holds it (recorded or rebuilt now, by this pod or another).
    pub writing: bool,
    pub note: Option<UploadNote>,
}

/// The recordings under `root` for `app`: finished files, and files being written (an MP4
/// still in its `.frag` form is listed under its final name). A `.frag` no writer holds is
/// a crash's leftover, listed once a sweep rebuilt it.
pub fn list_local(root: &Path, app: &str) -> Vec<LocalFile> {
    let mut out = Vec::new();
    let Ok(streams) = fs::read_dir(root.join(app)) else {
        return out;
    };
    for s in streams.flatten() {
        let name = s.file_name().to_string_lossy().into_owned();
        if !is_valid_name(&name) {
            continue;
        }
        let Ok(files) = fs::read_dir(s.path()) else { continue };
        for f in files.flatten() {
            let file = f.file_name().to_string_lossy().into_owned();
            let (file, frag) = match file.strip_suffix(FRAG_SUFFIX) {
                Some(base) => (base.to_string(), true),
                None => (file, false),
            };
            if !is_record_file(&file) {
                continue;
            }
            let Ok(meta) = f.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let path = f.path();
            let writing = is_being_written(&path);
            if frag && !writing {
                continue;
            }
            out.push(LocalFile {
                id: RecordId {
                    app: app.into(),
                    name: name.clone(),
                    file,
                },
                note: if frag { None } else { read_note(&path) },
                path,
                size: meta.len(),
                writing,
            });
        }
    }
    out
}

/// What a sweep does with finished files no process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepFinished {
    /// Cut every fMP4 after its last complete box (a crash mid-fragment).
    pub trim: bool,
    /// Take those not uploaded yet for the upload queue (cut the same way).
    pub take: bool,
}

/// A file a sweep took over: its exclusive lock is held through `lock`.
#[derive(Debug)]
pub struct Taken {
    pub id: RecordId,
    pub path: PathBuf,
    pub lock: File,
    pub size: u64,
    pub info: MediaInfo,
    /// An MP4 rebuilt from the `.frag` a writer left (never announced).
    pub rebuilt: bool,
}

/// What a sweep found.
#[derive(Debug, Default)]
pub struct Swept {
    pub taken: Vec<Taken>,
    /// `.frag` files that could not be rebuilt (kept for the next sweep).
    pub failed: Vec<(PathBuf, io::Error)>,
}

/// Tidies what dead writers left under `root/app`, leaving every locked file alone and
/// taking only files unchanged for `min_age`: interrupted rebuilds (`.tmp`) are removed,
/// MP4s still in their fMP4 form (`.frag`) rebuilt, and finished files handled per `finished`.
pub fn sweep(root: &Path, app: &str, min_age: Duration, finished: SweepFinished) -> Swept {
    let mut out = Swept::default();
    let Ok(streams) = fs::read_dir(root.join(app)) else {
        return out;
    };
    for s in streams.flatten() {
        let name = s.file_name().to_string_lossy().into_owned();
        if !is_valid_name(&name) {
            continue;
        }
        let Ok(files) = fs::read_dir(s.path()) else { continue };
        for f in files.flatten() {
            let file = f.file_name().to_string_lossy().into_owned();
            let path = f.path();
            let Ok(meta) = f.metadata() else { continue };
            if !meta.is_file() || !takeable(&meta, min_age) {
                continue;
            }
            let id = |file: &str| RecordId {
                app: app.into(),
                name: name.clone(),
                file: file.into(),
            };
            if file.strip_suffix(TMP_SUFFIX).is_some_and(is_record_file) {
                if let Ok(Some(_lock)) = try_lock(&path) {
                    let _ = fs::remove_file(&path);
                }
            } else if let Some(base) = file.strip_suffix(FRAG_SUFFIX).filter(|b| is_record_file(b)) {
                let Ok(Some(_lock)) = try_lock(&path) else { continue };
                let final_path = path.with_file_name(base);
                match finalize_mp4(&path, &final_path) {
                    Ok((info, lock)) => out.taken.push(Taken {
                        id: id(base),
                        size: lock.metadata().map(|m| m.len()).unwrap_or(0),
                        path: final_path,
                        lock,
                        info,
                        rebuilt: true,
                    }),
                    Err(e) => out.failed.push((path, e)),
                }
            } else if is_record_file(&file) && (finished.trim || finished.take) {
                if finished.take && read_note(&path).is_some_and(|n| n.uploaded(meta.len()).is_some()) {
                    continue;
                }
                let Ok(Some(lock)) = try_lock(&path) else { continue };
                // A dead writer may have left half a fragment.
                if file.ends_with(".mp4") {
                    let _ = trim_fmp4(&path);
                }
                if finished.take {
                    out.taken.push(Taken {
                        id: id(&file),
                        info: media_info(&path).unwrap_or_default(),
                        size: lock.metadata().map(|m| m.len()).unwrap_or(0),
                        path,
                        lock,
                        rebuilt: false,
                    });
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_and_read_back() {
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_796_000_000);
        let s = utc_stamp(t);
        assert_eq!(s, "20261130T005320Z");
        let id = RecordId::parse(&format!("live~cam~{s}.mp4")).unwrap();
        assert_eq!(id.start_ms(), 1_796_000_000_000);
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
    }

    #[test]
    fn ids_cannot_name_a_file_outside_their_stream() {
        for bad in [
            "live~cam~../../etc/passwd",
            "live~..~20261129T045320Z.mp4",
            "..~cam~20261129T045320Z.mp4",
            "live~cam~20261129T045320Z.mp4~x",
            "live~cam/x~20261129T045320Z.mp4",
            "live~cam~20261129T045320Z.mp4.frag",
            "live~cam~20261129T045320Z.exe",
            "live~cam~2026112xT045320Z.flv",
            "live~cam",
        ] {
            assert!(RecordId::parse(bad).is_none(), "{bad}");
        }
        let ok = RecordId::parse("live~cam~20261129T045320Z-2.flv").unwrap();
        assert_eq!(ok.key("rec/"), "rec/live/cam/20261129T045320Z-2.flv");
        assert_eq!(RecordId::from_key("rec/", &ok.key("rec/")), Some(ok));
        assert!(RecordId::from_key("rec/", "rec/live/cam/../x.mp4").is_none());
    }

    #[test]
    fn names_are_never_reused() {
        let dir = std::env::temp_dir().join(format!("ferrocast-rec-{}", rand::random::<u64>()));
        let t = SystemTime::now();
        let (a, _) = create(&dir, "live", "cam", t, "flv", "").unwrap();
        let (b, _) = create(&dir, "live", "cam", t, "flv", "").unwrap();
        let (c, _) = create(&dir, "live", "cam", t, "mp4", FRAG_SUFFIX).unwrap();
        let (d, _) = create(&dir, "live", "cam", t, "mp4", FRAG_SUFFIX).unwrap();
        assert_ne!(a.file, b.file);
        assert!(b.file.ends_with("-2.flv"), "{}", b.file);
        assert_ne!(c.file, d.file, "a file still being written keeps its name");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn conflicting_object_names_count_on_from_the_file_s_own_number() {
        let id = RecordId::parse("live~cam~20261129T045320Z.mp4").unwrap();
        assert_eq!(id.numbered(0).unwrap(), id);
        assert_eq!(id.numbered(1).unwrap().file, "20261129T045320Z-2.mp4");
        let id = RecordId::parse("live~cam~20261129T045320Z-3.flv").unwrap();
        assert_eq!(id.numbered(2).unwrap().file, "20261129T045320Z-5.flv");
    }

    /// A file another descriptor locks (a live writer here or in another pod) is neither
    /// tidied, rebuilt, taken for upload nor removed; once released, a sweep takes it.
    #[test]
    fn sweeps_leave_files_locked_by_another_descriptor_alone() {
        let root = std::env::temp_dir().join(format!("ferrocast-lock-{}", rand::random::<u64>()));
        let t = SystemTime::now();
        let (flv, mut flv_file) = create(&root, "live", "cam", t, "flv", "").unwrap();
        append(&mut flv_file, b"FLV\x01\x05\0\0\0\x09\0\0\0\0", false).unwrap();
        let (frag, mut frag_file) = create(&root, "live", "cam", t, "mp4", FRAG_SUFFIX).unwrap();
        append(&mut frag_file, b"not an fMP4 at all", false).unwrap();
        let frag_path = with_suffix(&frag.local_path(&root), FRAG_SUFFIX);
        let tmp_path = with_suffix(&frag.local_path(&root), TMP_SUFFIX);
        let tmp_file = File::create(&tmp_path).unwrap();
        tmp_file.lock().unwrap();
        fs::write(&tmp_path, b"half a rebuild").unwrap();
        let all = SweepFinished { trim: true, take: true };

        let swept = sweep(&root, "live", Duration::ZERO, all);
        assert!(swept.taken.is_empty() && swept.failed.is_empty(), "{swept:?}");
        assert!(tmp_path.exists() && frag_path.exists());
        let listed = list_local(&root, "live");
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed.iter().all(|f| f.writing), "both are being written: {listed:?}");
        assert!(is_being_written(&flv.local_path(&root)));
        assert!(try_lock(&flv.local_path(&root)).unwrap().is_none());

        // Finished and waiting for its upload: a shared lock, no longer "being written", still
        // nobody else's to take.
        flv_file.lock_shared().unwrap();
        assert!(!is_being_written(&flv.local_path(&root)));
        assert!(try_lock(&flv.local_path(&root)).unwrap().is_none());
        assert!(sweep(&root, "live", Duration::ZERO, all).taken.is_empty());

        // Unchanged for less than the minimum age: left too.
        drop((flv_file, frag_file, tmp_file));
        let swept = sweep(&root, "live", Duration::from_secs(3600), all);
        assert!(swept.taken.is_empty() && swept.failed.is_empty(), "{swept:?}");

        let swept = sweep(&root, "live", Duration::ZERO, all);
        assert!(!tmp_path.exists(), "an interrupted rebuild nobody holds is removed");
        assert_eq!(swept.failed.len(), 1, "the .frag was tried: {swept:?}");
        assert!(
            frag_path.exists(),
            "a .frag that does not rebuild is kept for the next sweep"
        );
        assert_eq!(swept.taken.len(), 1);
        assert_eq!(swept.taken[0].id, flv);
        fs::remove_dir_all(&root).unwrap();
    }

    /// What a restarted server reports of an FLV it finds (its recorder is gone).
    #[test]
    fn an_flv_s_duration_and_codecs_are_read_back_from_its_tags() {
        use crate::codec::flv::{encode_tag, header, TAG_AUDIO, TAG_VIDEO};
        let dir = std::env::temp_dir().join(format!("ferrocast-info-{}", rand::random::<u64>()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("20261130T000000Z.flv");
        let mut b = header(true, true).to_vec();
        b.extend_from_slice(&encode_tag(TAG_VIDEO, 0, &[0x17, 0, 0, 0, 0, 1, 0x64]));
        b.extend_from_slice(&encode_tag(TAG_AUDIO, 0, &[0xaf, 0, 0x12, 0x10]));
        for ts in [0, 40, 1000] {
            b.extend_from_slice(&encode_tag(TAG_VIDEO, ts, &[0x27, 1, 0, 0, 0, 0xff]));
        }
        b.extend_from_slice(&encode_tag(TAG_AUDIO, 1020, &[0xaf, 1, 0x21]));
        // A tag cut short by a crash is not counted.
        b.extend_from_slice(&encode_tag(TAG_VIDEO, 5000, &[0x27, 1, 0, 0, 0, 0xff])[..8]);
        fs::write(&path, &b).unwrap();
        let info = media_info(&path).unwrap();
        assert_eq!(info.codecs, ["h264", "aac"]);
        assert!((info.duration - 1.02).abs() < 1e-9, "{}", info.duration);
        fs::remove_dir_all(&dir).unwrap();
    }
}
