//! Listeners, connection limits and graceful shutdown: binds the RTMP, HTTP and admin ports
//! (and RTMPS and HTTPS when a certificate is configured), accepts connections within their
//! limits, and on shutdown ends every stream cleanly.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tracing::{debug, info, warn};

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::SystemTime;

use crate::auth::{AuthError, Denied, IpFilter, Policy};
use crate::config::Config;
use crate::hub::StreamKey;
use crate::hub::{Hub, HubSettings};
use crate::metrics::Metrics;
use crate::session::{Protocol, Role, Sessions};
use crate::tls::{Certificates, TlsError};
use crate::webhooks::Webhooks;

/// What every connection handler shares.
pub struct Context {
    pub config: Config,
    pub hub: Hub,
    /// Flips to `true` once on shutdown.
    pub shutdown: watch::Receiver<bool>,
    pub sessions: Arc<Sessions>,
    pub metrics: Arc<Metrics>,
    pub webhooks: Arc<Webhooks>,
    /// Certificates of the RTMPS and HTTPS listeners; `None` when TLS is off.
    pub tls: Option<Arc<Certificates>>,
    /// HLS / LL-HLS / DASH segmenters.
    pub hls: Arc<crate::hls::Hls>,
    /// Publish and play policies per app, secrets loaded; swapped whole on reload so a
    /// request sees either the old or the new set, never a mix.
    policies: RwLock<Arc<Policies>>,
}

type Policies = HashMap<String, (Policy, Policy, IpFilter)>;

/// Loads every app's policies (reads the secret files).
fn load_policies(config: &Config) -> Result<Policies, AuthError> {
    let mut policies = HashMap::new();
    for app in &config.apps {
        let filter = IpFilter::new(&app.allow, &app.deny);
        policies.insert(
            app.name.clone(),
            (Policy::load(&app.publish)?, Policy::load(&app.play)?, filter),
        );
    }
    Ok(policies)
}

/// Everything a config's policies read from disk, to notice when any of it changes
/// (Kubernetes updates mounted Secrets by swapping a `..data` symlink, so contents are
/// compared, not modification times).
fn fingerprint(config_path: &std::path::Path, config: &Config) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(config_path).ok().hash(&mut h);
    // Users are read at each login; hashing the file still makes a change visible in the log.
    if let Some(f) = &config.api.users_file {
        std::fs::read(f).ok().hash(&mut h);
    }
    for app in &config.apps {
        for p in [&app.publish, &app.play] {
            for f in p.sign_secret_files.iter().chain(&p.token.key_files).chain(&p.keys_file) {
                std::fs::read(f).ok().hash(&mut h);
            }
            for hook in &config.webhooks.hooks {
                if let Some(f) = &hook.secret_file {
                    std::fs::read(f).ok().hash(&mut h);
                }
            }
            if let Some(dir) = &p.keys_dir {
                let mut entries: Vec<_> = std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .collect();
                entries.sort();
                for e in entries {
                    e.hash(&mut h);
                    std::fs::read(&e).ok().hash(&mut h);
                }
            }
        }
    }
    h.finish()
}

/// Polls the config file and the secret files it names; on a change, loads and validates
/// the new config and swaps the access policies in. A bad new config or secret is refused
/// with a logged reason and the old policies stay. Live sessions are never touched.
async fn watch_config(ctx: Arc<Context>, path: std::path::PathBuf) {
    let mut current = ctx.config.clone();
    let mut last = fingerprint(&path, &current);
    let mut shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
        let now = fingerprint(&path, &current);
        if now == last {
            continue;
        }
        last = now;
        let config = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                warn!("config change refused, keeping the running one: {e}");
                continue;
            }
        };
        let applied = load_policies(&config)
            .map_err(|e| e.to_string())
            .and_then(|p| {
                new_certificates(&ctx, &current, &config)
                    .map(|c| (p, c))
                    .map_err(|e| e.to_string())
            })
            .and_then(|(p, c)| {
                ctx.webhooks
                    .reconfigure(&config.webhooks)
                    .map(|()| (p, c))
                    .map_err(|e| e.to_string())
            });
        match applied {
            Ok((p, certificates)) => {
                *ctx.policies.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
                ctx.hub.set_apps(config.apps.clone());
                if let (Some(tls), Some(new)) = (&ctx.tls, certificates) {
                    tls.install(new);
                }
                info!("configuration reloaded: apps, access policies, secrets, webhooks and TLS certificates updated");
                last = fingerprint(&path, &config);
                current = config;
            }
            Err(e) => warn!("config change refused, keeping the running one: {e}"),
        }
    }
}

