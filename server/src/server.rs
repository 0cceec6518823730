//! Listeners, connection limits and graceful shutdown: binds the RTMP, HTTP and admin ports
//! (and RTMPS and HTTPS when a certificate is configured), accepts connections within their
//! limits, and on shutdown ends every stream cleanly.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::SystemTime;

use crate::auth::{AuthError, Cidr, Denied, IpFilter, Policy};
use crate::config::{Config, ProxyListener};
use crate::hub::{Hub, HubSettings};
use crate::hub::{HubError, Publisher, PublisherInfo, StreamKey};
use crate::limits::{ConnLimits, Slot};
use crate::metrics::Metrics;
use crate::net::{accept_proxied, Prefixed, ProxyPolicy};
use crate::serving::ServingThreads;
use crate::session::{Protocol, Role, Sessions};
use crate::tls::{Certificates, TlsError};
use crate::webhooks::Webhooks;

/// What every connection handler shares.
pub struct Context {
    pub config: Config,
    pub hub: Hub,
    /// Flips to `true` once on shutdown.
    pub shutdown: watch::Receiver<bool>,
    /// Flips to `true` once the drain has closed the public listeners (before `shutdown`):
    /// not ready, no new connections, live sessions continue.
    pub draining: watch::Receiver<bool>,
    pub sessions: Arc<Sessions>,
    pub metrics: Arc<Metrics>,
    pub webhooks: Arc<Webhooks>,
    /// Certificates of the RTMPS and HTTPS listeners (empty while TLS is off).
    pub tls: Arc<Certificates>,
    /// The TLS ports wanted open: `Some` while at least one certificate is configured. The
    /// TLS listener task follows it.
    tls_wanted: watch::Sender<Option<TlsPorts>>,
    /// Where the RTMPS and HTTPS listeners are bound now; `None` while closed.
    tls_addrs: RwLock<Option<(SocketAddr, SocketAddr)>>,
    /// The config in service and a newer one that is not (`/config-status`).
    config_status: RwLock<crate::reload::ConfigStatus>,
    /// The fleet this server is part of; `None` for a single server.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Relays (pulls and pushes); also the hub's on-demand and publish hooks.
    pub relays: Arc<crate::relay::Relays>,
    /// Places of RTMP and RTMPS connections (`rtmp.max_connections*`).
    pub rtmp_limits: Arc<ConnLimits>,
    /// Places of HTTP and HTTPS connections, WebSockets and HTTP/2 FLV streams
    /// (`http.max_connections*`).
    pub http_limits: Arc<ConnLimits>,
    /// The live configuration with every app's publish and play policies (secrets loaded),
    /// swapped whole on reload so a request sees either the old or the new set, never a mix.
    access: RwLock<Arc<Access>>,
    /// HLS / LL-HLS / DASH segmenters.
    pub hls: Arc<crate::hls::Hls>,
    /// ffmpeg renditions of the apps' `transcode` rules.
    pub transcodes: Arc<crate::transcode::Transcodes>,
    /// The `admin` password made at start when no API users are configured.
    pub admin_password: Option<crate::api::GeneratedPassword>,
    /// Recent server load samples (`GET /api/v1/load`, the console's charts).
    pub load: Arc<crate::load::LoadHistory>,
    /// Recorders and their upload queues.
    pub records: Arc<crate::record::Recorders>,
}

/// One consistent view of the apps served and who may use them: the configuration they came
/// from and each app's policies. An app without policies here is not served (fail closed).
pub struct Access {
    /// The configuration last loaded (at start or by a reload).
    pub config: Arc<Config>,
    policies: HashMap<String, AppPolicies>,
}

/// An app's publish and play policies and its address lists.
pub struct AppPolicies {
    pub publish: Policy,
    pub play: Policy,
    pub filter: IpFilter,
    /// The address lists of each action, checked after the app's.
    pub publish_filter: IpFilter,
    pub play_filter: IpFilter,
}

impl Access {
    /// Loads every app's policies (reads the secret files).
    pub fn load(config: Config) -> Result<Access, AuthError> {
        let mut policies = HashMap::new();
        for app in &config.apps {
            let p = AppPolicies {
                publish: Policy::load(&app.publish)?,
                play: Policy::load(&app.play)?,
                filter: IpFilter::new(&app.allow, &app.deny),
                publish_filter: IpFilter::new(&app.publish.allow, &app.publish.deny),
                play_filter: IpFilter::new(&app.play.allow, &app.play.deny),
            };
            if p.publish.accepts_signatures_of(&p.play) {
                // Node-Media-Server signatures do not name the action: a viewer's play URL
                // is then a publish URL too.
                warn!(
                    app = %app.name,
                    "publish and play share a sign secret, so any play URL can also publish; give them \
                     different secrets (or set publish.sign_action_bound)"
                );
            }
            policies.insert(app.name.clone(), p);
        }
        Ok(Access {
            config: Arc::new(config),
            policies,
        })
    }

