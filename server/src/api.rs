//! The REST API under `/api/v1` on the HTTP port: login (argon2 password hashes from a
//! users directory, HS256 tokens, failed logins rate limited per user and IP), health, server
//! info and process stats, live streams with codec info, sessions and kicking them, and
//! ready-to-use (signed when the app requires it) publish and play URLs.
//!
//! Every answer is a Node-Media-Server 4.x style envelope `{"success", "data", "message"}`,
//! errors included. Every route is listed in [`ROUTES`] and documented in
//! `docs/api/openapi.yaml`; a unit test keeps the two in step.
//! `GET /events` streams the lifecycle events the webhooks see, as Server-Sent Events.
//!
//! With no users configured, a [`GeneratedPassword`] for the user `admin` is made at start
//! and logged once with the console's URL; configuring users replaces it.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::{Argon2, PasswordHash};
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequestParts, Path as UrlPath, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, MethodRouter};
use axum::{Json, Router};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{error, info, warn};

use crate::config::{AppConfig, AuthMode, PolicyConfig};
use crate::hub::{HubError, Stream, StreamKey};
use crate::server::Context;
use crate::session::SessionEntry;

mod records;

/// Every route, as (method, path below `/api/v1`). The router is built from this list and
/// the OpenAPI test checks it against `docs/api/openapi.yaml`.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/login"),
    ("GET", "/health"),
    ("GET", "/info"),
    ("GET", "/stats"),
    ("GET", "/streams"),
    ("GET", "/streams/{app}/{name}"),
    ("GET", "/streams/{app}/{name}/urls"),
    ("GET", "/sessions"),
    ("DELETE", "/sessions/{id}"),
    ("GET", "/events"),
    ("GET", "/relays"),
    ("POST", "/relays"),
    ("DELETE", "/relays/{id}"),
    ("GET", "/load"),
    ("GET", "/records"),
    ("GET", "/records/{id}"),
    ("DELETE", "/records/{id}"),
    ("POST", "/streams/{app}/{name}/record"),
    ("DELETE", "/streams/{app}/{name}/record"),
];

/// Longest `ttl` accepted for signed URLs (ten years): keeps `now + ttl` far from overflow.
const MAX_URL_TTL_SECS: u64 = 10 * 365 * 24 * 3600;
/// Entries kept by the login limiter before expired ones are swept; past it, after a
/// sweep, logins are refused (fail closed) rather than forgetting failures.
const LIMITER_SWEEP_AT: usize = 10_000;

/// An API failure; each becomes an envelope with `success: false` and its status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(&'static str),
    #[error("too many failed logins; try again later")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("too many logins in progress; try again shortly")]
    LoginBusy,
    #[error("{0}")]
    Internal(&'static str),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::LoginBusy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = Json(json!({"success": false, "data": null, "message": self.to_string()}));
        match self {
            ApiError::Unauthorized(_) => (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response(),
            ApiError::TooManyRequests { retry_after_secs } => (
                status,
                [(header::RETRY_AFTER, retry_after_secs.max(1).to_string())],
                body,
            )
                .into_response(),
            ApiError::LoginBusy => (status, [(header::RETRY_AFTER, "1")], body).into_response(),
            _ => (status, body).into_response(),
        }
    }
}

/// A successful envelope.
fn ok(data: Value) -> Response {
    Json(json!({"success": true, "data": data, "message": "ok"})).into_response()
}

/// State shared by the API handlers.
pub struct Api {
    ctx: Arc<Context>,
    /// `Err` when the configured key file could not be read: the API then refuses to issue
    /// or accept tokens rather than silently using a key other replicas do not share.
    jwt_key: Result<Vec<u8>, ()>,
    limiter: LoginLimiter,
    passwords: PasswordChecker,
    started: Instant,
}

/// The `/api/v1` router (an empty one answering 404 when `api.enabled` is false).
pub fn router<S: Clone + Send + Sync + 'static>(ctx: Arc<Context>) -> Router<S> {
    // Every other path under the prefix is the API's (an explicit catch-all: without it the
    // public router's `/{app}/{name}/{file}` HLS route would answer for `/api/v1/x`).
    if !ctx.config.api.enabled {
        let disabled = || async { ApiError::NotFound("the API is disabled".into()) };
        return Router::new().route("/{*rest}", any(disabled)).fallback(disabled);
    }
    let api = Arc::new(Api::new(ctx));
    let mut router = Router::new();
    for (method, path) in ROUTES {
        router = router.route(path, handler(method, path));
    }
    let unknown = || async { ApiError::NotFound("no such API route".into()) };
    router.route("/{*rest}", any(unknown)).fallback(unknown).with_state(api)
}

fn handler(method: &str, path: &str) -> MethodRouter<Arc<Api>> {
    match (method, path) {
        ("POST", "/login") => post(login),
        ("GET", "/health") => get(health),
        ("GET", "/info") => get(info),
        ("GET", "/stats") => get(stats),
        ("GET", "/streams") => get(streams),
        ("GET", "/streams/{app}/{name}") => get(stream),
        ("GET", "/streams/{app}/{name}/urls") => get(urls),
        ("GET", "/sessions") => get(sessions),
        ("DELETE", "/sessions/{id}") => delete(kick),
        ("GET", "/events") => get(events),
        ("GET", "/relays") => get(relays),
        ("POST", "/relays") => post(add_relay),
        ("DELETE", "/relays/{id}") => delete(delete_relay),
        ("GET", "/load") => get(load),
        ("GET", "/records") => get(records::list),
        ("GET", "/records/{id}") => get(records::download),
        ("DELETE", "/records/{id}") => delete(records::remove),
        ("POST", "/streams/{app}/{name}/record") => post(records::start),
        ("DELETE", "/streams/{app}/{name}/record") => delete(records::stop),
        // ROUTES is a constant; the unit tests build the router, so this never runs.
        _ => unreachable!("route {method} {path} has no handler"),
    }
}

impl Api {
    fn new(ctx: Arc<Context>) -> Api {
        let jwt_key = match &ctx.config.api.jwt_secret_file {
            Some(path) => match read_trimmed(path) {
                Ok(k) => Ok(k.into_bytes()),
                Err(e) => {
                    error!(path = %path.display(), "API token key unavailable, logins refused: {e}");
                    Err(())
                }
            },
            None => Ok(rand::random::<[u8; 32]>().to_vec()),
        };
        let c = &ctx.config.api;
        let limiter = LoginLimiter::new(
            c.login_max_failures,
            c.login_max_failures_per_ip,
            Duration::from_secs(c.login_window_secs),
        );
        let passwords = PasswordChecker::start(c.login_max_concurrent);
        Api {
            ctx,
            jwt_key,
            limiter,
            passwords,
            started: process_start(),
        }
    }

