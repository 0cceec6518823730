//! Segment files: a complete segment's bytes copied once into a sealed memory file
//! (`memfd`), which plain-HTTP responses splice into the socket through a pipe
//! (`http.sendfile`). The kernel then hands the file's pages to the socket instead of copying
//! the bytes from user memory for every player, which was the largest part of the server's
//! time at thousands of HLS players (docs/benchmarks.md). One explicit pipe of 1 MiB takes a
//! whole segment in one call; `sendfile` itself goes through a 64 KiB pipe, and its many
//! small sends cost more than the copy they save under a pacing congestion control (BBR).
//!
//! A file that fits in one pipe is also spliced once into a pipe of its own, kept full and
//! never read: each response then duplicates its page references with `tee` instead of
//! looking every page up in the file again (fewer page-cache lookups and folio locks per
//! player).
//!
//! The pages stay referenced by the pipes and socket buffers that carry them, so dropping the
//! file (its segment left the window) never changes bytes a player is still receiving, and
//! the seals make the file immutable once written.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};

/// A sealed memory file holding one segment.
#[derive(Debug)]
pub struct SegmentFile {
    file: File,
    len: u64,
    /// The read end of a pipe holding the whole file, when it fits in one.
    full: Option<std::os::fd::OwnedFd>,
}

