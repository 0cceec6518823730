//! The real `ferrocast` binary on free loopback ports with a generated YAML config.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::env::{server_bin, TempDir};
use crate::player::FlvPlayer;
use crate::process::{tail, Proc};

/// A server process never outlives this, whatever happens to the test.
const SERVER_LIMIT_SECS: u64 = 600;
/// How long the server may take to answer /readyz.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Options of a [`TestServer`]; every unset option keeps the server's default.
#[derive(Debug, Clone, Default)]
pub struct TestServerBuilder {
    grace_secs: Option<u64>,
    play_wait_secs: Option<u64>,
    write_timeout_secs: Option<u64>,
    gop_cache: Option<bool>,
    gop_max_frames: Option<u64>,
    handshake_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_message_size: Option<u64>,
    allow_origin: Option<String>,
    log_level: Option<String>,
    app_yaml: Vec<String>,
    top_yaml: Vec<String>,
    section_yaml: Vec<(&'static str, String)>,
    tls: Vec<TlsCertificate>,
    admin_port: Option<u16>,
}

/// One entry of `tls.certificates`.
#[derive(Debug, Clone)]
pub struct TlsCertificate {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// SNI names; none makes it the default certificate.
    pub hosts: Vec<String>,
}

impl TlsCertificate {
    pub fn new(cert_file: impl Into<PathBuf>, key_file: impl Into<PathBuf>, hosts: &[&str]) -> Self {
        TlsCertificate {
            cert_file: cert_file.into(),
            key_file: key_file.into(),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
        }
    }
}

impl TestServerBuilder {
    /// `hub.publisher_grace_secs`
    pub fn grace_secs(mut self, s: u64) -> Self {
        self.grace_secs = Some(s);
        self
    }
    /// `hub.play_wait_secs`
    pub fn play_wait_secs(mut self, s: u64) -> Self {
        self.play_wait_secs = Some(s);
        self
    }
    /// `apps[live].gop_cache`
    /// `hub.write_timeout_secs`: how long a player may take no data.
    pub fn write_timeout_secs(mut self, s: u64) -> Self {
        self.write_timeout_secs = Some(s);
        self
    }

    pub fn gop_cache(mut self, on: bool) -> Self {
        self.gop_cache = Some(on);
        self
    }
    /// `apps[live].gop_max_frames`
    pub fn gop_max_frames(mut self, n: u64) -> Self {
        self.gop_max_frames = Some(n);
        self
    }
    /// `rtmp.handshake_timeout_secs`
    pub fn handshake_timeout_secs(mut self, s: u64) -> Self {
        self.handshake_timeout_secs = Some(s);
        self
    }
    /// `rtmp.idle_timeout_secs`
    pub fn idle_timeout_secs(mut self, s: u64) -> Self {
        self.idle_timeout_secs = Some(s);
        self
    }
    /// `rtmp.max_message_size`
    pub fn max_message_size(mut self, n: u64) -> Self {
        self.max_message_size = Some(n);
        self
    }
    /// `http.allow_origin`
    pub fn allow_origin(mut self, o: &str) -> Self {
        self.allow_origin = Some(o.to_string());
        self
    }
    /// `log.level` (default: env `FERROCAST_TEST_LOG`, else `info`)
    pub fn log_level(mut self, l: &str) -> Self {
        self.log_level = Some(l.to_string());
        self
    }

    /// Turns on RTMPS and HTTPS (on free ports) with these certificates.
    pub fn tls(mut self, certificates: Vec<TlsCertificate>) -> Self {
        self.tls = certificates;
        self
    }

    /// Extra YAML lines for app `live` (e.g. `publish: {auth: sign, sign_secret_files: [..]}`).
    pub fn app_yaml(mut self, line: &str) -> Self {
        self.app_yaml.push(line.to_string());
        self
    }

    /// Serve the admin port on `port` (fleet tests list their peers' admin ports up front).
    pub fn admin_port(mut self, port: u16) -> Self {
        self.admin_port = Some(port);
        self
    }

