//! TLS for outgoing relay connections (RTMPS, HTTPS-FLV): certificates verified against the
//! system trust store (rustls-native-certs: the roots the image's `ca-certificates` carries,
//! which operators already extend for private CAs), plus an extra CA file per relay, or no
//! verification at all for a relay configured with `tls_verify: false`.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::RelayError;

/// The system roots, loaded once (reading the store takes milliseconds, relays reconnect often).
fn system_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        if let Some(e) = found.errors.first() {
            tracing::debug!("some system CA certificates could not be read: {e}");
        }
        found.certs
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client config for one relay: system roots plus `ca_file`, or no verification.
pub fn client_config(ca_file: Option<&Path>, verify: bool, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, RelayError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| RelayError::Tls(e.to_string()))?;
    let mut config = if verify {
        let mut roots = RootCertStore::empty();
        let (_, _ignored) = roots.add_parsable_certificates(system_roots().iter().cloned());
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|e| RelayError::Tls(format!("CA file {}: {e}", path.display())))?;
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| RelayError::Tls(format!("CA file {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(RelayError::Tls(format!("CA file {}: no certificate", path.display())));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| RelayError::Tls(format!("CA file {}: {e}", path.display())))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Wraps `tcp` in TLS for `host`.
pub async fn connect(
    tcp: TcpStream,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, RelayError> {
    let name = ServerName::try_from(host.to_string()).map_err(|e| RelayError::Tls(e.to_string()))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| RelayError::Tls(e.to_string()))
}

/// A byte stream a relay talks over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// `tls_verify: false`: accepts any certificate, still checking the handshake signatures
/// (also what the tests' clients use against self-signed test servers).
#[derive(Debug)]
pub struct NoVerification(pub Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
