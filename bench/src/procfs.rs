//! CPU time and resident memory of a process tree, from /proc (Linux).
//!
//! CPU is utime + stime + cutime + cstime of the process and of every live descendant
//! (threads are included in their process's figures; a process that forks workers, like
//! nginx, is covered through its children). RSS is the sum of VmRSS over the same tree.

use std::collections::HashMap;
use std::fs;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeSample {
    /// Clock ticks of CPU time (user + system, including reaped children).
    pub ticks: u64,
    /// The system (kernel) part of `ticks`.
    pub sys_ticks: u64,
    pub rss_kb: u64,
    pub processes: usize,
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// What one /proc/PID/stat says about CPU time.
#[derive(Debug, PartialEq, Eq)]
pub struct Stat {
    pub ppid: u32,
    /// utime + stime + cutime + cstime.
    pub ticks: u64,
    /// stime + cstime.
    pub sys_ticks: u64,
}

/// Parses the text of /proc/PID/stat. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from the last ')'.
pub fn parse_stat(stat: &str) -> Option<Stat> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    let ppid = fields.get(1)?.parse().ok()?;
    let field = |i: usize| -> Option<u64> { Some(fields.get(i)?.parse::<i64>().ok()?.max(0) as u64) };
    let (utime, stime, cutime, cstime) = (field(11)?, field(12)?, field(13)?, field(14)?);
    Some(Stat {
        ppid,
        ticks: utime + stime + cutime + cstime,
        sys_ticks: stime + cstime,
    })
}

/// VmRSS in kB from the text of /proc/PID/status.
pub fn parse_vm_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Machine-wide CPU ticks (all cores) from the first line of /proc/stat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineTicks {
    /// Everything but idle and iowait.
    pub busy: u64,
    /// Time in softirq context. With tick-based accounting (no IRQ_TIME_ACCOUNTING) it is
    /// charged to no process: on loopback that is much of the TCP receive path of both ends.
    pub softirq: u64,
}

/// How busy the whole machine is, to show how much else ran during a measurement.
pub fn machine_ticks() -> MachineTicks {
    fs::read_to_string("/proc/stat")
        .ok()
        .as_deref()
        .and_then(parse_proc_stat)
        .unwrap_or_default()
}

pub fn parse_proc_stat(stat: &str) -> Option<MachineTicks> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    let total: u64 = v.iter().take(8).sum();
    Some(MachineTicks {
        busy: total - v.get(3)? - v.get(4).copied().unwrap_or(0),
        softirq: v.get(6).copied().unwrap_or(0),
    })
}

/// CPU ticks of this process (all its threads).
pub fn self_ticks() -> u64 {
    fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
        .map_or(0, |s| s.ticks)
}

/// Samples `pid` and its descendants; `None` when `pid` does not exist.
pub fn sample_tree(pid: u32) -> Option<TreeSample> {
    let root = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let root_stat = parse_stat(&root)?;
    let mut children: HashMap<u32, Vec<(u32, Stat)>> = HashMap::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(p) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if p == pid {
                continue;
            }
            if let Some(stat) = fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                children.entry(stat.ppid).or_default().push((p, stat));
            }
        }
    }
    let mut sample = TreeSample::default();
    let mut todo = vec![(pid, root_stat)];
    while let Some((p, stat)) = todo.pop() {
        sample.ticks += stat.ticks;
        sample.sys_ticks += stat.sys_ticks;
        sample.processes += 1;
        sample.rss_kb += fs::read_to_string(format!("/proc/{p}/status"))
            .ok()
            .as_deref()
            .and_then(parse_vm_rss_kb)
            .unwrap_or(0);
        if let Some(kids) = children.remove(&p) {
            todo.extend(kids);
        }
    }
    Some(sample)
}

/// Bytes queued on each loopback TCP connection to `server`, by the client's port: what the
/// client's kernel has not sent yet plus what the server's kernel holds that the server has
/// not read. Read from /proc/net/tcp, so it works for any server: a server that keeps up
/// with its publishers keeps this near zero.
pub fn queued_to(server: std::net::SocketAddrV4) -> HashMap<u16, u64> {
    fs::read_to_string("/proc/net/tcp")
        .map(|t| parse_tcp_queues(&t, server))
        .unwrap_or_default()
}

/// `ip:port` of /proc/net/tcp: the address as the kernel's native-endian hex of the
/// network-order bytes, the port as plain hex.
fn parse_tcp_addr(s: &str) -> Option<std::net::SocketAddrV4> {
    let (ip, port) = s.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some(std::net::SocketAddrV4::new(ip.to_ne_bytes().into(), port))
}

pub fn parse_tcp_queues(text: &str, server: std::net::SocketAddrV4) -> HashMap<u16, u64> {
    let mut queued: HashMap<u16, u64> = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().take(5).collect();
        let (Some(local), Some(remote), Some(queues)) = (
            f.get(1).and_then(|s| parse_tcp_addr(s)),
            f.get(2).and_then(|s| parse_tcp_addr(s)),
            f.get(4),
        ) else {
            continue;
        };
        let Some((tx, rx)) = queues.split_once(':') else {
            continue;
        };
        let (tx, rx) = (
            u64::from_str_radix(tx, 16).unwrap_or(0),
            u64::from_str_radix(rx, 16).unwrap_or(0),
        );
        if local == server && remote.port() != 0 {
            *queued.entry(remote.port()).or_default() += rx;
        } else if remote == server {
            *queued.entry(local.port()).or_default() += tx;
        }
    }
    queued
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_queues_of_connections_to_the_server() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:2E7B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:2E7B 0100007F:C350 01 00000000:00001000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
   2: 0100007F:C350 0100007F:2E7B 01 00000200:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
   3: 0100007F:C351 0100007F:1F90 01 00000300:00000000 00:00000000 00000000     0        0 4 1 0 20 4 30 10 -1
";
        let server = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 0x2e7b);
        let q = parse_tcp_queues(text, server);
        assert_eq!(q.get(&0xc350), Some(&(0x1000 + 0x200)));
        assert_eq!(q.len(), 1, "other servers' connections are not counted");
    }

    #[test]
    fn parses_stat_with_odd_command_name() {
        let stat = "4242 (nginx: worker (x) 1) S 4200 4242 4242 0 -1 4194624 100 0 0 0 150 35 7 3 20 0 1 0 1234 12345678 900 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                ppid: 4200,
                ticks: 150 + 35 + 7 + 3,
                sys_ticks: 35 + 3
            })
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_vm_rss() {
        let status = "Name:\tferrocast\nVmPeak:\t  100 kB\nVmRSS:\t   23456 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kb(status), Some(23456));
        assert_eq!(parse_vm_rss_kb("Name:\tx\n"), None);
    }

    #[test]
    fn parses_machine_busy() {
        let stat = "cpu  100 5 50 1000 20 3 7 0 11 0\ncpu0 50 2 25 500 10 1 3 0 0 0\n";
        assert_eq!(
            parse_proc_stat(stat),
            Some(MachineTicks {
                busy: 100 + 5 + 50 + 3 + 7,
                softirq: 7
            })
        );
        assert_eq!(parse_proc_stat("intr 1 2 3"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample_tree(std::process::id()).expect("own process");
        assert!(s.processes >= 1 && s.rss_kb > 0);
        assert!(sample_tree(u32::MAX).is_none());
    }
}
