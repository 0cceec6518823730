//! Server configuration: one YAML document, every key optional, defaults embedded.
//!
//! These types are the single source of truth for the server's config format; the operator
//! renders its ConfigMap with them. Unknown keys are rejected so a typo never passes silently.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Error loading or validating a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: `{key}`: {message}")]
    Invalid { path: String, key: String, message: String },
}

/// The whole server configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every public listener binds to.
    pub bind: IpAddr,
    pub log: LogConfig,
    pub rtmp: RtmpConfig,
    pub http: HttpConfig,
    pub admin: AdminConfig,
    pub hub: HubConfig,
    pub api: ApiConfig,
    /// RTMPS and HTTPS/WSS listeners; off while no certificate is configured.
    pub tls: TlsConfig,
    /// Lifecycle webhooks (Node-Media-Server event names).
    pub webhooks: WebhooksConfig,
    /// PROXY protocol (v1 and v2) from load balancers on chosen listeners; off by default.
    pub proxy_protocol: ProxyProtocolConfig,
    /// Applications (the first path segment of every stream URL). Streams on other apps are refused.
    pub apps: Vec<AppConfig>,
    /// The fleet: other server pods this one plays streams from and refuses duplicates with.
    pub cluster: ClusterConfig,
    /// Static relays, started at boot: pulls of one stream from another server, pushes of one
    /// stream to another server. Read at start (the API adds and removes relays at run time).
    pub relays: Vec<RelayConfig>,
    /// The ffmpeg processes of the apps' `transcode` rules (docs/transcoding.md).
    pub transcoding: TranscodingConfig,
    /// Which revision of a generated config this is (the operator stamps it).
    pub revision: RevisionConfig,
}

/// Whether a relay fetches a stream from elsewhere or forwards one of ours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    #[default]
    Pull,
    Push,
}

/// One static relay (`relays: [{mode: pull, source: URL, stream: app/name}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    pub mode: RelayMode,
    /// Pull: where the stream comes from: `rtmp://`, `rtmps://`, `http(s)://...flv` or `rtsp://`.
    pub source: String,
    /// Push: where the stream goes: `rtmp://` or `rtmps://`; `{key}` is replaced by the
    /// content of `key_file`.
    pub target: String,
    /// The stream here, `app/name`: published by a pull, read by a push.
    pub stream: String,
    /// Push: file holding the far end's stream key (a mounted Secret), for `{key}` in `target`.
    pub key_file: Option<std::path::PathBuf>,
    /// PEM file of an extra CA trusted for `rtmps://` / `https://` (besides the system roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// Verify the far end's TLS certificate; turn off only for a self-signed test target.
    pub tls_verify: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            mode: RelayMode::Pull,
            source: String::new(),
            target: String::new(),
            stream: String::new(),
            key_file: None,
            ca_file: None,
            tls_verify: true,
        }
    }
}

/// Several server processes acting as one: a play of a stream published on another pod is
/// pulled from it once per pod, a publish of a name live elsewhere is refused. Pod-to-pod
/// requests go to the peers' admin port and carry the shared secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Peers' admin addresses, `host:port`. This pod may be listed too: it recognises itself.
    pub peers: Vec<String>,
    /// A DNS name resolving to every pod (a headless Service), `name:port` (the admin port),
    /// re-resolved every `dns_refresh_secs`.
    pub dns: Option<String>,
    pub dns_refresh_secs: u64,
    /// File holding the shared secret every pod-to-pod request carries (required with peers).
    pub secret_file: Option<std::path::PathBuf>,
    /// This pod's name in the API (default: the `POD_NAME` or `HOSTNAME` variable).
    pub pod_name: Option<String>,
    /// How long a question to the peers may take; a peer slower than this is taken as missing.
    pub lookup_timeout_ms: u64,
    /// How long the answer "which pod has this stream" is reused.
    pub lookup_cache_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            peers: Vec::new(),
            dns: None,
            dns_refresh_secs: 5,
            secret_file: None,
            pod_name: None,
            lookup_timeout_ms: 500,
            lookup_cache_ms: 1000,
        }
    }
}

impl ClusterConfig {
    /// Whether this server is part of a fleet.
    pub fn enabled(&self) -> bool {
        !self.peers.is_empty() || self.dns.is_some()
    }
}

/// Pull on demand (edge): a play of a stream not published here pulls `{source}/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PullConfig {
    /// URL prefix of the origin's app, e.g. `rtmp://origin:1935/live` or
    /// `http://origin:8000/live` (HTTP-FLV: `.flv` is appended to the name).
    pub source: String,
    /// The pull stops this long after its last player left.
    pub idle_close_secs: u64,
    pub ca_file: Option<std::path::PathBuf>,
    pub tls_verify: bool,
}

impl Default for PullConfig {
    fn default() -> Self {
        PullConfig {
            source: String::new(),
            idle_close_secs: 10,
            ca_file: None,
            tls_verify: true,
        }
    }
}

/// Push of every stream of an app to one target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// `rtmp(s)://host/app`: streams go to `{target}/{name}`; or a URL with a `{name}` and/or
    /// `{key}` placeholder (for services whose key sits elsewhere), used as is.
    pub target: String,
    /// File holding the far end's stream key (a mounted Secret), for `{key}` in `target`.
    pub key_file: Option<std::path::PathBuf>,
    pub ca_file: Option<std::path::PathBuf>,
    pub tls_verify: bool,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            target: String::new(),
            key_file: None,
            ca_file: None,
            tls_verify: true,
        }
    }
}

