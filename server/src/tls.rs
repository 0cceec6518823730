//! TLS for the RTMPS and HTTPS listeners: certificates and keys loaded from PEM files, the
//! one for each connection chosen by its SNI server name, and reloads when the files change.
//!
//! Kubernetes updates a mounted Secret by swapping a `..data` symlink, so files are compared
//! by content, never by modification time. A certificate whose new files do not load keeps
//! serving its previous version (the refusal is logged). Only handshakes consult the set, so
//! a reload never touches a connection that is already open.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::config::CertificateConfig;

/// ALPN names offered on the HTTPS port, preferred first.
pub const HTTPS_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// How often the certificate files are compared with what is loaded.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// A certificate that cannot be used. Each names the config key and the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("`{key}`: cannot read {}: {source}", path.display())]
    Read {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{key}`: {}: {message}", path.display())]
    Invalid {
        key: String,
        path: PathBuf,
        message: String,
    },
    #[error("`{key}`: the private key in {} does not match the certificate in {}", key_path.display(), cert_path.display())]
    KeyMismatch {
        key: String,
        key_path: PathBuf,
        cert_path: PathBuf,
    },
    #[error("TLS setup: {0}")]
    Setup(#[from] rustls::Error),
}

/// The certificates of the TLS listeners; the SNI resolver of their rustls configs.
pub struct Certificates {
    provider: Arc<CryptoProvider>,
    /// Swapped whole, so a handshake sees either the old or the new set.
    current: RwLock<Arc<CertSet>>,
    /// One reload at a time (the file watcher and config reloads).
    reloading: Mutex<()>,
}

/// A certificate list loaded from a new config, not yet in service.
pub struct NewCertificates(CertSet);

struct CertSet {
    entries: Vec<Entry>,
    /// The certificate for clients that send no server name or one no entry lists.
    default: Option<usize>,
}

#[derive(Clone)]
struct Entry {
    config: CertificateConfig,
    certified: Arc<CertifiedKey>,
    /// Content hash of the files `certified` was loaded from.
    loaded: u64,
    /// Content hash of the last files refused, so a bad file is reported once, not per poll.
    refused: Option<u64>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = self.snapshot();
        let hosts: Vec<&[String]> = set.entries.iter().map(|e| e.config.hosts.as_slice()).collect();
        f.debug_struct("Certificates")
            .field("hosts", &hosts)
            .field("default", &set.default)
            .finish()
    }
}

impl Certificates {
    /// Loads every configured certificate; the first that fails is the error.
    pub fn load(configs: &[CertificateConfig]) -> Result<Arc<Certificates>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let set = load_set(configs, &provider)?;
        log_set(&set);
        Ok(Arc::new(Certificates {
            provider,
            current: RwLock::new(Arc::new(set)),
            reloading: Mutex::new(()),
        }))
    }

    fn snapshot(&self) -> Arc<CertSet> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn swap(&self, set: CertSet) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    /// The configured certificates, as currently loaded.
    pub fn configs(&self) -> Vec<CertificateConfig> {
        self.snapshot().entries.iter().map(|e| e.config.clone()).collect()
    }

    /// A rustls server config (TLS 1.3 and 1.2, the ring provider's safe cipher suites)
    /// resolving certificates through this set and offering `alpn`.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        let mut config = ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Reloads every certificate whose files changed since they were loaded. One that no
    /// longer loads keeps its previous version; the reason is logged once per bad content.
    pub fn reload_changed(&self) {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.snapshot();
        let mut entries = old.entries.clone();
        let mut changed = false;
        for (i, entry) in entries.iter_mut().enumerate() {
            let files = Files::read(i, &entry.config);
            let hash = files.hash();
            if hash == entry.loaded || Some(hash) == entry.refused {
                continue;
            }
            changed = true;
            match files.certified_key(&self.provider) {
                Ok(certified) => {
                    info!(certificate = i, file = %entry.config.cert_file.display(), "certificate reloaded");
                    entry.certified = Arc::new(certified);
                    entry.loaded = hash;
                    entry.refused = None;
                }
                Err(e) => {
                    warn!(
                        certificate = i,
                        "certificate change refused, the previous certificate stays: {e}"
                    );
                    entry.refused = Some(hash);
                }
            }
        }
        if changed {
            self.swap(CertSet {
                entries,
                default: old.default,
            });
        }
    }

    /// Loads the certificate list of a reloaded config, every one or none (`Err`): `Ok(None)`
    /// when the list is the one in use. [`Certificates::install`] puts it in service.
    pub fn prepare(&self, configs: &[CertificateConfig]) -> Result<Option<NewCertificates>, TlsError> {
        let old = self.snapshot();
        if old.entries.len() == configs.len() && old.entries.iter().zip(configs).all(|(e, c)| e.config == *c) {
            return Ok(None);
        }
        load_set(configs, &self.provider).map(|set| Some(NewCertificates(set)))
    }

    /// Serves a prepared certificate list from the next handshake on.
    pub fn install(&self, new: NewCertificates) {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        log_set(&new.0);
        self.swap(new.0);
    }

    /// Compares the certificate files with what is loaded every couple of seconds until
    /// shutdown, reloading the ones that changed.
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
            self.reload_changed();
        }
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.snapshot().pick(hello.server_name()).cloned()
    }
}

impl CertSet {
    /// An exact host match first, then a `*.` wildcard one, then the default certificate.
    fn pick(&self, server_name: Option<&str>) -> Option<&Arc<CertifiedKey>> {
        let by_name = server_name.and_then(|name| {
            let exact = self
                .entries
                .iter()
                .find(|e| e.config.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)));
            exact.or_else(|| {
                self.entries
                    .iter()
                    .find(|e| e.config.hosts.iter().any(|h| wildcard_matches(h, name)))
            })
        });
        by_name
            .or_else(|| self.default.map(|i| &self.entries[i]))
            .map(|e| &e.certified)
    }
}

/// `*.example.com` matches `a.example.com`, not `example.com` nor `a.b.example.com`.
fn wildcard_matches(pattern: &str, name: &str) -> bool {
    let Some(suffix) = pattern.strip_prefix("*.") else {
        return false;
    };
    name.split_once('.')
        .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix))
}

fn load_set(configs: &[CertificateConfig], provider: &CryptoProvider) -> Result<CertSet, TlsError> {
    let mut entries = Vec::with_capacity(configs.len());
    for (i, config) in configs.iter().enumerate() {
        let files = Files::read(i, config);
        let certified = Arc::new(files.certified_key(provider)?);
        entries.push(Entry {
            config: config.clone(),
            certified,
            loaded: files.hash(),
            refused: None,
        });
    }
    let default = entries
        .iter()
        .position(|e| e.config.hosts.is_empty())
        .or(if entries.is_empty() { None } else { Some(0) });
    Ok(CertSet { entries, default })
}

fn log_set(set: &CertSet) {
    for (i, e) in set.entries.iter().enumerate() {
        let default = set.default == Some(i);
        info!(certificate = i, file = %e.config.cert_file.display(), hosts = ?e.config.hosts, default, "TLS certificate loaded");
    }
    let defaults = set.entries.iter().filter(|e| e.config.hosts.is_empty()).count();
    if defaults > 1 {
        warn!("{defaults} TLS certificates have no hosts; only the first one is ever served");
    }
}

/// The two files of one certificate, as read now.
struct Files {
    index: usize,
    cert_path: PathBuf,
    key_path: PathBuf,
    cert: std::io::Result<Vec<u8>>,
    key: std::io::Result<Vec<u8>>,
}

impl Files {
    fn read(index: usize, config: &CertificateConfig) -> Files {
        Files {
            index,
            cert_path: config.cert_file.clone(),
            key_path: config.key_file.clone(),
            cert: std::fs::read(&config.cert_file),
            key: std::fs::read(&config.key_file),
        }
    }

    /// What the files hold, read errors included (a file that vanishes is a change too).
    fn hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        for f in [&self.cert, &self.key] {
            f.as_ref().map_err(|e| e.kind()).hash(&mut h);
        }
        h.finish()
    }

    fn cert_key(&self) -> String {
        format!("tls.certificates[{}].cert_file", self.index)
    }

    fn key_key(&self) -> String {
        format!("tls.certificates[{}].key_file", self.index)
    }

    /// Parses the chain and the key and checks that they belong together.
    fn certified_key(&self, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
        let chain = parse_chain(self.cert.as_deref(), &self.cert_path, self.cert_key())?;
        let key = parse_key(self.key.as_deref(), &self.key_path, self.key_key())?;
        let signing_key = provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::Invalid {
                key: self.key_key(),
                path: self.key_path.clone(),
                message: format!("unsupported private key: {e}"),
            })?;
        let certified = CertifiedKey::new(chain, signing_key);
        match certified.keys_match() {
            Ok(()) => Ok(certified),
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => Err(TlsError::KeyMismatch {
                key: self.key_key(),
                key_path: self.key_path.clone(),
                cert_path: self.cert_path.clone(),
            }),
            // The key cannot tell its public half: nothing to compare, as rustls does.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
            Err(e) => Err(TlsError::Invalid {
                key: self.cert_key(),
                path: self.cert_path.clone(),
                message: format!("not a valid X.509 certificate: {e}"),
            }),
        }
    }
}

fn read_error(key: String, path: &Path, e: &std::io::Error) -> TlsError {
    TlsError::Read {
        key,
        path: path.to_path_buf(),
        source: std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// Every `CERTIFICATE` block of the file, leaf first.
fn parse_chain(
    bytes: Result<&[u8], &std::io::Error>,
    path: &Path,
    key: String,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = bytes.map_err(|e| read_error(key.clone(), path, e))?;
    let invalid = |message: String| TlsError::Invalid {
        key: key.clone(),
        path: path.to_path_buf(),
        message,
    };
    let chain = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("bad PEM: {}", pem_error(&e))))?;
    if chain.is_empty() {
        return Err(invalid("no PEM CERTIFICATE block".into()));
    }
    Ok(chain)
}

/// The first private key of the file: PKCS#8, RSA (PKCS#1) or EC (SEC1).
fn parse_key(
    bytes: Result<&[u8], &std::io::Error>,
    path: &Path,
    key: String,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = bytes.map_err(|e| read_error(key.clone(), path, e))?;
    let invalid = |message: &str| TlsError::Invalid {
        key: key.clone(),
        path: path.to_path_buf(),
        message: message.to_string(),
    };
    match PrivateKeyDer::from_pem_slice(bytes) {
        Ok(k) => Ok(k),
        Err(pem::Error::NoItemsFound) if contains(bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") => Err(invalid(
            "encrypted private keys are not supported; store the key unencrypted (as a Kubernetes TLS Secret does)",
        )),
        Err(pem::Error::NoItemsFound) => Err(invalid(
            "no PEM private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block)",
        )),
        Err(e) => Err(invalid(&format!("bad PEM: {}", pem_error(&e)))),
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A PEM error without echoing file contents (a key file's bytes are secret).
fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM block has no END line".into(),
        pem::Error::IllegalSectionStart { .. } => "malformed BEGIN line".into(),
        pem::Error::Base64Decode(_) => "invalid base64 in a PEM block".into(),
        pem::Error::Io(e) => e.to_string(),
        pem::Error::NoItemsFound => "no PEM block found".into(),
        _ => "unreadable PEM".into(),
    }
}

/// Completes a TLS handshake within `limit`. A failure is the client's problem (a plain
/// client on the TLS port, a scanner, an untrusted certificate), so it is logged at debug.
pub async fn handshake<IO>(
    acceptor: &TlsAcceptor,
    io: IO,
    listener: &'static str,
    peer: SocketAddr,
    limit: Duration,
) -> Option<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(limit, acceptor.accept(io)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            debug!(listener, %peer, "TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            debug!(listener, %peer, "TLS handshake not completed within {limit:?}");
            None
        }
    }
}

#[cfg(test)]
mod tests;
