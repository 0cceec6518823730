//! The pure reconcile: from every MediaApp and StreamAuth the fleet serves (its namespace and
//! the watched ones) and the Secrets they reference, to the objects the fleet needs: one ConfigMap holding the server
//! config (`ferrocast_server::config::Config`, exactly what `ferrocast --config` reads), one
//! Secret with the secret material the config names by path, a Service per MediaApp, and
//! every resource's status. No I/O and no clock: the controller gathers the inputs and
//! applies the outputs.
//!
//! Fail closed: an app whose credentials cannot be resolved is left out of the config (its
//! streams are refused) rather than served with weaker auth. TLS problems only drop that
//! app's certificate; plain RTMP keeps working. The rendered config is validated with the
//! server's own loader before it is returned, so the fleet never gets a config it refuses.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use ferrocast_server::config::{
    self as server, AppConfig, CertificateConfig, Config, PolicyConfig, RevisionConfig, TokenConfig, WebhookConfig,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServicePort, ServiceSpec as K8sServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::ByteString;
use kube::Resource;
use sha2::{Digest, Sha256};

use crate::crd::{
    AccessPolicy, AuthMode, Condition, MediaApp, ServicePorts, ServiceType, StreamAuth, StreamAuthStatus,
};

pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "ferrocast-operator";
/// Label naming the fleet: on the objects the operator makes (so two fleets in one namespace
/// never prune each other's), and on MediaApps and StreamAuths to pick the fleet serving them.
pub const FLEET_LABEL: &str = "ferrocast.io/fleet";
/// Fleet Secret key holding the revision of the rendered config (`revision.file`), so a
/// server applies a config only once the secret files of the same revision have arrived.
pub const REVISION_KEY: &str = "config.revision";
/// Fleet Secret key of a random salt mixed into the revision, so the revision (in the
/// ConfigMap, statuses and metrics) reveals nothing about the secret files it digests.
pub const REVISION_SALT_KEY: &str = "config.revision-salt";
/// Fleet Secret key of the shared secret of pod-to-pod requests (`cluster.secret_file`),
/// made once and kept, when the base config makes the server pods a fleet.
pub const CLUSTER_SECRET_KEY: &str = "cluster.secret";
/// Label on per-MediaApp objects (Service, generated certificate Secret): the MediaApp's name.
pub const MEDIAAPP_LABEL: &str = "ferrocast.io/mediaapp";
/// Label on per-MediaApp objects: the MediaApp's namespace (objects made before it existed
/// lack it; absent means the fleet namespace).
pub const MEDIAAPP_NAMESPACE_LABEL: &str = "ferrocast.io/mediaapp-namespace";
/// Label on generated certificate Secrets.
pub const GENERATED_CERT_LABEL: &str = "ferrocast.io/generated-certificate";
/// Data key of the server config in the ConfigMap.
pub const CONFIG_KEY: &str = "ferrocast.yaml";
/// Where server pods mount the fleet Secret.
pub const SECRETS_DIR: &str = "/etc/ferrocast/secrets";
/// Fleet Secret key of the HS256 key that signs API tokens (shared so tokens work on every replica).
pub const API_TOKEN_KEY: &str = "api.token-key";
/// Fleet Secret key of the merged API users file.
pub const API_USERS_KEY: &str = "api.users.yaml";
/// Kubernetes limits Secret data keys to this length.
const MAX_SECRET_KEY_LEN: usize = 253;

/// The operator's settings that shape what it renders.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The fleet's name (the Helm release's full name): prefix of per-app Service names, the
    /// field manager and the [`FLEET_LABEL`] value, so several fleets can share a namespace.
    pub name: String,
    /// Configured to also serve MediaApps and StreamAuths without a [`FLEET_LABEL`]. One fleet
    /// per namespace does: the oldest running one so configured (see [`Fleet::serves`]).
    pub serves_unlabelled: bool,
    /// Set while an older running fleet of the namespace serves unlabelled resources (read
    /// from the fleets' Leases), so this one leaves them alone. Shared by every clone.
    pub unlabelled_elsewhere: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The operator's leader Lease, in the fleet namespace.
    pub lease: String,
    /// The fleet's namespace: its pods, ConfigMap, Secret, Services, Lease.
    pub namespace: String,
    /// Further namespaces whose MediaApps and StreamAuths it serves (`--watch-namespaces`).
    pub watch_namespaces: Vec<String>,
    pub config_map: String,
    pub secret: String,
    /// Labels of the server pods; Services select them.
    pub selector: BTreeMap<String, String>,
    /// Fleet-wide server settings; apps, TLS certificates, MediaApp webhooks and secret paths
    /// are filled in by the render.
    pub base: Config,
    /// Where server pods see the fleet Secret's files.
    pub secrets_dir: PathBuf,
}

impl Fleet {
    /// Field manager of every server-side apply this fleet's operator makes.
    pub fn field_manager(&self) -> String {
        format!("{}-operator", self.name)
    }

    /// Field manager of the live counts in MediaApp statuses (written apart from the rest,
    /// at a bounded rate).
    pub fn live_field_manager(&self) -> String {
        format!("{}-operator-live", self.name)
    }

    /// Every namespace it serves: its own first, then the watched ones.
    pub fn namespaces(&self) -> Vec<String> {
        let mut all = vec![self.namespace.clone()];
        for ns in &self.watch_namespaces {
            if !all.contains(ns) {
                all.push(ns.clone());
            }
        }
        all
    }

    /// The namespace of a resource (none: the fleet's, as in a manifest without one).
    pub fn namespace_of<'a>(&'a self, meta: &'a ObjectMeta) -> &'a str {
        meta.namespace.as_deref().unwrap_or(&self.namespace)
    }

    /// Whether this fleet serves resources without a [`FLEET_LABEL`] now: configured to, and
    /// no older running fleet of the namespace does.
    pub fn serves_unlabelled_now(&self) -> bool {
        self.serves_unlabelled && !self.unlabelled_elsewhere.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether this fleet serves a resource: in one of its namespaces, and labelled with its
    /// name, or unlabelled when it serves those.
    pub fn serves(&self, meta: &ObjectMeta) -> bool {
        let ns = self.namespace_of(meta);
        if ns != self.namespace && !self.watch_namespaces.iter().any(|w| w == ns) {
            return false;
        }
        match meta.labels.as_ref().and_then(|l| l.get(FLEET_LABEL)) {
            Some(fleet) => *fleet == self.name,
            None => self.serves_unlabelled_now(),
        }
    }

    /// How the render keys a resource or Secret: its name in the fleet namespace, else
    /// `<namespace>/<name>` (no name holds a `/`, so keys of two namespaces never meet).
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if namespace == self.namespace {
            name.to_string()
        } else {
            format!("{namespace}/{name}")
        }
    }