    fn key(&self) -> Result<&[u8], ApiError> {
        self.jwt_key
            .as_deref()
            .map_err(|()| ApiError::Unavailable("API token key unavailable"))
    }
}

/// When the process started, near enough: the first time anyone asks (the router is built
/// at server start).
fn process_start() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn read_trimmed(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let text = text.trim();
    if text.is_empty() {
        return Err("file is empty".into());
    }
    Ok(text.to_string())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn unix_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The IP of an `ip:port` peer address (kept whole if it does not parse).
fn ip_of(remote: &str) -> String {
    remote
        .parse::<SocketAddr>()
        .map_or_else(|_| remote.to_string(), |a| a.ip().to_string())
}

// ---------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    iat: u64,
}

/// Issues an HS256 token for `user` valid for `ttl` seconds from `now`.
fn issue_token(user: &str, key: &[u8], now: u64, ttl: u64) -> Result<String, ApiError> {
    let claims = Claims {
        sub: user.to_string(),
        iat: now,
        exp: now.saturating_add(ttl),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(key))
        .map_err(|_| ApiError::Internal("cannot sign token"))
}

/// The user a token was issued to, if it is valid now. Only HS256 is accepted, whatever the
/// token's header claims, so no algorithm confusion is possible.
fn verify_token(token: &str, key: &[u8]) -> Option<String> {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(key), &v)
        .ok()
        .map(|d| d.claims.sub)
}

/// The bearer token of a request: `Authorization: Bearer T`, else `?token=T`.
fn request_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = v.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    query?
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .filter(|t| !t.is_empty())
}

/// Extractor guarding a handler: the request carries a valid token. Holds the user name.
pub struct Authed(#[allow(dead_code)] String);

impl FromRequestParts<Arc<Api>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let token =
            request_token(&parts.headers, parts.uri.query()).ok_or(ApiError::Unauthorized("missing bearer token"))?;
        let user = verify_token(token, api.key()?).ok_or(ApiError::Unauthorized("invalid or expired token"))?;
        Ok(Authed(user))
    }
}

// ---------------------------------------------------------------------------------------
// Generated admin password

/// The log target of the generated password's announcement, enabled whatever the level.
pub const ANNOUNCE_TARGET: &str = "ferrocast::generated_password";

/// The user name the generated password belongs to.
pub const GENERATED_USER: &str = "admin";

/// The password of `admin` made at start when no API users are configured, so a server run
/// without any config can be used at once (as Node-Media-Server v4 does). It lives only in
/// this process's memory: it is shown once by [`GeneratedPassword::announce`] and then
/// scrubbed from every log line ([`crate::redact::scrub`]).
pub struct GeneratedPassword(String);

impl std::fmt::Debug for GeneratedPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GeneratedPassword(REDACTED)")
    }
}

impl GeneratedPassword {
    /// Whether `api` leaves the API without users (and enabled), so one is generated.
    pub fn wanted(api: &crate::config::ApiConfig) -> bool {
        api.enabled && api.users_dir.is_none() && api.users_file.is_none()
    }

    /// 192 random bits, URL-safe base64 (32 characters).
    pub fn generate() -> GeneratedPassword {
        use base64::Engine;
        GeneratedPassword(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>()))
    }

    /// Logs the password in one line with where to log in, then registers it for scrubbing,
    /// so no later line can carry it. Called once, at start. The line has its own target,
    /// [`ANNOUNCE_TARGET`], which the binary's log filter always lets through: with
    /// `log.level: warn` or `RUST_LOG=error` nobody could log in otherwise.
    pub fn announce(&self, console_url: &str) {
        warn!(
            target: ANNOUNCE_TARGET,
            "API and console login: user {GENERATED_USER}, password {} (generated because no api.users_dir or \
             api.users_file is configured; shown only here) at {console_url}",
            self.0
        );
        crate::redact::register_secret(&self.0);
    }

    /// Whether `user` and `password` are this login. Compared in constant time; no slow
    /// hash is needed, as the password is random and never stored.
    fn matches(&self, user: &str, password: &str) -> bool {
        let user_ok = crate::auth::constant_time_eq(user.as_bytes(), GENERATED_USER.as_bytes());
        let password_ok = crate::auth::constant_time_eq(password.as_bytes(), self.0.as_bytes());
        user_ok & password_ok
    }
}

// ---------------------------------------------------------------------------------------
// Login

/// What a failed login is counted against: the user name (from any address), and the
/// client's address, an IPv6 /64 counting as one (a single host usually holds a whole /64).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Counted {
    User(String),
    Net(IpAddr),
}

/// The network a client address is counted as: an IPv4 address, or its IPv6 /64.
fn client_net(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        },
        v4 => v4,
    }
}

/// Counts failed logins per user and per client network within a sliding window. An attempt
/// is counted as a failure *before* its password is checked ([`LoginLimiter::begin`]), so
/// parallel guesses cannot all slip under the limit; a success takes its count back.
struct LoginLimiter {
    max_per_user: u32,
    max_per_net: u32,
    window: Duration,
    failures: Mutex<HashMap<Counted, VecDeque<Instant>>>,
}

/// A login attempt counted as a failure until it is known to have succeeded.
#[derive(Debug)]
struct Attempt {
    user: Counted,
    net: Counted,
    at: Instant,
}

impl LoginLimiter {
    fn new(max_per_user: u32, max_per_net: u32, window: Duration) -> Self {
        LoginLimiter {
            max_per_user,
            max_per_net,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Counted, VecDeque<Instant>>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts an attempt by `user` from `ip` as failed, unless the user or the network
    /// already reached its limit: then `Err` with the seconds until an attempt is allowed.
    fn begin(&self, user: &str, ip: IpAddr, now: Instant) -> Result<Attempt, u64> {
        let attempt = Attempt {
            user: Counted::User(user.to_string()),
            net: Counted::Net(client_net(ip)),
            at: now,
        };
        let mut map = self.map();
        // Many distinct user names (a scan) must not grow the map without bound.
        if map.len() >= LIMITER_SWEEP_AT {
            map.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < self.window));
            if map.len() >= LIMITER_SWEEP_AT {
                return Err(self.window.as_secs());
            }
        }
        let mut wait = 0;
        for (who, max) in [(&attempt.user, self.max_per_user), (&attempt.net, self.max_per_net)] {
            if let Some(q) = map.get_mut(who) {
                while q.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
                    q.pop_front();
                }
                if q.len() >= max as usize {
                    let oldest = q.front().copied().unwrap_or(now);
                    wait = wait.max((oldest + self.window).saturating_duration_since(now).as_secs() + 1);
                }
            }
        }
        if wait > 0 {
            return Err(wait);
        }
        for who in [&attempt.user, &attempt.net] {
            map.entry(who.clone()).or_default().push_back(now);
        }
        Ok(attempt)
    }

    /// The attempt succeeded: the user's failures are forgotten, and this attempt no longer
    /// counts against the network (earlier failures from it still do).
    fn succeeded(&self, attempt: Attempt) {
        let mut map = self.map();
        map.remove(&attempt.user);
        Self::forget(&mut map, &attempt.net, attempt.at);
    }

    /// The attempt was never checked (the server was busy): it does not count at all.
    fn not_checked(&self, attempt: Attempt) {
        let mut map = self.map();
        Self::forget(&mut map, &attempt.user, attempt.at);
        Self::forget(&mut map, &attempt.net, attempt.at);
    }

    fn forget(map: &mut HashMap<Counted, VecDeque<Instant>>, who: &Counted, at: Instant) {
        if let Some(q) = map.get_mut(who) {
            if let Some(i) = q.iter().position(|t| *t == at) {
                q.remove(i);
            }
            if q.is_empty() {
                map.remove(who);
            }
        }
    }
}