    /// The config and policies of `app`, if it is served.
    pub fn app(&self, app: &str) -> Option<(&crate::config::AppConfig, &AppPolicies)> {
        Some((self.config.app(app)?, self.policies.get(app)?))
    }
}

/// Everything a config's policies read from disk, to notice when any of it changes
/// (Kubernetes updates mounted Secrets by swapping a `..data` symlink, so contents are
/// compared, not modification times).
fn fingerprint(config_path: &std::path::Path, configs: &[&Config]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::read(config_path).ok().hash(&mut h);
    for config in configs {
        fingerprint_files(config, &mut h);
    }
    h.finish()
}

fn fingerprint_files(config: &Config, h: &mut std::collections::hash_map::DefaultHasher) {
    use std::hash::Hash;
    let mut h = h;
    if let Some(f) = &config.revision.file {
        std::fs::read(f).ok().hash(&mut h);
    }
    for c in &config.tls.certificates {
        std::fs::read(&c.cert_file).ok().hash(&mut h);
        std::fs::read(&c.key_file).ok().hash(&mut h);
    }
    // Users are read at each login; hashing the file still makes a change visible in the log.
    if let Some(f) = &config.api.users_file {
        std::fs::read(f).ok().hash(&mut h);
    }
    // Webhook secrets apply whatever the apps are (also with `apps: []`).
    for hook in &config.webhooks.hooks {
        if let Some(f) = &hook.secret_file {
            std::fs::read(f).ok().hash(&mut h);
        }
    }
    for app in &config.apps {
        for p in [&app.publish, &app.play] {
            for f in p.sign_secret_files.iter().chain(&p.token.key_files).chain(&p.keys_file) {
                std::fs::read(f).ok().hash(&mut h);
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
}

/// Polls the config file and the files it names; on a change, loads and validates the new
/// config and swaps the access policies, webhooks and certificates in (opening or closing the
/// TLS listeners as certificates come and go). A bad new config, or one whose secret files
/// have not arrived, is refused with a logged reason, shown on `/config-status` and in
/// `ferrocast_config_pending`, and retried whenever any file it or the running config names
/// changes. The old settings stay meanwhile; live sessions are never touched.
async fn watch_config(ctx: Arc<Context>, path: std::path::PathBuf, start: Option<crate::reload::StartSettings>) {
    let mut current = ctx.config.clone();
    let mut refused: Option<Config> = None;
    let mut last = fingerprint(&path, &[&current]);
    let mut shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
        let watched: Vec<&Config> = std::iter::once(&current).chain(refused.as_ref()).collect();
        let now = fingerprint(&path, &watched);
        if now == last {
            continue;
        }
        last = now;
        let loaded = Config::load(&path).map(|c| match &start {
            Some(s) => s.apply(c),
            None => c,
        });
        let config = match loaded {
            Ok(c) => c,
            Err(e) => {
                ctx.config_refused(String::new(), e.to_string());
                refused = None;
                continue;
            }
        };
        if config == current {
            if let Err(why) = crate::reload::revision_ready(&config) {
                // The Secret of the next revision came before its ConfigMap: the running
                // config is still the one on disk, so keep it until the new one arrives.
                debug!("{why}; the running config stays until its successor arrives");
                refused = None;
                last = fingerprint(&path, &[&current]);
                continue;
            }
        }
        let applied = crate::reload::revision_ready(&config)
            .and_then(|()| Access::load(config.clone()).map_err(|e| e.to_string()))
            .and_then(|p| {
                tls_certificates(&ctx, &config)
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
                if config.relays != current.relays {
                    warn!("`relays` changes take effect at the next start (the relay API adds and removes relays now)");
                }
                if config.transcoding != current.transcoding {
                    warn!("`transcoding` changes take effect at the next start (rules in `apps` apply to new publishes now)");
                }
                // Apps and policies change together in one snapshot; the hub's copy (stream
                // settings) follows, and a request between the two is refused, never let in
                // unchecked: `authorize` serves only apps of the snapshot.
                *ctx.access.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(p);
                ctx.hub.set_apps(config.apps.clone());
                if let Some(new) = certificates {
                    ctx.tls.install(new);
                }
                ctx.want_tls(&config);
                ctx.config_applied(&config);
                info!(
                    revision = config.revision.id.as_deref().unwrap_or(""),
                    "configuration reloaded: apps, access policies, secrets, webhooks and TLS certificates updated"
                );
                refused = None;
                last = fingerprint(&path, &[&config]);
                current = config;
            }
            Err(e) => {
                ctx.config_refused(config.revision.id.clone().unwrap_or_default(), e);
                last = fingerprint(&path, &[&current, &config]);
                refused = Some(config);
            }
        }
    }
}

/// The certificate list of a reloaded config, loaded and ready to install (an empty list
/// closes the TLS listeners), or `None` when it is the one in use.
fn tls_certificates(ctx: &Context, config: &Config) -> Result<Option<crate::tls::NewCertificates>, TlsError> {
    ctx.tls.prepare(&config.tls.certificates)
}

/// The TLS ports a config wants open: while it has certificates.
fn tls_ports(config: &Config) -> Option<TlsPorts> {
    (!config.tls.certificates.is_empty()).then_some(TlsPorts {
        rtmps: config.tls.rtmps_port,
        https: config.tls.https_port,
    })
}

/// The RTMPS and HTTPS ports to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TlsPorts {
    rtmps: u16,
    https: u16,
}

impl Context {
    /// Whether the RTMPS and HTTPS listeners are open now.
    pub fn tls_serving(&self) -> bool {
        self.tls_addrs.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// The config in service, any newer one that is not, and the TLS listeners listening.
    pub fn config_status(&self) -> crate::reload::ConfigStatus {
        let mut status = self.config_status.read().unwrap_or_else(|e| e.into_inner()).clone();
        if self.tls_serving() {
            status.tls_listening = vec!["rtmps", "https"];
        }
        status
    }

    /// Records which TLS listeners listen (`None`: closed), for `/config-status` and metrics.
    fn set_tls_addrs(&self, addrs: Option<(SocketAddr, SocketAddr)>) {
        *self.tls_addrs.write().unwrap_or_else(|e| e.into_inner()) = addrs;
        self.metrics.tls_listening(addrs.is_some());
    }

    fn want_tls(&self, config: &Config) {
        self.tls_wanted.send_replace(tls_ports(config));
    }

    fn config_applied(&self, config: &Config) {
        let status = crate::reload::ConfigStatus::running(config);
        self.metrics.config_status(&status);
        self.metrics.config_reload(true);
        *self.config_status.write().unwrap_or_else(|e| e.into_inner()) = status;
    }

    /// Records (and logs once per change) that the config on disk is not in service.
    fn config_refused(&self, revision: String, reason: String) {
        warn!(
            revision = %revision,
            "config change refused, keeping the running one (retried when any file it names changes): {reason}"
        );
        let mut status = self.config_status.write().unwrap_or_else(|e| e.into_inner());
        status.pending = Some(crate::reload::Pending { revision, reason });
        self.metrics.config_status(&status);
        self.metrics.config_reload(false);
    }

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
        let access = self.access();
        // An app the current snapshot does not serve has no policy to pass: refused.
        let app = access.app(&key.app).map(|(_, p)| p).ok_or(Denied::UnknownApp);
        let checked = app.and_then(|p| {
            let (policy, action_filter) = if role == Role::Publisher {
                (&p.publish, &p.publish_filter)
            } else {
                (&p.play, &p.play_filter)
            };
            match peer {
                Some(ip) => p
                    .filter
                    .check(ip)
                    .and_then(|()| action_filter.check(ip))
                    .map(|()| policy),
                None => Ok(policy),
            }
        });
        let public = |name: String| StreamKey {
            app: key.app.clone(),
            name,
        };
        checked
            .and_then(|policy| {
                policy
                    .check_as(
                        key,
                        query,
                        SystemTime::now(),
                        Some(if role == Role::Publisher { "publish" } else { "play" }),
                    )
                    .map(|n| {
                        // A stream is never named after a publish key (it would reach logs,
                        // events and the API): a player that asks for one gets its public stream.
                        n.or_else(|| {
                            let (_, p) = access.app(&key.app)?;
                            p.publish.public_name_of_key(&key.name).map(str::to_string)
                        })
                        .map(public)
                    })
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
        let access = self.access();
        let (Some((_, p)), Some(ip)) = (access.app(app), peer) else {
            return Ok(());
        };
        p.filter
            .check(ip)
            .and_then(|()| p.play_filter.check(ip))
            .inspect_err(|d| {
                self.metrics.auth_failures.with_label_values(&[app, d.reason()]).inc();
            })
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Draining or shutting down: `/readyz` answers 503.
    pub fn is_draining(&self) -> bool {
        *self.draining.borrow() || self.is_shutting_down()
    }

    /// Whether a publisher connected to this pod publishes `key` (not a pull from a peer).
    pub fn publishes_origin(&self, key: &StreamKey) -> bool {
        self.hub
            .stream(key)
            .and_then(|s| s.info().publisher)
            .is_some_and(|p| p.protocol != crate::cluster::pull::PROTOCOL)
    }

    /// Claims `key` for a publisher connected here: in a fleet, only when no other pod
    /// publishes (or first claimed) it; a pull of it from a peer gives way.
    /// `relay_path`: the servers the stream came through (relays), origin first.
    pub async fn publish(
        &self,
        key: &StreamKey,
        info: PublisherInfo,
        relay_path: Vec<String>,
    ) -> Result<Publisher, HubError> {
        let Some(cluster) = &self.cluster else {
            return self.hub.publish_via(key, info, relay_path);
        };
        let stamp = match cluster.claim(key).await {
            crate::cluster::ClaimOutcome::Granted(stamp) => stamp,
            crate::cluster::ClaimOutcome::Refused { pod } => return Err(HubError::PublishedElsewhere(pod)),
        };
        let mut result = self.hub.publish_via(key, info.clone(), relay_path.clone());
        // The stream may be held by a pull from the pod the publisher just left: stop it and
        // take the stream over (its players continue within the publisher grace).
        for _ in 0..100 {
            let held_by_pull = matches!(result, Err(HubError::AlreadyPublishing(0))) && !self.publishes_origin(key);
            if !held_by_pull {
                break;
            }
            cluster.stop_pull(key);
            tokio::time::sleep(Duration::from_millis(20)).await;
            result = self.hub.publish_via(key, info.clone(), relay_path.clone());
        }
        cluster.finish_claim(key, stamp);
        if result.is_ok() {
            cluster.announce(key);
        }
        result
    }

    /// The live apps, their policies and the configuration they came from.
    pub fn access(&self) -> Arc<Access> {
        self.access.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `snapshot` is still the apps and policies in service (no reload since).
    pub fn access_is(&self, snapshot: &Arc<Access>) -> bool {
        Arc::ptr_eq(&self.access.read().unwrap_or_else(|e| e.into_inner()), snapshot)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
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
    draining_tx: watch::Sender<bool>,
    rtmp: TcpListener,
    http: TcpListener,
    admin: TcpListener,
    tls: Option<TlsListeners>,
}

/// The RTMPS and HTTPS listeners, open while a certificate is configured.
struct TlsListeners {
    rtmps: TcpListener,
    https: TcpListener,
}

impl TlsListeners {
    async fn bind(ip: IpAddr, ports: TlsPorts) -> Result<TlsListeners, ServerError> {
        Ok(TlsListeners {
            rtmps: bind("rtmps", ip, ports.rtmps).await?,
            https: bind("https", ip, ports.https).await?,
        })
    }

    fn addrs(&self) -> (SocketAddr, SocketAddr) {
        (
            self.rtmps.local_addr().expect("bound"),
            self.https.local_addr().expect("bound"),
        )
    }
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
        let access = RwLock::new(Arc::new(Access::load(config.clone())?));
        let tls_certs = Certificates::load(&config.tls.certificates)?;
        let rtmp = bind("rtmp", config.bind, config.rtmp.port).await?;
        let http = bind("http", config.bind, config.http.port).await?;
        let admin = bind("admin", config.admin.bind.unwrap_or(config.bind), config.admin.port).await?;
        // At start a TLS port that cannot be bound is fatal, like the others; on reload it is
        // logged and retried.
        let tls = match tls_ports(&config) {
            Some(ports) => Some(TlsListeners::bind(config.bind, ports).await?),
            None => None,
        };
        let (tls_wanted, _) = watch::channel(tls_ports(&config));
        let config_status = RwLock::new(crate::reload::ConfigStatus::running(&config));
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (draining_tx, draining) = watch::channel(false);
        let hub = Hub::new(HubSettings::from_config(&config));
        let metrics = Arc::new(Metrics::new());
        let instance: u64 = rand::random::<u64>() & 0xF_FFFF;
        let cluster = match config.cluster.enabled() {
            true => Some(crate::cluster::Cluster::start(&config.cluster, instance)?),
            false => None,
        };
        // In a fleet, session ids carry the pod's instance so they are unique fleet-wide (and
        // stay below 2^53, exact in JSON numbers).
        let sessions = Arc::new(match &cluster {
            Some(_) => Sessions::with_id_base(metrics.clone(), (instance << 32) | 1),
            None => Sessions::new(metrics.clone()),
        });
        let webhooks = Webhooks::start(&config.webhooks, metrics.clone())?;
        let rtmp_limits = ConnLimits::new(config.rtmp.max_connections, config.rtmp.max_connections_per_ip);
        let http_limits = ConnLimits::new(config.http.max_connections, config.http.max_connections_per_ip);
        let relays = crate::relay::Relays::new(&config, hub.clone(), metrics.clone(), shutdown.clone());
        let hls = crate::hls::Hls::new(&config, hub.clone(), metrics.clone(), shutdown.clone())?;
        let transcodes = crate::transcode::Transcodes::new(&config, hub.clone(), metrics.clone());
        let config_api = config.api.clone();
        let records = crate::record::Recorders::new(hub.clone(), metrics.clone(), webhooks.clone(), shutdown.clone());
        let ctx = Arc::new(Context {
            config,
            hub,
            shutdown,
            draining,
            sessions,
            metrics,
            webhooks,
            tls: tls_certs,
            tls_wanted,
            tls_addrs: RwLock::new(tls.as_ref().map(TlsListeners::addrs)),
            config_status,
            cluster,
            relays,
            hls,
            records,
            transcodes,
            rtmp_limits,
            http_limits,
            access,
            admin_password: crate::api::GeneratedPassword::wanted(&config_api)
                .then(crate::api::GeneratedPassword::generate),
            load: crate::load::LoadHistory::new(),
        });
        ctx.metrics.config_status(&ctx.config_status());
        ctx.metrics.tls_listening(ctx.tls_serving());
        Ok(Server {
            ctx,
            shutdown_tx,
            draining_tx,
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
            rtmps: self.tls.as_ref().map(|t| t.addrs().0),
            https: self.tls.as_ref().map(|t| t.addrs().1),
        }
    }

    /// Serves until `signal` completes, then drains within the grace period.
    /// Watches `path` (the file the config came from) and applies access-policy changes live.
    pub fn watch(&self, path: std::path::PathBuf) {
        self.watch_with_start_settings(path, None);
    }

    /// Like [`Server::watch`], with the start-only settings of every reloaded config replaced
    /// by `start`'s (`--base-config`), as they were at start.
    pub fn watch_with_start_settings(&self, path: std::path::PathBuf, start: Option<crate::reload::StartSettings>) {
        tokio::spawn(watch_config(self.ctx.clone(), path, start));
    }

    pub async fn run(self, signal: impl Future<Output = ()>) {
        let addrs = self.addrs();
        let ctx = self.ctx.clone();
        let c = &ctx.config;
        ctx.relays.start_static(c);
        let admin_limits = ConnLimits::new(64, 64);
        log_urls(&addrs, c);
        if let Some(password) = &ctx.admin_password {
            password.announce(&console_url(&addrs, c));
        }
        tokio::spawn(ctx.load.clone().run(ctx.sessions.clone(), ctx.shutdown.clone()));
        let proxy = proxy_policies(c);
        tokio::spawn(ctx.hls.clone().run_always());
        tokio::spawn(ctx.records.clone().run());
        tokio::spawn(ctx.transcodes.clone().run(ctx.clone()));
        // The public listeners close at the start of the drain, before the pod says it is not
        // ready: a 503 from /readyz then means no new connection is taken on any port.
        let (stop_accepting, accept_until) = watch::channel(false);

        let rtmp_ctx = ctx.clone();
        let rtmp = accept_loop(
            "rtmp",
            self.rtmp,
            ctx.rtmp_limits.clone(),
            proxy(ProxyListener::Rtmp),
            accept_until.clone(),
            None,
            move |s, peer, slot| {
                let ctx = rtmp_ctx.clone();
                async move {
                    let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
                    crate::rtmp::conn::serve(s, Some(fd), peer, Protocol::Rtmp, ctx).await;
                    drop(slot);
                }
            },
        );
        // One router for HTTP and HTTPS: the API's login limits and password checks are
        // then shared by both ports, not doubled.
        let router = crate::http::router(ctx.clone());
        let https_router = router.clone();
        let http_ctx = ctx.clone();
        let threads = serving_threads(c.http.threads, "HTTP and HTTPS");
        // Connections already on serving threads stay where they are.
        let hls_threads = match threads {
            None => serving_threads(c.http.hls_threads, "HLS and DASH"),
            Some(_) => None,
        };
        let http_hls_threads = hls_threads.clone();
        let http = accept_loop(
            "http",
            self.http,
            ctx.http_limits.clone(),
            proxy(ProxyListener::Http),
            accept_until.clone(),
            threads.clone(),
            move |s, peer, slot| {
                let hls = http_hls_threads.clone();
                crate::http::serve_connection(s, peer, slot, router.clone(), http_ctx.clone(), hls)
            },
        );
        // The admin listener stays open until the process exits, so probes see /readyz
        // answer 503 during the drain instead of a refused connection.
        let admin_router = crate::http::admin_router(ctx.clone());
        let admin_ctx = ctx.clone();
        let (admin_exit, admin_until) = watch::channel(false);
        let admin = tokio::spawn(accept_loop(
            "admin",
            self.admin,
            admin_limits,
            None,
            admin_until,
            None,
            move |s, peer, slot| {
                let (router, ctx) = (admin_router.clone(), admin_ctx.clone());
                async move {
                    crate::http::serve_admin_connection(s, peer, router, ctx).await;
                    drop(slot);
                }
            },
        ));
        let tls = tls_listeners(
            self.tls,
            ctx.clone(),
            proxy,
            https_router,
            threads.clone(),
            accept_until,
        );
        let mut accepting = tokio::spawn(async move {
            tokio::join!(rtmp, http, tls);
        });

        signal.await;
        let _ = stop_accepting.send(true);
        // Every public listener is dropped when its accept loop returns; bounded so that a
        // stuck loop cannot hold the drain.
        if tokio::time::timeout(Duration::from_secs(1), &mut accepting)
            .await
            .is_err()
        {
            warn!("public listeners did not close within 1 s");
        }
        let _ = self.draining_tx.send(true);
        let drain = Duration::from_secs(c.hub.drain_secs);
        if !drain.is_zero() {
            info!(
                drain_secs = c.hub.drain_secs,
                sessions = ctx.sessions.list().len(),
                "draining: not ready, accepting nothing new, live sessions continue"
            );
            let _ = tokio::time::timeout(drain, async {
                while !ctx.sessions.list().is_empty() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
        }
        info!("shutting down: ending streams and draining connections");
        let _ = self.shutdown_tx.send(true);
        ctx.hub.shutdown();
        let grace = Duration::from_secs(c.hub.shutdown_grace_secs);
        let started = tokio::time::Instant::now();
        let drained = tokio::time::timeout(grace, async {
            while ctx.rtmp_limits.in_use() > 0 || ctx.http_limits.in_use() > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        if drained.is_err() {
            warn!("grace period over with connections still open; closing them");
        }
        // Streams ended above: every recorder closes and finalizes its file, and the upload
        // queues are worked off (on an emptyDir a file not uploaded now is lost with the pod).
        let left = grace.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, ctx.records.finished()).await.is_err() {
            warn!("grace period over with recordings still being finalized");
        }
        let left = grace.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, ctx.records.uploads_drained()).await.is_err() {
            warn!("grace period over with recordings still waiting for their upload");
        }
        // Every source ended with the hub: each transcode closes ffmpeg's input and reaps it.
        let left = grace.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, ctx.transcodes.stopped()).await.is_err() {
            warn!("grace period over with ffmpeg still running; it is killed with the server");
        }
        // Sessions that ended in the drain queued their done* events: deliver them within
        // what is left of the grace period.
        let left = grace.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, ctx.webhooks.delivered()).await.is_err() {
            warn!("grace period over with webhook deliveries still queued; they are lost");
        }
        accepting.abort();
        if let Some(threads) = &hls_threads {
            threads.stop();
        }
        if let Some(threads) = &threads {
            threads.stop();
        }
        let _ = admin_exit.send(true);
        admin.abort();
        info!("stopped");
    }
}

/// Serving threads: those HTTP and HTTPS connections run on (`http.threads`), or those
/// plain-HTTP connections move to when their first request is HLS or DASH
/// (`http.hls_threads`, while `http.threads` is 0). `None` (0, or they cannot start) keeps
/// the connections on the main runtime.
fn serving_threads(wanted: Option<usize>, which: &str) -> Option<Arc<ServingThreads>> {
    let n = wanted.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if n == 0 {
        return None;
    }
    match ServingThreads::start(n) {
        Ok(t) => {
            debug!(threads = n, "{which} connections run on serving threads");
            Some(Arc::new(t))
        }
        Err(e) => {
            warn!("cannot start {n} serving threads for {which} ({e}); its connections run on the main runtime");
            None
        }
    }
}

/// Keeps the RTMPS and HTTPS listeners open while a certificate is configured: opens them
/// when a reload brings the first certificate (or new TLS ports), closes them when the last
/// one goes. Closing stops accepting; connections already open carry on. The certificate
/// files are watched throughout.
async fn tls_listeners(
    initial: Option<TlsListeners>,
    ctx: Arc<Context>,
    proxy: impl Fn(ProxyListener) -> Option<Arc<ProxyPolicy>>,
    router: axum::Router,
    threads: Option<Arc<ServingThreads>>,
    // The drain's start: the TLS listeners close and none opens again.
    mut accept_until: watch::Receiver<bool>,
) {
    tokio::spawn(ctx.tls.clone().watch(ctx.shutdown.clone()));
    let mut wanted = ctx.tls_wanted.subscribe();
    let mut shutdown = ctx.shutdown.clone();
    let mut open: Option<(TlsPorts, tokio::task::JoinHandle<()>)> = None;
    let mut initial = initial;
    loop {
        let want = *wanted.borrow_and_update();
        if open.as_ref().map(|(p, _)| *p) != want {
            if let Some((_, accepting)) = open.take() {
                accepting.abort();
                ctx.set_tls_addrs(None);
                info!("RTMPS and HTTPS listeners closed");
            }
            if let Some(ports) = want {
                let listeners = match initial.take() {
                    Some(l) => Ok(l),
                    None => TlsListeners::bind(ctx.config.bind, ports).await,
                };
                let until = accept_until.clone();
                match listeners.and_then(|l| tls_accept_loops(l, &ctx, &proxy, router.clone(), threads.clone(), until))
                {
                    Ok((addrs, accepting)) => {
                        ctx.set_tls_addrs(Some(addrs));
                        info!(rtmps = %addrs.0, https = %addrs.1, "RTMPS and HTTPS listeners open");
                        open = Some((ports, accepting));
                    }
                    // Retried on the next reload, and said so until then.
                    Err(e) => error!("RTMPS and HTTPS stay closed: {e}"),
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = accept_until.wait_for(|stop| *stop) => break,
            changed = wanted.changed() => if changed.is_err() { break },
        }
    }
    if let Some((_, accepting)) = open {
        accepting.abort();
        // Awaited so the listeners are gone when this returns.
        let _ = accepting.await;
    }
}

/// Starts accepting RTMPS and HTTPS connections: each completes its TLS handshake within the
/// protocol's handshake or request timeout, then is served like its plain counterpart. They
/// count against the RTMP and HTTP connection limits. A PROXY protocol header, where enabled,
/// comes before the TLS handshake.
fn tls_accept_loops(
    listeners: TlsListeners,
    ctx: &Arc<Context>,
    proxy: &impl Fn(ProxyListener) -> Option<Arc<ProxyPolicy>>,
    router: axum::Router,
    threads: Option<Arc<ServingThreads>>,
    accept_until: watch::Receiver<bool>,
) -> Result<((SocketAddr, SocketAddr), tokio::task::JoinHandle<()>), ServerError> {
    let c = &ctx.config;
    let addrs = listeners.addrs();
    let rtmps_tls: tokio_rustls::TlsAcceptor = ctx.tls.server_config(&[])?.into();
    let https_tls: tokio_rustls::TlsAcceptor = ctx.tls.server_config(crate::tls::HTTPS_ALPN)?.into();

    let acceptor = rtmps_tls;
    let limit = Duration::from_secs(c.rtmp.handshake_timeout_secs);
    let rtmps_ctx = ctx.clone();
    let rtmps = accept_loop(
        "rtmps",
        listeners.rtmps,
        ctx.rtmp_limits.clone(),
        proxy(ProxyListener::Rtmps),
        accept_until.clone(),
        None,
        move |s, peer, slot| {
            let (acceptor, ctx) = (acceptor.clone(), rtmps_ctx.clone());
            async move {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&s);
                if let Some(tls) = crate::tls::handshake(&acceptor, s, "rtmps", peer, limit).await {
                    crate::rtmp::conn::serve(tls, Some(fd), peer, Protocol::Rtmps, ctx).await;
                }
                drop(slot);
            }
        },
    );

    let acceptor = https_tls;
    let limit = Duration::from_secs(c.http.request_timeout_secs);
    let https_ctx = ctx.clone();
    let https = accept_loop(
        "https",
        listeners.https,
        ctx.http_limits.clone(),
        proxy(ProxyListener::Https),
        accept_until,
        threads,
        move |s, peer, slot| {
            let (acceptor, router, ctx) = (acceptor.clone(), router.clone(), https_ctx.clone());
            async move {
                if let Some(tls) = crate::tls::handshake(&acceptor, s, "https", peer, limit).await {
                    crate::http::serve_tls_connection(tls, peer, slot, router, ctx).await;
                }
            }
        },
    );
    let accepting = tokio::spawn(async move {
        tokio::join!(rtmps, https);
    });
    Ok((addrs, accepting))
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

/// Where the web console is: the HTTP port when the API is served there, else the admin port.
fn console_url(a: &BoundAddrs, c: &Config) -> String {
    let addr = match c.api.listener {
        crate::config::ApiListener::Public => a.http,
        crate::config::ApiListener::Admin => a.admin,
    };
    let host = if addr.ip().is_unspecified() {
        "localhost".to_string()
    } else {
        addr.ip().to_string()
    };
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    format!("http://{host}:{}/admin/", addr.port())
}

/// The PROXY protocol policy of each listener: `Some` where `proxy_protocol.listeners`
/// names it.
fn proxy_policies(c: &Config) -> impl Fn(ProxyListener) -> Option<Arc<ProxyPolicy>> {
    let pp = &c.proxy_protocol;
    let policy = Arc::new(ProxyPolicy {
        trusted: pp.trusted_cidrs.iter().filter_map(|s| Cidr::parse(s)).collect(),
        header_timeout: Duration::from_secs(pp.header_timeout_secs),
    });
    if !pp.listeners.is_empty() {
        info!(listeners = ?pp.listeners, trusted = ?pp.trusted_cidrs, "PROXY protocol headers accepted from trusted addresses");
    }
    let listeners = pp.listeners.clone();
    move |l| listeners.contains(&l).then(|| policy.clone())
}

/// Accepts connections within the listener's limits: a place in the total at accept, then
/// (after the PROXY protocol step, which may name the real client) one under the client's
/// address. The connection keeps its [`Slot`] for as long as it is served.
async fn accept_loop<F, Fut>(
    what: &'static str,
    listener: TcpListener,
    limits: Arc<ConnLimits>,
    proxy: Option<Arc<ProxyPolicy>>,
    // Public listeners stop at the start of the drain; the admin one (probes, peers) at exit.
    // Checked before each accept, so a loop started after the signal takes nothing.
    mut shutdown: watch::Receiver<bool>,
    // Where connections run: on these threads, else on the runtime that accepts them.
    threads: Option<Arc<ServingThreads>>,
    handle: F,
) where
    F: Fn(Prefixed<TcpStream>, SocketAddr, Slot) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let handle = Arc::new(handle);
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
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
        let Ok(mut slot) = limits.try_total() else {
            warn!(listener = what, %peer, "connection limit reached; closing new connection");
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        debug!(listener = what, %peer, "accepted");
        let (limits, proxy, handle) = (limits.clone(), proxy.clone(), handle.clone());
        let serve = move |socket: TcpStream| async move {
            let (io, client) = match accept_proxied(socket, peer, proxy.as_deref()).await {
                Ok(c) => c,
                Err(e) => {
                    info!(listener = what, %peer, "connection closed: {e}");
                    return;
                }
            };
            if client != peer {
                debug!(listener = what, %peer, %client, "PROXY protocol header names the client");
            }
            if let Err(e) = limits.admit_client(&mut slot, client.ip()) {
                warn!(listener = what, %client, "{e}; closing new connection");
                return;
            }
            handle(io, client, slot).await;
        };
        match &threads {
            Some(threads) => threads.serve(socket, serve),
            None => {
                tokio::spawn(serve(socket));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> Config {
        let ports = "bind: 127.0.0.1\nrtmp: {port: 0}\nhttp: {port: 0}\nadmin: {port: 0}\n";
        Config::from_yaml(&format!("{ports}{yaml}"), "t").unwrap()
    }

    #[tokio::test]
    async fn an_app_without_policies_in_the_snapshot_is_refused() {
        let dir = std::env::temp_dir().join(format!("ferrocast-access-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("s"), "secret").unwrap();
        let server = Server::bind(config(&format!(
            "apps: [{{name: live, publish: {{auth: sign, sign_secret_files: [{:?}]}}}}]",
            dir.join("s")
        )))
        .await
        .unwrap();
        let ctx = server.context();
        let key = StreamKey::new("live", "cam").unwrap();
        assert_eq!(ctx.authorize(&key, Role::Publisher, "", None, 1), Err(Denied::Missing));
        // A reload that removes the app swaps the snapshot; the hub may still list the app
        // for a moment, and the request is refused rather than let in unchecked.
        *ctx.access.write().unwrap() = Arc::new(Access::load(config("apps: []")).unwrap());
        assert!(ctx.hub.key("live", "cam").is_ok(), "the hub still has the app");
        assert_eq!(
            ctx.authorize(&key, Role::Publisher, "", None, 1),
            Err(Denied::UnknownApp)
        );
        assert_eq!(ctx.authorize(&key, Role::Player, "", None, 1), Err(Denied::UnknownApp));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn webhook_secret_files_are_watched_without_apps() {
        let dir = std::env::temp_dir().join(format!("ferrocast-fp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hmac"), "one").unwrap();
        std::fs::write(dir.join("c.yaml"), "").unwrap();
        let c = config(&format!(
            "apps: []\nwebhooks: {{hooks: [{{url: 'http://127.0.0.1:9/h', secret_file: {:?}}}]}}",
            dir.join("hmac")
        ));
        let before = fingerprint(&dir.join("c.yaml"), &[&c]);
        std::fs::write(dir.join("hmac"), "two").unwrap();
        assert_ne!(fingerprint(&dir.join("c.yaml"), &[&c]), before);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
