//! Access control for publish and play requests: per-app policies (`none`, `sign`), with
//! secrets read from files, never from the YAML config itself.
//!
//! `sign` is Node-Media-Server's signed URL: `?sign={expires}-{md5("/{app}/{name}-{expires}-{secret}")}`
//! with `expires` in Unix seconds. Several secrets may be valid at once so they can be rotated.
//! That signature does not name the action, so publish and play need different secrets; the
//! action-bound variant (`sign_action_bound`) appends `-{action}` (`publish` or `play`) to the
//! signed text. An expiry further ahead than `sign_max_ttl_secs` is refused.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};

use crate::config::{AuthMode, PolicyConfig};
use crate::hub::StreamKey;

/// Why a request was refused; also the `reason` label of the auth failure metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("missing credentials")]
    Missing,
    #[error("malformed credentials")]
    Malformed,
    #[error("credentials expired")]
    Expired,
    #[error("invalid signature")]
    BadSignature,
    #[error("invalid stream key")]
    BadKey,
    #[error("invalid token")]
    BadToken,
    #[error("token does not grant this stream or action")]
    TokenScope,
    #[error("client address not allowed")]
    Address,
    #[error("signature expires too far in the future")]
    TooFarAhead,
    #[error("unknown app")]
    UnknownApp,
}

impl Denied {
    pub fn reason(self) -> &'static str {
        match self {
            Denied::Missing => "missing",
            Denied::Malformed => "malformed",
            Denied::Expired => "expired",
            Denied::BadSignature => "bad_signature",
            Denied::BadKey => "bad_key",
            Denied::BadToken => "bad_token",
            Denied::TokenScope => "token_scope",
            Denied::Address => "address",
            Denied::TooFarAhead => "expiry_too_far",
            Denied::UnknownApp => "unknown_app",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read secret file {path}: {source}")]
    SecretFile { path: String, source: std::io::Error },
    #[error("secret file {0} is empty")]
    EmptySecret(String),
    #[error("bad verification key: {0}")]
    BadKey(String),
    #[error("keys file {path}: {message}")]
    BadKeysFile { path: String, message: String },
}

/// A policy with its secrets loaded.
#[derive(Clone, Default)]
pub struct Policy {
    mode: AuthMode,
    sign_secrets: Vec<String>,
    sign_action_bound: bool,
    sign_max_ttl_secs: u64,
    /// (public stream name, key)
    stream_keys: Vec<(String, String)>,
    tokens: Option<TokenVerifier>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs.
        f.debug_struct("Policy")
            .field("mode", &self.mode)
            .field("sign_secrets", &self.sign_secrets.len())
            .field("sign_action_bound", &self.sign_action_bound)
            .field("stream_keys", &self.stream_keys.len())
            .finish()
    }
}

fn read_secret(path: &Path) -> Result<String, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::SecretFile {
        path: path.display().to_string(),
        source,
    })?;
    let secret = text.trim().to_string();
    if secret.is_empty() {
        return Err(AuthError::EmptySecret(path.display().to_string()));
    }
    Ok(secret)
}

/// Reads a `keys_file`: a YAML map of public stream name to key. Every name must be a valid
/// stream name and every key non-empty, so a typo is refused (with the reload keeping the
/// running keys) instead of silently locking a stream out.
pub fn read_keys_file(path: &Path) -> Result<Vec<(String, String)>, AuthError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| AuthError::SecretFile {
        path: shown.clone(),
        source,
    })?;
    parse_keys_file(&text).map_err(|message| AuthError::BadKeysFile { path: shown, message })
}

/// Parses the text of a `keys_file` (see [`read_keys_file`]). Errors name the stream, never a key.
pub fn parse_keys_file(text: &str) -> Result<Vec<(String, String)>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let map: std::collections::BTreeMap<String, String> =
        serde_yaml::from_str(text).map_err(|_| "not a YAML map of stream name to key".to_string())?;
    let mut keys = Vec::with_capacity(map.len());
    for (name, key) in map {
        if !crate::hub::is_valid_name(&name) {
            return Err(format!("{name:?} is not a valid stream name"));
        }
        let key = key.trim().to_string();
        if key.is_empty() {
            return Err(format!("the key of stream {name:?} is empty"));
        }
        keys.push((name, key));
    }
    Ok(keys)
}