/// Runs password checks (argon2: about 19 MiB and tens of milliseconds each) on a fixed set
/// of threads, at most one per thread. A check beyond that is refused at once instead of
/// queued, so anonymous logins can neither pile up memory nor CPU; and since only these
/// threads ever run argon2, the allocator keeps at most their few buffers.
struct PasswordChecker {
    slots: Arc<tokio::sync::Semaphore>,
    jobs: std::sync::mpsc::Sender<PasswordJob>,
}

struct PasswordJob {
    check: Box<dyn FnOnce() -> bool + Send>,
    done: tokio::sync::oneshot::Sender<bool>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl PasswordChecker {
    fn start(threads: usize) -> PasswordChecker {
        let threads = threads.max(1);
        let (jobs, rx) = std::sync::mpsc::channel::<PasswordJob>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ferrocast-login-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job.
                    let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                        Ok(job) => job,
                        Err(_) => return,
                    };
                    let PasswordJob {
                        check,
                        done,
                        _slot: slot,
                    } = job;
                    let ok = check();
                    // Free the slot before answering: whoever gets this answer may check again.
                    drop(slot);
                    let _ = done.send(ok);
                });
            if let Err(e) = spawned {
                error!("cannot start a password check thread: {e}");
            }
        }
        PasswordChecker {
            slots: Arc::new(tokio::sync::Semaphore::new(threads)),
            jobs,
        }
    }

    /// Runs `check` on a checker thread; `None` when all of them are busy.
    async fn check(&self, check: impl FnOnce() -> bool + Send + 'static) -> Option<bool> {
        let slot = self.slots.clone().try_acquire_owned().ok()?;
        let (done, result) = tokio::sync::oneshot::channel();
        let job = PasswordJob {
            check: Box::new(check),
            done,
            _slot: slot,
        };
        self.jobs.send(job).ok()?;
        // A thread that died drops the job and with it the answer: a failed check.
        Some(result.await.unwrap_or(false))
    }
}

#[derive(Deserialize)]
struct LoginRequest {
    username: String,
    password: String,
}

/// Verifies `password` against the PHC hash stored for `user`; `false` for unknown users,
/// unreadable files and hashes in a format we do not support.
fn check_password(users_dir: Option<&Path>, users_file: Option<&Path>, user: &str, password: &str) -> bool {
    // User names are file names: refuse anything that could leave the directory or name
    // Kubernetes' dot-entries (`..data`, `..2024_01_01`).
    let valid_name = crate::hub::is_valid_name(user) && !user.starts_with('.');
    let stored = users_dir
        .filter(|_| valid_name)
        .and_then(|dir| read_trimmed(&dir.join(user)).ok())
        .or_else(|| users_file.filter(|_| valid_name).and_then(|f| user_from_file(f, user)));
    match stored {
        Some(phc) => match PasswordHash::new(&phc)
            .map_err(|_| "not a PHC string")
            .and_then(|h| verify_argon2(password, &h))
        {
            Ok(valid) => valid,
            Err(why) => {
                warn!(
                    user,
                    "API user's password hash is unusable ({why}); use a PHC argon2 string"
                );
                false
            }
        },
        None => {
            // Spend the same work as for a real user, so timing does not tell which exist.
            if let Some(hash) = dummy_hash() {
                let _ = verify_argon2(password, &hash);
            }
            false
        }
    }
}

/// Largest argon2 memory cost (KiB) accepted from a users file: a hash asking for more is
/// refused rather than letting every login take that much.
const MAX_ARGON2_M_COST_KIB: u32 = 256 * 1024;

thread_local! {
    /// The argon2 working memory of a password-check thread, reused by its next check: the
    /// allocator then never sees a fresh 19 MiB block per login (which it keeps, fragmented,
    /// per arena), so memory stays at one block per checker thread.
    static ARGON2_BLOCKS: std::cell::RefCell<Vec<argon2::Block>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether `password` matches an argon2 PHC `hash`, computed in this thread's reused memory.
fn verify_argon2(password: &str, hash: &PasswordHash<'_>) -> Result<bool, &'static str> {
    let (Some(salt), Some(expected)) = (&hash.salt, &hash.hash) else {
        return Err("no salt or hash");
    };
    let algorithm = argon2::Algorithm::try_from(hash.algorithm).map_err(|_| "not argon2")?;
    let version = match hash.version {
        Some(v) => argon2::Version::try_from(v).map_err(|_| "unknown argon2 version")?,
        None => argon2::Version::default(),
    };
    let params = argon2::Params::try_from(hash).map_err(|_| "bad argon2 parameters")?;
    if params.m_cost() > MAX_ARGON2_M_COST_KIB {
        return Err("argon2 memory cost above 256 MiB");
    }
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf).map_err(|_| "bad salt")?;
    let mut out = vec![0u8; expected.len()];
    let blocks = params.block_count();
    let argon = Argon2::new(algorithm, version, params);
    ARGON2_BLOCKS
        .with_borrow_mut(|memory| {
            if memory.len() < blocks {
                memory.resize(blocks, argon2::Block::default());
            }
            argon.hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
        })
        .map_err(|_| "argon2 failed")?;
    Ok(crate::auth::constant_time_eq(&out, expected.as_bytes()))
}

/// The PHC hash of `user` in a `users_file` (a YAML map of user name to hash), read at each
/// login so a changed Secret applies at once.
fn user_from_file(path: &Path, user: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let users: std::collections::BTreeMap<String, String> = match serde_yaml::from_str(&text) {
        Ok(u) => u,
        Err(_) => {
            warn!(path = %path.display(), "API users file is not a YAML map of user name to password hash");
            return None;
        }
    };
    users.get(user).map(|h| h.trim().to_string())
}

/// A hash of a random password with the default parameters, made once.
fn dummy_hash() -> Option<PasswordHash<'static>> {
    static PHC: OnceLock<Option<String>> = OnceLock::new();
    let phc = PHC.get_or_init(|| {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).ok()?;
        Argon2::default()
            .hash_password(&rand::random::<[u8; 16]>(), &salt)
            .ok()
            .map(|h| h.to_string())
    });
    PasswordHash::new(phc.as_deref()?).ok()
}

