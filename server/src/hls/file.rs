//! Segment files: a complete segment's bytes copied once into a sealed memory file
//! (`memfd`), which plain-HTTP responses splice into the socket through a pipe
//! (`http.sendfile`). The kernel then hands the file's pages to the socket instead of copying
//! the bytes from user memory for every player, which was the largest part of the server's
//! time at thousands of HLS players (docs/benchmarks.md). One explicit pipe of 1 MiB takes a
//! whole segment in one call; `sendfile` itself goes through a 64 KiB pipe, and its many
//! small sends cost more than the copy they save under a pacing congestion control (BBR).
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
        Ok(SegmentFile { file, len })
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
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
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array, owned by the OwnedFds below.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fresh descriptors nothing else owns.
        let (read, write) = unsafe {
            (
                std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                std::os::fd::OwnedFd::from_raw_fd(fds[1]),
            )
        };
        // SAFETY: fcntl on a descriptor owned here; a refusal leaves the default size.
        unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES) };
        Ok(SplicePipe { read, write, held: 0 })
    }

    /// Moves bytes of `file` from `offset` (advanced) into `socket` through the pipe; returns
    /// how many reached the socket. A socket that takes nothing now gives `WouldBlock`.
    pub fn send(&mut self, file: &SegmentFile, offset: &mut u64, socket: RawFd) -> std::io::Result<usize> {
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