impl Policy {
    /// Loads the secret files a policy names.
    pub fn load(config: &PolicyConfig) -> Result<Policy, AuthError> {
        let sign_secrets = match config.auth {
            AuthMode::Sign => config
                .sign_secret_files
                .iter()
                .map(|p| read_secret(p))
                .collect::<Result<_, _>>()?,
            AuthMode::None | AuthMode::Key | AuthMode::Token => Vec::new(),
        };
        let tokens = match config.auth {
            AuthMode::Token => Some(TokenVerifier::load(&config.token)?),
            _ => None,
        };
        let mut stream_keys = Vec::new();
        if let (AuthMode::Key, Some(dir)) = (config.auth, &config.keys_dir) {
            let entries = std::fs::read_dir(dir).map_err(|source| AuthError::SecretFile {
                path: dir.display().to_string(),
                source,
            })?;
            for entry in entries {
                let entry = entry.map_err(|source| AuthError::SecretFile {
                    path: dir.display().to_string(),
                    source,
                })?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // Kubernetes keeps its versioned data in dot-directories next to the keys.
                if name.starts_with('.') || !crate::hub::is_valid_name(&name) || entry.path().is_dir() {
                    continue;
                }
                stream_keys.push((name, read_secret(&entry.path())?));
            }
        }
        if let (AuthMode::Key, Some(file)) = (config.auth, &config.keys_file) {
            for (name, key) in read_keys_file(file)? {
                // A stream in both places keeps its `keys_dir` key.
                if !stream_keys.iter().any(|(n, _)| *n == name) {
                    stream_keys.push((name, key));
                }
            }
        }
        stream_keys.sort();
        Ok(Policy {
            mode: config.auth,
            sign_secrets,
            sign_action_bound: config.sign_action_bound,
            sign_max_ttl_secs: config.sign_max_ttl_secs,
            stream_keys,
            tokens,
        })
    }

    pub fn mode(&self) -> AuthMode {
        self.mode
    }

    /// Whether a signature this policy accepts could also be one `other` accepts: both are
    /// `sign` with a secret in common, and `self` does not insist on action-bound signatures.
    /// (Publish and play sharing a secret lets any play URL publish.)
    pub fn accepts_signatures_of(&self, other: &Policy) -> bool {
        self.mode == AuthMode::Sign
            && other.mode == AuthMode::Sign
            && !self.sign_action_bound
            && self.sign_secrets.iter().any(|s| other.sign_secrets.contains(s))
    }

    /// The longest validity a signature of this policy may have.
    pub fn sign_max_ttl_secs(&self) -> u64 {
        self.sign_max_ttl_secs
    }

    /// The `sign` value for `key` and `action` (`publish`/`play`) expiring at `expires`,
    /// made with the current (first) secret; `None` when the policy has no secret.
    pub fn make_sign(&self, key: &StreamKey, expires: u64, action: &str) -> Option<String> {
        let secret = self.sign_secrets.first()?;
        Some(sign(key, expires, secret, self.sign_action_bound.then_some(action)))
    }

    /// The public stream whose key is `name`, if `name` is one of this policy's keys.
    pub fn public_name_of_key(&self, name: &str) -> Option<&str> {
        let mut found = None;
        for (public, k) in &self.stream_keys {
            if constant_time_eq(k.as_bytes(), name.as_bytes()) {
                found = Some(public.as_str());
            }
        }
        found
    }

    /// The key of public stream `name` (`key` policies).
    pub fn stream_key(&self, name: &str) -> Option<&str> {
        self.stream_keys
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, k)| k.as_str())
    }

    /// Checks a request's query string for `key` at time `now`. `Ok(Some(name))`: the
    /// request used a stream key as its name and stands for public stream `name`.
    pub fn check(&self, key: &StreamKey, query: &str, now: SystemTime) -> Result<Option<String>, Denied> {
        self.check_as(key, query, now, None)
    }

    /// [`Policy::check`] for an action (`publish`/`play`) that token claims must allow.
    pub fn check_as(
        &self,
        key: &StreamKey,
        query: &str,
        now: SystemTime,
        action: Option<&str>,
    ) -> Result<Option<String>, Denied> {
        match self.mode {
            AuthMode::Token => {
                let token = query_param(query, "token").ok_or(Denied::Missing)?;
                let v = self.tokens.as_ref().ok_or(Denied::BadToken)?;
                v.verify(&token, key, action.unwrap_or("play")).map(|()| None)
            }
            AuthMode::None => Ok(None),
            AuthMode::Sign => {
                let sign = query_param(query, "sign").ok_or(Denied::Missing)?;
                let rules = SignRules {
                    action: if self.sign_action_bound {
                        Some(action.unwrap_or("play"))
                    } else {
                        None
                    },
                    max_ttl_secs: self.sign_max_ttl_secs,
                };
                verify_sign(key, &sign, &self.sign_secrets, now, rules).map(|()| None)
            }
            AuthMode::Key => {
                if let Some(given) = query_param(query, "key") {
                    let ok = self
                        .stream_keys
                        .iter()
                        .any(|(name, k)| name == &key.name && constant_time_eq(k.as_bytes(), given.as_bytes()));
                    return if ok { Ok(None) } else { Err(Denied::BadKey) };
                }
                let mut found = None;
                for (name, k) in &self.stream_keys {
                    if constant_time_eq(k.as_bytes(), key.name.as_bytes()) {
                        found = Some(name.clone());
                    }
                }
                found.map(Some).ok_or(Denied::BadKey)
            }
        }
    }
}

