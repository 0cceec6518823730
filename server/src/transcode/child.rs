//! One ffmpeg child process: FLV in on stdin, one pipe per rendition and one for `-progress`
//! on descriptors 3 and up, stderr captured.
//!
//! No orphan, ever:
//! - `PR_SET_PDEATHSIG(SIGKILL)`: the kernel kills ffmpeg when the server dies, SIGKILL
//!   included. The signal follows the thread that forked; children are spawned from tokio
//!   worker threads, which live as long as the runtime (the server uses no `block_in_place`).
//! - a server that died between fork and `prctl` is noticed (`getppid` changed) and the child
//!   exits before `exec`.
//! - [`Child`] kills the process when dropped (tokio's `kill_on_drop`), so every way a
//!   transcode task ends, a panic included, takes its ffmpeg with it.
//! - ffmpeg runs in its own process group, so a terminal's Ctrl-C reaches the server only,
//!   which then stops ffmpeg in order (and a test can SIGKILL the server alone).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::Stdio;

use tokio::net::unix::pipe;
use tokio::process::{ChildStderr, ChildStdin};

use super::ladder::FIRST_OUTPUT_FD;

/// Most extra pipes a child gets (renditions plus progress); rules allow at most 8 renditions.
pub const MAX_PIPES: usize = 16;

/// A running ffmpeg.
pub struct Child {
    child: tokio::process::Child,
    pub stdin: Option<ChildStdin>,
    pub stderr: Option<ChildStderr>,
    /// Read ends of descriptors 3, 4, ... in the child, in order.
    pub pipes: Vec<pipe::Receiver>,
    pid: u32,
}

impl Child {
    /// Starts `program` with `pipes` extra output descriptors from [`FIRST_OUTPUT_FD`] on.
    pub fn spawn(program: &Path, args: &[String], pipes: usize) -> io::Result<Child> {
        if pipes == 0 || pipes > MAX_PIPES {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad pipe count"));
        }
        let mut readers = Vec::with_capacity(pipes);
        let mut writers: Vec<OwnedFd> = Vec::with_capacity(pipes);
        for _ in 0..pipes {
            // Both ends are close-on-exec: no other child spawned meanwhile inherits them.
            let (r, w) = io::pipe()?;
            readers.push(r);
            writers.push(w.into());
        }
        let mut fds: [RawFd; MAX_PIPES] = [-1; MAX_PIPES];
        for (slot, w) in fds.iter_mut().zip(&writers) {
            *slot = w.as_raw_fd();
        }
        let count = pipes as i32;
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only makes
        // async-signal-safe calls (prctl, getppid, fcntl, dup2) on a fixed array: no
        // allocation, no locks.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(io::Error::other("the server exited before ffmpeg started"));
                }
                // Move every write end above the target range first, so placing one on its
                // target never closes another that happened to sit there.
                let mut high: [RawFd; MAX_PIPES] = [-1; MAX_PIPES];
                for i in 0..count as usize {
                    high[i] = libc::fcntl(fds[i], libc::F_DUPFD_CLOEXEC, FIRST_OUTPUT_FD + count);
                    if high[i] < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                // dup2 leaves the new descriptor without close-on-exec: ffmpeg inherits it.
                for (i, fd) in high.iter().enumerate().take(count as usize) {
                    if libc::dup2(*fd, FIRST_OUTPUT_FD + i as i32) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn()?;
        // The child has its copies; ours must close or the readers never see end of file.
        drop(writers);
        let pipes = readers
            .into_iter()
            .map(|r| pipe::Receiver::from_owned_fd(OwnedFd::from(r)))
            .collect::<io::Result<Vec<_>>>()?;
        let pid = child.id().unwrap_or(0);
        Ok(Child {
            stdin: child.stdin.take(),
            stderr: child.stderr.take(),
            child,
            pipes,
            pid,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for the process to exit.
    pub async fn wait(&mut self) -> io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Asks ffmpeg to finish (SIGTERM: it flushes and writes its trailers).
    pub fn terminate(&self) {
        if self.pid > 0 {
            // SAFETY: signalling our own child; until it is reaped its pid cannot be reused.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }

    /// Kills the process and reaps it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// User plus system CPU seconds the process has used so far (Linux `/proc`).
    pub fn cpu_seconds(&self) -> Option<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        cpu_seconds_of(&stat, clock_ticks())
    }
}

/// Clock ticks per second of `/proc` times.
fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a `/proc/PID/stat` line, in seconds. The command name may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn cpu_seconds_of(stat: &str, ticks: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3 of the line; utime and stime are fields 14 and 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / ticks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "4242 (ff mpeg) (x)) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 5 0 1 2 3";
        assert_eq!(cpu_seconds_of(stat, 100.0), Some(3.0));
        assert_eq!(cpu_seconds_of("garbage", 100.0), None);
    }

    #[tokio::test]
    async fn the_child_writes_each_descriptor_to_its_own_pipe_and_they_end_with_it() {
        let script = "echo zero >&3; echo one >&4; echo two >&5; cat >/dev/null";
        let args = vec!["-c".to_string(), script.to_string()];
        let mut child = Child::spawn(Path::new("/bin/sh"), &args, 3).unwrap();
        drop(child.stdin.take());
        let mut got = Vec::new();
        for p in &mut child.pipes {
            let mut s = String::new();
            p.read_to_string(&mut s).await.unwrap();
            got.push(s);
        }
        assert_eq!(got, ["zero\n", "one\n", "two\n"]);
        assert!(child.wait().await.unwrap().success());
    }

    /// Dead: gone, or a zombie waiting to be reaped.
    fn is_dead(pid: u32) -> bool {
        let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        s.is_empty() || s.contains("State:\tZ")
    }

    #[test]
    fn the_kernel_kills_the_child_when_its_parent_goes_away() {
        // PR_SET_PDEATHSIG follows the forking thread: a thread that spawns a child and exits
        // stands for a server that dies, without killing the test process.
        let pid = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let args = vec!["-c".to_string(), "exec sleep 30".to_string()];
                let child = Child::spawn(Path::new("/bin/sh"), &args, 1).unwrap();
                let pid = child.pid();
                // No kill on drop: only the kernel can end it now.
                std::mem::forget(child);
                pid
            })
        })
        .join()
        .unwrap();
        let mut dead = false;
        for _ in 0..250 {
            if is_dead(pid) {
                dead = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(dead, "the child outlived the thread that started it");
    }

    #[tokio::test]
    async fn the_child_is_killed_when_its_handle_is_dropped() {
        let args = vec!["-c".to_string(), "sleep 30".to_string()];
        let child = Child::spawn(Path::new("/bin/sh"), &args, 1).unwrap();
        let pid = child.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        assert!(status.contains("State:"), "running");
        drop(child);
        // kill_on_drop sends SIGKILL at once; the runtime reaps it.
        let mut gone = false;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            if s.is_empty() || s.contains("State:\tZ") {
                gone = true;
                break;
            }
        }
        assert!(gone, "the child outlived its handle");
    }
}
