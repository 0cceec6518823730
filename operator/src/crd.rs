//! The custom resources the operator reconciles: `MediaApp` (one RTMP application served by
//! the fleet, and how it is exposed) and `StreamAuth` (references to the Secrets that hold
//! its credentials), group `ferrocast.io`, version `v1alpha1`, both namespaced.
//!
//! Validation the type system cannot express is written as CEL rules in [`CEL_RULES`]. Each
//! rule carries a Rust twin evaluated on the same JSON node, so tests can re-check examples
//! without an apiserver; a test fails if the CRDs carry a rule that has no twin.

// Clippy reads the repeated `type_ = ...` of kube's `printcolumn(...)` entries as duplicates.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const GROUP: &str = "ferrocast.io";
pub const VERSION: &str = "v1alpha1";

/// The oldest Kubernetes (major, minor) the CRDs, the operator and the chart support: the one
/// source for it. CEL's IP/CIDR library (`isCIDR`, `isIP`) may be used in CRD rules from 1.31
/// on. Chart.yaml's `kubeVersion` and every "Kubernetes 1.x" claim in the docs follow this
/// (tests/crds.rs checks both, and that every CEL function in [`CEL_RULES`] exists there).
pub const MIN_KUBERNETES: (u32, u32) = (1, 31);

/// CEL library functions the apiserver accepts in CRD rules only from a given minor version
/// on (the Kubernetes CEL libraries; the standard CEL macros and `matches` are older than any
/// supported version).
pub const CEL_FUNCTIONS_SINCE: &[(&str, u32)] = &[
    ("isCIDR", 31),
    ("cidr", 31),
    ("isIP", 31),
    ("ip", 31),
    ("isQuantity", 29),
    ("quantity", 29),
    ("isSemver", 33),
    ("semver", 33),
    ("format", 32),
];

/// A live-streaming application served by the Ferrocast fleet: its RTMP app path, who may
/// publish and play, TLS, lifecycle webhooks, and the Service that exposes it.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrocast.io",
    version = "v1alpha1",
    kind = "MediaApp",
    namespaced,
    status = "MediaAppStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "ma",
    shortname = "mediaapp",
    category = "ferrocast",
    doc = "A live-streaming application served by the Ferrocast server fleet",
    printcolumn(
        name = "App",
        type_ = "string",
        json_path = ".status.app",
        description = "RTMP app path"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Live",
        type_ = "integer",
        json_path = ".status.liveStreams",
        description = "Streams being published now"
    ),
    printcolumn(
        name = "RTMP",
        type_ = "string",
        json_path = ".status.endpoints.rtmp",
        description = "Publish/play URL prefix"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cel_media_app_spec)]
pub struct MediaAppSpec {
    /// RTMP app path (the first URL segment, `rtmp://host/{app}/{stream}`); defaults to the
    /// MediaApp's name. 1-128 characters of `A-Z a-z 0-9 _ - .`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub app: Option<String>,
    /// Who may publish.
    #[serde(default)]
    pub publish: AccessPolicy,
    /// Who may play (RTMP, HTTP-FLV, WS-FLV).
    #[serde(default)]
    pub play: AccessPolicy,
    /// Keep the latest GOP so new players start at once.
    #[serde(default = "default_true")]
    pub gop_cache: bool,
    /// RTMPS and HTTPS/WSS for this app's host names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// A Service for this app. Absent: no per-app Service (the chart's shared Service serves it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
    /// Lifecycle webhooks for this app's events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub webhooks: Vec<WebhookSpec>,
    /// Pull on demand (edge): a play of a stream this app does not have pulls
    /// `{source}/{name}` from another server, shared by every player of the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullSpec>,
    /// Forward every stream published on this app to these targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub push: Vec<PushSpec>,
    /// HLS, LL-HLS and DASH of this app's streams (`/{app}/{stream}/index.m3u8`,
    /// `/{app}/{stream}/index.mpd`); on demand by default.
    #[serde(default)]
    pub hls: HlsSpec,
    /// Recording of this app's streams to the pods' scratch volume, uploaded to S3-compatible
    /// storage (docs/recording.md). Off by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RecordSpec>,
    /// Renditions of this app's streams made by ffmpeg (fission), each published as
    /// `/{app}/{stream}_{rendition}` and listed in the stream's HLS multivariant playlist and
    /// DASH MPD. The first rule whose `rule` matches a stream applies. The server pods need
    /// the image with ffmpeg (chart value `image.ffmpeg.enabled`); see docs/transcoding.md.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub transcode: Vec<TranscodeSpec>,
}