/// Verifies stream JWTs with keys from files, one algorithm fixed by config.
#[derive(Clone)]
struct TokenVerifier {
    keys: Vec<(Option<String>, jsonwebtoken::DecodingKey)>,
    validation: jsonwebtoken::Validation,
}

/// Claims a stream token carries.
#[derive(serde::Deserialize)]
struct StreamClaims {
    app: Option<String>,
    /// Exact name or a glob with `*`.
    stream: Option<String>,
    /// `publish`, `play`, or a list of them.
    action: Option<serde_json::Value>,
}

impl TokenVerifier {
    fn load(c: &crate::config::TokenConfig) -> Result<TokenVerifier, AuthError> {
        use jsonwebtoken::Algorithm;
        let alg: Algorithm = c
            .algorithm
            .parse()
            .map_err(|_| AuthError::BadKey(format!("unknown algorithm {}", c.algorithm)))?;
        let mut keys = Vec::new();
        for path in &c.key_files {
            let shown = path.display().to_string();
            let bytes = std::fs::read(path).map_err(|source| AuthError::SecretFile {
                path: shown.clone(),
                source,
            })?;
            keys.extend(decoding_keys(alg, &bytes, &shown)?);
        }
        let mut validation = jsonwebtoken::Validation::new(alg);
        validation.validate_nbf = true;
        validation.leeway = 5;
        if let Some(iss) = &c.issuer {
            validation.set_issuer(&[iss]);
        }
        match &c.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(TokenVerifier { keys, validation })
    }

    fn verify(&self, token: &str, key: &StreamKey, action: &str) -> Result<(), Denied> {
        let kid = jsonwebtoken::decode_header(token).map_err(|_| Denied::BadToken)?.kid;
        let claims = self
            .keys
            .iter()
            .filter(|(k, _)| k.is_none() || kid.is_none() || *k == kid)
            .find_map(|(_, dk)| jsonwebtoken::decode::<StreamClaims>(token, dk, &self.validation).ok())
            .ok_or(Denied::BadToken)?
            .claims;
        let app_ok = claims.app.as_deref().is_none_or(|a| a == key.app);
        let stream_ok = claims.stream.as_deref().is_some_and(|g| glob_match(g, &key.name));
        let action_ok = match &claims.action {
            None => false,
            Some(serde_json::Value::String(a)) => a == action,
            Some(serde_json::Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(action)),
            Some(_) => false,
        };
        if app_ok && stream_ok && action_ok {
            Ok(())
        } else {
            Err(Denied::TokenScope)
        }
    }
}

/// The verification keys in one key file's bytes: a JWKS (`{...}`), an HMAC secret for HS*,
/// or a PEM public key. `shown` names the file in errors.
fn decoding_keys(
    alg: jsonwebtoken::Algorithm,
    bytes: &[u8],
    shown: &str,
) -> Result<Vec<(Option<String>, jsonwebtoken::DecodingKey)>, AuthError> {
    use jsonwebtoken::{Algorithm, DecodingKey};
    let bad = |e: jsonwebtoken::errors::Error| AuthError::BadKey(format!("{shown}: {e}"));
    if bytes.trim_ascii_start().starts_with(b"{") {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(bytes).map_err(|e| AuthError::BadKey(format!("{shown}: not a JWKS: {e}")))?;
        return set
            .keys
            .iter()
            .map(|jwk| Ok((jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk).map_err(bad)?)))
            .collect();
    }
    let key = match alg {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            let secret = String::from_utf8_lossy(bytes).trim().to_string();
            if secret.is_empty() {
                return Err(AuthError::EmptySecret(shown.to_string()));
            }
            DecodingKey::from_secret(secret.as_bytes())
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => DecodingKey::from_rsa_pem(bytes).map_err(bad)?,
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(bytes).map_err(bad)?,
        Algorithm::EdDSA => DecodingKey::from_ed_pem(bytes).map_err(bad)?,
        other => return Err(AuthError::BadKey(format!("algorithm {other:?} is not supported"))),
    };
    Ok(vec![(None, key)])
}