fn client_ip(parts: &axum::http::Extensions) -> IpAddr {
    parts
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip())
}

async fn login(State(api): State<Arc<Api>>, req: axum::extract::Request) -> Result<Response, ApiError> {
    let ip = client_ip(req.extensions());
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|_| ApiError::BadRequest("body too large or unreadable".into()))?;
    login_with(&api, ip, &body).await
}

async fn login_with(api: &Arc<Api>, ip: IpAddr, body: &Bytes) -> Result<Response, ApiError> {
    let LoginRequest { username, password } = serde_json::from_slice(body)
        .map_err(|_| ApiError::BadRequest("expected JSON {\"username\", \"password\"}".into()))?;
    let key = api.key()?.to_vec();
    let dir = api.ctx.config.api.users_dir.clone();
    let file = api.ctx.config.api.users_file.clone();
    let generated = api.ctx.admin_password.as_ref();
    if dir.is_none() && file.is_none() && generated.is_none() {
        // Nobody can log in: no password work for anyone.
        return Err(ApiError::Unauthorized("invalid username or password"));
    }
    // The user name is client input: logged with Debug (`?`) so it cannot forge log lines.
    let attempt = match api.limiter.begin(&username, ip, Instant::now()) {
        Ok(a) => a,
        Err(retry_after_secs) => {
            warn!(user = ?username, %ip, "API login refused: too many failures");
            return Err(ApiError::TooManyRequests { retry_after_secs });
        }
    };
    let checked = match generated {
        // A constant-time comparison: no password work, nothing to queue.
        Some(g) => Some(g.matches(&username, &password)),
        None => {
            let user = username.clone();
            api.passwords
                .check(move || check_password(dir.as_deref(), file.as_deref(), &user, &password))
                .await
        }
    };
    match checked {
        None => {
            api.limiter.not_checked(attempt);
            Err(ApiError::LoginBusy)
        }
        Some(false) => {
            warn!(user = ?username, %ip, "API login failed");
            Err(ApiError::Unauthorized("invalid username or password"))
        }
        Some(true) => {
            api.limiter.succeeded(attempt);
            let ttl = api.ctx.config.api.token_ttl_secs;
            let token = issue_token(&username, &key, unix_secs(), ttl)?;
            info!(user = ?username, %ip, "API login");
            Ok(ok(json!({"token": token, "expiresIn": ttl})))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Server

async fn health(State(api): State<Arc<Api>>) -> Response {
    if api.ctx.is_shutting_down() {
        return ApiError::Unavailable("shutting down").into_response();
    }
    ok(json!({"status": "ok"}))
}

/// The policy's mode as named in the config (`none`, `sign`, ...).
fn policy_mode(p: &PolicyConfig) -> Value {
    serde_json::to_value(p.auth).unwrap_or(Value::Null)
}

async fn info(_: Authed, State(api): State<Arc<Api>>) -> Response {
    let c = &api.ctx.config;
    let apps: Vec<Value> = api
        .ctx
        .hub
        .apps()
        .iter()
        .map(|a| json!({"name": a.name, "gopCache": a.gop_cache, "publish": policy_mode(&a.publish), "play": policy_mode(&a.play)}))
        .collect();
    ok(json!({
        "name": "ferrocast",
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime": api.started.elapsed().as_secs(),
        "ports": {
            "rtmp": c.rtmp.port,
            "http": c.http.port,
            "admin": c.admin.port,
            // The TLS listeners run only when certificates are configured.
            "rtmps": api.ctx.tls_serving().then_some(c.tls.rtmps_port),
            "https": api.ctx.tls_serving().then_some(c.tls.https_port),
        },
        "apps": apps,
    }))
}

/// Process CPU seconds (user, system) from `/proc/self/stat`.
fn process_cpu() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may contain spaces and parentheses; fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in clock
    // ticks, which are 100 per second on every Linux we run on.
    let ticks = |i: usize| fields.get(i)?.parse::<f64>().ok().map(|t| t / 100.0);
    Some((ticks(11)?, ticks(12)?))
}

/// Resident and virtual memory in bytes from `/proc/self/status`.
fn process_memory() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|k| k * 1024)
    };
    Some((kb("VmRSS:")?, kb("VmSize:")?))
}

/// Streams worth showing: published, or with players waiting through a publisher's grace.
fn active_streams(api: &Api) -> Vec<Arc<Stream>> {
    api.ctx
        .hub
        .streams()
        .into_iter()
        .filter(|s| s.is_published() || s.stats.readers.load(std::sync::atomic::Ordering::Relaxed) > 0)
        .collect()
}

async fn stats(_: Authed, State(api): State<Arc<Api>>) -> Response {
    let sessions = api.ctx.sessions.list();
    let mut publishers = 0;
    let mut players = 0;
    for s in &sessions {
        match s.activity() {
            Some((crate::session::Role::Publisher, _)) => publishers += 1,
            Some((crate::session::Role::Player, _)) => players += 1,
            None => {}
        }
    }
    let cpu = process_cpu().map(|(user, system)| json!({"user": user, "system": system, "total": user + system}));
    let memory = process_memory().map(|(rss, virt)| json!({"rss": rss, "virtual": virt}));
    ok(json!({
        "uptime": api.started.elapsed().as_secs(),
        "cpu": cpu,
        "memory": memory,
        "sessions": sessions.len(),
        "publishers": publishers,
        "players": players,
        "streams": active_streams(&api).len(),
    }))
}

// ---------------------------------------------------------------------------------------
// Streams and sessions

/// The JSON of one stream.
fn stream_json(s: &Stream) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let info = s.info();
    let publisher = info.publisher.as_ref().map(|p| {
        json!({"id": p.session_id, "protocol": p.protocol, "ip": ip_of(&p.remote), "createTime": unix_ms(p.started)})
    });
    let video = info.video.as_ref().map(|v| {
        json!({"codec": v.codec, "width": v.width, "height": v.height, "profile": v.profile, "level": v.level, "fps": info.fps()})
    });
    let audio = info
        .audio
        .as_ref()
        .map(|a| json!({"codec": a.codec, "profile": a.profile, "samplerate": a.sample_rate, "channels": a.channels}));
    json!({
        "app": s.key.app,
        "name": s.key.name,
        "publisher": publisher,
        "video": video,
        "audio": audio,
        "bitrate": info.bitrate_kbps,
        "bitrateOut": s.stats.bitrate_out_kbps.load(std::sync::atomic::Ordering::Relaxed),
        "inBytes": s.stats.bytes_in.load(Relaxed),
        "outBytes": s.stats.bytes_out.load(Relaxed),
        "subscribers": s.stats.readers.load(Relaxed),
        "framesDropped": s.stats.frames_dropped.load(Relaxed),
    })
}