    /// [`Fleet::key`] of a resource.
    pub fn key_of(&self, meta: &ObjectMeta) -> String {
        self.key(self.namespace_of(meta), meta.name.as_deref().unwrap_or_default())
    }

    /// A resource's part of its fleet Secret keys: its name in the fleet namespace, else
    /// `<namespace>_<name>` (`_` is in no name, so two namespaces never share a key).
    pub fn file_id(&self, meta: &ObjectMeta) -> String {
        let (ns, name) = (self.namespace_of(meta), meta.name.as_deref().unwrap_or_default());
        if ns == self.namespace {
            name.to_string()
        } else {
            format!("{ns}_{name}")
        }
    }

    /// Name of a MediaApp's Service (in the fleet namespace, where the pods are):
    /// `<fleet>-<mediaapp>`, or `<fleet>-<namespace>-<mediaapp>` for another namespace's.
    pub fn service_name(&self, media_app: &ObjectMeta) -> String {
        let (ns, name) = (
            self.namespace_of(media_app),
            media_app.name.as_deref().unwrap_or_default(),
        );
        if ns == self.namespace {
            format!("{}-{name}", self.name)
        } else {
            format!("{}-{ns}-{name}", self.name)
        }
    }

    /// Name of the Secret (in the fleet namespace) holding a MediaApp's generated
    /// certificate: `<mediaapp>-tls-generated`, or `<namespace>.<mediaapp>-tls-generated`.
    pub fn generated_cert_secret(&self, media_app: &ObjectMeta) -> String {
        let (ns, name) = (
            self.namespace_of(media_app),
            media_app.name.as_deref().unwrap_or_default(),
        );
        if ns == self.namespace {
            generated_cert_secret(name)
        } else {
            generated_cert_secret(&format!("{ns}.{name}"))
        }
    }

    /// The labels naming the MediaApp a per-app object (Service, generated certificate) is for.
    pub fn media_app_labels(&self, media_app: &ObjectMeta) -> [(&'static str, String); 2] {
        [
            (MEDIAAPP_LABEL, media_app.name.clone().unwrap_or_default()),
            (MEDIAAPP_NAMESPACE_LABEL, self.namespace_of(media_app).to_string()),
        ]
    }

    /// The key of the MediaApp a per-app object's labels name (`None`: no MediaApp label).
    pub fn labelled_media_app(&self, labels: &BTreeMap<String, String>) -> Option<String> {
        let name = labels.get(MEDIAAPP_LABEL)?;
        let ns = labels.get(MEDIAAPP_NAMESPACE_LABEL).unwrap_or(&self.namespace);
        Some(self.key(ns, name))
    }
}

/// Everything the render reads.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub media_apps: Vec<MediaApp>,
    pub stream_auths: Vec<StreamAuth>,
    /// Secrets by [`Fleet::key`] (their name in the fleet namespace), as the apiserver
    /// returns them (`data`); absent ones do not exist.
    pub secrets: BTreeMap<String, Secret>,
    /// The API token signing key to keep (from the current fleet Secret, or newly made).
    pub api_token_key: Option<String>,
    /// The revision salt to keep (from the current fleet Secret, or newly made).
    pub revision_salt: Option<String>,
    /// The fleet's pod-to-pod secret to keep (from the current fleet Secret, or newly made).
    pub cluster_secret: Option<String>,
    /// Unix seconds, for condition transition times.
    pub now: i64,
}

/// Why a resource is not ready (the `reason` of its `Ready` condition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    Reconciled,
    InvalidSpec,
    AppConflict,
    AuthRefNotFound,
    AuthModeUnavailable,
    SecretNotFound,
    SecretKeyMissing,
    InvalidSecret,
    ApiUserConflict,
    ApiUsersNotAllowed,
    InvalidTLS,
    CertificatePending,
    ServiceConflict,
    ServicePending,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Reconciled => "Reconciled",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::AppConflict => "AppConflict",
            Reason::AuthRefNotFound => "AuthRefNotFound",
            Reason::AuthModeUnavailable => "AuthModeUnavailable",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretKeyMissing => "SecretKeyMissing",
            Reason::InvalidSecret => "InvalidSecret",
            Reason::ApiUserConflict => "ApiUserConflict",
            Reason::ApiUsersNotAllowed => "ApiUsersNotAllowed",
            Reason::InvalidTLS => "InvalidTLS",
            Reason::CertificatePending => "CertificatePending",
            Reason::ServiceConflict => "ServiceConflict",
            Reason::ServicePending => "ServicePending",
        }
    }
}

/// One reason a resource is not ready, with a message naming objects and keys (never values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: Reason,
    pub message: String,
}

fn problem(reason: Reason, message: impl Into<String>) -> Problem {
    Problem {
        reason,
        message: message.into(),
    }
}

/// What the render decided for one MediaApp.
#[derive(Debug, Clone, PartialEq)]
pub struct AppOutcome {
    /// The RTMP app path.
    pub app: String,
    /// The app is in the rendered config.
    pub served: bool,
    /// Its certificate is in the rendered config.
    pub tls_served: bool,
    /// When its served certificate expires (Unix seconds), for the expiry metric and alert.
    pub tls_not_after: Option<i64>,
    pub tls_hosts: Vec<String>,
    pub problems: Vec<Problem>,
    /// The Service the operator manages for it, if any.
    pub service_name: Option<String>,
    /// `None`: the MediaApp asks for no Service.
    pub service_type: Option<ServiceType>,
    pub ports: ServicePorts,
    /// HLS and DASH are served for the app.
    pub hls: bool,
}