/// What a MediaApp records and where finished files go.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordSpec {
    /// `off`, `always` (every published stream) or `api` (streams started through the API).
    #[serde(default)]
    pub mode: RecordMode,
    /// `mp4` (faststart, rebuilt from a crash-safe fMP4 when a file closes), `fmp4` or `flv`.
    #[serde(default)]
    pub format: RecordFormat,
    /// 0: one file per publish; otherwise a new file at the first keyframe after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 86400))]
    pub segment_secs: Option<u64>,
    /// fMP4 fragment (and flush) interval in milliseconds: what a crash may lose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 60000))]
    pub fragment_ms: Option<u64>,
    /// Upload finished files to S3-compatible object storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload: Option<UploadSpec>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordMode {
    #[default]
    Off,
    Always,
    Api,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecordFormat {
    #[default]
    Mp4,
    Fmp4,
    Flv,
}

/// An S3-compatible bucket; credentials come from Secret keys, copied into the fleet Secret.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadSpec {
    /// `http(s)://host:port` of an S3-compatible service; empty: AWS S3 of `region`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 2048))]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    #[schemars(length(min = 1, max = 63))]
    pub bucket: String,
    /// Key prefix; objects are `{prefix}{app}/{stream}/{file}`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 512))]
    pub prefix: String,
    /// Secret key holding the access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id_secret_ref: Option<SecretKeyRef>,
    /// Secret key holding the secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_secret_ref: Option<SecretKeyRef>,
    /// `endpoint/bucket` addressing (MinIO and most self-hosted services).
    #[serde(default = "default_true")]
    pub path_style: bool,
    /// Remove a pod's local copy once its upload succeeded.
    #[serde(default)]
    pub remove_local: bool,
}

/// One transcode rule: which streams, which ladder, which encoder.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscodeSpec {
    /// Stream names this rule transcodes: exact, or a glob with `*`. Renditions are never
    /// transcoded again.
    #[serde(default = "default_rule")]
    #[schemars(length(min = 1, max = 128))]
    pub rule: String,
    /// The ladder (1-8 renditions).
    #[schemars(length(min = 1, max = 8))]
    pub renditions: Vec<RenditionSpec>,
    /// `software` (libx264 / libx265), `nvenc`, `vaapi` or `qsv` (hardware encoders need the
    /// device in the server pods).
    #[serde(default)]
    pub encoder: TranscodeEncoder,
    /// `source`: rendition keyframes where the source has them; `interval`: every `gopMs`
    /// of the source timeline.
    #[serde(default)]
    pub keyframes: KeyframeMode,
    /// Keyframe interval of `keyframes: interval`, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 250, max = 60000))]
    pub gop_ms: Option<u64>,
}

fn default_rule() -> String {
    "*".into()
}