/// The JSON of one session.
fn session_json(s: &SessionEntry) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let activity = s.activity();
    json!({
        "id": s.id,
        "protocol": s.protocol.as_str(),
        "role": activity.as_ref().map(|(r, _)| r.as_str()),
        "app": activity.as_ref().map(|(_, k)| k.app.as_str()),
        "name": activity.as_ref().map(|(_, k)| k.name.as_str()),
        "ip": ip_of(&s.remote),
        "connectTime": unix_ms(s.connected),
        "inBytes": s.bytes_in.load(Relaxed),
        "outBytes": s.bytes_out.load(Relaxed),
    })
}

/// This pod's streams as the API shows them, each naming the pod. A stream pulled from a peer
/// for local players is the peer's: it is listed there, not here.
pub fn local_streams_json(ctx: &Context) -> Vec<Value> {
    let pod = ctx.cluster.as_ref().map(|c| c.pod.as_str());
    ctx.hub
        .streams()
        .into_iter()
        .filter(|s| s.is_published() || s.stats.readers.load(std::sync::atomic::Ordering::Relaxed) > 0)
        .filter(|s| {
            !s.info()
                .publisher
                .is_some_and(|p| p.protocol == crate::cluster::pull::PROTOCOL)
        })
        // A rendition is listed under its source (`renditions`), not on its own.
        .filter(|s| ctx.transcodes.source_of(&s.key).is_none())
        .map(|s| with_pod(with_transcode(ctx, stream_json(&s), &s.key), pod))
        .collect()
}

/// Adds a source's transcode (`transcode`: state, ffmpeg pid, restarts) and its live
/// renditions (`renditions`: each stream's JSON with its `rendition` name).
fn with_transcode(ctx: &Context, mut v: Value, key: &StreamKey) -> Value {
    let Some(job) = ctx.transcodes.job(key) else {
        return v;
    };
    let renditions: Vec<Value> = ctx
        .transcodes
        .live_renditions(key)
        .into_iter()
        .filter_map(|r| {
            let s = ctx.hub.stream(&r.stream)?;
            let mut j = stream_json(&s);
            j.as_object_mut()?.insert("rendition".into(), json!(r.name));
            Some(j)
        })
        .collect();
    if let Some(o) = v.as_object_mut() {
        o.insert("transcode".into(), job.json());
        o.insert("renditions".into(), json!(renditions));
    }
    v
}

/// This pod's sessions as the API shows them, each naming the pod.
pub fn local_sessions_json(ctx: &Context) -> Vec<Value> {
    let pod = ctx.cluster.as_ref().map(|c| c.pod.as_str());
    ctx.sessions
        .list()
        .iter()
        .map(|s| with_pod(session_json(s), pod))
        .collect()
}

fn with_pod(mut v: Value, pod: Option<&str>) -> Value {
    if let (Some(pod), Some(o)) = (pod, v.as_object_mut()) {
        o.insert("pod".into(), json!(pod));
    }
    v
}

/// This pod's list under `field`, plus every peer's (asked at once); peers that did not
/// answer are named under `missingPods` rather than silently left out.
async fn fleet_list(api: &Api, field: &str, local: Vec<Value>) -> Value {
    let Some(cluster) = &api.ctx.cluster else {
        return json!({ field: local });
    };
    let mut all = local;
    let mut missing = Vec::new();
    for (addr, answer) in cluster
        .ask_all(axum::http::Method::GET, &format!("/cluster/v1/{field}"))
        .await
    {
        let list = answer
            .filter(|(status, _)| status.is_success())
            .and_then(|(_, body)| serde_json::from_slice::<Value>(&body).ok())
            .and_then(|mut v| v.get_mut(field).map(Value::take))
            .and_then(|v| match v {
                Value::Array(items) => Some(items),
                _ => None,
            });
        match list {
            Some(items) => all.extend(items),
            None => missing.push(addr.to_string()),
        }
    }
    json!({ field: all, "missingPods": missing })
}

async fn streams(_: Authed, State(api): State<Arc<Api>>) -> Response {
    let local = local_streams_json(&api.ctx);
    ok(fleet_list(&api, "streams", local).await)
}

fn stream_key(api: &Api, app: &str, name: &str) -> Result<StreamKey, ApiError> {
    api.ctx.hub.key(app, name).map_err(|e| match e {
        HubError::UnknownApp => ApiError::NotFound("unknown app".into()),
        e => ApiError::BadRequest(e.to_string()),
    })
}

async fn stream(
    _: Authed,
    State(api): State<Arc<Api>>,
    UrlPath((app, name)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    let key = stream_key(&api, &app, &name)?;
    let s = active_streams(&api)
        .into_iter()
        .find(|s| s.key == key)
        .ok_or_else(|| ApiError::NotFound("stream not found".into()))?;
    let mut v = with_transcode(&api.ctx, stream_json(&s), &key);
    if let (Some((source, rendition)), Some(o)) = (api.ctx.transcodes.source_of(&key), v.as_object_mut()) {
        o.insert("source".into(), json!(source.name));
        o.insert("rendition".into(), json!(rendition));
    }
    Ok(ok(v))
}

/// `GET /events`: lifecycle events as Server-Sent Events (`event:` name, `data:` the webhook
/// JSON body), with a keep-alive comment every 15 s. A client that falls behind misses events
/// rather than slowing anything down.
async fn events(_: Authed, State(api): State<Arc<Api>>) -> Response {
    struct St {
        rx: tokio::sync::broadcast::Receiver<crate::webhooks::Event>,
        relays: tokio::sync::broadcast::Receiver<crate::relay::RelayEvent>,
        others: tokio::sync::broadcast::Receiver<crate::webhooks::OtherEvent>,
        transcodes: tokio::sync::broadcast::Receiver<crate::transcode::TranscodeEvent>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    }
    let st = St {
        rx: api.ctx.webhooks.subscribe(),
        relays: api.ctx.relays.subscribe(),
        others: api.ctx.webhooks.subscribe_other(),
        transcodes: api.ctx.transcodes.subscribe(),
        shutdown: api.ctx.shutdown.clone(),
    };
    let body = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            let item = tokio::select! {
                _ = st.shutdown.changed() => return None,
                _ = tokio::time::sleep(Duration::from_secs(15)) => Some(Bytes::from_static(b": keep-alive\n\n")),
                e = st.relays.recv() => match e {
                    Ok(e) => Some(Bytes::from(format!("event: {}\ndata: {}\n\n", e.event, serde_json::to_string(&e).unwrap_or_default()))),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
                e = st.others.recv() => match e {
                    Ok(e) => Some(Bytes::from(format!("event: {}\ndata: {}\n\n", e.event, e.body))),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
                e = st.transcodes.recv() => match e {
                    Ok(e) => Some(Bytes::from(format!("event: {}\ndata: {}\n\n", e.event, serde_json::to_string(&e).unwrap_or_default()))),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
                e = st.rx.recv() => match e {
                    Ok(e) => Some(Bytes::from(format!("event: {}\ndata: {}\n\n", e.event, serde_json::to_string(&e).unwrap_or_default()))),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                },
            };
            if let Some(b) = item {
                return Some((Ok::<_, std::io::Error>(b), st));
            }
        }
    });
    let mut resp = Response::new(axum::body::Body::from_stream(body));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-cache"));
    resp
}

async fn sessions(_: Authed, State(api): State<Arc<Api>>) -> Response {
    let local = local_sessions_json(&api.ctx);
    ok(fleet_list(&api, "sessions", local).await)
}

async fn kick(_: Authed, State(api): State<Arc<Api>>, UrlPath(id): UrlPath<String>) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("session not found".into());
    let id: u64 = id.parse().map_err(|_| not_found())?;
    if !api.ctx.sessions.kick(id) {
        // Session ids are unique fleet-wide: the pod that has it ends it.
        let Some(cluster) = &api.ctx.cluster else {
            return Err(not_found());
        };
        let answers = cluster
            .ask_all(axum::http::Method::DELETE, &format!("/cluster/v1/sessions/{id}"))
            .await;
        if !answers
            .iter()
            .any(|(_, a)| a.as_ref().is_some_and(|(status, _)| status.is_success()))
        {
            return Err(not_found());
        }
    }
    info!(session = id, "session kicked through the API");
    Ok(ok(json!({"id": id})))
}

