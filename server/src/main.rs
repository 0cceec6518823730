//! The `ferrocast` binary: parses the command line, loads the config and runs the server
//! until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use ferrocast_server::config::{Config, LogFormat};
use ferrocast_server::server::Server;

// glibc's malloc was a third of the HLS request path's user time; the trade (more RSS per
// RTMP player) is measured in docs/benchmarks.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
ferrocast: live-streaming media server (RTMP/RTMPS, HTTP-FLV, WS-FLV over HTTP/HTTPS)

USAGE:
    ferrocast [--config FILE] [--base-config FILE] [--log-json]
    ferrocast --print-config [--config FILE]
    ferrocast --check-config FILE

OPTIONS:
    --config FILE        YAML configuration; every key is optional (defaults are embedded)
    --base-config FILE   take the settings read only at start (bind, log, rtmp, http, admin,
                         hub, tls ports) from FILE instead of --config, at start and on every
                         reload (Kubernetes: the chart's base config that comes with the pod)
    --print-config       print the effective configuration as YAML and exit
    --check-config FILE  validate FILE and the TLS certificates it names; exit non-zero
                         with a message naming the bad key
    --log-json           log as JSON lines (same as log.format: json)
    -h, --help           this help
    -V, --version        version
";

enum Command {
    Run {
        config: Option<PathBuf>,
        base: Option<PathBuf>,
        log_json: bool,
    },
    Print {
        config: Option<PathBuf>,
    },
    Check {
        file: PathBuf,
    },
    Help,
    Version,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut config = None;
    let mut base = None;
    let mut print = false;
    let mut check = None;
    let mut log_json = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => config = Some(PathBuf::from(args.next().ok_or("--config needs a FILE")?)),
            "--base-config" => base = Some(PathBuf::from(args.next().ok_or("--base-config needs a FILE")?)),
            "--print-config" => print = true,
            "--check-config" => check = Some(PathBuf::from(args.next().ok_or("--check-config needs a FILE")?)),
            "--log-json" => log_json = true,
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            other => {
                if let Some(v) = other.strip_prefix("--config=") {
                    config = Some(PathBuf::from(v));
                } else {
                    return Err(format!("unknown argument {other:?}"));
                }
            }
        }
    }
    Ok(match (check, print) {
        (Some(file), _) => Command::Check { file },
        (None, true) => Command::Print { config },
        (None, false) => Command::Run { config, base, log_json },
    })
}

fn load(path: &Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

/// `--check-config`: the file parses and validates, and its TLS certificates load and match
/// their keys (what would otherwise stop the server at start).
fn check(file: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(file)?;
    if !config.tls.certificates.is_empty() {
        ferrocast_server::tls::Certificates::load(&config.tls.certificates)
            .with_context(|| format!("{}", file.display()))?;
    }
    println!("{}: ok", file.display());
    Ok(())
}

fn init_logging(config: &Config, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level))
        // The generated admin password is the only way in without configured users: its one
        // line is shown whatever the level.
        .add_directive(
            format!("{}=warn", ferrocast_server::api::ANNOUNCE_TARGET)
                .parse()
                .expect("a valid log directive"),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Secrets the server generated (the admin password) are scrubbed from every line
        // after the one that announces them.
        .with_writer(|| ferrocast_server::redact::ScrubbingWriter(std::io::stderr()))
        // Colour codes only on a terminal, not in files and log collectors.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json || config.log.format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

fn run(
    config: Config,
    path: Option<PathBuf>,
    start: Option<ferrocast_server::reload::StartSettings>,
    log_json: bool,
) -> anyhow::Result<()> {
    init_logging(&config, log_json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting runtime")?;
    rt.block_on(async {
        let server = Server::bind(config).await?;
        if let Some(path) = path {
            server.watch_with_start_settings(path, start);
        }
        server.run(shutdown_signal()).await;
        Ok::<_, anyhow::Error>(())
    })?;
    // Connections still open past the grace period are dropped with the runtime.
    rt.shutdown_timeout(std::time::Duration::from_millis(500));
    Ok(())
}

fn main() -> ExitCode {
    let cmd = match parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrocast: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd {
        Command::Help => {
            print!("{USAGE}");
            Ok(())
        }
        Command::Version => {
            println!("ferrocast {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Print { config } => load(&config).map(|c| print!("{}", c.to_yaml())),
        Command::Check { file } => check(&file),
        Command::Run { config, base, log_json } => load(&config).and_then(|c| {
            let start = match &base {
                Some(b) => Some(ferrocast_server::reload::StartSettings::new(
                    Config::load(b).context("--base-config")?,
                )),
                None => None,
            };
            let c = match &start {
                Some(s) => s.apply(c),
                None => c,
            };
            run(c, config, start, log_json)
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrocast: {e:#}");
            ExitCode::FAILURE
        }
    }
}