/// One rung of a transcode ladder.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenditionSpec {
    /// Suffix of the rendition's stream name (`480p`): 1-32 of `A-Z a-z 0-9 _ - .`.
    #[schemars(length(min = 1, max = 32))]
    pub name: String,
    /// Picture width; unset keeps the source's aspect ratio (`height` is then the short side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16, max = 8192))]
    pub width: Option<u32>,
    /// Picture height (the short side without `width`).
    #[schemars(range(min = 16, max = 8192))]
    pub height: u32,
    /// Target video bitrate, kbit/s.
    #[schemars(range(min = 50, max = 100000))]
    pub video_kbps: u32,
    /// Peak video bitrate, kbit/s (unset: `videoKbps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 50, max = 200000))]
    pub max_kbps: Option<u32>,
    /// Frames per second (unset: the source's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 240))]
    pub fps: Option<u32>,
    /// AAC audio bitrate, kbit/s (unset: 96).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 16, max = 512))]
    pub audio_kbps: Option<u32>,
    /// `h264` (default) or `h265` (needs an ffmpeg of 6.1 or later).
    #[serde(default)]
    pub codec: RenditionCodec,
    /// Encoder preset, letters and digits (`veryfast` for software and qsv, `p1`-`p7` for
    /// nvenc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32))]
    pub preset: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TranscodeEncoder {
    #[default]
    Software,
    Nvenc,
    Vaapi,
    Qsv,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyframeMode {
    #[default]
    Source,
    Interval,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RenditionCodec {
    #[default]
    H264,
    H265,
}

/// Where an edge app pulls its streams from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cel_pull)]
pub struct PullSpec {
    /// URL prefix of the origin's app: `rtmp://`, `rtmps://`, or `http(s)://` for HTTP-FLV
    /// (`.flv` is appended to the stream name). The player's query string is passed on.
    #[schemars(length(max = 2048))]
    pub source: String,
    /// The pull stops this long after its last player left.
    #[serde(default = "default_idle_close_secs")]
    #[schemars(range(min = 1, max = 86400))]
    pub idle_close_secs: u64,
    /// Verify the source's TLS certificate (system roots plus `caSecretRef`).
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// Secret key holding an extra CA certificate (PEM) trusted for `rtmps://` / `https://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

fn default_idle_close_secs() -> u64 {
    10
}

/// One target every stream of the app is pushed to.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cel_push)]
pub struct PushSpec {
    /// `rtmp://` or `rtmps://` URL. Streams go to `{target}/{name}`, or the URL is used as is
    /// with `{name}` replaced by the stream name and `{key}` by the key from `keySecretRef`.
    /// Never put a stream key here: it would land in the fleet's ConfigMap.
    #[schemars(length(max = 2048))]
    pub target: String,
    /// Secret key holding the far end's stream key, for `{key}` in `target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_secret_ref: Option<SecretKeyRef>,
    /// Verify the target's TLS certificate (system roots plus `caSecretRef`).
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// Secret key holding an extra CA certificate (PEM) trusted for `rtmps://`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
}

/// HLS / LL-HLS / DASH settings of a MediaApp (docs/hls.md); unset values keep the server's
/// defaults.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HlsSpec {
    /// `off`, `on_demand` (segment a stream from its first request until idle) or `always`.
    #[serde(default)]
    pub mode: HlsMode,
    /// Target segment duration in seconds (segments are cut at keyframes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub segment_secs: Option<u64>,
    /// LL-HLS part duration in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 50, max = 5000))]
    pub part_ms: Option<u64>,
    /// Segments kept in memory and listed in playlists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 3, max = 100))]
    pub window_segments: Option<u64>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum HlsMode {
    Off,
    #[default]
    OnDemand,
    Always,
}

fn default_true() -> bool {
    true
}

/// A publish or play policy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cel_access_policy)]
pub struct AccessPolicy {
    /// `none` (anyone), `sign` (Node-Media-Server signed URLs), `key` (per-stream keys) or
    /// `token` (JWT in `?token=`).
    #[serde(default)]
    pub auth: AuthMode,
    /// The StreamAuth (same namespace) holding the credentials; required unless `auth` is
    /// `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_ref: Option<AuthRef>,
    /// Client CIDRs (or single addresses) allowed for this action; empty allows all. Lists
    /// are per action, so a studio-only publish list can sit next to public play.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64)), transform = cel_cidr_list)]
    pub allow: Vec<String>,
    /// Client CIDRs refused for this action, checked after `allow`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 64)), transform = cel_cidr_list)]
    pub deny: Vec<String>,
}

/// A reference to a StreamAuth in the MediaApp's namespace (shaped like a
/// `LocalObjectReference`, so a `kind` or `namespace` can be added later without a break).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct AuthRef {
    /// The StreamAuth's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    #[default]
    None,
    Sign,
    Key,
    Token,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::None => "none",
            AuthMode::Sign => "sign",
            AuthMode::Key => "key",
            AuthMode::Token => "token",
        }
    }
}