/// Checks that `bytes` hold a verification key the server accepts for `algorithm`, exactly
/// as it will read the key file; the operator uses this so it never renders a key file that
/// would make the server refuse the whole configuration. `name` appears in the error.
pub fn check_token_key(algorithm: &str, bytes: &[u8], name: &str) -> Result<(), AuthError> {
    let alg: jsonwebtoken::Algorithm = algorithm
        .parse()
        .map_err(|_| AuthError::BadKey(format!("unknown algorithm {algorithm}")))?;
    decoding_keys(alg, bytes, name).map(drop)
}

/// `*` matches any run of characters; everything else matches itself.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

/// An IP network such as `10.0.0.0/8` or `2001:db8::/32` (a bare address means one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a.parse::<std::net::IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.trim().parse().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { net: addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        // IPv4 clients on a dual-stack socket show up as ::ffff:a.b.c.d.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        let bits = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(v) => (u128::from(u32::from(v)) << 96, 32u32),
            std::net::IpAddr::V6(v) => (u128::from(v), 128u32),
        };
        let ((net, n_len), (addr, a_len)) = (bits(self.net), bits(ip));
        if n_len != a_len {
            return false;
        }
        // Addresses sit in the top bits of a u128; keep the first `prefix` of them.
        let keep = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.prefix))
        };
        net & keep == addr & keep
    }
}

/// An app's address allow and deny lists.
#[derive(Debug, Clone, Default)]
pub struct IpFilter {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl IpFilter {
    /// Lists are validated with the config, so unparsable entries cannot occur here.
    pub fn new(allow: &[String], deny: &[String]) -> IpFilter {
        IpFilter {
            allow: allow.iter().filter_map(|c| Cidr::parse(c)).collect(),
            deny: deny.iter().filter_map(|c| Cidr::parse(c)).collect(),
        }
    }

    pub fn check(&self, ip: std::net::IpAddr) -> Result<(), Denied> {
        let allowed = self.allow.is_empty() || self.allow.iter().any(|c| c.contains(ip));
        if allowed && !self.deny.iter().any(|c| c.contains(ip)) {
            Ok(())
        } else {
            Err(Denied::Address)
        }
    }
}

/// The value of `name` in a URL query string, percent-decoding not needed for our tokens.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    query_value(query, name).map(str::to_string)
}