impl SegmentFile {
    /// Copies `pieces` into a new sealed memory file.
    pub fn new<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> std::io::Result<SegmentFile> {
        // SAFETY: the name is a valid NUL-terminated string; the call only returns a new fd
        // (or -1), which is owned by the File below and nowhere else.
        let fd = unsafe {
            libc::memfd_create(
                c"ferrocast-segment".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let mut file = unsafe { File::from_raw_fd(fd) };
        let mut len = 0u64;
        for piece in pieces {
            file.write_all(piece)?;
            len += piece.len() as u64;
        }
        let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor this File owns, with an integer argument.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Without a full pipe the responses splice from the file, as for a larger one.
        let full = filled_pipe(&file, len).ok().flatten();
        Ok(SegmentFile { file, len, full })
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A pipe holding all `len` bytes of `file` (its read end), or `None` when they do not fit
/// in one.
fn filled_pipe(file: &File, len: u64) -> std::io::Result<Option<std::os::fd::OwnedFd>> {
    let Ok(want) = libc::c_int::try_from(len) else {
        return Ok(None);
    };
    if want == 0 || want > PIPE_BYTES {
        return Ok(None);
    }
    let (read, write) = pipe()?;
    // SAFETY: fcntl on a descriptor owned here; it returns the size given, or -1.
    let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, want) };
    if size < want {
        return Ok(None);
    }
    let mut off: libc::off_t = 0;
    while (off as u64) < len {
        // SAFETY: live descriptors; `off` is a local the kernel updates.
        let n = unsafe {
            libc::splice(
                file.as_raw_fd(),
                &mut off,
                write.as_raw_fd(),
                std::ptr::null_mut(),
                len as usize - off as usize,
                libc::SPLICE_F_NONBLOCK,
            )
        };
        if n <= 0 {
            return Ok(None);
        }
    }
    Ok(Some(read))
}

/// A new non-blocking pipe: its read and write ends.
fn pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array, owned by the OwnedFds below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors nothing else owns.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
}

/// A pipe through which file pages are spliced into a socket: the kernel moves page
/// references, never the bytes. It may hold pages the socket did not take yet.
#[derive(Debug)]
pub struct SplicePipe {
    read: std::os::fd::OwnedFd,
    write: std::os::fd::OwnedFd,
    /// Bytes in the pipe, not yet in the socket.
    held: usize,
}

/// What a pipe is asked to hold (the kernel may give less to an unprivileged process): a
/// whole segment of a few Mbit/s, so one splice hands it all to the socket.
const PIPE_BYTES: libc::c_int = 1 << 20;
/// Empty pipes kept per thread for the next response.
const POOLED_PIPES: usize = 4;

thread_local! {
    static PIPES: std::cell::RefCell<Vec<SplicePipe>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl SplicePipe {
    /// An empty pipe: one this thread kept, or a new one.
    pub fn take() -> std::io::Result<SplicePipe> {
        PIPES.with_borrow_mut(Vec::pop).map_or_else(SplicePipe::new, Ok)
    }

    /// Keeps an empty pipe for the next response on this thread (one still holding bytes is
    /// closed, and its pages released).
    pub fn give_back(self) {
        if self.held == 0 {
            PIPES.with_borrow_mut(|pipes| {
                if pipes.len() < POOLED_PIPES {
                    pipes.push(self);
                }
            });
        }
    }

    fn new() -> std::io::Result<SplicePipe> {
        let (read, write) = pipe()?;
        // SAFETY: fcntl on a descriptor owned here; a refusal leaves the default size.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
        Ok(SplicePipe { read, write, held: 0 })
    }

    /// Moves bytes of `file` from `offset` (advanced) into `socket` through the pipe; returns
    /// how many reached the socket. A socket that takes nothing now gives `WouldBlock`.
    pub fn send(&mut self, file: &SegmentFile, offset: &mut u64, socket: RawFd) -> std::io::Result<usize> {
        if let (0, 0, Some(full)) = (self.held, *offset, &file.full) {
            // SAFETY: live descriptors (two pipes); tee reads `full` without consuming it.
            let n = unsafe {
                libc::tee(
                    full.as_raw_fd(),
                    self.write.as_raw_fd(),
                    usize::try_from(file.len).unwrap_or(usize::MAX),
                    libc::SPLICE_F_NONBLOCK,
                )
            };
            // A pipe smaller than the file takes its start; the rest comes from the file.
            if n > 0 {
                *offset = n as u64;
                self.held = n as usize;
            }
        }
        if self.held == 0 && *offset < file.len {
            let mut off = libc::off_t::try_from(*offset).map_err(|_| std::io::ErrorKind::InvalidInput)?;
            let count = usize::try_from(file.len - *offset).unwrap_or(usize::MAX);
            // SAFETY: live descriptors; `off` is a local the kernel updates.
            let n = unsafe {
                libc::splice(
                    file.file.as_raw_fd(),
                    &mut off,
                    self.write.as_raw_fd(),
                    std::ptr::null_mut(),
                    count,
                    libc::SPLICE_F_NONBLOCK,
                )
            };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            *offset = off as u64;
            self.held = n as usize;
        }
        let more = if *offset < file.len { libc::SPLICE_F_MORE } else { 0 };
        // SAFETY: live descriptors, no offsets (a pipe and a socket).
        let n = unsafe {
            libc::splice(
                self.read.as_raw_fd(),
                std::ptr::null_mut(),
                socket,
                std::ptr::null_mut(),
                self.held,
                libc::SPLICE_F_NONBLOCK | more,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.held -= n as usize;
        Ok(n as usize)
    }

    /// Holds no bytes: it can serve another response.
    pub fn is_empty(&self) -> bool {
        self.held == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_segment_file_holds_its_pieces_and_is_sealed_against_writes() {
        let file = SegmentFile::new([&b"abc"[..], b"", b"defg"]).unwrap();
        assert_eq!(file.len(), 7);
        let mut back = [0; 8];
        let n = std::os::unix::fs::FileExt::read_at(&file.file, &mut back, 0).unwrap();
        assert_eq!(&back[..n], b"abcdefg");
        assert!((&file.file).write_all(b"x").is_err(), "sealed files refuse writes");
        assert!(file.file.set_len(1).is_err(), "sealed files refuse shrinking");
    }

    #[test]
    fn a_pipe_splices_a_file_larger_than_itself_into_a_socket() {
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (head, tail) = bytes.split_at(1_234_567);
        let file = SegmentFile::new([head, tail]).unwrap();
        assert!(file.full.is_none(), "larger than a pipe: spliced from the file");
        sends_whole(&file, &bytes);
    }

    #[test]
    fn a_file_that_fits_a_pipe_is_sent_from_its_full_pipe_again_and_again() {
        let bytes: Vec<u8> = (0..686_135u32).map(|i| (i * 13 % 253) as u8).collect();
        let file = SegmentFile::new([&bytes[..100], &bytes[100..]]).unwrap();
        assert!(file.full.is_some(), "a segment of a few Mbit/s fits one pipe");
        for _ in 0..3 {
            sends_whole(&file, &bytes);
        }
        // The bytes come from the full pipe, not the file: given another file's full pipe,
        // a response carries that file's bytes.
        let other: Vec<u8> = bytes.iter().map(|b| b ^ 0x5a).collect();
        let mut swapped = SegmentFile::new([&bytes[..]]).unwrap();
        swapped.full = SegmentFile::new([&other[..]]).unwrap().full;
        sends_whole(&swapped, &other);
    }

    /// Sends `file` into a loopback socket through this thread's pipe; the reader gets `bytes`.
    fn sends_whole(file: &SegmentFile, bytes: &[u8]) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut reader = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (writer, _) = listener.accept().unwrap();
        writer.set_nonblocking(true).unwrap();
        let received = std::thread::spawn(move || {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).unwrap();
            got
        });
        let mut pipe = SplicePipe::take().unwrap();
        let mut offset = 0;
        let mut sent = 0;
        while offset < file.len() || !pipe.is_empty() {
            match pipe.send(&file, &mut offset, writer.as_raw_fd()) {
                Ok(n) => sent += n,
                // The reader has not caught up: the socket is full for now.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!((sent, offset), (bytes.len(), file.len()));
        drop(writer);
        assert!(received.join().unwrap() == bytes, "the bytes arrive whole and in order");
        // The emptied pipe serves the next response on this thread.
        pipe.give_back();
        assert!(SplicePipe::take().unwrap().is_empty());
    }
}