/// The revision label of a generated config. The server reports it (admin `/config-status`,
/// `ferrocast_config_info`), so whoever wrote the config can tell when it is in service.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RevisionConfig {
    /// An opaque label of this config.
    pub id: Option<String>,
    /// A file (in the mounted Secret) holding the revision its secret files belong to: the
    /// config applies only once the file holds `id`, so a config that arrives before its
    /// secret files waits for them (and is retried when they change) instead of running on
    /// the previous ones.
    pub file: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter directive such as `info` or `ferrocast_server=debug`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtmpConfig {
    pub port: u16,
    /// Chunk size we announce and send with (Node-Media-Server uses 60000).
    pub chunk_size: u32,
    /// Largest chunk size a peer may announce; larger closes the connection.
    pub max_peer_chunk_size: u32,
    /// Largest RTMP message a peer may announce, in bytes.
    pub max_message_size: u32,
    /// Concurrent RTMP connections; further ones are closed at accept.
    pub max_connections: usize,
    /// Concurrent RTMP and RTMPS connections from one client address (an IPv6 /64 counts as
    /// one); further ones are closed at accept.
    pub max_connections_per_ip: usize,
    pub handshake_timeout_secs: u64,
    /// A connection that sends nothing for this long is closed (players are exempt while
    /// they receive media, since they legitimately send nothing).
    pub idle_timeout_secs: u64,
    /// A publisher's socket is read at most once per this many milliseconds once it has
    /// nothing more waiting, so each read takes several messages (SRS's "merged read"): far
    /// fewer wake-ups and system calls per publisher, for at most this much added latency.
    /// 0 reads every message as it arrives.
    pub read_coalesce_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub port: u16,
    /// Value of Access-Control-Allow-Origin on FLV responses (NMS `allow_origin`).
    pub allow_origin: String,
    /// Concurrent HTTP connections. A WebSocket keeps its connection's place until it ends;
    /// on HTTP/2 the connection and each FLV play or push on it take one place each.
    pub max_connections: usize,
    /// The same places held by one client address (an IPv6 /64 counts as one).
    pub max_connections_per_ip: usize,
    /// A client must send its request headers within this time.
    pub request_timeout_secs: u64,
    /// Serve the embeddable player page at `/{app}/{name}` (docs/console.md).
    pub player_page: bool,
    /// Threads serving HTTP and HTTPS connections, each keeping its connections (as nginx
    /// workers do): `0` none (connections share the main runtime), `null` one per core.
    /// They save CPU on many short requests (HLS) and cost it on FLV fan-out, whose
    /// publisher then wakes every player across threads (docs/configuration.md).
    pub threads: Option<usize>,
    /// While `threads` is 0: threads that a plain-HTTP connection moves to when its first
    /// request is HLS or DASH, so players of many short requests stay with one event loop
    /// and FLV players stay on the main runtime with their publishers. `null` one per core,
    /// `0` none (docs/configuration.md, "Serving threads").
    pub hls_threads: Option<usize>,
    /// Send complete HLS segments on plain HTTP/1.1 from a memory file made once per
    /// segment, spliced into the socket through a pipe (the key is named for nginx's
    /// equivalent), instead of copying them into every player's socket. It costs the window's
    /// segment bytes once more in memory and saves the kernel's copy per player (docs/hls.md).
    pub sendfile: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub port: u16,
    /// The admin listener binds here (metrics and probes stay off the public address if wanted).
    pub bind: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubConfig {
    /// Players stay attached this long after their publisher drops, so a reconnecting
    /// encoder (OBS) continues the same stream seamlessly.
    pub publisher_grace_secs: u64,
    /// A player of a stream that is not published waits this long for a publisher.
    pub play_wait_secs: u64,
    /// Streams of one app that players wait on before anyone publishes them; more such
    /// plays are refused (HTTP 503, RTMP NetStream.Play.StreamNotFound).
    pub max_waiting_streams_per_app: usize,
    /// Waiting streams one client address (an IPv6 /64 counts as one) may open; more are
    /// refused (HTTP 429, RTMP NetStream.Play.StreamNotFound).
    pub max_waiting_streams_per_ip: usize,
    /// Frames buffered per stream for readers; a reader further behind skips to a keyframe.
    pub reader_queue_frames: usize,
    /// Bytes buffered per stream for readers, each frame counted with the RTMP and FLV
    /// encodings made of it; the oldest frames go first when either bound is reached.
    pub reader_queue_bytes: usize,
    /// A reader that has to skip this many times within `slow_reader_window_secs` is disconnected.
    pub slow_reader_max_skips: u32,
    pub slow_reader_window_secs: u64,
    /// A reader whose socket accepts nothing for this long is disconnected.
    pub write_timeout_secs: u64,
    /// Players receive the frames of this many milliseconds in one write instead of one
    /// write per frame (SRS's merged write): far fewer syscalls and wake-ups with thousands of
    /// players, for at most this much added latency. 0 writes every frame at once.
    pub write_coalesce_ms: u64,
    /// On SIGTERM/SIGINT the server first drains: `/readyz` answers 503 and no new connection
    /// is accepted, while live sessions continue for up to this long (until they have all
    /// left); then every stream ends. In a fleet, publishers reconnect to another pod meanwhile.
    pub drain_secs: u64,
    /// After the drain, connections get this long to close cleanly once their streams ended.
    pub shutdown_grace_secs: u64,
}

/// TLS listeners (Node-Media-Server's RTMPS 1936 and HTTPS/WSS 8443). Both run only when at
/// least one certificate is configured; the HTTPS port serves everything the HTTP port does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    pub rtmps_port: u16,
    pub https_port: u16,
    /// Certificates chosen by SNI server name. Files are watched and reloaded when they change.
    pub certificates: Vec<CertificateConfig>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            rtmps_port: 1936,
            https_port: 8443,
            certificates: Vec::new(),
        }
    }
}

/// One certificate with its key, and the server names it answers for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file with the certificate chain, leaf first (a Kubernetes TLS Secret's `tls.crt`).
    pub cert_file: std::path::PathBuf,
    /// PEM file with the private key: PKCS#8, RSA (PKCS#1) or EC (SEC1) (`tls.key`).
    pub key_file: std::path::PathBuf,
    /// SNI names this certificate is for (`*.example.com` matches one label). A certificate
    /// without hosts is the default one, for clients that send no or an unknown name; when no
    /// certificate lacks hosts, the first one is the default.
    pub hosts: Vec<String>,
}

/// Webhook receivers and how deliveries behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    pub hooks: Vec<WebhookConfig>,
    /// How long a `pre*` webhook may take before `on_timeout` applies.
    pub timeout_ms: u64,
    /// What a `pre*` webhook that times out or cannot be reached means.
    pub on_timeout: TimeoutPolicy,
    /// Queued `post*`/`done*` deliveries; more are dropped and counted.
    pub queue_size: usize,
    /// Attempts per `post*`/`done*` delivery (with exponential backoff).
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimeoutPolicy {
    Reject,
    Allow,
}

/// One receiver.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` URL the events are POSTed to as JSON.
    pub url: String,
    /// Event names (`prePublish`, `donePlay`, ...); empty means all.
    pub events: Vec<String>,
    /// Apps this receiver is for; empty means all (global).
    pub apps: Vec<String>,
    /// File with the shared secret for the `X-Ferrocast-Signature` HMAC-SHA256 header.
    pub secret_file: Option<std::path::PathBuf>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            hooks: Vec::new(),
            timeout_ms: 3000,
            on_timeout: TimeoutPolicy::Reject,
            queue_size: 1024,
            max_attempts: 3,
        }
    }
}

/// A listener that can read a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyListener {
    Rtmp,
    Rtmps,
    Http,
    Https,
}

/// PROXY protocol: a TCP load balancer sends the client's address before the client's bytes.
/// A connection from a trusted address may start with a v1 or v2 header (or none); one from
/// any other address that starts with a header is refused, so nobody else can pose as a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyProtocolConfig {
    /// Listeners that read the header: any of `rtmp`, `rtmps`, `http`, `https`. Empty: off.
    pub listeners: Vec<ProxyListener>,
    /// Addresses (CIDR) of the load balancers (or nodes) allowed to send the header.
    pub trusted_cidrs: Vec<String>,
    /// The header (or the first bytes of a connection without one) must arrive within this.
    pub header_timeout_secs: u64,
}

impl Default for ProxyProtocolConfig {
    fn default() -> Self {
        ProxyProtocolConfig {
            listeners: Vec::new(),
            trusted_cidrs: Vec::new(),
            header_timeout_secs: 5,
        }
    }
}

/// Lifecycle event names, as Node-Media-Server calls them.
pub const EVENTS: &[&str] = &[
    "preConnect",
    "postConnect",
    "doneConnect",
    "prePublish",
    "postPublish",
    "donePublish",
    "prePlay",
    "postPlay",
    "donePlay",
    "postRecord",
    "doneRecord",
    // Transcoding (docs/transcoding.md): ffmpeg started for a source, and its transcode ended.
    "postTranscode",
    "doneTranscode",
];