/// [`query_param`] without a copy.
pub fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn md5_hex(input: &str) -> String {
    Md5::digest(input.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares without an early exit, so timing does not reveal how much of a guess matched.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a signature must cover besides app, name and expiry, and how far ahead it may expire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignRules<'a> {
    /// `Some(action)`: only the action-bound variant for this action is accepted.
    pub action: Option<&'a str>,
    pub max_ttl_secs: u64,
}

/// The text a signature is the MD5 of: Node-Media-Server's, with `-{action}` appended for
/// the action-bound variant.
fn signed_text(key: &StreamKey, expires: u64, secret: &str, action: Option<&str>) -> String {
    match action {
        None => format!("/{}/{}-{}-{}", key.app, key.name, expires, secret),
        Some(a) => format!("/{}/{}-{}-{}-{}", key.app, key.name, expires, secret, a),
    }
}

/// Verifies a Node-Media-Server signature against any of `secrets`.
pub fn verify_sign(
    key: &StreamKey,
    sign: &str,
    secrets: &[String],
    now: SystemTime,
    rules: SignRules<'_>,
) -> Result<(), Denied> {
    let (expires, hash) = sign.split_once('-').ok_or(Denied::Malformed)?;
    let expires: u64 = expires.parse().map_err(|_| Denied::Malformed)?;
    if hash.len() != 32 {
        return Err(Denied::Malformed);
    }
    let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if expires < now {
        return Err(Denied::Expired);
    }
    if expires - now > rules.max_ttl_secs {
        return Err(Denied::TooFarAhead);
    }
    let mut ok = false;
    for secret in secrets {
        let want = md5_hex(&signed_text(key, expires, secret, rules.action));
        ok |= constant_time_eq(want.as_bytes(), hash.to_ascii_lowercase().as_bytes());
    }
    if ok {
        Ok(())
    } else {
        Err(Denied::BadSignature)
    }
}

/// Builds a signed query value (`{expires}-{hash}`) for `key`, as the API hands out;
/// `action` makes the action-bound variant.
pub fn sign(key: &StreamKey, expires: u64, secret: &str, action: Option<&str>) -> String {
    format!("{expires}-{}", md5_hex(&signed_text(key, expires, secret, action)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    mod tokens {
        use super::super::*;
        use crate::config::TokenConfig;
        use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
        use serde_json::json;

        const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/src/testdata/jwt");

        fn now() -> u64 {
            SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
        }

        fn policy(alg: &str, key_file: std::path::PathBuf, issuer: Option<&str>, audience: Option<&str>) -> Policy {
            let token = TokenConfig {
                algorithm: alg.into(),
                key_files: vec![key_file],
                issuer: issuer.map(Into::into),
                audience: audience.map(Into::into),
            };
            Policy::load(&PolicyConfig {
                auth: AuthMode::Token,
                token,
                ..Default::default()
            })
            .unwrap()
        }

        fn hs_policy() -> (Policy, std::path::PathBuf) {
            let f = std::env::temp_dir().join(format!(
                "ferrocast-hs-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::write(&f, "hmac-secret\n").unwrap();
            (policy("HS256", f.clone(), Some("studio"), Some("ferrocast")), f)
        }

        fn hs(claims: serde_json::Value) -> String {
            encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"hmac-secret"),
            )
            .unwrap()
        }

        fn check(p: &Policy, token: &str, stream: &str, action: &str) -> Result<Option<String>, Denied> {
            p.check_as(
                &StreamKey::new("live", stream).unwrap(),
                &format!("token={token}"),
                SystemTime::now(),
                Some(action),
            )
        }

        #[test]
        fn hs256_claims_table() {
            let (p, f) = hs_policy();
            let base = |extra: serde_json::Value| {
                let mut c = json!({"app": "live", "stream": "cam", "action": "publish", "exp": now() + 300, "iss": "studio", "aud": "ferrocast"});
                for (k, v) in extra.as_object().unwrap() {
                    if v.is_null() {
                        c.as_object_mut().unwrap().remove(k);
                    } else {
                        c[k] = v.clone();
                    }
                }
                hs(c)
            };
            let cases: Vec<(&str, String, &str, &str, Result<Option<String>, Denied>)> = vec![
                ("valid publish", base(json!({})), "cam", "publish", Ok(None)),
                ("action not granted", base(json!({})), "cam", "play", Err(Denied::TokenScope)),
                ("both actions", base(json!({"action": ["publish", "play"]})), "cam", "play", Ok(None)),
                ("glob stream", base(json!({"stream": "cam-*"})), "cam-2", "publish", Ok(None)),
                ("glob does not match", base(json!({"stream": "cam-*"})), "other", "publish", Err(Denied::TokenScope)),
                ("wrong stream", base(json!({"stream": "other"})), "cam", "publish", Err(Denied::TokenScope)),
                ("wrong app", base(json!({"app": "vod"})), "cam", "publish", Err(Denied::TokenScope)),
                ("expired", base(json!({"exp": now() - 120})), "cam", "publish", Err(Denied::BadToken)),
                ("not yet valid", base(json!({"nbf": now() + 120})), "cam", "publish", Err(Denied::BadToken)),
                ("no exp", base(json!({"exp": null})), "cam", "publish", Err(Denied::BadToken)),
                ("wrong issuer", base(json!({"iss": "mallory"})), "cam", "publish", Err(Denied::BadToken)),
                ("wrong audience", base(json!({"aud": "other"})), "cam", "publish", Err(Denied::BadToken)),
                ("wrong secret", encode(&Header::new(Algorithm::HS256), &json!({"app":"live","stream":"cam","action":"publish","exp":now()+300,"iss":"studio","aud":"ferrocast"}), &EncodingKey::from_secret(b"guess")).unwrap(), "cam", "publish", Err(Denied::BadToken)),
                ("garbage", "not.a.jwt".into(), "cam", "publish", Err(Denied::BadToken)),
            ];
            for (name, token, stream, action, want) in cases {
                assert_eq!(check(&p, &token, stream, action), want, "{name}");
            }
            std::fs::remove_file(f).unwrap();
        }

        #[test]
        fn asymmetric_algorithms_and_no_algorithm_confusion() {
            let claims = json!({"app": "live", "stream": "cam", "action": "play", "exp": now() + 300});
            for (alg, algorithm, key, public) in [
                ("RS256", Algorithm::RS256, "rsa.key", "rsa.pub"),
                ("ES256", Algorithm::ES256, "ec.key", "ec.pub"),
                ("EdDSA", Algorithm::EdDSA, "ed.key", "ed.pub"),
            ] {
                let p = policy(alg, format!("{DIR}/{public}").into(), None, None);
                let pem = std::fs::read(format!("{DIR}/{key}")).unwrap();
                let enc = match algorithm {
                    Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
                    Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
                    _ => EncodingKey::from_ed_pem(&pem),
                }
                .unwrap();
                let token = encode(&Header::new(algorithm), &claims, &enc).unwrap();
                assert_eq!(check(&p, &token, "cam", "play"), Ok(None), "{alg}");
                // The classic confusion attack: HS256 keyed with the public key's bytes.
                let public_bytes = std::fs::read(format!("{DIR}/{public}")).unwrap();
                let forged = encode(
                    &Header::new(Algorithm::HS256),
                    &claims,
                    &EncodingKey::from_secret(&public_bytes),
                )
                .unwrap();
                assert_eq!(
                    check(&p, &forged, "cam", "play"),
                    Err(Denied::BadToken),
                    "{alg} refuses HS256"
                );
            }
        }

        #[test]
        fn jwks_file_keys_are_chosen_by_kid() {
            // "jwks-secret" base64url-encoded as an oct key; a second key is a decoy.
            let jwks = r#"{"keys":[{"kty":"oct","kid":"decoy","k":"ZGVjb3k"},{"kty":"oct","kid":"k1","k":"andrcy1zZWNyZXQ"}]}"#;
            let f = std::env::temp_dir().join(format!("ferrocast-jwks-{}.json", std::process::id()));
            std::fs::write(&f, jwks).unwrap();
            let p = policy("HS256", f.clone(), None, None);
            let claims = json!({"app": "live", "stream": "cam", "action": "play", "exp": now() + 300});
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("k1".into());
            let token = encode(&header, &claims, &EncodingKey::from_secret(b"jwks-secret")).unwrap();
            assert_eq!(check(&p, &token, "cam", "play"), Ok(None));
            header.kid = Some("decoy".into());
            let wrong_kid = encode(&header, &claims, &EncodingKey::from_secret(b"jwks-secret")).unwrap();
            assert_eq!(check(&p, &wrong_kid, "cam", "play"), Err(Denied::BadToken));
            std::fs::remove_file(f).unwrap();
        }

        #[test]
        fn missing_token_and_globs() {
            let (p, f) = hs_policy();
            assert_eq!(
                p.check_as(
                    &StreamKey::new("live", "cam").unwrap(),
                    "",
                    SystemTime::now(),
                    Some("play")
                ),
                Err(Denied::Missing)
            );
            std::fs::remove_file(f).unwrap();
            for (g, n, want) in [
                ("*", "x", true),
                ("a*c", "abc", true),
                ("a*c", "ab", false),
                ("a*b*c", "a1b2c", true),
                ("ab", "ab", true),
                ("ab", "abc", false),
                ("*c", "c", true),
            ] {
                assert_eq!(glob_match(g, n), want, "{g} ~ {n}");
            }
        }
    }

    #[test]
    fn stream_keys_map_to_public_names() {
        let dir = std::env::temp_dir().join(format!("ferrocast-keys-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("..2026_11_21")).unwrap();
        std::fs::write(dir.join("cam"), "k-cam-123\n").unwrap();
        std::fs::write(dir.join("studio"), "k-studio-456").unwrap();
        let p = Policy::load(&PolicyConfig {
            auth: AuthMode::Key,
            keys_dir: Some(dir.clone()),
            ..Default::default()
        })
        .unwrap();
        let k = |n: &str| StreamKey::new("live", n).unwrap();
        let cases: Vec<(&str, StreamKey, &str, Result<Option<String>, Denied>)> = vec![
            (
                "key as the stream name maps to its public name",
                k("k-cam-123"),
                "",
                Ok(Some("cam".into())),
            ),
            ("?key= for the right stream", k("studio"), "key=k-studio-456", Ok(None)),
            (
                "?key= of another stream",
                k("cam"),
                "key=k-studio-456",
                Err(Denied::BadKey),
            ),
            ("unknown key as name", k("guess"), "", Err(Denied::BadKey)),
            ("public name without key", k("cam"), "", Err(Denied::BadKey)),
        ];
        for (name, key, query, want) in cases {
            assert_eq!(p.check(&key, query, at(0)), want, "{name}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn keys_file_maps_streams_to_keys_alongside_keys_dir() {
        let dir = std::env::temp_dir().join(format!("ferrocast-keysfile-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("d")).unwrap();
        std::fs::write(dir.join("d/cam"), "k-from-dir").unwrap();
        std::fs::write(dir.join("keys.yaml"), "cam: k-from-file\nstudio: 'k-studio-456'\n").unwrap();
        let p = Policy::load(&PolicyConfig {
            auth: AuthMode::Key,
            keys_dir: Some(dir.join("d")),
            keys_file: Some(dir.join("keys.yaml")),
            ..Default::default()
        })
        .unwrap();
        let k = |n: &str| StreamKey::new("live", n).unwrap();
        assert_eq!(
            p.check(&k("k-studio-456"), "", at(0)),
            Ok(Some("studio".into())),
            "key from the file"
        );
        assert_eq!(
            p.check(&k("cam"), "key=k-from-dir", at(0)),
            Ok(None),
            "keys_dir wins for a stream in both"
        );
        assert_eq!(p.check(&k("cam"), "key=k-from-file", at(0)), Err(Denied::BadKey));
        let only_file = PolicyConfig {
            auth: AuthMode::Key,
            keys_file: Some(dir.join("keys.yaml")),
            ..Default::default()
        };
        assert_eq!(
            Policy::load(&only_file)
                .unwrap()
                .check(&k("cam"), "key=k-from-file", at(0)),
            Ok(None)
        );
        for (bad, why) in [
            ("'a b': k\n", "invalid stream name"),
            ("cam: ''\n", "empty key"),
            ("[1, 2]\n", "not a map"),
        ] {
            std::fs::write(dir.join("keys.yaml"), bad).unwrap();
            let err = Policy::load(&only_file).unwrap_err();
            assert!(matches!(err, AuthError::BadKeysFile { .. }), "{why}: {err}");
        }
        std::fs::write(dir.join("keys.yaml"), "").unwrap();
        assert_eq!(
            Policy::load(&only_file).unwrap().check(&k("cam"), "key=x", at(0)),
            Err(Denied::BadKey),
            "no keys: nobody"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn token_keys_are_checked_as_the_server_reads_them() {
        let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/src/testdata/jwt/rsa.pub")).unwrap();
        assert!(check_token_key("RS256", &pem, "k").is_ok());
        assert!(check_token_key("HS256", b"secret", "k").is_ok());
        assert!(check_token_key("HS256", br#"{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0"}]}"#, "k").is_ok());
        assert!(matches!(
            check_token_key("RS256", b"not a pem", "k"),
            Err(AuthError::BadKey(_))
        ));
        assert!(matches!(
            check_token_key("HS256", b"  \n", "k"),
            Err(AuthError::EmptySecret(_))
        ));
        assert!(check_token_key("XX1", b"x", "k").is_err());
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn key() -> StreamKey {
        StreamKey::new("live", "cam").unwrap()
    }

    #[test]
    fn ip_filter_table() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let f = IpFilter::new(
            &["10.0.0.0/8".into(), "2001:db8::/32".into(), "127.0.0.1".into()],
            &["10.9.0.0/16".into()],
        );
        let cases = [
            ("inside allow", "10.1.2.3", true),
            ("inside deny within allow", "10.9.1.1", false),
            ("outside allow", "192.168.1.1", false),
            ("single host", "127.0.0.1", true),
            ("ipv4-mapped ipv6", "::ffff:10.1.2.3", true),
            ("ipv6 inside", "2001:db8::1", true),
            ("ipv6 outside", "2001:db9::1", false),
        ];
        for (name, addr, want) in cases {
            assert_eq!(f.check(ip(addr)).is_ok(), want, "{name}");
        }
        assert!(
            IpFilter::default().check(ip("203.0.113.9")).is_ok(),
            "no lists: everyone"
        );
        assert!(IpFilter::new(&[], &["0.0.0.0/0".into()]).check(ip("1.2.3.4")).is_err());
        for bad in ["10.0.0.0/33", "nope", "::/129", "1.2.3.4/x"] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn nms_signature_vector() {
        // md5("/live/cam-1700000000-nodemedia2017privatekey")
        let s = sign(&key(), 1_700_000_000, "nodemedia2017privatekey", None);
        assert_eq!(
            s,
            format!("1700000000-{}", md5_hex("/live/cam-1700000000-nodemedia2017privatekey"))
        );
        assert_eq!(s.len(), 11 + 32);
    }

    #[test]
    fn sign_cases() {
        let secrets = vec!["old".to_string(), "new".to_string()];
        let good_old = sign(&key(), 2000, "old", None);
        let good_new = sign(&key(), 2000, "new", None);
        let other_stream = sign(&StreamKey::new("live", "other").unwrap(), 2000, "new", None);
        let cases: Vec<(&str, String, u64, Result<(), Denied>)> = vec![
            (
                "valid with the old secret during rotation",
                good_old.clone(),
                1000,
                Ok(()),
            ),
            ("valid with the new secret", good_new.clone(), 1000, Ok(())),
            ("expired", good_new.clone(), 2001, Err(Denied::Expired)),
            (
                "signed for another stream",
                other_stream,
                1000,
                Err(Denied::BadSignature),
            ),
            (
                "wrong secret",
                sign(&key(), 2000, "guess", None),
                1000,
                Err(Denied::BadSignature),
            ),
            (
                "tampered expiry",
                good_new.replacen("2000", "9999", 1),
                1000,
                Err(Denied::BadSignature),
            ),
            ("no dash", "2000abcdef".into(), 1000, Err(Denied::Malformed)),
            ("short hash", "2000-abc".into(), 1000, Err(Denied::Malformed)),
            (
                "non-numeric expiry",
                format!("soon-{}", "a".repeat(32)),
                1000,
                Err(Denied::Malformed),
            ),
        ];
        let rules = SignRules {
            action: None,
            max_ttl_secs: 10_000,
        };
        for (name, sign, now, want) in cases {
            assert_eq!(verify_sign(&key(), &sign, &secrets, at(now), rules), want, "{name}");
        }
    }

    #[test]
    fn action_bound_signatures_cover_the_action_and_expiry_is_capped() {
        let secrets = vec!["s".to_string()];
        let bound = |action| SignRules {
            action: Some(action),
            max_ttl_secs: 3600,
        };
        let nms = SignRules {
            action: None,
            max_ttl_secs: 3600,
        };
        let play_sig = sign(&key(), 2000, "s", Some("play"));
        // md5("/live/cam-2000-s-play"): the documented text.
        assert_eq!(play_sig, format!("2000-{}", md5_hex("/live/cam-2000-s-play")));
        let cases: Vec<(&str, String, SignRules, u64, Result<(), Denied>)> = vec![
            ("play signature plays", play_sig.clone(), bound("play"), 1000, Ok(())),
            (
                "play signature cannot publish",
                play_sig.clone(),
                bound("publish"),
                1000,
                Err(Denied::BadSignature),
            ),
            (
                "NMS signature refused when bound",
                sign(&key(), 2000, "s", None),
                bound("play"),
                1000,
                Err(Denied::BadSignature),
            ),
            (
                "bound signature is not an NMS one",
                play_sig.clone(),
                nms,
                1000,
                Err(Denied::BadSignature),
            ),
            (
                "publish signature publishes",
                sign(&key(), 2000, "s", Some("publish")),
                bound("publish"),
                1000,
                Ok(()),
            ),
            (
                "expiry within the window",
                sign(&key(), 4600, "s", None),
                nms,
                1000,
                Ok(()),
            ),
            (
                "expiry beyond the window",
                sign(&key(), 4601, "s", None),
                nms,
                1000,
                Err(Denied::TooFarAhead),
            ),
            (
                "year-9999 expiry",
                sign(&key(), 253_402_300_799, "s", None),
                nms,
                1000,
                Err(Denied::TooFarAhead),
            ),
        ];
        for (name, sig, rules, now, want) in cases {
            assert_eq!(verify_sign(&key(), &sig, &secrets, at(now), rules), want, "{name}");
        }
    }

    #[test]
    fn shared_publish_and_play_secrets_are_noticed() {
        let p = |secrets: &[&str], bound: bool| Policy {
            mode: AuthMode::Sign,
            sign_secrets: secrets.iter().map(|s| s.to_string()).collect(),
            sign_action_bound: bound,
            sign_max_ttl_secs: 3600,
            stream_keys: vec![],
            tokens: None,
        };
        assert!(p(&["a", "b"], false).accepts_signatures_of(&p(&["b"], false)));
        assert!(!p(&["a"], false).accepts_signatures_of(&p(&["b"], false)));
        assert!(
            !p(&["a"], true).accepts_signatures_of(&p(&["a"], false)),
            "action-bound publish refuses play signatures"
        );
        assert!(!Policy::default().accepts_signatures_of(&p(&["a"], false)));
    }

    #[test]
    fn policy_reads_query_and_mode() {
        let open = Policy::default();
        assert_eq!(open.check(&key(), "", at(0)), Ok(None));
        let p = Policy {
            mode: AuthMode::Sign,
            sign_secrets: vec!["s".into()],
            sign_action_bound: false,
            sign_max_ttl_secs: 3600,
            stream_keys: vec![],
            tokens: None,
        };
        assert_eq!(p.check(&key(), "", at(0)), Err(Denied::Missing));
        let q = format!("a=1&sign={}", sign(&key(), 100, "s", None));
        assert_eq!(p.check(&key(), &q, at(50)), Ok(None));
        assert!(
            !format!("{p:?}").contains('s') || !format!("{p:?}").contains("\"s\""),
            "secret not in Debug"
        );
    }

    #[test]
    fn secrets_come_from_files_and_empty_is_refused() {
        let dir = std::env::temp_dir().join(format!("ferrocast-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a"), "secret-a\n").unwrap();
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let cfg = |files: Vec<&str>| PolicyConfig {
            auth: AuthMode::Sign,
            sign_secret_files: files.iter().map(|f| dir.join(f)).collect(),
            ..Default::default()
        };
        let p = Policy::load(&cfg(vec!["a"])).unwrap();
        assert_eq!(p.sign_secrets, vec!["secret-a".to_string()]);
        assert!(matches!(
            Policy::load(&cfg(vec!["empty"])),
            Err(AuthError::EmptySecret(_))
        ));
        assert!(matches!(
            Policy::load(&cfg(vec!["missing"])),
            Err(AuthError::SecretFile { .. })
        ));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
