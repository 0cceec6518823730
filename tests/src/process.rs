//! External processes, always bounded: run under `timeout -k 2 LIMIT`, in their own process
//! group, output captured to a log file, and the whole group killed on drop.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::process::{Child, Command};

use crate::env::require_tool;

/// Seconds `timeout` waits after its signal before it sends SIGKILL.
const KILL_AFTER_SECS: u64 = 2;

fn bounded_command(limit_secs: u64, program: &str, args: &[String]) -> Command {
    require_tool("timeout");
    require_tool(program);
    let mut cmd = Command::new("timeout");
    cmd.arg("-k")
        .arg(KILL_AFTER_SECS.to_string())
        .arg(limit_secs.to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

/// Kills a process group on drop unless disarmed (the future running it was cancelled).
struct GroupGuard {
    pgid: Option<u32>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            kill_group(pgid, "KILL");
        }
    }
}

fn kill_group(pgid: u32, sig: &str) {
    let _ = std::process::Command::new("kill")
        .arg("-s")
        .arg(sig)
        .arg("--")
        .arg(format!("-{pgid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Runs `program args` to completion under `timeout -k 2 limit_secs` and returns its output.
/// If the returned future is dropped early, the whole process group is killed.
pub async fn run_bounded(program: &str, args: &[String], limit_secs: u64) -> Result<Output> {
    let mut cmd = bounded_command(limit_secs, program, args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().with_context(|| format!("spawning {program}"))?;
    let mut guard = GroupGuard { pgid: child.id() };
    let fut = child.wait_with_output();
    let res = tokio::time::timeout(Duration::from_secs(limit_secs + KILL_AFTER_SECS + 5), fut).await;
    match res {
        Ok(out) => {
            guard.pgid = None; // reaped: its pid may be reused
            out.with_context(|| format!("running {program}"))
        }
        Err(_) => bail!("{program} did not finish within {limit_secs} s even under timeout"),
    }
}

/// Runs a script that prints its result as one JSON object line (the browser scripts under
/// tests/browser do), bounded like [`run_bounded`]: the last such line, and the whole output
/// for assertion messages. Panics, with the output, when there is none.
pub async fn run_json(program: &str, args: &[String], limit_secs: u64) -> (serde_json::Value, Output) {
    let out = run_bounded(program, args, limit_secs)
        .await
        .unwrap_or_else(|e| panic!("{program}: {e:#}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_else(|| {
        panic!(
            "{program} {} printed no JSON result\n{}",
            args.first().map_or("", String::as_str),
            describe_output(&out)
        )
    });
    let value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    (value, out)
}

/// Formats an [`Output`] for assertion messages.
pub fn describe_output(out: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stdout), 4000),
        tail(&String::from_utf8_lossy(&out.stderr), 4000)
    )
}

/// The last `max` bytes of `s` (on a char boundary).
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut i = s.len() - max;
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// A running external process (under `timeout`), its output going to a log file.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    pid: u32,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Spawns `timeout -k 2 limit_secs program args...` in a new process group.
    pub fn spawn(name: &str, program: &str, args: &[String], limit_secs: u64, log: &Path) -> Result<Proc> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("creating {}", log.display()))?;
        let file2 = file.try_clone()?;
        let mut cmd = bounded_command(limit_secs, program, args);
        cmd.stdout(Stdio::from(file)).stderr(Stdio::from(file2));
        let child = cmd.spawn().with_context(|| format!("spawning {name} ({program})"))?;
        let pid = child.id().context("child has a pid")?;
        Ok(Proc {
            name: name.to_string(),
            child,
            pid,
            log: log.to_path_buf(),
            status: None,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pid of the `timeout` wrapper (also the process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The exit status if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            }
        }
        self.status
    }

    pub fn is_running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits up to `d` for the process to exit.
    pub async fn wait_within(&mut self, d: Duration) -> Option<ExitStatus> {
        if let Some(st) = self.status {
            return Some(st);
        }
        match tokio::time::timeout(d, self.child.wait()).await {
            Ok(Ok(st)) => {
                self.status = Some(st);
                Some(st)
            }
            _ => None,
        }
    }

    /// Sends a signal (e.g. "TERM") to the `timeout` wrapper, which forwards it to the program
    /// and exits with the program's status.
    pub fn signal(&self, sig: &str) {
        let _ = std::process::Command::new("kill")
            .arg("-s")
            .arg(sig)
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// SIGKILLs the whole process group at once (no graceful goodbye: like a crash or a cable pull).
    pub fn kill(&mut self) {
        if self.try_status().is_some() {
            return;
        }
        kill_group(self.pid, "KILL");
        let _ = self.child.start_kill();
    }

    /// Kills the group and waits (bounded) until it is gone.
    pub async fn kill_and_wait(&mut self) -> Option<ExitStatus> {
        self.kill();
        self.wait_within(Duration::from_secs(5)).await
    }

    /// What the process wrote so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