/// The REST API under `/api/v1`, on the HTTP port or the admin port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub enabled: bool,
    /// Where `/api/v1` is served: `public` (the HTTP and HTTPS ports, as Node-Media-Server
    /// does) or `admin` (the admin port only, which is never on a public load balancer).
    pub listener: ApiListener,
    /// Directory with one file per API user: file name = user name, content = an argon2 or
    /// scrypt PHC password hash (the layout of a mounted Kubernetes Secret). No users: only
    /// the unauthenticated routes answer.
    pub users_dir: Option<std::path::PathBuf>,
    /// YAML file mapping user names to PHC password hashes (`admin: $argon2id$...`); usable
    /// with or instead of `users_dir` (a user found in both uses `users_dir`).
    pub users_file: Option<std::path::PathBuf>,
    /// File holding the HS256 key that signs API tokens; without it a random key is made at
    /// start (tokens then do not survive a restart or work across replicas).
    pub jwt_secret_file: Option<std::path::PathBuf>,
    pub token_ttl_secs: u64,
    /// Failed logins allowed per user name (from any address) within `login_window_secs`
    /// before that user's logins are refused.
    pub login_max_failures: u32,
    /// Failed logins allowed per client address (an IPv6 /64 counts as one) within
    /// `login_window_secs`, whatever the user names.
    pub login_max_failures_per_ip: u32,
    pub login_window_secs: u64,
    /// Password checks (argon2, about 19 MiB and tens of ms each) run at once at most; a
    /// login beyond that is answered 503 with `Retry-After` at once.
    pub login_max_concurrent: usize,
    /// Serve the web console at `/admin/` on the HTTP(S) ports (and on the admin port when
    /// the API is there); see docs/console.md.
    pub console: bool,
}

/// The listener of the REST API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApiListener {
    #[default]
    Public,
    Admin,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: true,
            listener: ApiListener::Public,
            users_dir: None,
            users_file: None,
            jwt_secret_file: None,
            token_ttl_secs: 3600,
            login_max_failures: 5,
            login_max_failures_per_ip: 20,
            login_window_secs: 300,
            login_max_concurrent: 2,
            console: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    pub name: String,
    /// Keep the latest GOP so new players start at once.
    pub gop_cache: bool,
    pub gop_max_frames: usize,
    /// Bytes the GOP cache may hold, each frame counted with the RTMP and FLV encodings
    /// players make of it (about twice its payload: the FLV tag copies it, RTMP adds only headers).
    pub gop_max_bytes: usize,
    /// Who may publish.
    pub publish: PolicyConfig,
    /// Who may play.
    pub play: PolicyConfig,
    /// Client addresses (CIDR) allowed to publish or play; empty allows all.
    pub allow: Vec<String>,
    /// Client addresses (CIDR) refused, checked after `allow`.
    pub deny: Vec<String>,
    /// Pull streams not published here from another server when a player asks (edge).
    pub pull: Option<PullConfig>,
    /// Forward every stream published on this app to these targets.
    pub push: Vec<PushConfig>,
    /// HLS, LL-HLS and DASH of this app's streams (docs/hls.md). `hls: off` (or `on_demand`,
    /// `always`) is short for `hls: {mode: off}`.
    #[serde(deserialize_with = "HlsConfig::deserialize_short")]
    pub hls: HlsConfig,
    /// Recording of this app's streams to files, uploaded to object storage (docs/recording.md).
    pub record: RecordConfig,
    /// Renditions made of this app's streams by ffmpeg (fission): the first rule whose
    /// `rule` glob matches a stream's name applies (docs/transcoding.md).
    pub transcode: Vec<TranscodeRule>,
}

/// When an app's streams are recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    /// Nothing is recorded.
    #[default]
    Off,
    /// Every published stream is recorded from its publish to its end.
    Always,
    /// Only streams started with `POST /api/v1/streams/{app}/{name}/record`.
    Api,
}

/// The file format of recordings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordFormat {
    /// FLV tags exactly as published (Node-Media-Server's recordings).
    Flv,
    /// Fragmented MP4 while recording, rewritten with its `moov` first when it closes.
    #[default]
    Mp4,
    /// Fragmented MP4 as written: every flushed fragment survives a crash.
    Fmp4,
}

impl RecordFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordFormat::Flv => "flv",
            RecordFormat::Mp4 => "mp4",
            RecordFormat::Fmp4 => "fmp4",
        }
    }
}

/// Recording settings of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecordConfig {
    pub mode: RecordMode,
    pub format: RecordFormat,
    /// Scratch directory: files go to `{path}/{app}/{name}/{UTC start}.{ext}`.
    pub path: std::path::PathBuf,
    /// 0: one file per publish; otherwise a new file starts at the first keyframe after this.
    pub segment_secs: u64,
    /// fMP4 and MP4: a fragment is written (and flushed) about this often; a crash loses at
    /// most the last one.
    pub fragment_ms: u64,
    /// fsync every fragment (FLV: every second), not only at close.
    pub fsync: bool,
    /// Upload finished files to S3-compatible storage; off while `bucket` is empty.
    pub upload: UploadConfig,
}

impl Default for RecordConfig {
    fn default() -> Self {
        RecordConfig {
            mode: RecordMode::Off,
            format: RecordFormat::Mp4,
            path: "/var/lib/ferrocast/records".into(),
            segment_secs: 0,
            fragment_ms: 1000,
            fsync: true,
            upload: UploadConfig::default(),
        }
    }
}

/// Where finished recordings go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadConfig {
    /// `http(s)://host:port` of an S3-compatible service; empty: AWS S3 of `region`.
    pub endpoint: String,
    pub region: String,
    /// Empty: no upload.
    pub bucket: String,
    /// Key prefix; objects are `{prefix}{app}/{name}/{file}`.
    pub prefix: String,
    /// File holding the access key id (a mounted Secret).
    pub access_key_id_file: Option<std::path::PathBuf>,
    /// File holding the secret access key (a mounted Secret).
    pub secret_access_key_file: Option<std::path::PathBuf>,
    /// Address buckets as `endpoint/bucket` (MinIO, most self-hosted services) rather than
    /// `bucket.endpoint`.
    pub path_style: bool,
    /// Remove the local file once its upload succeeded.
    pub remove_local: bool,
    /// Longest pause between upload attempts: a failed upload is retried (never given up while
    /// its file exists), the pause doubling from 1 s up to this.
    pub max_backoff_secs: u64,
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            prefix: String::new(),
            access_key_id_file: None,
            secret_access_key_file: None,
            path_style: true,
            remove_local: false,
            max_backoff_secs: 60,
        }
    }
}

impl UploadConfig {
    pub fn enabled(&self) -> bool {
        !self.bucket.is_empty()
    }
}

/// When an app's streams are segmented for HLS and DASH.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HlsMode {
    /// No HLS or DASH.
    Off,
    /// A stream is segmented from the first HLS/DASH request until nobody asked for
    /// `idle_timeout_secs`.
    #[default]
    OnDemand,
    /// Every published stream is segmented, so the first request finds a full window.
    Always,
}

/// HLS / LL-HLS / DASH settings of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HlsConfig {
    pub mode: HlsMode,
    /// Target segment duration; segments are cut at the first keyframe after it (a longer
    /// GOP makes a longer segment).
    pub segment_secs: u64,
    /// LL-HLS part duration (PART-TARGET).
    pub part_ms: u64,
    /// Complete segments kept in memory and listed in playlists.
    pub window_segments: usize,
    /// Bytes one stream's segments may hold; the oldest go first.
    pub max_bytes: usize,
    /// An on-demand segmenter stops after this long without a request.
    pub idle_timeout_secs: u64,
    /// File holding the key that signs the session id (`hs`) added to HLS/DASH URLs. Without
    /// it a random key is made at start (sessions then do not survive a restart or move to
    /// another replica: give every replica the same file).
    pub session_secret_file: Option<std::path::PathBuf>,
}

impl Default for HlsConfig {
    fn default() -> Self {
        HlsConfig {
            mode: HlsMode::OnDemand,
            segment_secs: 2,
            part_ms: 200,
            window_segments: 7,
            max_bytes: 64 << 20,
            idle_timeout_secs: 30,
            session_secret_file: None,
        }
    }
}