/// The TLS certificate list of a reloaded config, loaded and ready to install, or `None`
/// when it is unchanged or cannot apply without a restart (which is logged).
fn new_certificates(
    ctx: &Context,
    current: &Config,
    config: &Config,
) -> Result<Option<crate::tls::NewCertificates>, TlsError> {
    let (was, now) = (&current.tls, &config.tls);
    if (was.rtmps_port, was.https_port) != (now.rtmps_port, now.https_port) {
        warn!("tls.rtmps_port and tls.https_port take effect at the next start");
    }
    match &ctx.tls {
        Some(_) if now.certificates.is_empty() => {
            if !was.certificates.is_empty() {
                warn!(
                    "turning TLS off takes effect at the next start; RTMPS and HTTPS keep their current certificates"
                );
            }
            Ok(None)
        }
        Some(tls) => tls.prepare(&now.certificates),
        None => {
            if !now.certificates.is_empty() && was.certificates.is_empty() {
                warn!("the RTMPS and HTTPS listeners open at the next start: TLS was off when the server started");
            }
            Ok(None)
        }
    }
}

impl Context {
    /// Decides a publish or play request; a refusal is counted and logged without secrets.
    /// `Ok(Some(key))`: the request named a stream key and stands for the public stream `key`.
    pub fn authorize(
        &self,
        key: &StreamKey,
        role: Role,
        query: &str,
        peer: Option<IpAddr>,
        session: u64,
    ) -> Result<Option<StreamKey>, Denied> {
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner()).clone();
        let Some((publish, play, filter)) = policies.get(&key.app) else {
            return Ok(None);
        };
        let policy = if role == Role::Publisher { publish } else { play };
        let address = match peer {
            Some(ip) => filter.check(ip),
            None => Ok(()),
        };
        let public = |name: String| StreamKey {
            app: key.app.clone(),
            name,
        };
        address
            .and_then(|()| {
                policy
                    .check_as(
                        key,
                        query,
                        SystemTime::now(),
                        Some(if role == Role::Publisher { "publish" } else { "play" }),
                    )
                    .map(|n| n.map(public))
            })
            .inspect_err(|d| {
                self.metrics
                    .auth_failures
                    .with_label_values(&[&key.app, d.reason()])
                    .inc();
                // The requested name may itself be a stream key, so only the app is logged.
                warn!(session, app = %key.app, role = role.as_str(), reason = d.reason(), "request denied: {d}");
            })
    }

    /// Applies only the app's address lists (requests that already proved their right to
    /// play, such as HLS segments with a session token); a refusal is counted.
    pub fn check_address(&self, app: &str, peer: Option<IpAddr>) -> Result<(), Denied> {
        let policies = self.policies.read().unwrap_or_else(|e| e.into_inner()).clone();
        let (Some((_, _, filter)), Some(ip)) = (policies.get(app), peer) else {
            return Ok(());
        };
        filter.check(ip).inspect_err(|d| {
            self.metrics.auth_failures.with_label_values(&[app, d.reason()]).inc();
        })
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Hls(#[from] crate::hls::KeyError),
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A bound server, ready to run.
pub struct Server {
    ctx: Arc<Context>,
    shutdown_tx: watch::Sender<bool>,
    rtmp: TcpListener,
    http: TcpListener,
    admin: TcpListener,
    tls: Option<TlsListeners>,
}

/// The RTMPS and HTTPS listeners, bound only when a certificate is configured.
struct TlsListeners {
    rtmps: TcpListener,
    https: TcpListener,
    rtmps_tls: tokio_rustls::TlsAcceptor,
    /// Offers ALPN `h2` and `http/1.1`.
    https_tls: tokio_rustls::TlsAcceptor,
}

/// Addresses the listeners actually bound (useful with port 0).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    pub admin: SocketAddr,
    /// `None` when TLS is off (no certificate configured).
    pub rtmps: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
}

async fn bind(what: &'static str, ip: IpAddr, port: u16) -> Result<TcpListener, ServerError> {
    let addr = SocketAddr::new(ip, port);
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, ServerError> {
        let policies = RwLock::new(Arc::new(load_policies(&config)?));
        let tls_certs = match config.tls.certificates.is_empty() {
            true => None,
            false => Some(Certificates::load(&config.tls.certificates)?),
        };
        let rtmp = bind("rtmp", config.bind, config.rtmp.port).await?;
        let http = bind("http", config.bind, config.http.port).await?;
        let admin = bind("admin", config.admin.bind.unwrap_or(config.bind), config.admin.port).await?;
        let tls = match &tls_certs {
            Some(certs) => Some(TlsListeners {
                rtmps: bind("rtmps", config.bind, config.tls.rtmps_port).await?,
                https: bind("https", config.bind, config.tls.https_port).await?,
                rtmps_tls: certs.server_config(&[])?.into(),
                https_tls: certs.server_config(crate::tls::HTTPS_ALPN)?.into(),
            }),
            None => None,
        };
        let (shutdown_tx, shutdown) = watch::channel(false);
        let hub = Hub::new(HubSettings::from_config(&config));
        let metrics = Arc::new(Metrics::new());
        let sessions = Arc::new(Sessions::new(metrics.clone()));
        let webhooks = Webhooks::start(&config.webhooks, metrics.clone())?;
        let hls = crate::hls::Hls::new(&config, hub.clone(), metrics.clone(), shutdown.clone())?;
        let ctx = Arc::new(Context {
            config,
            hub,
            shutdown,
            sessions,
            metrics,
            webhooks,
            tls: tls_certs,
            hls,
            policies,
        });
        Ok(Server {
            ctx,
            shutdown_tx,
            rtmp,
            http,
            admin,
            tls,
        })
    }

    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }

    pub fn addrs(&self) -> BoundAddrs {
        BoundAddrs {
            rtmp: self.rtmp.local_addr().expect("bound"),
            http: self.http.local_addr().expect("bound"),
            admin: self.admin.local_addr().expect("bound"),
            rtmps: self.tls.as_ref().map(|t| t.rtmps.local_addr().expect("bound")),
            https: self.tls.as_ref().map(|t| t.https.local_addr().expect("bound")),
        }
    }

    /// Serves until `signal` completes, then drains within the grace period.
    /// Watches `path` (the file the config came from) and applies access-policy changes live.
    pub fn watch(&self, path: std::path::PathBuf) {
        tokio::spawn(watch_config(self.ctx.clone(), path));
    }

    pub async fn run(self, signal: impl Future<Output = ()>) {
        let addrs = self.addrs();
        let ctx = self.ctx.clone();
        let c = &ctx.config;
        let rtmp_slots = Arc::new(Semaphore::new(c.rtmp.max_connections));
        let http_slots = Arc::new(Semaphore::new(c.http.max_connections));
        let admin_slots = Arc::new(Semaphore::new(64));
        log_urls(&addrs, c);
        tokio::spawn(ctx.hls.clone().run_always());

        let rtmp_ctx = ctx.clone();
        let rtmp = accept_loop("rtmp", self.rtmp, rtmp_slots.clone(), ctx.clone(), move |s, peer| {
            crate::rtmp::conn::serve(s, peer, Protocol::Rtmp, rtmp_ctx.clone())
        });
        let router = crate::http::router(ctx.clone());
        let http_ctx = ctx.clone();
        let http = accept_loop("http", self.http, http_slots.clone(), ctx.clone(), move |s, peer| {
            crate::http::serve_connection(s, peer, router.clone(), http_ctx.clone())
        });
        let admin_router = crate::http::admin_router(ctx.clone());
        let admin_ctx = ctx.clone();
        let admin = accept_loop("admin", self.admin, admin_slots.clone(), ctx.clone(), move |s, peer| {
            crate::http::serve_connection(s, peer, admin_router.clone(), admin_ctx.clone())
        });
        let tls = match (self.tls, &ctx.tls) {
            (Some(listeners), Some(certs)) => Some(tls_accept_loops(listeners, certs, &ctx, &rtmp_slots, &http_slots)),
            _ => None,
        };
        let accepting = tokio::spawn(async move {
            let tls = async {
                if let Some(tls) = tls {
                    tls.await
                }
            };
            tokio::join!(rtmp, http, admin, tls);
        });

        signal.await;
        info!("shutting down: ending streams and draining connections");
        let _ = self.shutdown_tx.send(true);
        ctx.hub.shutdown();
        let grace = Duration::from_secs(c.hub.shutdown_grace_secs);
        let drained = tokio::time::timeout(grace, async {
            while rtmp_slots.available_permits() < c.rtmp.max_connections
                || http_slots.available_permits() < c.http.max_connections
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if drained.is_err() {
            warn!("grace period over with connections still open; closing them");
        }
        accepting.abort();
        info!("stopped");
    }
}

/// Accepts RTMPS and HTTPS connections: each completes its TLS handshake within the
/// protocol's handshake or request timeout, then is served like its plain counterpart. They
/// count against the RTMP and HTTP connection limits, and the certificate files are watched.
fn tls_accept_loops(
    listeners: TlsListeners,
    certs: &Arc<Certificates>,
    ctx: &Arc<Context>,
    rtmp_slots: &Arc<Semaphore>,
    http_slots: &Arc<Semaphore>,
) -> impl Future<Output = ()> + Send + 'static {
    let c = &ctx.config;
    tokio::spawn(certs.clone().watch(ctx.shutdown.clone()));

    let acceptor = listeners.rtmps_tls;
    let limit = Duration::from_secs(c.rtmp.handshake_timeout_secs);
    let rtmps_ctx = ctx.clone();
    let rtmps = accept_loop(
        "rtmps",
        listeners.rtmps,
        rtmp_slots.clone(),
        ctx.clone(),
        move |s, peer| {
            let (acceptor, ctx) = (acceptor.clone(), rtmps_ctx.clone());
            async move {
                if let Some(tls) = crate::tls::handshake(&acceptor, s, "rtmps", peer, limit).await {
                    crate::rtmp::conn::serve(tls, peer, Protocol::Rtmps, ctx).await;
                }
            }
        },
    );

    let acceptor = listeners.https_tls;
    let limit = Duration::from_secs(c.http.request_timeout_secs);
    let router = crate::http::router(ctx.clone());
    let https_ctx = ctx.clone();
    let https = accept_loop(
        "https",
        listeners.https,
        http_slots.clone(),
        ctx.clone(),
        move |s, peer| {
            let (acceptor, router, ctx) = (acceptor.clone(), router.clone(), https_ctx.clone());
            async move {
                if let Some(tls) = crate::tls::handshake(&acceptor, s, "https", peer, limit).await {
                    crate::http::serve_tls_connection(tls, peer, router, ctx).await;
                }
            }
        },
    );
    async move {
        tokio::join!(rtmps, https);
    }
}

fn log_urls(a: &BoundAddrs, c: &Config) {
    let host = if a.rtmp.ip().is_unspecified() {
        "localhost".to_string()
    } else {
        a.rtmp.ip().to_string()
    };
    let app = c.apps.first().map_or("live", |a| a.name.as_str());
    info!(rtmp = %a.rtmp, http = %a.http, admin = %a.admin, rtmps = ?a.rtmps, https = ?a.https, "ferrocast listening");
    info!("publish: rtmp://{host}:{}/{app}/STREAM_NAME", a.rtmp.port());
    info!("play:    rtmp://{host}:{}/{app}/STREAM_NAME", a.rtmp.port());
    info!("play:    http://{host}:{}/{app}/STREAM_NAME.flv", a.http.port());
    info!("play:    ws://{host}:{}/{app}/STREAM_NAME.flv", a.http.port());
    if let (Some(rtmps), Some(https)) = (a.rtmps, a.https) {
        // Certificates name hosts, not addresses: show the first configured name when there is one.
        let tls_host = c
            .tls
            .certificates
            .iter()
            .flat_map(|cert| &cert.hosts)
            .find(|h| !h.starts_with("*."))
            .unwrap_or(&host);
        info!("publish: rtmps://{tls_host}:{}/{app}/STREAM_NAME", rtmps.port());
        info!("play:    rtmps://{tls_host}:{}/{app}/STREAM_NAME", rtmps.port());
        info!("play:    https://{tls_host}:{}/{app}/STREAM_NAME.flv", https.port());
        info!("play:    wss://{tls_host}:{}/{app}/STREAM_NAME.flv", https.port());
    }
}

async fn accept_loop<F, Fut>(
    what: &'static str,
    listener: TcpListener,
    slots: Arc<Semaphore>,
    ctx: Arc<Context>,
    handle: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            a = listener.accept() => a,
        };
        let (socket, peer) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(e) => {
                // Out of file descriptors and similar: wait instead of spinning.
                warn!(listener = what, "accept failed: {e}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            warn!(listener = what, %peer, "connection limit reached; closing new connection");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        debug!(listener = what, %peer, "accepted");
        let fut = handle(socket, peer);
        tokio::spawn(async move {
            fut.await;
            drop(permit);
        });
    }
}
