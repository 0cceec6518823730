//! TLS for the end-to-end tests: a throwaway CA (rcgen) issuing server certificates, their
//! files laid out like a mounted Kubernetes TLS Secret, and a rustls client trusting the CA
//! that speaks HTTPS over HTTP/1.1 or HTTP/2 and WSS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::http::{request_on, HttpResponse};
use crate::player::{FlvPlayer, H2Sender};

/// ALPN offers of a client.
pub const ALPN_H2: &[&[u8]] = &[b"h2", b"http/1.1"];
pub const ALPN_HTTP11: &[&[u8]] = &[b"http/1.1"];

/// A certificate authority that exists only for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate and its key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    /// The DER of the certificate, to compare with what a server presented.
    pub fn der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("rcgen writes valid PEM")
    }
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("no names");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("P-256 key");
        TestCa {
            issuer: CertifiedIssuer::self_signed(params, key).expect("self-signed CA"),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses) with a new P-256 key (PKCS#8).
    pub fn issue(&self, names: &[&str]) -> Issued {
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("valid names");
        let key = KeyPair::generate().expect("P-256 key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed by the CA");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// The CA certificate, PEM (what a client given an extra CA file trusts).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).expect("CA certificate");
        roots
    }
}

/// Certificate files laid out like a mounted Kubernetes TLS Secret: `tls.crt` and `tls.key`
/// are symlinks into `..data`, itself a symlink to a versioned directory that an update
/// replaces with one atomic rename (what the kubelet does).
#[derive(Debug)]
pub struct SecretDir {
    path: PathBuf,
    version: u32,
}

impl SecretDir {
    pub fn create(path: &Path, cert: &Issued) -> Result<SecretDir> {
        std::fs::create_dir_all(path)?;
        let mut dir = SecretDir {
            path: path.to_path_buf(),
            version: 0,
        };
        dir.update(&cert.cert_pem, &cert.key_pem)?;
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), path.join(f))?;
        }
        Ok(dir)
    }

    /// Writes new contents into a new version directory and swaps `..data` to it.
    pub fn update(&mut self, cert_pem: &str, key_pem: &str) -> Result<()> {
        self.version += 1;
        let name = format!("..2026_01_01_00_00_{:02}.{}", self.version, std::process::id());
        let version = self.path.join(&name);
        std::fs::create_dir(&version)?;
        std::fs::write(version.join("tls.crt"), cert_pem)?;
        std::fs::write(version.join("tls.key"), key_pem)?;
        let tmp = self.path.join("..data_tmp");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&name, &tmp)?;
        std::fs::rename(&tmp, self.path.join("..data")).context("swapping ..data")?;
        Ok(())
    }

    pub fn cert_file(&self) -> PathBuf {
        self.path.join("tls.crt")
    }

    pub fn key_file(&self) -> PathBuf {
        self.path.join("tls.key")
    }
}

/// What a client accepts from the server.
#[derive(Clone, Copy)]
pub enum Trust<'a> {
    /// Certificates issued by this CA for the name connected to.
    Ca(&'a TestCa),
    /// Any certificate (to see which one a server presents for a name it has none for).
    Anything,
}

/// Connects to `127.0.0.1:port` over TLS 1.2/1.3. `server_name` is sent as SNI and verified
/// against the certificate, unless it is an IP address (then no SNI is sent, as for clients
/// connecting by address).
pub async fn connect(port: u16, server_name: &str, trust: Trust<'_>, alpn: &[&[u8]]) -> Result<TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let mut config = match trust {
        Trust::Ca(ca) => builder.with_root_certificates(ca.roots()).with_no_client_auth(),
        Trust::Anything => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ferrocast_server::relay::tls::NoVerification(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(server_name.to_string()).with_context(|| format!("server name {server_name:?}"))?;
    let fut = async {
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS handshake with 127.0.0.1:{port} as {server_name:?}"))
    };
    tokio::time::timeout(Duration::from_secs(10), fut)
        .await
        .map_err(|_| anyhow!("TLS connect to port {port} took over 10 s"))?
}

/// A TLS client handshake on an open connection (e.g. after a PROXY protocol header was
/// written on it), trusting `ca`; bounded by 10 s.
pub async fn connect_on(
    tcp: TcpStream,
    server_name: &str,
    ca: &TestCa,
    alpn: &[&[u8]],
) -> Result<TlsStream<TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name = ServerName::try_from(server_name.to_string()).with_context(|| format!("server name {server_name:?}"))?;
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| anyhow!("TLS handshake took over 10 s"))?
    .context("TLS handshake")
}

/// The leaf certificate the server presented.
pub fn presented(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .expect("a server certificate")
}