impl HlsConfig {
    /// Reads `hls: on_demand` as well as `hls: {mode: on_demand, ...}`.
    fn deserialize_short<'de, D: serde::Deserializer<'de>>(d: D) -> Result<HlsConfig, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = HlsConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("off, on_demand, always, or a map of HLS settings")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HlsConfig, E> {
                let mode = HlsMode::deserialize(serde::de::value::StrDeserializer::<E>::new(v))?;
                Ok(HlsConfig {
                    mode,
                    ..HlsConfig::default()
                })
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<HlsConfig, E> {
                // YAML 1.1 reads a bare `off` as false.
                Ok(HlsConfig {
                    mode: if v { HlsMode::OnDemand } else { HlsMode::Off },
                    ..HlsConfig::default()
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<HlsConfig, A::Error> {
                HlsConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone.
    #[default]
    None,
    /// Node-Media-Server signed URLs: `?sign={expires}-{md5("/{app}/{name}-{expires}-{secret}")}`.
    Sign,
    /// Static stream keys (OBS "stream key"): `?key=KEY`, or the key itself as the stream
    /// name, which is then published under its public name.
    Key,
    /// A JWT in `?token=` whose claims name the app, the stream (exact or glob) and the action.
    Token,
}

/// How `token` policies verify JWTs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// The one algorithm accepted (HS256, RS256, ES256 or EdDSA); fixed here so a token
    /// cannot pick its own (no algorithm confusion).
    pub algorithm: String,
    /// Verification keys: the HMAC secret for HS256, a PEM public key otherwise, or a JWKS
    /// (`.json`) file. Several are accepted at once, for rotation.
    pub key_files: Vec<std::path::PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            algorithm: "HS256".into(),
            key_files: Vec::new(),
            issuer: None,
            audience: None,
        }
    }
}

/// A publish or play policy. Secrets are read from the named files (in Kubernetes, a
/// mounted Secret); the config only holds their paths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub auth: AuthMode,
    /// Files each holding one sign secret; all are accepted, for rotation. Give publish and
    /// play different secrets: a Node-Media-Server signature does not name the action, so a
    /// play URL signed with a publish secret can publish.
    pub sign_secret_files: Vec<std::path::PathBuf>,
    /// `sign`: the signature also covers the action (`md5("/{app}/{name}-{expires}-{secret}-publish")`,
    /// or `-play`), so a play URL can never publish even with a shared secret. Plain
    /// Node-Media-Server signatures are then refused.
    pub sign_action_bound: bool,
    /// `sign`: signatures expiring further than this in the future are refused, so a leaked
    /// URL cannot be valid for years.
    pub sign_max_ttl_secs: u64,
    /// Directory with one file per stream: file name = public stream name, content = its
    /// key (the layout of a mounted Kubernetes Secret).
    pub keys_dir: Option<std::path::PathBuf>,
    /// YAML file mapping public stream names to keys (`cam: k-123`); usable with or instead
    /// of `keys_dir`. This is how one flat mounted Secret carries several apps' keys.
    pub keys_file: Option<std::path::PathBuf>,
    pub token: TokenConfig,
    /// Client addresses (CIDR) allowed for this action, on top of the app's `allow`/`deny`
    /// (so a studio-only publish list can sit next to public play); empty allows all.
    pub allow: Vec<String>,
    /// Client addresses (CIDR) refused for this action, checked after `allow`.
    pub deny: Vec<String>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            auth: AuthMode::None,
            sign_secret_files: Vec::new(),
            sign_action_bound: false,
            sign_max_ttl_secs: 7 * 24 * 3600,
            keys_dir: None,
            keys_file: None,
            token: TokenConfig::default(),
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: IpAddr::from([0, 0, 0, 0]),
            log: LogConfig::default(),
            rtmp: RtmpConfig::default(),
            http: HttpConfig::default(),
            admin: AdminConfig::default(),
            hub: HubConfig::default(),
            api: ApiConfig::default(),
            tls: TlsConfig::default(),
            webhooks: WebhooksConfig::default(),
            proxy_protocol: ProxyProtocolConfig::default(),
            revision: RevisionConfig::default(),
            apps: vec![AppConfig::default()],
            cluster: ClusterConfig::default(),
            relays: Vec::new(),
            transcoding: TranscodingConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Human,
        }
    }
}

impl Default for RtmpConfig {
    fn default() -> Self {
        RtmpConfig {
            port: 1935,
            chunk_size: 60000,
            max_peer_chunk_size: 1 << 20,
            max_message_size: 16 << 20,
            max_connections: 20000,
            max_connections_per_ip: 256,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 30,
            read_coalesce_ms: 100,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            port: 8000,
            allow_origin: "*".into(),
            max_connections: 20000,
            max_connections_per_ip: 256,
            request_timeout_secs: 10,
            player_page: true,
            threads: Some(0),
            hls_threads: None,
            sendfile: true,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { port: 9090, bind: None }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            publisher_grace_secs: 10,
            play_wait_secs: 30,
            max_waiting_streams_per_app: 1024,
            max_waiting_streams_per_ip: 32,
            reader_queue_frames: 512,
            reader_queue_bytes: 32 << 20,
            slow_reader_max_skips: 5,
            slow_reader_window_secs: 30,
            write_timeout_secs: 15,
            write_coalesce_ms: 100,
            drain_secs: 0,
            shutdown_grace_secs: 5,
        }
    }
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            name: "live".into(),
            gop_cache: true,
            gop_max_frames: 1024,
            gop_max_bytes: 48 << 20,
            publish: PolicyConfig::default(),
            play: PolicyConfig::default(),
            allow: Vec::new(),
            deny: Vec::new(),
            pull: None,
            push: Vec::new(),
            hls: HlsConfig::default(),
            record: RecordConfig::default(),
            transcode: Vec::new(),
        }
    }
}

