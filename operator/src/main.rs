//! The `ferrocast-operator` binary: parses flags, serves /metrics /healthz /readyz, waits
//! for the leader Lease and runs the controllers until SIGTERM or until leadership is lost.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use ferrocast_operator::cli::{self, Command, Options};
use ferrocast_operator::crd::{MediaApp, StreamAuth};
use ferrocast_operator::leader::Elector;
use ferrocast_operator::metrics::Metrics;
use ferrocast_operator::render::{Fleet, SECRETS_DIR};
use ferrocast_operator::{admin, controller};
use ferrocast_server::config::Config;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use tracing::{error, info};

fn main() -> ExitCode {
    let command = match cli::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ferrocast-operator: {e}");
            return ExitCode::from(2);
        }
    };
    let options = match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Command::Version => {
            println!("ferrocast-operator {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Command::Run(o) => *o,
    };
    init_logging(options.log_json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(options));
    // Tasks still running (a deposed leader's) are dropped now; blocking ones get a moment.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

async fn run(o: Options) -> anyhow::Result<()> {
    let base = match &o.base_config {
        Some(path) => Config::load(path).context("--base-config")?,
        None => Config::default(),
    };
    let fleet = Fleet {
        name: o.fleet.clone(),
        serves_unlabelled: o.serve_unlabelled,
        unlabelled_elsewhere: Default::default(),
        lease: o.lease_name.clone(),
        namespace: o.namespace.clone(),
        watch_namespaces: o.watch_namespaces.clone(),
        config_map: o.config_map.clone(),
        secret: o.secret.clone(),
        selector: o.server_selector.clone(),
        base,
        secrets_dir: SECRETS_DIR.into(),
    };
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(o.metrics_addr)
        .await
        .with_context(|| format!("cannot listen on {}", o.metrics_addr))?;
    tokio::spawn(admin::serve(
        listener,
        admin::Admin {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
    ));
    info!(namespace = %o.namespace, watch_namespaces = %o.watch_namespaces.join(","), fleet = %o.fleet, serve_unlabelled = o.serve_unlabelled, selector = %cli::selector_string(&o.server_selector), config_map = %o.config_map, secret = %o.secret, metrics = %o.metrics_addr, "ferrocast-operator starting");

    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client configuration (in-cluster or kubeconfig)")?;
    // Every namespace served must be readable: a watched namespace without the chart's Role
    // is refused at start, naming it, rather than served silently by halves.
    for ns in fleet.namespaces() {
        for (kind, probe) in [
            (
                "MediaApp",
                Api::<MediaApp>::namespaced(client.clone(), &ns)
                    .list(&ListParams::default().limit(1))
                    .await
                    .map(drop),
            ),
            (
                "StreamAuth",
                Api::<StreamAuth>::namespaced(client.clone(), &ns)
                    .list(&ListParams::default().limit(1))
                    .await
                    .map(drop),
            ),
            (
                "Secret",
                Api::<Secret>::namespaced(client.clone(), &ns)
                    .list_metadata(&ListParams::default().limit(1))
                    .await
                    .map(drop),
            ),
        ] {
            probe.with_context(|| {
                format!("cannot list {kind}s in {ns}; are the CRDs (crds/) installed and is RBAC granted there?")
            })?;
        }
    }
    ready.store(true, Ordering::Relaxed);

    let elector = Arc::new(
        Elector::new(
            Api::<Lease>::namespaced(client.clone(), &o.namespace),
            &o.lease_name,
            &o.identity,
        )
        .for_fleet(&o.fleet, o.serve_unlabelled),
    );
    let (leading_tx, mut leading_rx) = tokio::sync::watch::channel(false);
    let mut campaign = {
        let (elector, gauge) = (elector.clone(), metrics.leader.clone());
        tokio::spawn(async move { elector.run(leading_tx, gauge).await })
    };
    let campaign_abort = campaign.abort_handle();
    let mut shutdown = Box::pin(shutdown_signal());
    tokio::select! {
        _ = &mut shutdown => {
            info!("stopped before becoming the leader");
            return Ok(());
        }
        r = leading_rx.wait_for(|l| *l) => { r.context("leader election ended")?; }
    }
    // SIGTERM stops the controllers gracefully (reconciles in flight finish). A lost Lease
    // stops them at once: dropping `controller::run`'s future drops every reconcile in flight and aborts
    // the fleet and live loops, so a deposed leader writes nothing more, well before another
    // replica can take over (the elector steps down RENEW_DEADLINE after its last renewal,
    // others wait a whole LEASE); then the process exits and restarts as a candidate.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(());
    });
    let stop = async move {
        let _ = stop_rx.await;
    };
    tokio::select! {
        _ = controller::run(client, fleet, metrics.clone(), &o.identity, o.server_admin_port, stop) => {}
        e = &mut campaign => {
            let e = e.unwrap_or(ferrocast_operator::Error::LostLease);
            anyhow::bail!("{e}; controllers stopped, exiting so this replica restarts as a candidate");
        }
    }
    // Stop renewing, then hand the Lease over.
    campaign_abort.abort();
    elector.release().await;
    metrics.leader.set(0);
    info!("stopped");
    Ok(())
}