// ---------------------------------------------------------------------------------------
// Relays

/// `GET /relays`: every relay with its mode, source or target (redacted), state, uptime,
/// reconnects and bytes.
async fn relays(_: Authed, State(api): State<Arc<Api>>) -> Response {
    let list: Vec<Value> = api.ctx.relays.list().iter().map(|r| r.json()).collect();
    ok(json!({"relays": list}))
}

/// `POST /relays`: starts a static pull or a push (the `relays:` config entry's shape). It
/// lives until deleted or until the process ends.
async fn add_relay(_: Authed, State(api): State<Arc<Api>>, body: Bytes) -> Result<Response, ApiError> {
    let r: crate::config::RelayConfig =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadRequest(format!("relay: {e}")))?;
    if r.key_file.is_some() {
        // The server would send a file of its choosing to a URL of the caller's choosing.
        return Err(ApiError::BadRequest(
            "`key_file` is for the config file only; put the far end's key in `target`".into(),
        ));
    }
    crate::relay::check_relay_config(&r, Some(&api.ctx.hub.apps()))
        .map_err(|(k, m)| ApiError::BadRequest(format!("`{k}`: {m}")))?;
    let relay = api
        .ctx
        .relays
        .add(&r, crate::relay::Origin::Api)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    info!(relay = relay.id, mode = relay.mode.as_str(), url = %relay.url, "relay added through the API");
    let body = Json(json!({"success": true, "data": relay.json(), "message": "ok"}));
    Ok((StatusCode::CREATED, body).into_response())
}

/// `DELETE /relays/{id}`: stops and removes a relay.
async fn delete_relay(
    _: Authed,
    State(api): State<Arc<Api>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let not_found = || ApiError::NotFound("relay not found".into());
    let id: u64 = id.parse().map_err(|_| not_found())?;
    if !api.ctx.relays.remove(id) {
        return Err(not_found());
    }
    Ok(ok(json!({"id": id})))
}

// ---------------------------------------------------------------------------------------
// Load

/// `GET /load`: the server's load over the last minutes, oldest sample first.
async fn load(_: Authed, State(api): State<Arc<Api>>) -> Response {
    ok(json!({
        "intervalSecs": crate::load::INTERVAL.as_secs(),
        "samples": api.ctx.load.samples(),
    }))
}

// ---------------------------------------------------------------------------------------
// URLs

#[derive(Deserialize)]
struct UrlsQuery {
    ttl: Option<String>,
    /// `omit`: key-mode URLs carry [`KEY_PLACEHOLDER`] instead of the stream key (the
    /// console asks this way: it never shows stream keys).
    #[serde(rename = "streamKeys")]
    stream_keys: Option<String>,
}

/// What stands for the stream key in URLs asked for with `streamKeys=omit`.
pub const KEY_PLACEHOLDER: &str = "STREAM_KEY";

/// The host part of a Host header (no port), if it is a plausible host name or address.
pub(crate) fn request_host(headers: &HeaderMap) -> Option<String> {
    let host = host_header(headers)?;
    if host.starts_with('[') {
        // [v6]:port
        return host.find(']').map(|i| host[..=i].to_string());
    }
    Some(host.rsplit_once(':').map_or(host, |(h, _)| h).to_string())
}

/// The `Host` header with its port, when it holds nothing but a host name or address and a
/// port (so it can be echoed into URLs and headers).
pub(crate) fn host_header(headers: &HeaderMap) -> Option<&str> {
    let host = headers.get(header::HOST)?.to_str().ok()?.trim();
    let valid = !host.is_empty()
        && host.len() <= 261
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']' | b'_'));
    valid.then_some(host)
}

/// The query string a policy needs for `key` (`?sign=` or `?key=`), with the expiry used,
/// made from the policy as the server loaded it (the same secrets and keys it checks).
fn credentials(
    policy: &crate::auth::Policy,
    key: &StreamKey,
    expires: u64,
    action: &str,
    omit_keys: bool,
) -> Result<(String, Option<u64>), ApiError> {
    match policy.mode() {
        // `token` policies verify JWTs minted by the operator's own service, whose claims
        // we cannot vouch for: the caller appends its `?token=` to the bare URL.
        AuthMode::None | AuthMode::Token => Ok((String::new(), None)),
        AuthMode::Sign => {
            let sign = policy
                .make_sign(key, expires, action)
                .ok_or(ApiError::Internal("no sign secret configured"))?;
            Ok((format!("?sign={sign}"), Some(expires)))
        }
        AuthMode::Key if omit_keys => Ok((format!("?key={KEY_PLACEHOLDER}"), None)),
        AuthMode::Key => {
            let stream_key = policy
                .stream_key(&key.name)
                .ok_or_else(|| ApiError::NotFound("no stream key for this stream".into()))?;
            Ok((format!("?key={stream_key}"), None))
        }
    }
}