impl Config {
    /// Parses YAML text; `origin` names the source in error messages.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| parse_error(origin, &e.to_string()))?
        };
        config.validate(origin)?;
        Ok(config)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_yaml(&text, &path.display().to_string())
    }

    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).expect("config always serializes")
    }

    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps.iter().find(|a| a.name == name)
    }

    fn validate_cluster(&self) -> Result<(), (&'static str, String)> {
        let c = &self.cluster;
        let host_port = |s: &str| {
            s.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0))
        };
        if let Some(p) = c.peers.iter().find(|p| !host_port(p)) {
            return Err(("cluster.peers", format!("{p:?} is not host:port")));
        }
        if let Some(d) = c.dns.as_deref().filter(|d| !host_port(d)) {
            return Err(("cluster.dns", format!("{d:?} is not name:port")));
        }
        if c.enabled() && c.secret_file.is_none() {
            return Err((
                "cluster.secret_file",
                "is required with cluster.peers or cluster.dns: pod-to-pod requests carry it".into(),
            ));
        }
        for (key, v, range) in [
            ("cluster.dns_refresh_secs", c.dns_refresh_secs, 1..=3600),
            ("cluster.lookup_timeout_ms", c.lookup_timeout_ms, 10..=30_000),
            ("cluster.lookup_cache_ms", c.lookup_cache_ms, 0..=60_000),
        ] {
            if !range.contains(&v) {
                return Err((key, format!("must be between {} and {}", range.start(), range.end())));
            }
        }
        Ok(())
    }

    fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| ConfigError::Invalid {
            path: origin.to_string(),
            key: key.to_string(),
            message: message.to_string(),
        };
        if !(128..=0xFF_FFFF).contains(&self.rtmp.chunk_size) {
            return Err(bad("rtmp.chunk_size", "must be between 128 and 16777215"));
        }
        if !(1024..=(256 << 20)).contains(&self.rtmp.max_message_size) {
            return Err(bad("rtmp.max_message_size", "must be between 1024 and 268435456"));
        }
        // Every duration and size: zero where it would mean "never" or "nothing", and values
        // so large that deadline arithmetic would overflow (a panic at the first connection),
        // are refused here with the key's name.
        const DAY: u64 = 24 * 3600;
        const MILLION: u64 = 1_000_000;
        let (r, h, a, w) = (&self.rtmp, &self.hub, &self.api, &self.webhooks);
        let ranges: &[(&str, u64, u64, u64)] = &[
            ("rtmp.max_peer_chunk_size", r.max_peer_chunk_size.into(), 128, 0xFF_FFFF),
            ("rtmp.max_connections", r.max_connections as u64, 1, 10 * MILLION),
            ("rtmp.handshake_timeout_secs", r.handshake_timeout_secs, 1, 3600),
            ("rtmp.idle_timeout_secs", r.idle_timeout_secs, 1, DAY),
            ("rtmp.read_coalesce_ms", r.read_coalesce_ms, 0, 1000),
            (
                "http.max_connections",
                self.http.max_connections as u64,
                1,
                10 * MILLION,
            ),
            ("http.request_timeout_secs", self.http.request_timeout_secs, 1, 3600),
            ("http.threads", self.http.threads.unwrap_or(0) as u64, 0, 1024),
            ("http.hls_threads", self.http.hls_threads.unwrap_or(0) as u64, 0, 1024),
            ("hub.publisher_grace_secs", h.publisher_grace_secs, 0, DAY),
            ("hub.play_wait_secs", h.play_wait_secs, 0, DAY),
            ("hub.reader_queue_frames", h.reader_queue_frames as u64, 16, MILLION),
            ("hub.slow_reader_max_skips", h.slow_reader_max_skips.into(), 0, MILLION),
            ("hub.slow_reader_window_secs", h.slow_reader_window_secs, 1, DAY),
            ("hub.write_timeout_secs", h.write_timeout_secs, 1, 3600),
            ("hub.write_coalesce_ms", h.write_coalesce_ms, 0, 1000),
            ("hub.drain_secs", h.drain_secs, 0, 3600),
            ("hub.shutdown_grace_secs", h.shutdown_grace_secs, 0, 3600),
            ("api.token_ttl_secs", a.token_ttl_secs, 1, 365 * DAY),
            ("api.login_max_failures", a.login_max_failures.into(), 1, MILLION),
            (
                "api.login_max_failures_per_ip",
                a.login_max_failures_per_ip.into(),
                1,
                MILLION,
            ),
            ("api.login_window_secs", a.login_window_secs, 1, DAY),
            ("api.login_max_concurrent", a.login_max_concurrent as u64, 1, 64),
            ("webhooks.timeout_ms", w.timeout_ms, 1, 300_000),
            ("webhooks.queue_size", w.queue_size as u64, 1, MILLION),
            ("webhooks.max_attempts", w.max_attempts.into(), 1, 100),
        ];
        for &(key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(bad(key, &format!("must be between {min} and {max} (is {value})")));
            }
        }
        self.validate_cluster().map_err(|(key, message)| bad(key, &message))?;
        for (key, v) in [
            ("rtmp.max_connections_per_ip", self.rtmp.max_connections_per_ip),
            ("http.max_connections_per_ip", self.http.max_connections_per_ip),
            ("hub.max_waiting_streams_per_app", self.hub.max_waiting_streams_per_app),
            ("hub.max_waiting_streams_per_ip", self.hub.max_waiting_streams_per_ip),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1"));
            }
        }
        let pp = &self.proxy_protocol;
        if pp.header_timeout_secs == 0 {
            return Err(bad("proxy_protocol.header_timeout_secs", "must be at least 1"));
        }
        for (j, c) in pp.trusted_cidrs.iter().enumerate() {
            if crate::auth::Cidr::parse(c).is_none() {
                return Err(bad(
                    &format!("proxy_protocol.trusted_cidrs[{j}]"),
                    "not a CIDR such as 10.0.0.0/8 or ::1/128",
                ));
            }
        }
        if !pp.listeners.is_empty() && pp.trusted_cidrs.is_empty() {
            return Err(bad(
                "proxy_protocol.trusted_cidrs",
                "name the addresses of the load balancers that send the PROXY header",
            ));
        }
        if self.hub.reader_queue_frames < 16 {
            return Err(bad("hub.reader_queue_frames", "must be at least 16"));
        }
        if self.hub.reader_queue_bytes < 1 << 20 {
            return Err(bad("hub.reader_queue_bytes", "must be at least 1048576 (1 MiB)"));
        }
        for (i, c) in self.tls.certificates.iter().enumerate() {
            if c.cert_file.as_os_str().is_empty() {
                return Err(bad(
                    &format!("tls.certificates[{i}].cert_file"),
                    "a PEM certificate file is required",
                ));
            }
            if c.key_file.as_os_str().is_empty() {
                return Err(bad(
                    &format!("tls.certificates[{i}].key_file"),
                    "a PEM key file is required",
                ));
            }
            if let Some(h) = c.hosts.iter().find(|h| !is_valid_host_pattern(h)) {
                return Err(bad(
                    &format!("tls.certificates[{i}].hosts"),
                    &format!("{h:?} is not a DNS name or *.wildcard"),
                ));
            }
        }
        for (i, h) in self.webhooks.hooks.iter().enumerate() {
            if !h.url.starts_with("http://") {
                return Err(bad(&format!("webhooks.hooks[{i}].url"), "must be an http:// URL"));
            }
            if let Some(e) = h.events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
                return Err(bad(
                    &format!("webhooks.hooks[{i}].events"),
                    &format!("unknown event {e:?}"),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, app) in self.apps.iter().enumerate() {
            if !crate::hub::is_valid_name(&app.name) {
                return Err(bad(
                    &format!("apps[{i}].name"),
                    "use 1-128 characters of A-Z a-z 0-9 _ - .",
                ));
            }
            if !seen.insert(app.name.as_str()) {
                return Err(bad(&format!("apps[{i}].name"), "duplicate app name"));
            }
            for (list, cidrs) in [("allow", &app.allow), ("deny", &app.deny)] {
                for (j, c) in cidrs.iter().enumerate() {
                    if crate::auth::Cidr::parse(c).is_none() {
                        return Err(bad(
                            &format!("apps[{i}].{list}[{j}]"),
                            "not a CIDR such as 10.0.0.0/8 or ::1/128",
                        ));
                    }
                }
            }
            for (what, p) in [("publish", &app.publish), ("play", &app.play)] {
                for (list, cidrs) in [("allow", &p.allow), ("deny", &p.deny)] {
                    for (j, c) in cidrs.iter().enumerate() {
                        if crate::auth::Cidr::parse(c).is_none() {
                            return Err(bad(
                                &format!("apps[{i}].{what}.{list}[{j}]"),
                                "not a CIDR such as 10.0.0.0/8 or ::1/128",
                            ));
                        }
                    }
                }
                if p.auth == AuthMode::Sign && p.sign_secret_files.is_empty() {
                    return Err(bad(
                        &format!("apps[{i}].{what}.sign_secret_files"),
                        "auth `sign` needs at least one secret file",
                    ));
                }
                if p.auth == AuthMode::Token {
                    if !["HS256", "RS256", "ES256", "EdDSA"].contains(&p.token.algorithm.as_str()) {
                        return Err(bad(
                            &format!("apps[{i}].{what}.token.algorithm"),
                            "use HS256, RS256, ES256 or EdDSA",
                        ));
                    }
                    if p.token.key_files.is_empty() {
                        return Err(bad(
                            &format!("apps[{i}].{what}.token.key_files"),
                            "auth `token` needs at least one key file",
                        ));
                    }
                }
                if p.auth == AuthMode::Key && p.keys_dir.is_none() && p.keys_file.is_none() {
                    return Err(bad(
                        &format!("apps[{i}].{what}.keys_dir"),
                        "auth `key` needs a keys directory or keys file",
                    ));
                }
            }
            let app_ranges: [(&str, u64, u64, u64); 4] = [
                ("gop_max_frames", app.gop_max_frames as u64, 1, MILLION),
                ("gop_max_bytes", app.gop_max_bytes as u64, 1, 1 << 30),
                (
                    "publish.sign_max_ttl_secs",
                    app.publish.sign_max_ttl_secs,
                    1,
                    10 * 365 * DAY,
                ),
                ("play.sign_max_ttl_secs", app.play.sign_max_ttl_secs, 1, 10 * 365 * DAY),
            ];
            for (key, value, min, max) in app_ranges {
                if !(min..=max).contains(&value) {
                    return Err(bad(
                        &format!("apps[{i}].{key}"),
                        &format!("must be between {min} and {max} (is {value})"),
                    ));
                }
            }
            let h = &app.hls;
            if !(1..=60).contains(&h.segment_secs) {
                return Err(bad(&format!("apps[{i}].hls.segment_secs"), "must be between 1 and 60"));
            }
            if !(50..=5000).contains(&h.part_ms) || h.part_ms > h.segment_secs * 1000 {
                return Err(bad(
                    &format!("apps[{i}].hls.part_ms"),
                    "must be between 50 and 5000 and at most segment_secs",
                ));
            }
            if !(3..=100).contains(&h.window_segments) {
                return Err(bad(
                    &format!("apps[{i}].hls.window_segments"),
                    "must be between 3 and 100",
                ));
            }
            if h.max_bytes < 1 << 20 {
                return Err(bad(
                    &format!("apps[{i}].hls.max_bytes"),
                    "must be at least 1048576 (1 MiB)",
                ));
            }
            if h.idle_timeout_secs == 0 {
                return Err(bad(&format!("apps[{i}].hls.idle_timeout_secs"), "must be at least 1"));
            }
            let r = &app.record;
            if r.segment_secs > 24 * 3600 {
                return Err(bad(&format!("apps[{i}].record.segment_secs"), "must be at most 86400"));
            }
            if !(100..=60_000).contains(&r.fragment_ms) {
                return Err(bad(
                    &format!("apps[{i}].record.fragment_ms"),
                    "must be between 100 and 60000",
                ));
            }
            if r.mode != RecordMode::Off && !r.path.is_absolute() {
                return Err(bad(&format!("apps[{i}].record.path"), "must be an absolute path"));
            }
            let u = &r.upload;
            if u.enabled() {
                if !u.endpoint.is_empty()
                    && url::Url::parse(&u.endpoint).map_or(true, |e| !matches!(e.scheme(), "http" | "https"))
                {
                    return Err(bad(
                        &format!("apps[{i}].record.upload.endpoint"),
                        "must be an http:// or https:// URL",
                    ));
                }
                if u.region.is_empty() {
                    return Err(bad(&format!("apps[{i}].record.upload.region"), "must not be empty"));
                }
                if u.access_key_id_file.is_none() != u.secret_access_key_file.is_none() {
                    return Err(bad(
                        &format!("apps[{i}].record.upload.access_key_id_file"),
                        "access_key_id_file and secret_access_key_file go together",
                    ));
                }
                if !(1..=3600).contains(&u.max_backoff_secs) {
                    return Err(bad(
                        &format!("apps[{i}].record.upload.max_backoff_secs"),
                        "must be between 1 and 3600",
                    ));
                }
            }
            if let Some(pull) = &app.pull {
                crate::relay::check_pull_config(pull).map_err(|(k, m)| bad(&format!("apps[{i}].pull.{k}"), &m))?;
            }
            for (j, push) in app.push.iter().enumerate() {
                crate::relay::check_push_config(push).map_err(|(k, m)| bad(&format!("apps[{i}].push[{j}].{k}"), &m))?;
            }
        }
        for (i, app) in self.apps.iter().enumerate() {
            for (j, rule) in app.transcode.iter().enumerate() {
                crate::transcode::check_rule(rule)
                    .map_err(|(k, m)| bad(&format!("apps[{i}].transcode[{j}].{k}"), &m))?;
            }
        }
        crate::transcode::check_settings(&self.transcoding).map_err(|(k, m)| bad(&format!("transcoding.{k}"), &m))?;
        for (i, r) in self.relays.iter().enumerate() {
            crate::relay::check_relay_config(r, None).map_err(|(k, m)| bad(&format!("relays[{i}].{k}"), &m))?;
        }
        Ok(())
    }
}