/// TLS for RTMPS (1936) and HTTPS/WSS (8443).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cel_tls)]
pub struct TlsSpec {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// A `kubernetes.io/tls` Secret (`tls.crt`, `tls.key`), e.g. from cert-manager. Absent:
    /// the operator generates a self-signed certificate for `hosts` and renews it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    /// Server names (SNI) the certificate is used for; `*.example.com` matches one label.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(max = 253)))]
    pub hosts: Vec<String>,
}

/// How the app is exposed.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cel_service)]
pub struct ServiceSpec {
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations for the Service (cloud load balancer settings: AWS NLB, MetalLB pools...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The load balancer implementation (`spec.loadBalancerClass`, e.g. `service.k8s.aws/nlb`);
    /// type LoadBalancer only. Kubernetes does not let it change once set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub load_balancer_class: Option<String>,
    /// Client CIDRs the cloud load balancer admits (type LoadBalancer only).
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(max = 64)))]
    pub load_balancer_source_ranges: Vec<String>,
    /// `Local` keeps client source addresses (needed for `allow`/`deny` behind a load
    /// balancer); LoadBalancer and NodePort only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_traffic_policy: Option<TrafficPolicy>,
    /// Ports the Service listens on; RTMPS and HTTPS only when TLS is enabled.
    #[serde(default)]
    pub ports: ServicePorts,
}

/// The per-app Service's type. No per-app Service at all is an absent `service`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    #[default]
    LoadBalancer,
    NodePort,
    ClusterIP,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::NodePort => "NodePort",
            ServiceType::ClusterIP => "ClusterIP",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TrafficPolicy {
    Cluster,
    Local,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cel_ports)]
pub struct ServicePorts {
    #[serde(default = "port_rtmp")]
    #[schemars(range(min = 1, max = 65535))]
    pub rtmp: u16,
    #[serde(default = "port_rtmps")]
    #[schemars(range(min = 1, max = 65535))]
    pub rtmps: u16,
    #[serde(default = "port_http")]
    #[schemars(range(min = 1, max = 65535))]
    pub http: u16,
    #[serde(default = "port_https")]
    #[schemars(range(min = 1, max = 65535))]
    pub https: u16,
}

fn port_rtmp() -> u16 {
    1935
}
fn port_rtmps() -> u16 {
    1936
}
fn port_http() -> u16 {
    8000
}
fn port_https() -> u16 {
    8443
}

impl Default for ServicePorts {
    fn default() -> Self {
        ServicePorts {
            rtmp: port_rtmp(),
            rtmps: port_rtmps(),
            http: port_http(),
            https: port_https(),
        }
    }
}

/// One webhook receiver for this app's events.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cel_webhook)]
pub struct WebhookSpec {
    /// `http://` URL the events are POSTed to as JSON.
    #[schemars(length(max = 2048))]
    pub url: String,
    /// Events delivered; empty means all.
    #[serde(default)]
    #[schemars(length(max = 11))]
    pub events: Vec<WebhookEvent>,
    /// Secret key holding the HMAC-SHA256 key for the `X-Ferrocast-Signature` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// Node-Media-Server's lifecycle event names.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum WebhookEvent {
    PreConnect,
    PostConnect,
    DoneConnect,
    PrePublish,
    PostPublish,
    DonePublish,
    PrePlay,
    PostPlay,
    DonePlay,
    PostRecord,
    DoneRecord,
    /// Transcoding started for a source (docs/transcoding.md).
    PostTranscode,
    /// A source's transcoding ended.
    DoneTranscode,
}

impl WebhookEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::PreConnect => "preConnect",
            WebhookEvent::PostConnect => "postConnect",
            WebhookEvent::DoneConnect => "doneConnect",
            WebhookEvent::PrePublish => "prePublish",
            WebhookEvent::PostPublish => "postPublish",
            WebhookEvent::DonePublish => "donePublish",
            WebhookEvent::PrePlay => "prePlay",
            WebhookEvent::PostPlay => "postPlay",
            WebhookEvent::DonePlay => "donePlay",
            WebhookEvent::PostRecord => "postRecord",
            WebhookEvent::DoneRecord => "doneRecord",
            WebhookEvent::PostTranscode => "postTranscode",
            WebhookEvent::DoneTranscode => "doneTranscode",
        }
    }
}

