//! Recording files on the scratch disk: their names (`{path}/{app}/{name}/{UTC start}.{ext}`,
//! never overwritten), record ids, listing, and the blocking work done off the runtime:
//! writing fragments, rebuilding an MP4 with its `moov` first, and tidying up what a crash
//! left behind. Everything here runs in `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use ferrocast_media::faststart::{box_header, Index, MAX_META_BOX};

use crate::hub::is_valid_name;

/// Suffix of the crash-safe fMP4 an MP4 recording is written as until it closes.
pub const FRAG_SUFFIX: &str = ".frag";
/// Suffix of an MP4 being rebuilt (removed if a crash interrupts it: the `.frag` remains).
pub const TMP_SUFFIX: &str = ".tmp";

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

/// Rebuilds the fMP4 at `frag` into a faststart MP4 at `out` (written to `out.tmp`, synced,
/// then renamed), and removes `frag`. Returns the media duration in seconds.
pub fn finalize_mp4(frag: &Path, out: &Path) -> io::Result<f64> {
    let mut src = File::open(frag)?;
    let len = src.metadata()?.len();
    let mut index = Index::new();
    let mut at = 0u64;
    let mut head = [0u8; 16];
    while at + 8 <= len {
        src.seek(SeekFrom::Start(at))?;
        let n = read_up_to(&mut src, &mut head)?;
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
    let plan = index.finish().map_err(invalid)?;
    let tmp = with_suffix(out, TMP_SUFFIX);
    let mut dst = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
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
    Ok(plan.duration_secs)
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

/// A recording file found on disk.
#[derive(Debug, Clone)]
pub struct LocalFile {
    pub id: RecordId,
    pub path: PathBuf,
    pub size: u64,
}

/// The finished recordings under `root` for `app` (files still written by this process are
/// listed too; the caller knows which are active). Files with our suffixes are not listed.
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
            if !is_record_file(&file) {
                continue;
            }
            let Ok(meta) = f.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            out.push(LocalFile {
                id: RecordId {
                    app: app.into(),
                    name: name.clone(),
                    file,
                },
                path: f.path(),
                size: meta.len(),
            });
        }
    }
    out
}

/// Leftovers of a crash under `root/app`: MP4s still in their fMP4 form (`.frag`) and
/// interrupted rebuilds (`.tmp`).
pub fn leftovers(root: &Path, app: &str) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut frags, mut tmps) = (Vec::new(), Vec::new());
    let Ok(streams) = fs::read_dir(root.join(app)) else {
        return (frags, tmps);
    };
    for s in streams.flatten() {
        let Ok(files) = fs::read_dir(s.path()) else { continue };
        for f in files.flatten() {
            let file = f.file_name().to_string_lossy().into_owned();
            if let Some(base) = file.strip_suffix(FRAG_SUFFIX).filter(|b| is_record_file(b)) {
                let _ = base;
                frags.push(f.path());
            } else if file.strip_suffix(TMP_SUFFIX).is_some_and(is_record_file) {
                tmps.push(f.path());
            }
        }
    }
    (frags, tmps)
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
}