/// How this pod runs ffmpeg for the apps' `transcode` rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscodingConfig {
    /// The ffmpeg binary (a name looked up in `PATH`, or a path). H.265 renditions need an
    /// ffmpeg that writes enhanced FLV (6.1 or later).
    pub ffmpeg: std::path::PathBuf,
    /// Transcodes (ffmpeg processes) this pod runs at once; a source beyond it is not
    /// transcoded (logged, counted in `ferrocast_transcodes_refused_total`) until one ends.
    pub max_processes: usize,
    /// The DRM render node `encoder: vaapi` uses.
    pub vaapi_device: std::path::PathBuf,
    /// After the source ends, ffmpeg gets this long to flush and exit before it is killed.
    pub stop_timeout_secs: u64,
}

impl Default for TranscodingConfig {
    fn default() -> Self {
        TranscodingConfig {
            ffmpeg: "ffmpeg".into(),
            max_processes: 4,
            vaapi_device: "/dev/dri/renderD128".into(),
            stop_timeout_secs: 5,
        }
    }
}

/// One transcode rule of an app: which streams, which ladder, which encoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranscodeRule {
    /// Stream names this rule transcodes: exact, or a glob with `*` (Node-Media-Server
    /// fission's `rule`, without the app). Renditions are never transcoded again.
    pub rule: String,
    /// The ladder; each rendition is published as `/{app}/{name}_{rendition}`.
    pub renditions: Vec<RenditionConfig>,
    /// `software` (libx264 / libx265), or a hardware encoder: `nvenc`, `vaapi`, `qsv`.
    pub encoder: TranscodeEncoder,
    /// Where renditions have keyframes: `source` (where the source has them, so the source
    /// and every rendition switch cleanly) or `interval` (every `gop_ms` of the source
    /// timeline, for sources with long or irregular GOPs).
    pub keyframes: KeyframeMode,
    /// The keyframe interval of `keyframes: interval`.
    pub gop_ms: u64,
}

impl Default for TranscodeRule {
    fn default() -> Self {
        TranscodeRule {
            rule: "*".into(),
            renditions: Vec::new(),
            encoder: TranscodeEncoder::Software,
            keyframes: KeyframeMode::Source,
            gop_ms: 2000,
        }
    }
}

/// The video encoder family of a transcode rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscodeEncoder {
    #[default]
    Software,
    Nvenc,
    Vaapi,
    Qsv,
}

/// Where rendition keyframes go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyframeMode {
    #[default]
    Source,
    Interval,
}

/// A rendition's video codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RenditionCodec {
    #[default]
    H264,
    H265,
}