/// Publish and play URLs of `key` for every protocol.
fn urls_json(
    api: &Api,
    app: &AppConfig,
    policies: &crate::server::AppPolicies,
    key: &StreamKey,
    host: &str,
    ttl: u64,
    omit_keys: bool,
) -> Result<Value, ApiError> {
    // Ports are bound at start; a reload does not move them.
    let c = &api.ctx.config;
    let expires = unix_secs().saturating_add(ttl);
    let (pq, pexp) = credentials(&policies.publish, key, expires, "publish", omit_keys)?;
    let (q, exp) = credentials(&policies.play, key, expires, "play", omit_keys)?;
    let (rtmp, http) = (c.rtmp.port, c.http.port);
    let (a, n) = (&key.app, &key.name);
    let urls = |q: &str| {
        let mut u = json!({
            "rtmp": format!("rtmp://{host}:{rtmp}/{a}/{n}{q}"),
            "httpFlv": format!("http://{host}:{http}/{a}/{n}.flv{q}"),
            "wsFlv": format!("ws://{host}:{http}/{a}/{n}.flv{q}"),
        });
        if api.ctx.tls_serving() {
            let (rtmps, https) = (c.tls.rtmps_port, c.tls.https_port);
            u["rtmps"] = json!(format!("rtmps://{host}:{rtmps}/{a}/{n}{q}"));
            u["httpsFlv"] = json!(format!("https://{host}:{https}/{a}/{n}.flv{q}"));
            u["wssFlv"] = json!(format!("wss://{host}:{https}/{a}/{n}.flv{q}"));
        }
        u
    };
    // Play only: HLS (served on demand for every app) and the player page.
    let mut play = urls(&q);
    play["hls"] = json!(format!("http://{host}:{http}/{a}/{n}/index.m3u8{q}"));
    if c.http.player_page {
        play["page"] = json!(format!("http://{host}:{http}/{a}/{n}{q}"));
    }
    if api.ctx.tls_serving() {
        let https = c.tls.https_port;
        play["hlsHttps"] = json!(format!("https://{host}:{https}/{a}/{n}/index.m3u8{q}"));
        if c.http.player_page {
            play["pageHttps"] = json!(format!("https://{host}:{https}/{a}/{n}{q}"));
        }
    }
    Ok(json!({
        "app": a,
        "name": n,
        "expires": pexp.or(exp),
        "auth": {"publish": policy_mode(&app.publish), "play": policy_mode(&app.play)},
        "publish": urls(&pq),
        "play": play,
    }))
}

