//! Real servers that relays pull from and push to: nginx with the RTMP module (Debian's
//! libnginx-mod-rtmp) and GStreamer's RTSP server (gir1.2-gst-rtsp-server-1.0 through
//! python3-gi, `tests/peers/rtsp_server.py`). Both bind 127.0.0.1 on free ports, are bounded
//! in time and killed on drop.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::env::{require_tool, workspace_root, TempDir};
use crate::process::{tail, Proc};
use crate::server::free_ports;

/// How long a peer process may live, whatever the test does.
const PEER_LIMIT_SECS: u64 = 300;

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
async fn wait_listening(proc: &mut Proc, port: u16, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        if let Some(st) = proc.try_status() {
            bail!("{what} exited ({st}); log:\n{}", tail(&proc.log_text(), 3000));
        }
        if Instant::now() > deadline {
            bail!("{what} not listening on {port}; log:\n{}", tail(&proc.log_text(), 3000));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// nginx with one RTMP application `live` (live on), in the foreground.
#[derive(Debug)]
pub struct NginxRtmp {
    proc: Proc,
    pub port: u16,
    _dir: TempDir,
}

impl NginxRtmp {
    pub async fn start() -> Result<NginxRtmp> {
        let nginx = require_tool("nginx");
        let module = PathBuf::from("/usr/lib/nginx/modules/ngx_rtmp_module.so");
        if !module.is_file() {
            panic!(
                "missing tool libnginx-mod-rtmp ({} not found): run scripts/test.sh",
                module.display()
            );
        }
        let dir = TempDir::new("nginx-rtmp")?;
        std::fs::create_dir_all(dir.join("logs"))?;
        let [port] = free_ports::<1>()?;
        let conf = format!(
            "load_module {module};\ndaemon off;\nmaster_process off;\nworker_processes 1;\n\
             pid {pid};\nerror_log {log} info;\nevents {{ worker_connections 256; }}\n\
             rtmp {{ server {{ listen 127.0.0.1:{port}; chunk_size 4096;\n\
             application live {{ live on; }} }} }}\n",
            module = module.display(),
            pid = dir.join("nginx.pid").display(),
            log = dir.join("logs/error.log").display(),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let args: Vec<String> = vec![
            "-p".into(),
            format!("{}/", dir.path().display()),
            "-e".into(),
            dir.join("logs/error.log").display().to_string(),
            "-c".into(),
            conf_path.display().to_string(),
        ];
        let mut proc = Proc::spawn(
            "nginx-rtmp",
            &nginx.display().to_string(),
            &args,
            PEER_LIMIT_SECS,
            &dir.join("nginx.out"),
        )?;
        wait_listening(&mut proc, port, "nginx-rtmp").await?;
        Ok(NginxRtmp { proc, port, _dir: dir })
    }

    pub fn url(&self, name: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{name}", self.port)
    }

    /// nginx's error log (its RTMP module logs there).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.join("logs/error.log")).unwrap_or_default() + &self.proc.log_text()
    }
}

/// GStreamer's RTSP server with a live test stream at `/cam`: `video` is `h264` or `h265`,
/// audio is AAC.
#[derive(Debug)]
pub struct RtspServer {
    proc: Proc,
    pub port: u16,
    _dir: TempDir,
}

impl RtspServer {
    pub async fn start(video: &str) -> Result<RtspServer> {
        let python = PathBuf::from("/usr/bin/python3");
        let check = std::process::Command::new(&python)
            .args(["-c", "import gi; gi.require_version('GstRtspServer', '1.0')"])
            .output();
        if !check.is_ok_and(|o| o.status.success()) {
            panic!("missing tool gir1.2-gst-rtsp-server-1.0 / python3-gi for /usr/bin/python3: run scripts/test.sh");
        }
        let script = workspace_root().join("tests/peers/rtsp_server.py");
        let dir = TempDir::new("rtsp-server")?;
        let [port] = free_ports::<1>()?;
        let args = vec![script.display().to_string(), port.to_string(), video.to_string()];
        let mut proc = Proc::spawn(
            &format!("gst rtsp server ({video})"),
            &python.display().to_string(),
            &args,
            PEER_LIMIT_SECS,
            &dir.join("rtsp.log"),
        )?;
        wait_listening(&mut proc, port, "the RTSP server").await?;
        Ok(RtspServer { proc, port, _dir: dir })
    }

    pub fn url(&self) -> String {
        format!("rtsp://127.0.0.1:{}/cam", self.port)
    }

    pub fn log(&self) -> String {
        self.proc.log_text()
    }
}