/// One rung of the ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RenditionConfig {
    /// Suffix of the rendition's stream name (`480p` makes `{name}_480p`).
    pub name: String,
    /// Picture width; 0 keeps the source's aspect ratio. With both set, the box is turned to
    /// the source's orientation (640x360 makes 360x640 of a portrait source).
    pub width: u32,
    /// Picture height; with `width: 0` it is the short side, so a portrait source gets a
    /// portrait rendition of the same class (480 wide). A rendition larger than its source
    /// is skipped.
    pub height: u32,
    /// Target video bitrate, kbit/s.
    pub video_kbps: u32,
    /// Peak video bitrate, kbit/s (0: `video_kbps`); the encoder buffer is twice it.
    pub max_kbps: u32,
    /// Frames per second; 0 keeps the source's.
    pub fps: u32,
    /// AAC audio bitrate, kbit/s.
    pub audio_kbps: u32,
    pub codec: RenditionCodec,
    /// Encoder preset (`veryfast` for x264/x265/qsv, `p1`-`p7` for nvenc; vaapi has none).
    pub preset: Option<String>,
}

impl Default for RenditionConfig {
    fn default() -> Self {
        RenditionConfig {
            name: String::new(),
            width: 0,
            height: 0,
            video_kbps: 1000,
            max_kbps: 0,
            fps: 0,
            audio_kbps: 96,
            codec: RenditionCodec::H264,
            preset: None,
        }
    }
}