/// The render's output.
#[derive(Debug, Clone)]
pub struct Desired {
    pub config_map: ConfigMap,
    pub secret: Secret,
    /// By MediaApp [`Fleet::key`] (its name in the fleet namespace).
    pub services: BTreeMap<String, Service>,
    /// By MediaApp [`Fleet::key`].
    pub apps: BTreeMap<String, AppOutcome>,
    /// By StreamAuth [`Fleet::key`].
    pub stream_auths: BTreeMap<String, StreamAuthStatus>,
    /// MediaApps (by [`Fleet::key`]) that need an operator-generated certificate, with its hosts.
    pub generated_certs: BTreeMap<String, Vec<String>>,
    /// The rendered config (also in the ConfigMap).
    pub config: Config,
    /// The config's `revision.id`: a digest of the config and its secret files.
    pub revision: String,
}

/// The render failed as a whole (a bug or a bad base config, never a user's resource).
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the rendered server config is invalid: {0}")]
    InvalidConfig(String),
}

/// Name of the Secret holding the generated certificate of a MediaApp of the fleet
/// namespace (see [`Fleet::generated_cert_secret`]).
pub fn generated_cert_secret(media_app: &str) -> String {
    format!("{media_app}-tls-generated")
}

/// Whether `secret` is the operator's generated certificate for MediaApp `media_app`.
pub fn is_generated_cert(fleet: &Fleet, secret: Option<&Secret>, media_app: &ObjectMeta) -> bool {
    let labels = secret.and_then(|s| s.metadata.labels.as_ref());
    labels.is_some_and(|l| {
        fleet.labelled_media_app(l) == Some(fleet.key_of(media_app)) && l.contains_key(GENERATED_CERT_LABEL)
    })
}

/// A DNS-1123 subdomain (what a Secret name must be): a reference holding anything else (a
/// `namespace/name`, say) names no Secret of the resource's namespace and is refused.
fn is_object_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

/// A DNS-1035 label (what a Service name must be).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Labels of an object the operator makes for `fleet`.
pub fn labels(fleet: &Fleet, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
        ("app.kubernetes.io/name".to_string(), "ferrocast".to_string()),
        (FLEET_LABEL.to_string(), fleet.name.clone()),
    ]);
    for (k, v) in extra {
        l.insert(k.to_string(), v.to_string());
    }
    l
}

/// A flat Secret data key from name parts, or a problem when Kubernetes would refuse it.
fn flat_key(parts: &[&str]) -> Result<String, Problem> {
    let key = parts.join(".");
    if key.len() > MAX_SECRET_KEY_LEN {
        return Err(problem(
            Reason::InvalidSpec,
            format!(
                "name too long: secret file name {}... exceeds {MAX_SECRET_KEY_LEN} characters",
                &key[..40]
            ),
        ));
    }
    Ok(key)
}

/// One file of the fleet Secret: (flat key, bytes).
type File = (String, Vec<u8>);
/// Secret material to copy into the fleet Secret.
type Files = Vec<File>;

/// Looks up the Secrets of one namespace (a resource reads only its own namespace's),
/// turning absence into problems.
struct SecretSource<'a> {
    secrets: &'a BTreeMap<String, Secret>,
    fleet: &'a Fleet,
    namespace: &'a str,
}

impl<'a> SecretSource<'a> {
    /// The Secrets of the namespace of `meta`.
    fn of(&self, meta: &'a ObjectMeta) -> SecretSource<'a> {
        SecretSource {
            secrets: self.secrets,
            fleet: self.fleet,
            namespace: self.fleet.namespace_of(meta),
        }
    }

    fn get(&self, name: &str) -> Option<&'a Secret> {
        self.secrets.get(&self.fleet.key(self.namespace, name))
    }

    fn data(&self, name: &str) -> Result<BTreeMap<String, ByteString>, Problem> {
        if !is_object_name(name) {
            return Err(problem(
                Reason::InvalidSpec,
                format!("{name:?} is not a Secret name: a reference names a Secret of the resource's own namespace"),
            ));
        }
        let s = self
            .get(name)
            .ok_or_else(|| problem(Reason::SecretNotFound, format!("Secret {name} not found")))?;
        Ok(s.data.clone().unwrap_or_default())
    }

    fn value(&self, name: &str, key: &str) -> Result<Vec<u8>, Problem> {
        let data = self.data(name)?;
        let v = data
            .get(key)
            .ok_or_else(|| problem(Reason::SecretKeyMissing, format!("Secret {name} has no key {key:?}")))?;
        if v.0.trim_ascii().is_empty() {
            return Err(problem(
                Reason::SecretKeyMissing,
                format!("Secret {name} key {key:?} is empty"),
            ));
        }
        Ok(v.0.clone())
    }
}

/// A StreamAuth with each section resolved against its Secrets.
struct ResolvedAuth {
    sign: Option<Result<Files, Problem>>,
    keys: Option<Result<Files, Problem>>,
    tokens: Option<Result<(TokenConfig, Files), Problem>>,
    api_users: Option<Result<BTreeMap<String, String>, Problem>>,
}

impl ResolvedAuth {
    fn problems(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if let Some(Err(e)) = &self.sign {
            p.push(e.clone());
        }
        if let Some(Err(e)) = &self.keys {
            p.push(e.clone());
        }
        if let Some(Err(e)) = &self.tokens {
            p.push(e.clone());
        }
        if let Some(Err(e)) = &self.api_users {
            p.push(e.clone());
        }
        p
    }
}