/// A key of a Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
}

/// A whole Secret in the same namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    pub name: String,
}

/// What the operator observed and did for a MediaApp.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaAppStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` and `ConfigApplied`, with the reason each is not when it is not (see
    /// docs/crds.md). A list-map keyed by `type`.
    #[serde(default)]
    #[schemars(transform = conditions_list_map)]
    pub conditions: Vec<Condition>,
    /// The RTMP app path served (spec.app or the MediaApp's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub app: Option<String>,
    /// Name of the Service the operator manages for this app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// URLs clients use, once the Service has an address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// Streams with a live publisher across the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_streams: Option<i64>,
    /// Sessions across the fleet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<SessionCounts>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionCounts {
    pub publishers: i64,
    pub players: i64,
}

/// Client URLs of an app (`{stream}` stands for the stream name).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    pub rtmp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmps: Option<String>,
    pub http_flv: String,
    pub ws_flv: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https_flv: Option<String>,
    /// HLS / LL-HLS playlist (absent when the app's HLS is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<String>,
    /// DASH manifest (absent when the app's HLS is off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dash: Option<String>,
}

/// A status condition in the standard `metav1.Condition` shape (same fields, required set,
/// lengths and status enum), so generic tooling (`kubectl wait --for=condition=Ready`,
/// kstatus, Argo CD health) reads it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// The condition's type, CamelCase (`Ready`, `ConfigApplied`).
    #[serde(rename = "type")]
    #[schemars(length(min = 1, max = 316))]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    #[schemars(transform = condition_status_enum)]
    pub status: String,
    /// CamelCase reason (see docs/crds.md for every value).
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// Human-readable details; names objects and keys, never secret values.
    #[schemars(length(max = 32768))]
    pub message: String,
    /// RFC 3339 time the status last changed.
    #[schemars(transform = date_time_format)]
    pub last_transition_time: String,
    /// The `metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

fn conditions_list_map(s: &mut schemars::Schema) {
    s.insert("x-kubernetes-list-type".into(), Value::String("map".into()));
    s.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
}
fn condition_status_enum(s: &mut schemars::Schema) {
    s.insert("enum".into(), serde_json::json!(["True", "False", "Unknown"]));
}
fn date_time_format(s: &mut schemars::Schema) {
    s.insert("format".into(), Value::String("date-time".into()));
}