/// A DNS name, optionally starting with one `*.` wildcard label (`tls.certificates[].hosts`;
/// the operator checks MediaApp hosts with it too).
pub fn is_valid_host_pattern(host: &str) -> bool {
    let name = host.strip_prefix("*.").unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Turns serde_yaml's "rtmp: unknown field `prot`, expected ..." into an error naming the
/// full dotted key (`rtmp.prot`), which is what a person fixing the file looks for.
fn parse_error(origin: &str, message: &str) -> ConfigError {
    if let Some(at) = message.find("unknown field `") {
        let rest = &message[at + "unknown field `".len()..];
        if let Some(end) = rest.find('`') {
            let field = &rest[..end];
            let parent = message[..at].trim_end().trim_end_matches(':');
            let key = if parent.is_empty() {
                field.to_string()
            } else {
                format!("{parent}.{field}")
            };
            return ConfigError::Invalid {
                path: origin.to_string(),
                key,
                message: format!("unknown key ({})", message.trim()),
            };
        }
    }
    ConfigError::Parse {
        path: origin.to_string(),
        message: message.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_embedded_defaults() {
        let c = Config::from_yaml("", "t").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.rtmp.port, 1935);
        assert_eq!(c.http.port, 8000);
        assert_eq!(c.admin.port, 9090);
        assert_eq!(c.apps[0].name, "live");
        assert!(c.apps[0].gop_cache);
    }

    #[test]
    fn listeners_are_set_from_yaml() {
        let c = Config::from_yaml(
            "bind: 127.0.0.1\nrtmp: {port: 19350}\nhttp: {port: 18000}\nadmin: {port: 19090}\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.bind.to_string(), "127.0.0.1");
        assert_eq!((c.rtmp.port, c.http.port, c.admin.port), (19350, 18000, 19090));
        assert_eq!(c.rtmp.chunk_size, 60000, "unset keys keep defaults");
    }

    #[test]
    fn unknown_key_is_named_in_the_error() {
        let err = Config::from_yaml("rtmp: {prot: 1}\n", "f.yaml").unwrap_err();
        assert!(err.to_string().contains("`rtmp.prot`"), "{err}");
        let err = Config::from_yaml("apps: [{name: x, gop: 1}]\n", "f.yaml").unwrap_err();
        assert!(err.to_string().contains("`apps[0].gop`"), "{err}");
        let err = Config::from_yaml("bnd: 1.2.3.4\n", "f.yaml").unwrap_err();
        assert!(err.to_string().contains("`bnd`"), "{err}");
    }

    #[test]
    fn invalid_value_names_its_key() {
        let err = Config::from_yaml("apps: [{name: 'a b'}]\n", "f.yaml").unwrap_err();
        assert!(err.to_string().contains("apps[0].name"), "{err}");
    }

    #[test]
    fn tls_is_off_by_default_and_hosts_are_checked() {
        let c = Config::default();
        assert!(c.tls.certificates.is_empty());
        assert_eq!((c.tls.rtmps_port, c.tls.https_port), (1936, 8443));
        let ok =
            "tls: {certificates: [{cert_file: a.crt, key_file: a.key, hosts: [live.example.com, '*.example.org']}]}\n";
        assert_eq!(Config::from_yaml(ok, "t").unwrap().tls.certificates[0].hosts.len(), 2);
        let err = Config::from_yaml(
            "tls: {certificates: [{cert_file: a.crt, key_file: a.key, hosts: ['a b']}]}\n",
            "f",
        )
        .unwrap_err();
        assert!(err.to_string().contains("tls.certificates[0].hosts"), "{err}");
        let err = Config::from_yaml("tls: {certificates: [{cert_file: a.crt}]}\n", "f").unwrap_err();
        assert!(err.to_string().contains("tls.certificates[0].key_file"), "{err}");
    }

    #[test]
    fn empty_app_list_is_valid_and_serves_nothing() {
        let c = Config::from_yaml("apps: []\n", "t").unwrap();
        assert!(c.apps.is_empty(), "an explicit empty list stays empty");
        assert!(c.app("live").is_none());
        assert_eq!(
            Config::from_yaml("", "t").unwrap().apps[0].name,
            "live",
            "no config keeps the default app"
        );
    }

    #[test]
    fn key_auth_accepts_a_keys_file() {
        let c = Config::from_yaml(
            "apps: [{name: a, publish: {auth: key, keys_file: /k.yaml}}]\napi: {users_file: /u.yaml}\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.apps[0].publish.keys_file.as_deref(), Some(Path::new("/k.yaml")));
        assert_eq!(c.api.users_file.as_deref(), Some(Path::new("/u.yaml")));
        let err = Config::from_yaml("apps: [{name: a, publish: {auth: key}}]\n", "f").unwrap_err();
        assert!(err.to_string().contains("apps[0].publish.keys_dir"), "{err}");
    }

    #[test]
    fn proxy_protocol_needs_trusted_addresses() {
        let c = Config::from_yaml(
            "proxy_protocol: {listeners: [rtmp, https], trusted_cidrs: [10.0.0.0/8]}\n",
            "t",
        )
        .unwrap();
        assert_eq!(
            c.proxy_protocol.listeners,
            vec![ProxyListener::Rtmp, ProxyListener::Https]
        );
        let err = Config::from_yaml("proxy_protocol: {listeners: [http]}\n", "f").unwrap_err();
        assert!(err.to_string().contains("`proxy_protocol.trusted_cidrs`"), "{err}");
        let err = Config::from_yaml(
            "proxy_protocol: {listeners: [http], trusted_cidrs: [10.0.0.0/33]}\n",
            "f",
        )
        .unwrap_err();
        assert!(err.to_string().contains("proxy_protocol.trusted_cidrs[0]"), "{err}");
        let err = Config::from_yaml("hub: {max_waiting_streams_per_ip: 0}\n", "f").unwrap_err();
        assert!(err.to_string().contains("hub.max_waiting_streams_per_ip"), "{err}");
    }

    #[test]
    fn zero_and_absurd_durations_and_sizes_are_refused_naming_the_key() {
        let cases = [
            ("hub: {write_timeout_secs: 0}", "hub.write_timeout_secs"),
            (
                "hub: {write_timeout_secs: 18446744073709551615}",
                "hub.write_timeout_secs",
            ),
            ("hub: {slow_reader_window_secs: 0}", "hub.slow_reader_window_secs"),
            ("hub: {publisher_grace_secs: 99999999999}", "hub.publisher_grace_secs"),
            ("hub: {play_wait_secs: 99999999999}", "hub.play_wait_secs"),
            ("hub: {shutdown_grace_secs: 99999999999}", "hub.shutdown_grace_secs"),
            ("hub: {write_coalesce_ms: 5000}", "hub.write_coalesce_ms"),
            ("rtmp: {read_coalesce_ms: 5000}", "rtmp.read_coalesce_ms"),
            ("hub: {reader_queue_frames: 8}", "hub.reader_queue_frames"),
            ("rtmp: {handshake_timeout_secs: 0}", "rtmp.handshake_timeout_secs"),
            ("rtmp: {idle_timeout_secs: 0}", "rtmp.idle_timeout_secs"),
            (
                "rtmp: {idle_timeout_secs: 18446744073709551615}",
                "rtmp.idle_timeout_secs",
            ),
            ("rtmp: {max_connections: 0}", "rtmp.max_connections"),
            ("rtmp: {max_peer_chunk_size: 100}", "rtmp.max_peer_chunk_size"),
            ("http: {request_timeout_secs: 0}", "http.request_timeout_secs"),
            ("http: {threads: 1025}", "http.threads"),
            ("http: {hls_threads: 1025}", "http.hls_threads"),
            ("http: {max_connections: 0}", "http.max_connections"),
            ("api: {token_ttl_secs: 0}", "api.token_ttl_secs"),
            ("api: {login_window_secs: 0}", "api.login_window_secs"),
            ("api: {login_max_failures: 0}", "api.login_max_failures"),
            ("api: {login_max_failures_per_ip: 0}", "api.login_max_failures_per_ip"),
            ("api: {login_max_concurrent: 0}", "api.login_max_concurrent"),
            ("api: {login_max_concurrent: 1000}", "api.login_max_concurrent"),
            ("webhooks: {timeout_ms: 0}", "webhooks.timeout_ms"),
            ("webhooks: {queue_size: 0}", "webhooks.queue_size"),
            ("webhooks: {max_attempts: 0}", "webhooks.max_attempts"),
            ("apps: [{name: a, gop_max_frames: 0}]", "apps[0].gop_max_frames"),
            ("apps: [{name: a, gop_max_bytes: 0}]", "apps[0].gop_max_bytes"),
            (
                "apps: [{name: a, play: {sign_max_ttl_secs: 0}}]",
                "apps[0].play.sign_max_ttl_secs",
            ),
        ];
        for (yaml, key) in cases {
            let err = Config::from_yaml(yaml, "f.yaml").expect_err(yaml).to_string();
            assert!(err.contains(&format!("`{key}`")), "{yaml}: {err}");
        }
        // The defaults themselves pass, and zero stays allowed where it means something.
        Config::from_yaml(
            "hub: {publisher_grace_secs: 0, play_wait_secs: 0, shutdown_grace_secs: 0}",
            "t",
        )
        .unwrap();
    }

    #[test]
    fn relays_and_app_pull_and_push_parse_and_bad_ones_name_their_key() {
        let c = Config::from_yaml(
            "relays: [{mode: pull, source: 'rtsp://cam/1', stream: live/door}, \
             {mode: push, target: 'rtmp://t/app/{key}', key_file: /k, stream: live/door}]\n\
             apps: [{name: live, pull: {source: 'rtmp://origin/live'}, push: [{target: 'rtmps://b/live'}]}]\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.relays.len(), 2);
        assert!(c.relays[0].tls_verify, "TLS verification is on unless turned off");
        let pull = c.apps[0].pull.as_ref().unwrap();
        assert_eq!((pull.idle_close_secs, pull.tls_verify), (10, true));
        assert_eq!(c.apps[0].push[0].target, "rtmps://b/live");
        let err = |y: &str| Config::from_yaml(y, "f").unwrap_err().to_string();
        assert!(err("relays: [{source: 'ftp://x/y', stream: live/a}]").contains("`relays[0].source`"));
        assert!(err("relays: [{source: 'rtmp://x/a/b', stream: nope}]").contains("`relays[0].stream`"));
        assert!(
            err("apps: [{name: a, pull: {source: 'rtmp://o/a', idle_close_secs: 0}}]")
                .contains("`apps[0].pull.idle_close_secs`")
        );
        assert!(err("apps: [{name: a, push: [{target: 'rtmp://t/a', key_file: /k}]}]")
            .contains("`apps[0].push[0].key_file`"));
    }

    #[test]
    fn record_settings_are_checked_by_key() {
        let c = Config::from_yaml(
            "apps: [{name: a, record: {mode: api, format: fmp4, segment_secs: 600, upload: {bucket: b}}}]\n",
            "t",
        )
        .unwrap();
        let r = &c.apps[0].record;
        assert_eq!(
            (r.mode, r.format, r.segment_secs, r.fragment_ms),
            (RecordMode::Api, RecordFormat::Fmp4, 600, 1000)
        );
        assert!(r.upload.enabled() && r.upload.path_style && !r.upload.remove_local);
        for (yaml, key) in [
            ("{fragment_ms: 10}", "apps[0].record.fragment_ms"),
            ("{mode: always, path: relative/dir}", "apps[0].record.path"),
            (
                "{upload: {bucket: b, endpoint: 'ftp://x'}}",
                "apps[0].record.upload.endpoint",
            ),
            (
                "{upload: {bucket: b, access_key_id_file: /k}}",
                "apps[0].record.upload.access_key_id_file",
            ),
            (
                "{upload: {bucket: b, max_backoff_secs: 0}}",
                "apps[0].record.upload.max_backoff_secs",
            ),
        ] {
            let err = Config::from_yaml(&format!("apps: [{{name: a, record: {yaml}}}]\n"), "f").unwrap_err();
            assert!(err.to_string().contains(key), "{yaml}: {err}");
        }
        assert!(Config::from_yaml("apps: [{name: a, record: {format: avi}}]\n", "f").is_err());
    }

    #[test]
    fn hls_mode_alone_or_full_settings() {
        let c = Config::from_yaml("apps: [{name: a, hls: off}, {name: b, hls: always}, {name: c}]\n", "t").unwrap();
        assert_eq!(c.apps[0].hls.mode, HlsMode::Off);
        assert_eq!(c.apps[1].hls.mode, HlsMode::Always);
        assert_eq!(c.apps[2].hls.mode, HlsMode::OnDemand, "on demand by default");
        let c = Config::from_yaml("apps: [{name: a, hls: {mode: always, part_ms: 300}}]\n", "t").unwrap();
        assert_eq!(
            (c.apps[0].hls.mode, c.apps[0].hls.part_ms, c.apps[0].hls.segment_secs),
            (HlsMode::Always, 300, 2)
        );
        let err = Config::from_yaml("apps: [{name: a, hls: {part_ms: 10}}]\n", "f").unwrap_err();
        assert!(err.to_string().contains("apps[0].hls.part_ms"), "{err}");
        let err = Config::from_yaml("apps: [{name: a, hls: {segmnt_secs: 1}}]\n", "f").unwrap_err();
        assert!(err.to_string().contains("segmnt_secs"), "{err}");
        assert!(Config::from_yaml("apps: [{name: a, hls: sometimes}]\n", "f").is_err());
    }

    #[test]
    fn printed_config_reads_back_identical() {
        let c = Config::default();
        assert_eq!(Config::from_yaml(&c.to_yaml(), "t").unwrap(), c);
    }
}