/// The ALPN protocol the server chose.
pub fn alpn(s: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    s.get_ref().1.alpn_protocol().map(|p| p.to_vec())
}

/// `METHOD path` over HTTPS/1.1 to `server_name` (SNI and Host) on `port`, the CA trusted;
/// returns once the response head arrived (bounded).
pub async fn https_request(
    port: u16,
    server_name: &str,
    ca: &TestCa,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<HttpResponse> {
    let tls = connect(port, server_name, Trust::Ca(ca), ALPN_HTTP11).await?;
    if alpn(&tls).as_deref() != Some(b"http/1.1") {
        bail!(
            "ALPN chose {:?}, not http/1.1",
            alpn(&tls).map(|p| String::from_utf8_lossy(&p).into_owned())
        );
    }
    let authority = format!("{server_name}:{port}");
    tokio::time::timeout(
        Duration::from_secs(10),
        request_on(Box::new(tls), method, &authority, path, headers, body),
    )
    .await
    .map_err(|_| anyhow!("no response head for {method} {path} within 10 s"))?
}

/// An HTTPS-FLV player over HTTP/1.1; fails unless the answer is 200.
pub async fn https_flv_player(port: u16, server_name: &str, ca: &TestCa, path: &str) -> Result<FlvPlayer> {
    let started = Instant::now();
    let resp = https_request(port, server_name, ca, "GET", path, &[], None).await?;
    if resp.status != 200 {
        bail!(
            "GET https://{server_name}:{port}{path} answered {} ({:?})",
            resp.status,
            resp.headers
        );
    }
    Ok(FlvPlayer::from_http(
        &format!("https://{server_name}:{port}{path}"),
        resp,
        started,
    ))
}

/// `GET path` over HTTP/2 (ALPN `h2`, which the server must choose), the CA trusted: the
/// response head, and the body with the connection's request handle.
pub async fn h2_get(
    port: u16,
    server_name: &str,
    ca: &TestCa,
    path: &str,
) -> Result<(hyper::http::response::Parts, hyper::body::Incoming, H2Sender)> {
    h2_get_with_window(port, server_name, ca, path, None).await
}

/// [`h2_get`] with a fixed flow-control window per stream (and for the connection), e.g. a
/// small one so that a body nobody reads stops the server's sending soon.
pub async fn h2_get_with_window(
    port: u16,
    server_name: &str,
    ca: &TestCa,
    path: &str,
    window: Option<u32>,
) -> Result<(hyper::http::response::Parts, hyper::body::Incoming, H2Sender)> {
    let tls = connect(port, server_name, Trust::Ca(ca), ALPN_H2).await?;
    if alpn(&tls).as_deref() != Some(b"h2") {
        bail!(
            "ALPN chose {:?}, not h2",
            alpn(&tls).map(|p| String::from_utf8_lossy(&p).into_owned())
        );
    }
    let io = hyper_util::rt::TokioIo::new(tls);
    let mut builder = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new());
    if let Some(w) = window {
        builder
            .adaptive_window(false)
            .initial_stream_window_size(w)
            .initial_connection_window_size(w);
    }
    let (mut sender, conn) = builder.handshake(io).await.context("HTTP/2 handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = hyper::Request::get(format!("https://{server_name}:{port}{path}"))
        .body(http_body_util::Empty::<Bytes>::new())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| anyhow!("no HTTP/2 response head for {path} within 10 s"))??;
    if resp.version() != hyper::Version::HTTP_2 {
        bail!("answered over {:?}", resp.version());
    }
    let (parts, body) = resp.into_parts();
    Ok((parts, body, sender))
}

/// An HTTPS-FLV player over HTTP/2; fails unless the answer is 200.
pub async fn h2_flv_player(
    port: u16,
    server_name: &str,
    ca: &TestCa,
    path: &str,
) -> Result<(FlvPlayer, hyper::http::response::Parts)> {
    let started = Instant::now();
    let (parts, body, sender) = h2_get(port, server_name, ca, path).await?;
    if parts.status != 200 {
        bail!("GET {path} over HTTP/2 answered {}", parts.status);
    }
    Ok((
        FlvPlayer::from_h2(&format!("https://{server_name}:{port}{path}"), body, sender, started),
        parts,
    ))
}

/// A WSS-FLV player: a WebSocket upgrade over a TLS connection (HTTP/1.1) trusting the CA.
pub async fn wss_flv_player(port: u16, server_name: &str, ca: &TestCa, path: &str) -> Result<FlvPlayer> {
    let tls = connect(port, server_name, Trust::Ca(ca), ALPN_HTTP11).await?;
    FlvPlayer::ws_on(
        &format!("wss://{server_name}:{port}{path}"),
        Box::new(tls),
        Duration::from_secs(10),
    )
    .await
}