/// Credentials for MediaApps' `authRef`: references to Secrets, never the secrets themselves.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrocast.io",
    version = "v1alpha1",
    kind = "StreamAuth",
    namespaced,
    status = "StreamAuthStatus",
    derive = "PartialEq",
    derive = "Default",
    shortname = "sauth",
    category = "ferrocast",
    doc = "Credentials (as Secret references) that MediaApps use to authorize publishers, players and API users",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1
    ),
    printcolumn(
        name = "Used by",
        type_ = "string",
        json_path = ".status.usedBy",
        description = "MediaApps referring to it"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[schemars(transform = cel_stream_auth_spec)]
pub struct StreamAuthSpec {
    /// Signed-URL secrets; all are accepted, so list the new one next to the old to rotate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign: Option<SignAuth>,
    /// Per-stream keys: each data key of the Secret is a stream name, its value that stream's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeysAuth>,
    /// JWT verification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<TokenAuth>,
    /// REST API users: each data key is a user name, its value an argon2 PHC hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_users: Option<ApiUsers>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignAuth {
    #[schemars(length(min = 1))]
    pub secret_refs: Vec<SecretKeyRef>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeysAuth {
    pub secret_ref: SecretRef,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiUsers {
    pub secret_ref: SecretRef,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenAuth {
    /// The one algorithm accepted (so a token cannot choose its own).
    pub algorithm: TokenAlgorithm,
    /// Verification keys: the HMAC secret for HS256, a PEM public key, or a JWKS document.
    /// Several are accepted at once, for rotation.
    #[schemars(length(min = 1))]
    pub key_secret_refs: Vec<SecretKeyRef>,
    /// Required `iss` claim, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Required `aud` claim, when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TokenAlgorithm {
    #[default]
    HS256,
    RS256,
    ES256,
    EdDSA,
}

impl TokenAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAlgorithm::HS256 => "HS256",
            TokenAlgorithm::RS256 => "RS256",
            TokenAlgorithm::ES256 => "ES256",
            TokenAlgorithm::EdDSA => "EdDSA",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamAuthStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`; a list-map keyed by `type`.
    #[serde(default)]
    #[schemars(transform = conditions_list_map)]
    pub conditions: Vec<Condition>,
    /// MediaApps whose `authRef` names this StreamAuth.
    #[serde(default)]
    pub used_by: Vec<String>,
}

/// One CEL validation rule with the Rust check that mirrors it on the same JSON node.
pub struct CelRule {
    /// The schema node it is attached to (for docs and errors).
    pub on: &'static str,
    pub rule: &'static str,
    pub message: &'static str,
    pub check: fn(&Value) -> bool,
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn list_at<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// Every CEL rule in the CRDs. The schema gets these strings; [`crate::validate`] runs the
/// `check` twins.
pub const CEL_RULES: &[CelRule] = &[
    CelRule {
        on: "MediaApp.spec",
        rule: "!has(self.app) || (self.app.matches('^[A-Za-z0-9_.-]{1,128}$') && self.app != '.' && self.app != '..')",
        message: "app must be 1-128 characters of A-Z a-z 0-9 _ - . (not . or ..)",
        check: |v| str_at(v, "app").is_none_or(ferrocast_server::hub::is_valid_name),
    },
    CelRule {
        on: "MediaApp.spec.publish, MediaApp.spec.play",
        rule: "self.auth == 'none' || has(self.authRef)",
        message: "authRef (a StreamAuth) is required unless auth is none",
        check: |v| str_at(v, "auth").unwrap_or("none") == "none" || v.get("authRef").is_some(),
    },
    CelRule {
        on: "MediaApp.spec.publish.allow, MediaApp.spec.publish.deny",
        rule: "self.all(c, isCIDR(c) || isIP(c))",
        message: "entries must be CIDRs such as 10.0.0.0/8 or single addresses",
        check: |v| v.as_array().is_some_and(|l| l.iter().all(|c| c.as_str().and_then(ferrocast_server::auth::Cidr::parse).is_some())),
    },
    CelRule {
        on: "MediaApp.spec.tls",
        rule: "!self.enabled || has(self.secretName) || size(self.hosts) > 0",
        message: "a generated (self-signed) certificate needs at least one host",
        check: |v| v.get("enabled").and_then(Value::as_bool) == Some(false) || v.get("secretName").is_some() || !list_at(v, "hosts").is_empty(),
    },
    CelRule {
        on: "MediaApp.spec.tls",
        rule: "self.hosts.all(h, h.matches('^([*][.])?([A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?[.])*[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?$'))",
        message: "hosts must be DNS names, optionally starting with *.",
        check: |v| list_at(v, "hosts").iter().all(|h| h.as_str().is_some_and(ferrocast_server::config::is_valid_host_pattern)),
    },
    CelRule {
        on: "MediaApp.spec.service",
        rule: "self.type == 'LoadBalancer' || size(self.loadBalancerSourceRanges) == 0",
        message: "loadBalancerSourceRanges only apply to type LoadBalancer",
        check: |v| str_at(v, "type").unwrap_or("LoadBalancer") == "LoadBalancer" || list_at(v, "loadBalancerSourceRanges").is_empty(),
    },
    CelRule {
        on: "MediaApp.spec.service",
        rule: "!has(self.loadBalancerClass) || self.type == 'LoadBalancer'",
        message: "loadBalancerClass only applies to type LoadBalancer",
        check: |v| v.get("loadBalancerClass").is_none() || str_at(v, "type").unwrap_or("LoadBalancer") == "LoadBalancer",
    },
    CelRule {
        on: "MediaApp.spec.service",
        rule: "!has(self.externalTrafficPolicy) || self.type == 'LoadBalancer' || self.type == 'NodePort'",
        message: "externalTrafficPolicy only applies to types LoadBalancer and NodePort",
        check: |v| v.get("externalTrafficPolicy").is_none() || matches!(str_at(v, "type").unwrap_or("LoadBalancer"), "LoadBalancer" | "NodePort"),
    },
    CelRule {
        on: "MediaApp.spec.service.ports",
        rule: "self.rtmp != self.rtmps && self.rtmp != self.http && self.rtmp != self.https && self.rtmps != self.http && self.rtmps != self.https && self.http != self.https",
        message: "the rtmp, rtmps, http and https ports must all differ",
        check: |v| {
            let p: Vec<_> = ["rtmp", "rtmps", "http", "https"].iter().map(|k| v.get(*k).and_then(Value::as_i64)).collect();
            (0..p.len()).all(|i| (i + 1..p.len()).all(|j| p[i] != p[j]))
        },
    },
    CelRule {
        on: "MediaApp.spec.webhooks[]",
        rule: "self.url.startsWith('http://') && size(self.url) > 7",
        message: "webhook URLs must be http:// (the server's webhook client speaks plain HTTP; use an in-cluster receiver)",
        check: |v| str_at(v, "url").is_some_and(|u| u.starts_with("http://") && u.len() > 7),
    },
    CelRule {
        on: "MediaApp.spec.pull",
        rule: "self.source.matches('^(rtmps?|https?)://[^/]+')",
        message: "pull sources are rtmp://, rtmps://, http:// or https:// URL prefixes",
        check: |v| str_at(v, "source").is_some_and(|u| {
            ["rtmp://", "rtmps://", "http://", "https://"]
                .iter()
                .any(|p| u.strip_prefix(p).is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/')))
        }),
    },
    CelRule {
        on: "MediaApp.spec.push[]",
        rule: "self.target.matches('^rtmps?://[^/]+/')",
        message: "push targets are rtmp:// or rtmps:// URLs with an app path",
        check: |v| str_at(v, "target").is_some_and(|u| {
            ["rtmp://", "rtmps://"]
                .iter()
                .any(|p| u.strip_prefix(p).and_then(|rest| rest.split_once('/')).is_some_and(|(host, _)| !host.is_empty()))
        }),
    },
    CelRule {
        on: "MediaApp.spec.push[]",
        rule: "!has(self.keySecretRef) || self.target.contains('{key}')",
        message: "keySecretRef needs a {key} placeholder in target",
        check: |v| v.get("keySecretRef").is_none() || str_at(v, "target").is_some_and(|t| t.contains("{key}")),
    },
    CelRule {
        on: "StreamAuth.spec",
        rule: "has(self.sign) || has(self.keys) || has(self.tokens) || has(self.apiUsers)",
        message: "configure at least one of sign, keys, tokens, apiUsers",
        check: |v| ["sign", "keys", "tokens", "apiUsers"].iter().any(|k| v.get(*k).is_some()),
    },
];

/// Adds the [`CEL_RULES`] attached to `on` to a schema node.
fn add_rules(schema: &mut schemars::Schema, on: &str) {
    let rules: Vec<Value> = CEL_RULES
        .iter()
        .filter(|r| r.on.split(", ").any(|o| o == on))
        .map(|r| serde_json::json!({"rule": r.rule, "message": r.message}))
        .collect();
    assert!(!rules.is_empty(), "no CEL rule for {on}");
    schema.insert("x-kubernetes-validations".into(), Value::Array(rules));
}

fn cel_media_app_spec(s: &mut schemars::Schema) {
    add_rules(s, "MediaApp.spec");
}
fn cel_access_policy(s: &mut schemars::Schema) {
    add_rules(s, "MediaApp.spec.publish");
}
fn cel_cidr_list(s: &mut schemars::Schema) {
    add_rules(s, "MediaApp.spec.publish.allow");
}
fn cel_tls(s: &mut schemars::Schema) {
    add_rules(s, "MediaApp.spec.tls");
}
fn cel_service(s: &mut schemars::Schema) {
    add_rules(s, "MediaApp.spec.service");
}
fn cel_ports(s: &mut schemars::Schema) {
    add_rules(s, "MediaApp.spec.service.ports");
}
fn cel_webhook(s: &mut schemars::Schema) {
    add_rules(s, "MediaApp.spec.webhooks[]");
}
fn cel_pull(s: &mut schemars::Schema) {
    add_rules(s, "MediaApp.spec.pull");
}
fn cel_push(s: &mut schemars::Schema) {
    add_rules(s, "MediaApp.spec.push[]");
}
fn cel_stream_auth_spec(s: &mut schemars::Schema) {
    add_rules(s, "StreamAuth.spec");
}

impl MediaApp {
    /// The RTMP app path: `spec.app`, else the MediaApp's name.
    pub fn app_name(&self) -> String {
        self.spec
            .app
            .clone()
            .unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

/// The CRD files `crdgen` writes, as (file name, YAML). File names are a contract with the chart.
pub fn crd_files() -> Vec<(&'static str, String)> {
    vec![
        ("mediaapps.yaml", crd_yaml(&MediaApp::crd())),
        ("streamauths.yaml", crd_yaml(&StreamAuth::crd())),
    ]
}

fn crd_yaml(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> String {
    let body = serde_yaml::to_string(crd).expect("a CRD serializes");
    format!("# Generated by `cargo run -p ferrocast-operator --bin crdgen`; do not edit.\n{body}")
}

impl StreamAuth {
    /// Names of the Secrets this StreamAuth reads.
    pub fn secret_names(&self) -> Vec<String> {
        let s = &self.spec;
        let mut names: Vec<String> = Vec::new();
        names.extend(s.sign.iter().flat_map(|x| x.secret_refs.iter().map(|r| r.name.clone())));
        names.extend(s.keys.iter().map(|k| k.secret_ref.name.clone()));
        names.extend(
            s.tokens
                .iter()
                .flat_map(|t| t.key_secret_refs.iter().map(|r| r.name.clone())),
        );
        names.extend(s.api_users.iter().map(|u| u.secret_ref.name.clone()));
        names.sort();
        names.dedup();
        names
    }
}

impl MediaApp {
    /// Names of the Secrets this MediaApp reads itself (TLS, webhook keys, relay keys and CAs),
    /// not through a StreamAuth.
    pub fn secret_names(&self) -> Vec<String> {
        let name = self.metadata.name.clone().unwrap_or_default();
        let mut names: Vec<String> = Vec::new();
        if let Some(t) = self.spec.tls.as_ref().filter(|t| t.enabled) {
            names.push(
                t.secret_name
                    .clone()
                    .unwrap_or_else(|| crate::render::generated_cert_secret(&name)),
            );
        }
        names.extend(
            self.spec
                .webhooks
                .iter()
                .filter_map(|w| w.secret_ref.as_ref().map(|r| r.name.clone())),
        );
        names.extend(
            self.spec
                .pull
                .iter()
                .filter_map(|p| p.ca_secret_ref.as_ref().map(|r| r.name.clone())),
        );
        if let Some(u) = self.spec.record.as_ref().and_then(|r| r.upload.as_ref()) {
            names.extend(
                [&u.access_key_id_secret_ref, &u.secret_access_key_secret_ref]
                    .into_iter()
                    .flatten()
                    .map(|r| r.name.clone()),
            );
        }
        for p in &self.spec.push {
            names.extend(
                [&p.key_secret_ref, &p.ca_secret_ref]
                    .into_iter()
                    .flatten()
                    .map(|r| r.name.clone()),
            );
        }
        names.sort();
        names.dedup();
        names
    }

    /// StreamAuths named by `publish.authRef` / `play.authRef` (when auth is not `none`).
    pub fn auth_refs(&self) -> Vec<String> {
        let mut refs: Vec<String> = [&self.spec.publish, &self.spec.play]
            .into_iter()
            .filter(|p| p.auth != AuthMode::None)
            .filter_map(|p| p.auth_ref.as_ref().map(|r| r.name.clone()))
            .collect();
        refs.sort();
        refs.dedup();
        refs
    }
}