fn resolve_auth(sa: &StreamAuth, src: &SecretSource, fleet: &Fleet) -> ResolvedAuth {
    let src = &src.of(&sa.metadata);
    let id = fleet.file_id(&sa.metadata);
    let name = id.as_str();
    let path = |key: &str| fleet.secrets_dir.join(key);
    let sign = sa.spec.sign.as_ref().map(|s| {
        s.secret_refs
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok((
                    flat_key(&["streamauth", name, "sign", &i.to_string()])?,
                    src.value(&r.name, &r.key)?,
                ))
            })
            .collect::<Result<Files, Problem>>()
    });
    let keys = sa.spec.keys.as_ref().map(|k| {
        let data = src.data(&k.secret_ref.name)?;
        let mut map = BTreeMap::new();
        for (stream, key) in data {
            // The data key is a stream name; it is not echoed, in case a key was put there by mistake.
            if !ferrocast_server::hub::is_valid_name(&stream) {
                return Err(problem(
                    Reason::InvalidSecret,
                    format!(
                        "Secret {}: a data key is not a valid stream name (1-128 of A-Z a-z 0-9 _ - .)",
                        k.secret_ref.name
                    ),
                ));
            }
            let key = std::str::from_utf8(&key.0).map(str::trim).unwrap_or("");
            if key.is_empty() {
                return Err(problem(
                    Reason::InvalidSecret,
                    format!(
                        "Secret {}: the key of stream {stream:?} is empty or not UTF-8",
                        k.secret_ref.name
                    ),
                ));
            }
            map.insert(stream, key.to_string());
        }
        let yaml = serde_yaml::to_string(&map).expect("a string map serializes");
        Ok(vec![(flat_key(&["streamauth", name, "keys.yaml"])?, yaml.into_bytes())])
    });
    let tokens = sa.spec.tokens.as_ref().map(|t| {
        let mut files = Files::new();
        for (i, r) in t.key_secret_refs.iter().enumerate() {
            let bytes = src.value(&r.name, &r.key)?;
            ferrocast_server::auth::check_token_key(t.algorithm.as_str(), &bytes, &format!("{}/{}", r.name, r.key))
                .map_err(|e| {
                    problem(
                        Reason::InvalidSecret,
                        format!(
                            "Secret {} key {:?} is not a usable {} key: {}",
                            r.name,
                            r.key,
                            t.algorithm.as_str(),
                            redact(&e.to_string())
                        ),
                    )
                })?;
            files.push((flat_key(&["streamauth", name, "token", &i.to_string()])?, bytes));
        }
        let config = TokenConfig {
            algorithm: t.algorithm.as_str().to_string(),
            key_files: files.iter().map(|(k, _)| path(k)).collect(),
            issuer: t.issuer.clone(),
            audience: t.audience.clone(),
        };
        Ok((config, files))
    });
    let api_users = sa.spec.api_users.as_ref().map(|u| {
        let secret = &u.secret_ref.name;
        let mut users = BTreeMap::new();
        for (user, hash) in src.data(secret)? {
            if !ferrocast_server::hub::is_valid_name(&user) || user.starts_with('.') {
                return Err(problem(
                    Reason::InvalidSecret,
                    format!("Secret {secret}: a data key is not a valid user name"),
                ));
            }
            let hash = std::str::from_utf8(&hash.0).map(str::trim).unwrap_or("");
            // A PHC argon2 string; anything else is most likely a plain password put there by mistake.
            if !hash.starts_with("$argon2") {
                return Err(problem(
                    Reason::InvalidSecret,
                    format!("Secret {secret}: the value of user {user:?} is not an argon2 PHC hash ($argon2id$...)"),
                ));
            }
            users.insert(user, hash.to_string());
        }
        Ok(users)
    });
    ResolvedAuth {
        sign,
        keys,
        tokens,
        api_users,
    }
}

/// Error texts from key parsers could quote input; keep only the first line and cut it short.
fn redact(message: &str) -> String {
    let line = message.lines().next().unwrap_or("");
    line.chars().take(120).collect()
}

