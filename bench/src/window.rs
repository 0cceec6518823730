//! The measured window both modes report on: CPU of the server's process tree, of this bench
//! and of the whole machine, and the server's memory, per player or per stream.

use serde_json::{json, Value};

use crate::procfs::{self, MachineTicks, TreeSample};

/// The counters at the start of a window.
pub struct Window {
    started: std::time::Instant,
    server_pid: Option<u32>,
    server: Option<TreeSample>,
    own: u64,
    machine: MachineTicks,
}

/// What a window measured.
pub struct Figures {
    pub secs: f64,
    server_pid: Option<u32>,
    /// Server cores used and its sample at the end.
    pub server: Option<(f64, TreeSample)>,
    /// The part of the server's cores spent in the kernel (system time).
    pub server_sys_cores: Option<f64>,
    pub bench_cores: f64,
    pub machine_cores: f64,
    pub softirq_cores: f64,
    pub cpus: usize,
}

impl Window {
    pub fn open(server_pid: Option<u32>) -> Window {
        Window {
            started: std::time::Instant::now(),
            server_pid,
            server: server_pid.and_then(procfs::sample_tree),
            own: procfs::self_ticks(),
            machine: procfs::machine_ticks(),
        }
    }

    pub fn close(self) -> Figures {
        let secs = self.started.elapsed().as_secs_f64();
        let tps = procfs::ticks_per_second();
        let cores = |ticks: u64| ticks as f64 / tps / secs;
        let machine = procfs::machine_ticks();
        let end = self.server_pid.and_then(procfs::sample_tree);
        let (server, server_sys_cores) = match (self.server, end) {
            (Some(x), Some(y)) => (
                Some((cores(y.ticks.saturating_sub(x.ticks)), y)),
                Some(cores(y.sys_ticks.saturating_sub(x.sys_ticks))),
            ),
            _ => (None, None),
        };
        Figures {
            secs,
            server_pid: self.server_pid,
            server,
            server_sys_cores,
            bench_cores: cores(procfs::self_ticks().saturating_sub(self.own)),
            machine_cores: cores(machine.busy.saturating_sub(self.machine.busy)),
            softirq_cores: cores(machine.softirq.saturating_sub(self.machine.softirq)),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        }
    }
}

impl Figures {
    /// Server RSS per `unit` (player or stream) of `count`: total and marginal over `baseline`.
    fn rss_per(&self, baseline: Option<TreeSample>, count: usize) -> (Option<f64>, Option<f64>) {
        let n = count.max(1) as f64;
        let per = self.server.map(|(_, s)| s.rss_kb as f64 / n);
        let marginal = match (self.server, baseline) {
            (Some((_, s)), Some(b)) => Some((s.rss_kb as f64 - b.rss_kb as f64) / n),
            _ => None,
        };
        (per, marginal)
    }

    /// The server, bench and machine lines of the text report.
    pub fn text(&self, baseline: Option<TreeSample>, unit: &str, count: usize, threads: usize) -> String {
        let mut text = String::new();
        use std::fmt::Write;
        if let (Some(pid), Some((cores, s))) = (self.server_pid, self.server) {
            let (per, marginal) = self.rss_per(baseline, count);
            let _ = writeln!(
                text,
                "  server          pid {pid} ({} process{}): {cores:.3} cores ({:.3} in the kernel), RSS {:.1} MB (baseline {:.1} MB), {:.1} KB per {unit} ({:.1} KB marginal)",
                s.processes,
                if s.processes == 1 { "" } else { "es" },
                self.server_sys_cores.unwrap_or(0.0),
                s.rss_kb as f64 / 1024.0,
                baseline.map_or(0.0, |b| b.rss_kb as f64 / 1024.0),
                per.unwrap_or(0.0),
                marginal.unwrap_or(0.0),
            );
        }
        let _ = writeln!(
            text,
            "  bench           {:.3} cores ({threads} runtime thread{})",
            self.bench_cores,
            if threads == 1 { "" } else { "s" }
        );
        let _ = writeln!(
            text,
            "  machine         {:.3} of {} cores busy (server, bench, everything else), {:.3} of them in softirq",
            self.machine_cores, self.cpus, self.softirq_cores
        );
        text
    }

    /// The `server`, `bench` and `machine` members of the JSON report.
    pub fn json(&self, baseline: Option<TreeSample>, unit: &str, count: usize, threads: usize) -> [(String, Value); 3] {
        let (per, marginal) = self.rss_per(baseline, count);
        let server = self.server_pid.map(|pid| {
            let mut s = json!({
                "pid": pid,
                "processes": self.server.map(|(_, s)| s.processes),
                "cpu_cores": self.server.map(|(c, _)| c),
                "sys_cores": self.server_sys_cores,
                "rss_kb": self.server.map(|(_, s)| s.rss_kb),
                "rss_baseline_kb": baseline.map(|b| b.rss_kb),
            });
            s[format!("rss_per_{unit}_kb")] = json!(per);
            s[format!("rss_marginal_per_{unit}_kb")] = json!(marginal);
            s
        });
        [
            ("server".into(), json!(server)),
            (
                "bench".into(),
                json!({ "cpu_cores": self.bench_cores, "threads": threads }),
            ),
            (
                "machine".into(),
                json!({ "busy_cores": self.machine_cores, "softirq_cores": self.softirq_cores, "cpus": self.cpus }),
            ),
        ]
    }
}