async fn urls(
    _: Authed,
    State(api): State<Arc<Api>>,
    UrlPath((app, name)): UrlPath<(String, String)>,
    Query(q): Query<UrlsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The live configuration: apps added or changed by a reload are served at once.
    let access = api.ctx.access();
    let key = StreamKey::new(&app, &name).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let (app_config, policies) = access
        .app(&key.app)
        .ok_or_else(|| ApiError::NotFound("unknown app".into()))?;
    // A signed URL may not outlive what the server accepts for it.
    let max_ttl = [&policies.publish, &policies.play]
        .into_iter()
        .filter(|p| p.mode() == AuthMode::Sign)
        .map(|p| p.sign_max_ttl_secs())
        .fold(MAX_URL_TTL_SECS, u64::min);
    let ttl = match q.ttl.as_deref() {
        None => access.config.api.token_ttl_secs.min(max_ttl),
        Some(t) => t
            .parse::<u64>()
            .ok()
            .filter(|t| (1..=max_ttl).contains(t))
            .ok_or_else(|| ApiError::BadRequest(format!("ttl must be 1-{max_ttl} seconds")))?,
    };
    let host = request_host(&headers).unwrap_or_else(|| {
        let bind = api.ctx.config.bind;
        if bind.is_unspecified() {
            "localhost".into()
        } else {
            bind.to_string()
        }
    });
    let omit_keys = match q.stream_keys.as_deref() {
        None => false,
        Some("omit") => true,
        Some(_) => return Err(ApiError::BadRequest("streamKeys must be `omit` when given".into())),
    };
    Ok(ok(urls_json(&api, app_config, policies, &key, &host, ttl, omit_keys)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Protocol, Role, Sessions};

    #[test]
    fn tokens_verify_only_with_their_key_before_expiry() {
        let now = unix_secs();
        let t = issue_token("alice", b"k1", now, 60).unwrap();
        assert_eq!(verify_token(&t, b"k1").as_deref(), Some("alice"));
        assert_eq!(verify_token(&t, b"k2"), None, "other key");
        let expired = issue_token("alice", b"k1", now - 120, 60).unwrap();
        assert_eq!(verify_token(&expired, b"k1"), None, "expired");
        assert_eq!(verify_token("not.a.token", b"k1"), None);
        // An unsigned token ("alg": "none") is refused.
        let none = format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"a","exp":{}}}"#, now + 60))
        );
        assert_eq!(verify_token(&none, b"k1"), None);
    }

    fn b64(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn generated_password_is_random_matches_only_admin_and_never_shows_in_debug() {
        let a = GeneratedPassword::generate();
        let b = GeneratedPassword::generate();
        assert_ne!(a.0, b.0);
        assert_eq!(a.0.len(), 32);
        assert!(a.matches("admin", &a.0.clone()));
        assert!(!a.matches("admin", &b.0));
        assert!(!a.matches("root", &a.0.clone()));
        assert!(!a.matches("admin", &a.0[..31]));
        assert!(!format!("{a:?}").contains(&a.0));
        let mut api = crate::config::ApiConfig::default();
        assert!(GeneratedPassword::wanted(&api));
        api.users_file = Some("/u.yaml".into());
        assert!(!GeneratedPassword::wanted(&api), "configured users replace it");
        api.users_file = None;
        api.enabled = false;
        assert!(!GeneratedPassword::wanted(&api));
    }

    #[test]
    fn token_is_taken_from_header_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(request_token(&h, Some("a=1&token=T1")), Some("T1"));
        assert_eq!(request_token(&h, Some("token=")), None);
        h.insert(header::AUTHORIZATION, "Bearer T2".parse().unwrap());
        assert_eq!(request_token(&h, Some("token=T1")), Some("T2"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(request_token(&h, None), None);
    }

    #[test]
    fn limiter_counts_attempts_before_checking_per_user_and_per_network() {
        let l = LoginLimiter::new(3, 5, Duration::from_secs(60));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let t0 = Instant::now();
        // Attempts in flight count at once: the fourth is refused before any was checked.
        let pending: Vec<_> = (0..3).map(|_| l.begin("bob", ip("10.0.0.1"), t0).unwrap()).collect();
        let wait = l.begin("bob", ip("10.0.0.1"), t0).unwrap_err();
        assert!((1..=61).contains(&wait), "retry after {wait}");
        assert!(
            l.begin("bob", ip("10.9.9.9"), t0).is_err(),
            "per user, from any address"
        );
        assert!(
            l.begin("bob", ip("10.0.0.1"), t0 + Duration::from_secs(61)).is_ok(),
            "window passed"
        );
        // A check that never ran gives its count back; a success clears the user.
        let [a, b, c]: [Attempt; 3] = pending.try_into().ok().unwrap();
        l.not_checked(a);
        l.succeeded(b);
        drop(c);
        assert!(l.begin("bob", ip("10.0.0.1"), t0 + Duration::from_secs(62)).is_ok());

        // Per network: an IPv6 /64 is one client whatever the user names.
        let l = LoginLimiter::new(100, 3, Duration::from_secs(60));
        for (i, a) in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"]
            .iter()
            .enumerate()
        {
            l.begin(&format!("user{i}"), ip(a), t0).unwrap();
        }
        assert!(l.begin("other", ip("2001:db8:1:2::77"), t0).is_err(), "same /64");
        assert!(l.begin("other", ip("2001:db8:1:3::1"), t0).is_ok(), "next /64");
        assert_eq!(client_net(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
    }

    #[tokio::test]
    async fn password_checks_beyond_the_threads_are_refused_at_once() {
        let checker = PasswordChecker::start(1);
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let busy = checker.check(move || wait.recv().is_ok());
        tokio::pin!(busy);
        // Let the first check occupy the only thread.
        assert!(tokio::time::timeout(Duration::from_millis(50), busy.as_mut())
            .await
            .is_err());
        assert_eq!(checker.check(|| true).await, None, "no thread free");
        release.send(()).unwrap();
        assert_eq!(busy.await, Some(true));
        assert_eq!(checker.check(|| false).await, Some(false), "a thread is free again");
    }

    #[test]
    fn passwords_verify_against_phc_files_and_names_cannot_escape() {
        let dir = std::env::temp_dir().join(format!("ferrocast-api-users-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("..data")).unwrap();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = Argon2::default().hash_password(b"s3cret", &salt).unwrap().to_string();
        std::fs::write(dir.join("admin"), format!("{phc}\n")).unwrap();
        assert!(check_password(Some(&dir), None, "admin", "s3cret"));
        assert!(!check_password(Some(&dir), None, "admin", "wrong"));
        assert!(!check_password(Some(&dir), None, "nobody", "s3cret"));
        assert!(!check_password(Some(&dir), None, "../admin", "s3cret"));
        assert!(!check_password(Some(&dir), None, "..data", "s3cret"));
        assert!(!check_password(None, None, "admin", "s3cret"));
        // A users file (one flat Secret key) next to the directory.
        let file = dir.join("users.yaml");
        std::fs::write(&file, format!("ops: '{phc}'\n")).unwrap();
        assert!(check_password(None, Some(&file), "ops", "s3cret"));
        assert!(
            check_password(Some(&dir), Some(&file), "ops", "s3cret"),
            "not in the directory: the file decides"
        );
        assert!(!check_password(None, Some(&file), "ops", "wrong"));
        assert!(!check_password(None, Some(&file), "admin", "s3cret"));
        std::fs::write(&file, "- not a map\n").unwrap();
        assert!(!check_password(None, Some(&file), "ops", "s3cret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn host_header_drops_port_and_rejects_junk() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, v.parse().unwrap());
            request_host(&m)
        };
        assert_eq!(h("example.com:8000").as_deref(), Some("example.com"));
        assert_eq!(h("127.0.0.1").as_deref(), Some("127.0.0.1"));
        assert_eq!(h("[::1]:8000").as_deref(), Some("[::1]"));
        assert_eq!(h("evil.com/x?y"), None);
    }

    #[test]
    fn session_and_stream_json_have_the_documented_fields() {
        let config = crate::config::Config::default();
        let hub = crate::hub::Hub::new(crate::hub::HubSettings::from_config(&config));
        let key = StreamKey::new("live", "cam").unwrap();
        let started = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let info = crate::hub::PublisherInfo {
            session_id: 7,
            protocol: "rtmp",
            remote: "10.1.2.3:5555".into(),
            started,
        };
        let _publisher = hub.publish(&key, info).unwrap();
        let s = stream_json(&hub.stream(&key).unwrap());
        for f in [
            "app",
            "name",
            "publisher",
            "video",
            "audio",
            "bitrate",
            "inBytes",
            "outBytes",
            "subscribers",
        ] {
            assert!(s.get(f).is_some(), "stream field {f}: {s}");
        }
        assert_eq!(
            s["publisher"],
            json!({"id": 7, "protocol": "rtmp", "ip": "10.1.2.3", "createTime": 1_700_000_000_000u64})
        );

        let sessions = Arc::new(Sessions::new(Arc::new(crate::metrics::Metrics::new())));
        let g = sessions.open(Protocol::HttpFlv, "[::1]:4000".into());
        g.set_activity(Some((Role::Player, key.clone())));
        let j = session_json(g.entry());
        assert_eq!(j["protocol"], "http_flv");
        assert_eq!(j["role"], "player");
        assert_eq!(
            (j["app"].as_str(), j["name"].as_str(), j["ip"].as_str()),
            (Some("live"), Some("cam"), Some("::1"))
        );
        for f in ["id", "connectTime", "inBytes", "outBytes"] {
            assert!(j[f].is_u64(), "session field {f}: {j}");
        }
    }

    #[test]
    fn error_envelope_carries_status_and_message() {
        let r = ApiError::NotFound("stream not found".into()).into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = ApiError::TooManyRequests { retry_after_secs: 30 }.into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "30");
        let r = ApiError::LoginBusy.into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let r = ApiError::Unauthorized("x").into_response();
        assert_eq!(r.headers().get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
    }

    #[test]
    fn process_stats_are_read_from_proc() {
        let (user, system) = process_cpu().unwrap();
        assert!(user >= 0.0 && system >= 0.0);
        let (rss, virt) = process_memory().unwrap();
        assert!(rss > 0 && virt >= rss);
    }

    /// Every route in [`ROUTES`] has a handler and is documented in `docs/api/openapi.yaml`,
    /// and the document lists no route the server does not serve.
    #[test]
    fn every_route_is_in_the_openapi_document_and_back() {
        for (m, p) in ROUTES {
            let _ = handler(m, p);
        }
        let doc: serde_yaml::Value = serde_yaml::from_str(include_str!("../../docs/api/openapi.yaml")).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.0"));
        assert_eq!(doc["servers"][0]["url"].as_str(), Some("/api/v1"));
        let paths = doc["paths"].as_mapping().expect("paths");
        let mut documented = Vec::new();
        for (path, ops) in paths {
            for (method, _) in ops.as_mapping().expect("operations") {
                let method = method.as_str().unwrap();
                if method != "parameters" {
                    documented.push((method.to_ascii_uppercase(), path.as_str().unwrap().to_string()));
                }
            }
        }
        let mut served: Vec<_> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
        documented.sort();
        served.sort();
        assert_eq!(documented, served);
    }
}