/// The render: see the module docs.
pub fn render(fleet: &Fleet, inputs: &Inputs) -> Result<Desired, RenderError> {
    let src = SecretSource {
        secrets: &inputs.secrets,
        fleet,
        namespace: &fleet.namespace,
    };
    let mut stream_auths: Vec<&StreamAuth> = inputs
        .stream_auths
        .iter()
        .filter(|s| fleet.serves(&s.metadata))
        .collect();
    stream_auths.sort_by_key(|s| fleet.key_of(&s.metadata));
    let resolved: BTreeMap<String, ResolvedAuth> = stream_auths
        .iter()
        .map(|sa| (fleet.key_of(&sa.metadata), resolve_auth(sa, &src, fleet)))
        .collect();

    // API users are fleet-wide: merged from every StreamAuth of the fleet namespace, first by
    // name wins a conflict. A watched namespace's StreamAuth cannot give anyone the API of
    // the whole fleet.
    let mut api_users: BTreeMap<String, String> = BTreeMap::new();
    let mut user_owner: BTreeMap<String, String> = BTreeMap::new();
    let mut auth_problems: BTreeMap<String, Vec<Problem>> =
        resolved.iter().map(|(n, r)| (n.clone(), r.problems())).collect();
    let in_fleet_namespace: BTreeSet<String> = stream_auths
        .iter()
        .filter(|sa| fleet.namespace_of(&sa.metadata) == fleet.namespace)
        .map(|sa| fleet.key_of(&sa.metadata))
        .collect();
    for (sa, r) in &resolved {
        if r.api_users.is_some() && !in_fleet_namespace.contains(sa) {
            auth_problems.entry(sa.clone()).or_default().push(problem(
                Reason::ApiUsersNotAllowed,
                format!(
                    "apiUsers are ignored: API users are fleet-wide and only StreamAuths in the fleet namespace {} may define them",
                    fleet.namespace
                ),
            ));
            continue;
        }
        let Some(Ok(users)) = &r.api_users else { continue };
        for (user, hash) in users {
            if let Some(owner) = user_owner.get(user) {
                auth_problems.entry(sa.clone()).or_default().push(problem(
                    Reason::ApiUserConflict,
                    format!("API user {user:?} is also defined by StreamAuth {owner}; that one is used"),
                ));
                continue;
            }
            user_owner.insert(user.clone(), sa.clone());
            api_users.insert(user.clone(), hash.clone());
        }
    }

    // Older MediaApps win an app-path conflict, so a new one cannot take over a live app
    // (of the same namespace or another; equal ages are ordered by namespace and name).
    let mut media_apps: Vec<&MediaApp> = inputs.media_apps.iter().filter(|m| fleet.serves(&m.metadata)).collect();
    media_apps.sort_by_key(|m| {
        (
            m.metadata.creation_timestamp.clone().map(|t| t.0),
            fleet.namespace_of(&m.metadata).to_string(),
            m.metadata.name.clone(),
        )
    });

    let mut config = fleet.base.clone();
    config.apps = Vec::new();
    config.tls.certificates = Vec::new();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    let mut services = BTreeMap::new();
    let mut generated_certs = BTreeMap::new();
    let mut used_by: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();

    for ma in media_apps {
        // `name` is the MediaApp's part of fleet Secret keys; `key` its key in the outputs.
        let name = fleet.file_id(&ma.metadata);
        let key = fleet.key_of(&ma.metadata);
        let ns = fleet.namespace_of(&ma.metadata);
        let src = src.of(&ma.metadata);
        let spec = &ma.spec;
        let app = ma.app_name();
        let mut problems = Vec::new();
        for p in [&spec.publish, &spec.play] {
            if let (AuthMode::Sign | AuthMode::Key | AuthMode::Token, Some(r)) = (p.auth, &p.auth_ref) {
                let plain = ma.metadata.name.clone().unwrap_or_default();
                used_by.entry(fleet.key(ns, &r.name)).or_default().insert(plain);
            }
        }

        // What CEL checks is checked again: the render must never produce a config the server refuses.
        if !ferrocast_server::hub::is_valid_name(&app) {
            problems.push(problem(
                Reason::InvalidSpec,
                format!("app {app:?} is not a valid app name"),
            ));
        }
        for (list, cidrs) in [
            ("publish.allow", &spec.publish.allow),
            ("publish.deny", &spec.publish.deny),
            ("play.allow", &spec.play.allow),
            ("play.deny", &spec.play.deny),
        ] {
            if cidrs.iter().any(|c| ferrocast_server::auth::Cidr::parse(c).is_none()) {
                problems.push(problem(
                    Reason::InvalidSpec,
                    format!("{list} has an entry that is not a CIDR"),
                ));
            }
        }
        if problems.is_empty() {
            // The older MediaApp keeps its path even while it is not served (say, a Secret is
            // briefly missing), so a younger one can never take it over with other auth.
            match claimed.get(&app) {
                Some(owner) => problems.push(problem(
                    Reason::AppConflict,
                    format!("app {app:?} is already claimed by MediaApp {owner}"),
                )),
                None => {
                    claimed.insert(app.clone(), key.clone());
                }
            }
        }

        let mut app_files = Files::new();
        let mut policy = |which: &str, p: &AccessPolicy, problems: &mut Vec<Problem>| -> PolicyConfig {
            match auth_policy(which, p, ns, &resolved, fleet) {
                Ok((policy, f)) => {
                    app_files.extend(f);
                    PolicyConfig {
                        allow: p.allow.clone(),
                        deny: p.deny.clone(),
                        ..policy
                    }
                }
                Err(e) => {
                    problems.push(e);
                    PolicyConfig::default()
                }
            }
        };
        let publish = policy("publish", &spec.publish, &mut problems);
        let play = policy("play", &spec.play, &mut problems);

        let mut hooks = Vec::new();
        for (i, h) in spec.webhooks.iter().enumerate() {
            let secret_file = match &h.secret_ref {
                None => None,
                Some(r) => match flat_key(&["mediaapp", &name, "webhook", &i.to_string()])
                    .and_then(|k| Ok((k, src.value(&r.name, &r.key)?)))
                {
                    Ok((k, v)) => {
                        let path = fleet.secrets_dir.join(&k);
                        app_files.push((k, v));
                        Some(path)
                    }
                    Err(e) => {
                        problems.push(Problem {
                            message: format!("webhook {}: {}", i, e.message),
                            ..e
                        });
                        None
                    }
                },
            };
            if !h.url.starts_with("http://") {
                problems.push(problem(
                    Reason::InvalidSpec,
                    format!("webhook {i}: the URL must be http://"),
                ));
            }
            hooks.push(WebhookConfig {
                url: h.url.clone(),
                events: h.events.iter().map(|e| e.as_str().to_string()).collect(),
                apps: vec![app.clone()],
                secret_file,
            });
        }

        // Relay keys and CAs go to the fleet Secret like webhook keys; the config names files.
        let mut relay_file = |parts: &[&str], r: &crate::crd::SecretKeyRef, problems: &mut Vec<Problem>| {
            let mut key = vec!["mediaapp", name.as_str()];
            key.extend_from_slice(parts);
            match flat_key(&key).and_then(|k| Ok((k, src.value(&r.name, &r.key)?))) {
                Ok((k, v)) => {
                    let path = fleet.secrets_dir.join(&k);
                    app_files.push((k, v));
                    Some(path)
                }
                Err(e) => {
                    problems.push(Problem {
                        message: format!("{}: {}", parts.join(" "), e.message),
                        ..e
                    });
                    None
                }
            }
        };
        let pull = spec.pull.as_ref().map(|p| {
            let pull = server::PullConfig {
                source: p.source.clone(),
                idle_close_secs: p.idle_close_secs,
                ca_file: p
                    .ca_secret_ref
                    .as_ref()
                    .and_then(|r| relay_file(&["pull", "ca"], r, &mut problems)),
                tls_verify: p.tls_verify,
            };
            if let Err((key, message)) = ferrocast_server::relay::check_pull_config(&pull) {
                problems.push(problem(Reason::InvalidSpec, format!("pull.{key}: {message}")));
            }
            pull
        });
        let mut push = Vec::new();
        for (i, p) in spec.push.iter().enumerate() {
            let i = i.to_string();
            let target = server::PushConfig {
                target: p.target.clone(),
                key_file: p
                    .key_secret_ref
                    .as_ref()
                    .and_then(|r| relay_file(&["push", &i, "key"], r, &mut problems)),
                ca_file: p
                    .ca_secret_ref
                    .as_ref()
                    .and_then(|r| relay_file(&["push", &i, "ca"], r, &mut problems)),
                tls_verify: p.tls_verify,
            };
            if let Err((key, message)) = ferrocast_server::relay::check_push_config(&target) {
                problems.push(problem(Reason::InvalidSpec, format!("push[{i}].{key}: {message}")));
            }
            push.push(target);
        }

        let record = spec
            .record
            .as_ref()
            .map(|r| {
                record_config(
                    r,
                    &mut |part, r, problems| relay_file(&["record", part], r, problems),
                    &mut problems,
                )
            })
            .unwrap_or_default();
        let mut transcode = Vec::new();
        for (i, t) in spec.transcode.iter().enumerate() {
            let rule = transcode_rule(t);
            if let Err((key, message)) = ferrocast_server::transcode::check_rule(&rule) {
                problems.push(problem(Reason::InvalidSpec, format!("transcode[{i}].{key}: {message}")));
            }
            transcode.push(rule);
        }

        let service_type = spec.service.as_ref().map(|s| s.type_);
        let ports = spec.service.as_ref().map(|s| s.ports).unwrap_or_default();
        let svc_name = fleet.service_name(&ma.metadata);
        let wants_service = service_type.is_some();
        if wants_service && !is_dns_label(&svc_name) {
            problems.push(problem(Reason::InvalidSpec, format!("Service name {svc_name:?} would not be a valid DNS label (at most 63 lowercase letters, digits and -); use a shorter MediaApp name")));
        }

        let served = problems.is_empty();
        let tls_spec = spec.tls.as_ref().filter(|t| t.enabled);
        let mut tls_served = false;
        let mut tls_problems = Vec::new();
        let mut tls_not_after = None;
        if let Some(t) = tls_spec {
            if t.secret_name.is_none() {
                generated_certs.insert(key.clone(), t.hosts.clone());
            }
            if served {
                match tls_files(ma, &name, t.secret_name.as_deref(), &t.hosts, &src) {
                    Ok((crt, key, expires)) => {
                        tls_not_after = expires;
                        config.tls.certificates.push(CertificateConfig {
                            cert_file: fleet.secrets_dir.join(&crt.0),
                            key_file: fleet.secrets_dir.join(&key.0),
                            hosts: t.hosts.clone(),
                        });
                        app_files.push(crt);
                        app_files.push(key);
                        tls_served = true;
                    }
                    Err(e) => tls_problems.push(e),
                }
            }
        }

        if served {
            config.apps.push(AppConfig {
                name: app.clone(),
                gop_cache: spec.gop_cache,
                publish,
                play,
                pull,
                push,
                hls: hls_config(&spec.hls),
                record,
                transcode,
                ..AppConfig::default()
            });
            config.webhooks.hooks.extend(hooks);
            files.extend(app_files);
        }
        if let Some(svc_spec) = spec
            .service
            .as_ref()
            .filter(|_| wants_service && is_dns_label(&svc_name))
        {
            services.insert(key.clone(), service(fleet, ma, svc_spec, &svc_name, tls_spec.is_some()));
        }
        problems.extend(tls_problems);
        outcomes.insert(
            key.clone(),
            AppOutcome {
                app,
                served,
                tls_served,
                tls_not_after,
                tls_hosts: tls_spec.map(|t| t.hosts.clone()).unwrap_or_default(),
                problems,
                service_name: (wants_service && is_dns_label(&svc_name)).then_some(svc_name),
                service_type,
                ports,
                hls: spec.hls.mode != crate::crd::HlsMode::Off,
            },
        );
    }

    if !api_users.is_empty() {
        files.insert(
            API_USERS_KEY.to_string(),
            serde_yaml::to_string(&api_users)
                .expect("a string map serializes")
                .into_bytes(),
        );
        config.api.users_file = Some(fleet.secrets_dir.join(API_USERS_KEY));
        if let Some(key) = &inputs.api_token_key {
            files.insert(API_TOKEN_KEY.to_string(), key.clone().into_bytes());
            config.api.jwt_secret_file = Some(fleet.secrets_dir.join(API_TOKEN_KEY));
        }
    }

    if let Some(salt) = &inputs.revision_salt {
        files.insert(REVISION_SALT_KEY.to_string(), salt.clone().into_bytes());
    }
    // The server pods are a fleet (the chart's base config names their headless Service): they
    // share one secret for pod-to-pod requests, kept in the fleet Secret, never in the ConfigMap.
    if config.cluster.enabled() {
        if let Some(secret) = &inputs.cluster_secret {
            files.insert(CLUSTER_SECRET_KEY.to_string(), secret.clone().into_bytes());
            config.cluster.secret_file = Some(fleet.secrets_dir.join(CLUSTER_SECRET_KEY));
        }
    }
    let revision = revision_of(&config, &files);
    config.revision = RevisionConfig {
        id: Some(revision.clone()),
        file: Some(fleet.secrets_dir.join(REVISION_KEY)),
    };
    files.insert(REVISION_KEY.to_string(), revision.clone().into_bytes());
    let yaml = config.to_yaml();
    Config::from_yaml(&yaml, "rendered config").map_err(|e| RenderError::InvalidConfig(e.to_string()))?;

    let stream_auth_statuses = stream_auths
        .iter()
        .map(|sa| {
            let name = fleet.key_of(&sa.metadata);
            let problems = auth_problems.remove(&name).unwrap_or_default();
            let previous = sa.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or(&[]);
            let status = StreamAuthStatus {
                observed_generation: sa.metadata.generation,
                conditions: vec![ready_condition(
                    previous,
                    problems.first().map(|p| (p.reason, joined(&problems))),
                    sa.metadata.generation,
                    inputs.now,
                )],
                used_by: used_by.remove(&name).unwrap_or_default().into_iter().collect(),
            };
            (name, status)
        })
        .collect();

    Ok(Desired {
        config_map: ConfigMap {
            metadata: meta(
                fleet,
                &fleet.config_map,
                labels(fleet, &[("app.kubernetes.io/component", "server-config")]),
            ),
            data: Some(BTreeMap::from([(CONFIG_KEY.to_string(), yaml)])),
            ..Default::default()
        },
        secret: Secret {
            metadata: meta(
                fleet,
                &fleet.secret,
                labels(fleet, &[("app.kubernetes.io/component", "server-secrets")]),
            ),
            type_: Some("Opaque".into()),
            data: Some(files.into_iter().map(|(k, v)| (k, ByteString(v))).collect()),
            ..Default::default()
        },
        services,
        apps: outcomes,
        stream_auths: stream_auth_statuses,
        generated_certs,
        config,
        revision,
    })
}