    /// An extra `key: value` line in section `rtmp`, `http` or `hub` (e.g.
    /// `section_yaml("http", "max_connections: 3")`).
    pub fn section_yaml(mut self, section: &'static str, line: &str) -> Self {
        assert!(
            ["rtmp", "http", "hub"].contains(&section),
            "section_yaml: no section {section}"
        );
        self.section_yaml.push((section, line.to_string()));
        self
    }

    fn section_lines(&self, y: &mut String, section: &str) {
        for (_, line) in self.section_yaml.iter().filter(|(s, _)| *s == section) {
            let _ = writeln!(y, "  {line}");
        }
    }

    /// Extra top-level YAML lines appended to the config (e.g. `api: {users_dir: ..}`).
    pub fn yaml(mut self, line: &str) -> Self {
        self.top_yaml.push(line.to_string());
        self
    }

    /// The YAML config for the given ports (`tls`: the RTMPS and HTTPS ports, used when
    /// certificates are set).
    pub fn config_yaml(&self, rtmp: u16, http: u16, admin: u16, tls: (u16, u16)) -> String {
        let level = self
            .log_level
            .clone()
            .or_else(|| std::env::var("FERROCAST_TEST_LOG").ok())
            .unwrap_or_else(|| "info".into());
        let mut y = String::new();
        let _ = writeln!(y, "bind: 127.0.0.1");
        let _ = writeln!(y, "log:\n  level: {level:?}\n  format: human");
        let _ = writeln!(y, "rtmp:\n  port: {rtmp}");
        if let Some(v) = self.handshake_timeout_secs {
            let _ = writeln!(y, "  handshake_timeout_secs: {v}");
        }
        if let Some(v) = self.idle_timeout_secs {
            let _ = writeln!(y, "  idle_timeout_secs: {v}");
        }
        if let Some(v) = self.max_message_size {
            let _ = writeln!(y, "  max_message_size: {v}");
        }
        self.section_lines(&mut y, "rtmp");
        let _ = writeln!(y, "http:\n  port: {http}");
        if let Some(o) = &self.allow_origin {
            let _ = writeln!(y, "  allow_origin: {o:?}");
        }
        self.section_lines(&mut y, "http");
        let _ = writeln!(y, "admin:\n  port: {admin}");
        let mut hub = String::new();
        self.section_lines(&mut hub, "hub");
        if let Some(v) = self.write_timeout_secs {
            let _ = writeln!(hub, "  write_timeout_secs: {v}");
        }
        if let Some(v) = self.grace_secs {
            let _ = writeln!(hub, "  publisher_grace_secs: {v}");
        }
        if let Some(v) = self.play_wait_secs {
            let _ = writeln!(hub, "  play_wait_secs: {v}");
        }
        if !hub.is_empty() {
            let _ = write!(y, "hub:\n{hub}");
        }
        let _ = writeln!(y, "apps:\n  - name: live");
        if let Some(v) = self.gop_cache {
            let _ = writeln!(y, "    gop_cache: {v}");
        }
        if let Some(v) = self.gop_max_frames {
            let _ = writeln!(y, "    gop_max_frames: {v}");
        }
        for line in &self.app_yaml {
            let _ = writeln!(y, "    {line}");
        }
        if !self.tls.is_empty() {
            let _ = writeln!(
                y,
                "tls:\n  rtmps_port: {}\n  https_port: {}\n  certificates:",
                tls.0, tls.1
            );
            for c in &self.tls {
                let _ = writeln!(
                    y,
                    "    - cert_file: {:?}\n      key_file: {:?}\n      hosts: {:?}",
                    c.cert_file, c.key_file, c.hosts
                );
            }
        }
        for line in &self.top_yaml {
            let _ = writeln!(y, "{line}");
        }
        y
    }

    /// Starts the server and waits until `/readyz` answers 200.
    pub async fn start(self) -> Result<TestServer> {
        self.clone()
            .start_with(|dir, [rtmp, http, admin, rtmps, https]| {
                let config = dir.join("ferrocast.yaml");
                std::fs::write(&config, self.config_yaml(rtmp, http, admin, (rtmps, https)))?;
                Ok(config)
            })
            .await
    }