/// A digest of a config (before its revision is set) and the secret files it names: any
/// change to either is a new revision.
fn revision_of(config: &Config, files: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = Sha256::new();
    h.update(config.to_yaml().as_bytes());
    for (key, bytes) in files {
        h.update((key.len() as u64).to_be_bytes());
        h.update(key.as_bytes());
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn meta(fleet: &Fleet, name: &str, labels: BTreeMap<String, String>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: Some(fleet.namespace.clone()),
        labels: Some(labels),
        ..Default::default()
    }
}

/// All problem messages, one sentence each.
pub fn joined(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The policy config for one side of a MediaApp, with the files it names.
fn auth_policy(
    which: &str,
    p: &AccessPolicy,
    namespace: &str,
    resolved: &BTreeMap<String, ResolvedAuth>,
    fleet: &Fleet,
) -> Result<(PolicyConfig, Files), Problem> {
    if p.auth == AuthMode::None {
        return Ok((PolicyConfig::default(), Files::new()));
    }
    let Some(sa_name) = p.auth_ref.as_ref().map(|r| r.name.as_str()).filter(|s| !s.is_empty()) else {
        return Err(problem(
            Reason::InvalidSpec,
            format!("{which}.authRef is required for auth {}", p.auth.as_str()),
        ));
    };
    // A StreamAuth of the MediaApp's own namespace.
    let r = resolved.get(&fleet.key(namespace, sa_name)).ok_or_else(|| {
        problem(
            Reason::AuthRefNotFound,
            format!("{which}: StreamAuth {sa_name} not found"),
        )
    })?;
    let unavailable = |section: &str| {
        problem(
            Reason::AuthModeUnavailable,
            format!(
                "{which}: StreamAuth {sa_name} has no {section} for auth {}",
                p.auth.as_str()
            ),
        )
    };
    let from_auth = |e: &Problem| Problem {
        reason: e.reason,
        message: format!("{which}: StreamAuth {sa_name}: {}", e.message),
    };
    let path = |k: &str| fleet.secrets_dir.join(k);
    let mut policy = PolicyConfig {
        auth: server_mode(p.auth),
        ..Default::default()
    };
    let files = match p.auth {
        AuthMode::None => unreachable!("handled above"),
        AuthMode::Sign => {
            let f = r
                .sign
                .as_ref()
                .ok_or_else(|| unavailable("sign"))?
                .as_ref()
                .map_err(from_auth)?;
            policy.sign_secret_files = f.iter().map(|(k, _)| path(k)).collect();
            f.clone()
        }
        AuthMode::Key => {
            let f = r
                .keys
                .as_ref()
                .ok_or_else(|| unavailable("keys"))?
                .as_ref()
                .map_err(from_auth)?;
            policy.keys_file = f.first().map(|(k, _)| path(k));
            f.clone()
        }
        AuthMode::Token => {
            let (token, f) = r
                .tokens
                .as_ref()
                .ok_or_else(|| unavailable("tokens"))?
                .as_ref()
                .map_err(from_auth)?;
            policy.token = token.clone();
            f.clone()
        }
    };
    Ok((policy, files))
}

fn server_mode(m: AuthMode) -> server::AuthMode {
    match m {
        AuthMode::None => server::AuthMode::None,
        AuthMode::Sign => server::AuthMode::Sign,
        AuthMode::Key => server::AuthMode::Key,
        AuthMode::Token => server::AuthMode::Token,
    }
}

/// The certificate and key files of a MediaApp's TLS, from its Secret (`secret_name` in its
/// own namespace, or the generated one in the fleet namespace), checked. `media_app` is its
/// part of the fleet Secret keys.
fn tls_files(
    ma: &MediaApp,
    media_app: &str,
    secret_name: Option<&str>,
    hosts: &[String],
    src: &SecretSource,
) -> Result<(File, File, Option<i64>), Problem> {
    let fleet = src.fleet;
    let generated = SecretSource {
        namespace: &fleet.namespace,
        ..*src
    };
    let (secret, src) = match secret_name {
        Some(s) => (s.to_string(), src),
        None => (fleet.generated_cert_secret(&ma.metadata), &generated),
    };
    let data = src.data(&secret).map_err(|e| match secret_name {
        Some(_) => problem(Reason::InvalidTLS, format!("TLS {}", e.message)),
        None => problem(
            Reason::CertificatePending,
            "the self-signed certificate is not generated yet",
        ),
    })?;
    if secret_name.is_none() && !is_generated_cert(fleet, src.get(&secret), &ma.metadata) {
        return Err(problem(Reason::InvalidTLS, format!("Secret {secret} exists and was not made by the operator for this MediaApp; it is left alone (rename it or set tls.secretName)")));
    }
    let get = |k: &str| {
        data.get(k)
            .map(|v| v.0.clone())
            .ok_or_else(|| problem(Reason::InvalidTLS, format!("TLS Secret {secret} has no {k}")))
    };
    let (crt, key) = (get("tls.crt")?, get("tls.key")?);
    let expires = crate::tls::check_pair(&crt, &key, hosts)
        .map_err(|e| problem(Reason::InvalidTLS, format!("TLS Secret {secret}: {e}")))?;
    Ok((
        (flat_key(&["mediaapp", media_app, "tls.crt"])?, crt),
        (flat_key(&["mediaapp", media_app, "tls.key"])?, key),
        expires,
    ))
}

/// The owner reference of a MediaApp's per-app object in the fleet namespace. Owner references
/// cannot cross namespaces (the garbage collector would delete the object at once), so another
/// namespace's MediaApp gets none: the operator prunes its objects by label instead.
pub fn owner_reference(
    fleet: &Fleet,
    ma: &MediaApp,
) -> Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>> {
    (fleet.namespace_of(&ma.metadata) == fleet.namespace)
        .then(|| ma.controller_owner_ref(&()).map(|r| vec![r]))
        .flatten()
}

/// The Service exposing one MediaApp on the fleet's pods. Target ports are the server
/// container's named ports (`rtmp`, `http`, `rtmps`, `https`), not numbers: while a changed
/// listener port rolls out, each pod is reached on the port it listens on.
fn service(fleet: &Fleet, ma: &MediaApp, spec: &crate::crd::ServiceSpec, name: &str, with_tls: bool) -> Service {
    let type_ = spec.type_;
    let port = |name: &str, port: u16| ServicePort {
        name: Some(name.to_string()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".into()),
        ..Default::default()
    };
    let mut ports = vec![port("rtmp", spec.ports.rtmp), port("http", spec.ports.http)];
    if with_tls {
        ports.push(port("rtmps", spec.ports.rtmps));
        ports.push(port("https", spec.ports.https));
    }
    let [(k1, v1), (k2, v2)] = fleet.media_app_labels(&ma.metadata);
    let mut metadata = meta(
        fleet,
        name,
        labels(
            fleet,
            &[("app.kubernetes.io/component", "mediaapp"), (k1, &v1), (k2, &v2)],
        ),
    );
    metadata.annotations = (!spec.annotations.is_empty()).then(|| spec.annotations.clone());
    metadata.owner_references = owner_reference(fleet, ma);
    Service {
        metadata,
        spec: Some(K8sServiceSpec {
            type_: Some(type_.as_str().to_string()),
            selector: Some(fleet.selector.clone()),
            ports: Some(ports),
            load_balancer_source_ranges: (!spec.load_balancer_source_ranges.is_empty())
                .then(|| spec.load_balancer_source_ranges.clone()),
            load_balancer_class: spec.load_balancer_class.clone(),
            external_traffic_policy: spec.external_traffic_policy.map(|p| format!("{p:?}")),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The `Ready` condition: `not_ready` is the first problem's reason and all messages.
pub fn ready_condition(
    previous: &[Condition],
    not_ready: Option<(Reason, String)>,
    generation: Option<i64>,
    now: i64,
) -> Condition {
    match not_ready {
        None => condition(
            previous,
            "Ready",
            "True",
            Reason::Reconciled.as_str(),
            String::new(),
            generation,
            now,
        ),
        Some((r, m)) => condition(previous, "Ready", "False", r.as_str(), m, generation, now),
    }
}

/// A condition of type `type_`. The transition time moves only when its status flips, so an
/// unchanged status patches to the same object and causes no new watch event.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: i64,
) -> Condition {
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| rfc3339(now));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

pub fn rfc3339(unix_secs: i64) -> String {
    k8s_openapi::jiff::Timestamp::from_second(unix_secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// The server's recording settings of a MediaApp: files on the pods' scratch volume (the
/// chart mounts it at the server's default `record.path`), credentials through `file` (which
/// copies a Secret key into the fleet Secret and names its file).
fn record_config(
    spec: &crate::crd::RecordSpec,
    file: &mut dyn FnMut(&str, &crate::crd::SecretKeyRef, &mut Vec<Problem>) -> Option<std::path::PathBuf>,
    problems: &mut Vec<Problem>,
) -> server::RecordConfig {
    use crate::crd::{RecordFormat, RecordMode};
    let d = server::RecordConfig::default();
    let upload = match &spec.upload {
        None => server::UploadConfig::default(),
        Some(u) => {
            let du = server::UploadConfig::default();
            let id = u
                .access_key_id_secret_ref
                .as_ref()
                .and_then(|r| file("access-key-id", r, problems));
            let secret = u
                .secret_access_key_secret_ref
                .as_ref()
                .and_then(|r| file("secret-access-key", r, problems));
            if u.access_key_id_secret_ref.is_some() != u.secret_access_key_secret_ref.is_some() {
                problems.push(problem(
                    Reason::InvalidSpec,
                    "record.upload: accessKeyIdSecretRef and secretAccessKeySecretRef go together",
                ));
            }
            server::UploadConfig {
                endpoint: u.endpoint.clone(),
                region: u.region.clone().unwrap_or(du.region.clone()),
                bucket: u.bucket.clone(),
                prefix: u.prefix.clone(),
                access_key_id_file: id,
                secret_access_key_file: secret,
                path_style: u.path_style,
                remove_local: u.remove_local,
                ..du
            }
        }
    };
    server::RecordConfig {
        mode: match spec.mode {
            RecordMode::Off => server::RecordMode::Off,
            RecordMode::Always => server::RecordMode::Always,
            RecordMode::Api => server::RecordMode::Api,
        },
        format: match spec.format {
            RecordFormat::Mp4 => server::RecordFormat::Mp4,
            RecordFormat::Fmp4 => server::RecordFormat::Fmp4,
            RecordFormat::Flv => server::RecordFormat::Flv,
        },
        segment_secs: spec.segment_secs.unwrap_or(d.segment_secs),
        fragment_ms: spec.fragment_ms.unwrap_or(d.fragment_ms),
        upload,
        ..d
    }
}

/// The server's HLS settings of a MediaApp; unset values keep the server defaults.
fn hls_config(spec: &crate::crd::HlsSpec) -> server::HlsConfig {
    use crate::crd::HlsMode;
    let d = server::HlsConfig::default();
    server::HlsConfig {
        mode: match spec.mode {
            HlsMode::Off => server::HlsMode::Off,
            HlsMode::OnDemand => server::HlsMode::OnDemand,
            HlsMode::Always => server::HlsMode::Always,
        },
        segment_secs: spec.segment_secs.unwrap_or(d.segment_secs),
        part_ms: spec.part_ms.unwrap_or(d.part_ms),
        window_segments: spec.window_segments.map_or(d.window_segments, |w| w as usize),
        ..d
    }
}

/// The server's transcode rule of a MediaApp's; unset values keep the server defaults.
fn transcode_rule(spec: &crate::crd::TranscodeSpec) -> server::TranscodeRule {
    use crate::crd::{KeyframeMode, RenditionCodec, TranscodeEncoder};
    let d = server::TranscodeRule::default();
    let r = server::RenditionConfig::default();
    server::TranscodeRule {
        rule: spec.rule.clone(),
        renditions: spec
            .renditions
            .iter()
            .map(|x| server::RenditionConfig {
                name: x.name.clone(),
                width: x.width.unwrap_or(0),
                height: x.height,
                video_kbps: x.video_kbps,
                max_kbps: x.max_kbps.unwrap_or(0),
                fps: x.fps.unwrap_or(0),
                audio_kbps: x.audio_kbps.unwrap_or(r.audio_kbps),
                codec: match x.codec {
                    RenditionCodec::H264 => server::RenditionCodec::H264,
                    RenditionCodec::H265 => server::RenditionCodec::H265,
                },
                preset: x.preset.clone(),
            })
            .collect(),
        encoder: match spec.encoder {
            TranscodeEncoder::Software => server::TranscodeEncoder::Software,
            TranscodeEncoder::Nvenc => server::TranscodeEncoder::Nvenc,
            TranscodeEncoder::Vaapi => server::TranscodeEncoder::Vaapi,
            TranscodeEncoder::Qsv => server::TranscodeEncoder::Qsv,
        },
        keyframes: match spec.keyframes {
            KeyframeMode::Source => server::KeyframeMode::Source,
            KeyframeMode::Interval => server::KeyframeMode::Interval,
        },
        gop_ms: spec.gop_ms.unwrap_or(d.gop_ms),
    }
}