    /// Starts the server on a config of the caller's: `write_config` gets the server's scratch
    /// directory and free loopback ports (RTMP, HTTP, admin, RTMPS, HTTPS; the TLS ones matter
    /// only with [`TestServerBuilder::tls`]), writes the config (which must bind 127.0.0.1 and
    /// use those ports) and returns its path. Waits for `/readyz`.
    pub async fn start_with(
        self,
        write_config: impl Fn(&TempDir, [u16; 5]) -> Result<std::path::PathBuf>,
    ) -> Result<TestServer> {
        self.start_with_args(|dir, ports| {
            let config = write_config(dir, ports)?;
            Ok(vec!["--config".to_string(), config.display().to_string()])
        })
        .await
    }

    /// Like [`TestServerBuilder::start_with`], with the server's whole command line made by
    /// `write`; the server must listen on the given admin port.
    pub async fn start_with_args(
        self,
        write: impl Fn(&TempDir, [u16; 5]) -> Result<Vec<String>>,
    ) -> Result<TestServer> {
        let bin = server_bin();
        let mut last_err = None;
        for _attempt in 0..3 {
            let dir = TempDir::new("ferrocast-test")?;
            let [rtmp, http, free_admin, rtmps, https] = free_ports::<5>()?;
            let admin = self.admin_port.unwrap_or(free_admin);
            let args = write(&dir, [rtmp, http, admin, rtmps, https])?;
            let tls = !self.tls.is_empty();
            let proc = Proc::spawn(
                "ferrocast",
                &bin.display().to_string(),
                &args,
                SERVER_LIMIT_SECS,
                &dir.join("server.log"),
            )?;
            let mut server = TestServer {
                proc,
                rtmp_port: rtmp,
                http_port: http,
                admin_port: admin,
                rtmps_port: tls.then_some(rtmps),
                https_port: tls.then_some(https),
                dir,
            };
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e) => {
                    let log = server.logs();
                    // Another process grabbed a port between our probe and the server's bind.
                    if log.contains("in use") || log.contains("AddrInUse") {
                        last_err = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
        Err(last_err.unwrap())
    }
}

/// `N` distinct free loopback TCP ports (bound together so they differ, then released).
pub fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners: Vec<std::net::TcpListener> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()?;
    let mut ports = [0u16; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr()?.port();
    }
    Ok(ports)
}

/// A running `ferrocast` process, killed (with its process group) on drop.
#[derive(Debug)]
pub struct TestServer {
    proc: Proc,
    pub rtmp_port: u16,
    pub http_port: u16,
    pub admin_port: u16,
    /// Set when the server was built with [`TestServerBuilder::tls`].
    pub rtmps_port: Option<u16>,
    pub https_port: Option<u16>,
    dir: TempDir,
}

impl TestServer {
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }

    /// A server with default options.
    pub async fn start() -> Result<TestServer> {
        TestServerBuilder::default().start().await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = self.admin_url("/readyz");
        let mut last;
        loop {
            if let Some(st) = self.proc.try_status() {
                bail!(
                    "ferrocast exited ({st}) before it was ready; log:\n{}",
                    tail(&self.logs(), 6000)
                );
            }
            match crate::http::get_text(&url, Duration::from_secs(2)).await {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => last = format!("{status} {body}"),
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!(
                    "ferrocast not ready within {READY_TIMEOUT:?} (GET {url}: {last}); log:\n{}",
                    tail(&self.logs(), 6000)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn rtmp_url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.rtmp_port)
    }
    pub fn flv_url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/live/{name}.flv", self.http_port)
    }
    pub fn ws_url(&self, name: &str) -> String {
        format!("ws://127.0.0.1:{}/live/{name}.flv", self.http_port)
    }
    /// `rtmps://127.0.0.1:PORT/live/{name}` (panics without TLS).
    pub fn rtmps_url(&self, name: &str) -> String {
        format!(
            "rtmps://127.0.0.1:{}/live/{name}",
            self.rtmps_port.expect("server built with .tls()")
        )
    }
    pub fn https_port(&self) -> u16 {
        self.https_port.expect("server built with .tls()")
    }
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// A scratch directory removed with the server.
    pub fn dir(&self) -> &TempDir {
        &self.dir
    }

    /// Opens an HTTP-FLV player (response head awaited for up to 10 s).
    pub async fn http_player(&self, name: &str) -> Result<FlvPlayer> {
        FlvPlayer::http(&self.flv_url(name), Duration::from_secs(10)).await
    }

    /// Opens a WS-FLV player.
    pub async fn ws_player(&self, name: &str) -> Result<FlvPlayer> {
        FlvPlayer::ws(&self.ws_url(name), Duration::from_secs(10)).await
    }

    /// Waits until `name` is live: an HTTP-FLV player receives a video frame (bounded by `d`).
    pub async fn wait_live(&self, name: &str, d: Duration) -> Result<()> {
        let start = Instant::now();
        let mut p = FlvPlayer::http(&self.flv_url(name), d)
            .await
            .with_context(|| format!("waiting for {name} to go live"))?;
        p.read_until(d.saturating_sub(start.elapsed()), |t| t.is_video_frame())
            .await
            .with_context(|| {
                format!(
                    "waiting for {name} to go live; server log:\n{}",
                    tail(&self.logs(), 3000)
                )
            })?;
        Ok(())
    }

    /// SIGKILLs the server (a crashed pod).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Sends SIGTERM to the server process itself, so it drains for as long as its config
    /// says (its `timeout` wrapper, if signalled, would SIGKILL it 2 s later).
    pub fn sigterm(&self) {
        match self.server_pid() {
            Some(pid) => {
                let _ = std::process::Command::new("kill")
                    .args(["-s", "TERM", &pid.to_string()])
                    .status();
            }
            None => self.proc.signal("TERM"),
        }
    }

    /// Waits up to `d` for the server to exit.
    pub async fn wait_exit(&mut self, d: Duration) -> Option<ExitStatus> {
        self.proc.wait_within(d).await
    }

    pub fn is_running(&mut self) -> bool {
        self.proc.is_running()
    }

    /// The pid of the `ferrocast` process itself (the child of its `timeout` wrapper).
    pub fn server_pid(&self) -> Option<u32> {
        let wrapper = self.proc.pid();
        let children = std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children")).ok()?;
        children.split_whitespace().next()?.parse().ok()
    }

    /// A `kB` field of the server's /proc/PID/status (`VmRSS`, `VmHWM`, ...).
    fn status_kb(&self, field: &str) -> Result<u64> {
        let pid = self.server_pid().context("the server process is not running")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {field} in /proc/{pid}/status"))
    }

    /// The server's resident memory now, in KiB.
    pub fn rss_kb(&self) -> Result<u64> {
        self.status_kb("VmRSS")
    }

    /// The most resident memory the server ever had (its high-water mark), in KiB: what a
    /// short burst of allocation cost, even after it was freed.
    pub fn peak_rss_kb(&self) -> Result<u64> {
        self.status_kb("VmHWM")
    }

    /// The resident memory of the `ferrocast` process, in bytes (`VmRSS`).
    pub fn rss_bytes(&self) -> Result<u64> {
        Ok(self.rss_kb()? * 1024)
    }

    /// The server's stdout and stderr so far.
    /// `METHOD /api/v1{path}` on the HTTP port, with a bearer token when given and a JSON
    /// body: (status, body bytes). Panics when the server does not answer.
    pub async fn api(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Vec<u8>) {
        let url = format!("http://127.0.0.1:{}/api/v1{path}", self.http_port);
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(a) = &auth {
            headers.push(("Authorization", a.as_str()));
        }
        let mut resp = crate::http::request(method, &url, &headers, body.map(str::as_bytes), Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e:#}"));
        let (bytes, _) = resp
            .read_to_end(Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e:#}"));
        (resp.status, bytes)
    }

    /// [`TestServer::api`] with the answer parsed as JSON (panics, showing it, when it is not).
    pub async fn api_json(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (status, bytes) = self.api(method, path, token, body).await;
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, json)
    }

    pub fn logs(&self) -> String {
        self.proc.log_text()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.proc.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- ferrocast log (rtmp {}, http {}, admin {}) ----\n{}\n---- end of ferrocast log ----",
                self.rtmp_port,
                self.http_port,
                self.admin_port,
                tail(&self.logs(), 8000)
            );
        }
    }
}
