//! Certificate loading, SNI selection and reloads, with certificates made by rcgen and real
//! rustls handshakes over in-memory pipes.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "ferrocast-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }
    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        Ca {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    /// An intermediate CA signed by this one.
    fn intermediate(&self, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        Ca {
            issuer: CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &self.issuer).unwrap(),
        }
    }

    /// A leaf certificate for `names` with `key` (PEM).
    fn leaf_for(&self, names: &[&str], key: &KeyPair) -> String {
        let params = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.signed_by(key, &self.issuer).unwrap().pem()
    }

    /// A leaf certificate and a new P-256 PKCS#8 key, both PEM.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        (self.leaf_for(names, &key), key.serialize_pem())
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.issuer.der().clone()).unwrap();
        roots
    }
}

fn cert(cert_file: PathBuf, key_file: PathBuf, hosts: &[&str]) -> CertificateConfig {
    CertificateConfig {
        cert_file,
        key_file,
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
    }
}

fn der_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn leaf_of(certs: &Certificates, sni: Option<&str>) -> Option<CertificateDer<'static>> {
    certs.snapshot().pick(sni).map(|c| c.cert[0].clone())
}

#[test]
fn loads_pkcs8_rsa_and_ec_keys_and_full_chains() {
    let dir = Dir::new();
    let root = Ca::new("root");
    let inter = root.intermediate("intermediate");
    let (leaf, key) = inter.leaf(&["chain.example.com"]);
    let chain = format!("{leaf}{}", inter.issuer.pem());
    let rsa = KeyPair::from_pem(include_str!("../testdata/jwt/rsa.key")).unwrap();
    let ec = KeyPair::from_pem(include_str!("../testdata/jwt/ec.key")).unwrap();
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let configs = vec![
        cert(
            dir.write("chain.crt", &chain),
            dir.write("chain.key", &key),
            &["chain.example.com"],
        ),
        cert(
            dir.write("rsa.crt", &root.leaf_for(&["rsa.example.com"], &rsa)),
            dir.write("rsa.key", include_str!("../testdata/tls/rsa-pkcs1.key")),
            &["rsa.example.com"],
        ),
        cert(
            dir.write("ec.crt", &root.leaf_for(&["ec.example.com"], &ec)),
            dir.write("ec.key", include_str!("../testdata/tls/ec-sec1.key")),
            &["ec.example.com"],
        ),
        cert(
            dir.write("ed.crt", &root.leaf_for(&["ed.example.com"], &ed)),
            dir.write("ed.key", &ed.serialize_pem()),
            &["ed.example.com"],
        ),
    ];
    let certs = Certificates::load(&configs).unwrap();
    let set = certs.snapshot();
    assert_eq!(
        set.entries[0].certified.cert.len(),
        2,
        "leaf and intermediate are both served"
    );
    assert_eq!(
        set.entries[0].certified.cert[1],
        *inter.issuer.der(),
        "chain order kept, leaf first"
    );
    assert_eq!(
        set.entries[1].certified.key.algorithm(),
        rustls::SignatureAlgorithm::RSA
    );
    assert_eq!(
        set.entries[2].certified.key.algorithm(),
        rustls::SignatureAlgorithm::ECDSA
    );
    assert_eq!(
        set.entries[3].certified.key.algorithm(),
        rustls::SignatureAlgorithm::ED25519
    );
}

#[test]
fn bad_files_name_the_config_key_and_the_file() {
    let dir = Dir::new();
    let ca = Ca::new("ca");
    let (good_cert, good_key) = ca.leaf(&["a.example.com"]);
    let (_, other_key) = ca.leaf(&["a.example.com"]);
    let good_cert = dir.write("good.crt", &good_cert);
    let good_key = dir.write("good.key", &good_key);
    let bad_der = "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n";
    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAECAwQFBgcICQ==\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let cases: Vec<(&str, CertificateConfig, &str, &str)> = vec![
        (
            "missing cert",
            cert(dir.0.join("nope.crt"), good_key.clone(), &[]),
            "tls.certificates[1].cert_file",
            "cannot read",
        ),
        (
            "missing key",
            cert(good_cert.clone(), dir.0.join("nope.key"), &[]),
            "tls.certificates[1].key_file",
            "cannot read",
        ),
        (
            "garbage cert",
            cert(dir.write("garbage.crt", "hello\n"), good_key.clone(), &[]),
            "tls.certificates[1].cert_file",
            "no PEM CERTIFICATE block",
        ),
        (
            "garbage key",
            cert(good_cert.clone(), dir.write("garbage.key", "hello\n"), &[]),
            "tls.certificates[1].key_file",
            "no PEM private key",
        ),
        (
            "not X.509",
            cert(dir.write("bad-der.crt", bad_der), good_key.clone(), &[]),
            "tls.certificates[1].cert_file",
            "not a valid X.509 certificate",
        ),
        (
            "encrypted key",
            cert(good_cert.clone(), dir.write("enc.key", encrypted), &[]),
            "tls.certificates[1].key_file",
            "encrypted private keys are not supported",
        ),
        (
            "other key",
            cert(good_cert.clone(), dir.write("other.key", &other_key), &[]),
            "tls.certificates[1].key_file",
            "does not match the certificate",
        ),
        (
            "broken PEM",
            cert(
                dir.write("cut.crt", "-----BEGIN CERTIFICATE-----\nAAEC\n"),
                good_key.clone(),
                &[],
            ),
            "tls.certificates[1].cert_file",
            "no END line",
        ),
    ];
    for (name, bad, key, message) in cases {
        let configs = vec![cert(good_cert.clone(), good_key.clone(), &[]), bad.clone()];
        let err = Certificates::load(&configs).unwrap_err().to_string();
        assert!(err.contains(&format!("`{key}`")), "{name}: {err}");
        assert!(err.contains(message), "{name}: {err}");
        let file = if key.ends_with("cert_file") {
            &bad.cert_file
        } else {
            &bad.key_file
        };
        assert!(
            err.contains(&file.display().to_string()),
            "{name}: the error names the file: {err}"
        );
    }
}

#[test]
fn sni_picks_exact_then_wildcard_then_default() {
    let dir = Dir::new();
    let ca = Ca::new("ca");
    let mut pems = Vec::new();
    let mut configs = Vec::new();
    for (i, hosts) in [
        &["a.example.com"][..],
        &["*.example.org", "exact.example.org"],
        &[],
        &["B.Example.com"],
    ]
    .iter()
    .enumerate()
    {
        let names: Vec<&str> = if hosts.is_empty() {
            vec!["default.example"]
        } else {
            hosts.to_vec()
        };
        let (c, k) = ca.leaf(&names);
        configs.push(cert(
            dir.write(&format!("{i}.crt"), &c),
            dir.write(&format!("{i}.key"), &k),
            hosts,
        ));
        pems.push(c);
    }
    let certs = Certificates::load(&configs).unwrap();
    let cases: &[(&str, Option<&str>, usize)] = &[
        ("exact", Some("a.example.com"), 0),
        ("case-insensitive", Some("b.example.com"), 3),
        ("wildcard", Some("cam1.example.org"), 1),
        ("exact beside a wildcard", Some("exact.example.org"), 1),
        ("wildcard is one label only", Some("a.b.example.org"), 2),
        ("wildcard does not match the bare domain", Some("example.org"), 2),
        ("unknown name", Some("other.example.net"), 2),
        ("no SNI", None, 2),
    ];
    for (what, sni, want) in cases {
        assert_eq!(leaf_of(&certs, *sni), Some(der_of(&pems[*want])), "{what}");
    }

    // Without a certificate lacking hosts, the first one is the default.
    let certs = Certificates::load(&configs[..2]).unwrap();
    assert_eq!(leaf_of(&certs, None), Some(der_of(&pems[0])));
}

/// Writes `cert` and `key` under a new `..<n>` directory and swaps the `..data` symlink to it,
/// the way the kubelet updates a mounted Secret.
fn k8s_swap(dir: &Dir, n: u32, cert: &str, key: &str) {
    let version = dir.0.join(format!("..{n}"));
    std::fs::create_dir_all(&version).unwrap();
    std::fs::write(version.join("tls.crt"), cert).unwrap();
    std::fs::write(version.join("tls.key"), key).unwrap();
    let tmp = dir.0.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(format!("..{n}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.0.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.0.join(f)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), dir.0.join(f)).unwrap();
        }
    }
}

#[test]
fn changed_files_reload_and_broken_ones_are_refused() {
    let dir = Dir::new();
    let ca = Ca::new("ca");
    let (c1, k1) = ca.leaf(&["live.example.com"]);
    k8s_swap(&dir, 1, &c1, &k1);
    let configs = vec![cert(dir.0.join("tls.crt"), dir.0.join("tls.key"), &[])];
    let certs = Certificates::load(&configs).unwrap();
    assert_eq!(leaf_of(&certs, None), Some(der_of(&c1)));

    certs.reload_changed();
    assert_eq!(
        leaf_of(&certs, None),
        Some(der_of(&c1)),
        "nothing changed, nothing reloaded"
    );

    let (c2, k2) = ca.leaf(&["live.example.com"]);
    k8s_swap(&dir, 2, &c2, &k2);
    certs.reload_changed();
    assert_eq!(
        leaf_of(&certs, None),
        Some(der_of(&c2)),
        "the renewed certificate is served"
    );

    // A new certificate with the old key: refused, the working pair stays.
    let (c3, _) = ca.leaf(&["live.example.com"]);
    k8s_swap(
        &dir,
        3,
        &c3,
        &k2.replace("PRIVATE KEY-----\n", "PRIVATE KEY-----\nAAAA"),
    );
    certs.reload_changed();
    assert_eq!(
        leaf_of(&certs, None),
        Some(der_of(&c2)),
        "a broken key keeps the old certificate"
    );
    assert!(certs.snapshot().entries[0].refused.is_some());
    k8s_swap(&dir, 4, &c3, &k2);
    certs.reload_changed();
    assert_eq!(
        leaf_of(&certs, None),
        Some(der_of(&c2)),
        "a key that does not match keeps the old certificate"
    );

    // Fixed files are picked up on the next poll.
    let (c5, k5) = ca.leaf(&["live.example.com"]);
    k8s_swap(&dir, 5, &c5, &k5);
    certs.reload_changed();
    assert_eq!(leaf_of(&certs, None), Some(der_of(&c5)));
    assert!(certs.snapshot().entries[0].refused.is_none());
}

#[test]
fn a_new_certificate_list_loads_whole_or_not_at_all() {
    let dir = Dir::new();
    let ca = Ca::new("ca");
    let (c1, k1) = ca.leaf(&["a.example.com"]);
    let (c2, k2) = ca.leaf(&["b.example.com"]);
    let a = cert(dir.write("a.crt", &c1), dir.write("a.key", &k1), &["a.example.com"]);
    let b = cert(dir.write("b.crt", &c2), dir.write("b.key", &k2), &["b.example.com"]);
    let certs = Certificates::load(std::slice::from_ref(&a)).unwrap();
    assert!(
        certs.prepare(std::slice::from_ref(&a)).unwrap().is_none(),
        "same list: nothing to do"
    );
    let broken = cert(dir.0.join("missing.crt"), dir.0.join("b.key"), &["c.example.com"]);
    let err = certs
        .prepare(&[a.clone(), broken])
        .err()
        .expect("a missing file fails the list");
    assert!(err.to_string().contains("tls.certificates[1].cert_file"), "{err}");
    assert_eq!(certs.configs(), vec![a.clone()], "a refused list changes nothing");
    let new = certs
        .prepare(&[a.clone(), b.clone()])
        .unwrap()
        .expect("a different list");
    assert_eq!(
        leaf_of(&certs, Some("b.example.com")),
        Some(der_of(&c1)),
        "not in service before install"
    );
    certs.install(new);
    assert_eq!(leaf_of(&certs, Some("b.example.com")), Some(der_of(&c2)));
}

/// Connects a rustls client trusting `ca` to a server using `certs` over an in-memory pipe;
/// returns the certificate the server presented and the negotiated ALPN protocol.
async fn connect(
    certs: &Arc<Certificates>,
    ca: &Ca,
    sni: &str,
    client_alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<(CertificateDer<'static>, Option<Vec<u8>>), String> {
    let acceptor = TlsAcceptor::from(certs.server_config(HTTPS_ALPN).unwrap());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(ca.roots())
        .with_no_client_auth();
    client.alpn_protocols = client_alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let (a, b) = tokio::io::duplex(64 * 1024);
    let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let server = tokio::spawn(async move {
        let mut s = handshake(&acceptor, b, "test", peer, Duration::from_secs(5)).await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.ok()?;
        s.write_all(&buf).await.ok()?;
        s.flush().await.ok()?;
        Some(())
    });
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let mut s = connector.connect(name, a).await.map_err(|e| e.to_string())?;
    s.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
    server.await.unwrap().expect("server side completed");
    let (_, conn) = s.get_ref();
    Ok((
        conn.peer_certificates().unwrap()[0].clone(),
        conn.alpn_protocol().map(|p| p.to_vec()),
    ))
}

#[tokio::test]
async fn handshakes_pick_by_sni_offer_alpn_and_speak_tls12_and_tls13() {
    let dir = Dir::new();
    let ca = Ca::new("ca");
    let (ca_pem, ka) = ca.leaf(&["a.example.com"]);
    let (cb_pem, kb) = ca.leaf(&["b.example.com"]);
    let certs = Certificates::load(&[
        cert(dir.write("a.crt", &ca_pem), dir.write("a.key", &ka), &["a.example.com"]),
        cert(dir.write("b.crt", &cb_pem), dir.write("b.key", &kb), &["b.example.com"]),
    ])
    .unwrap();
    let tls13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
    let tls12: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
    let (leaf, alpn) = connect(&certs, &ca, "b.example.com", &[b"h2", b"http/1.1"], tls13)
        .await
        .unwrap();
    assert_eq!(leaf, der_of(&cb_pem));
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    let (leaf, alpn) = connect(&certs, &ca, "a.example.com", &[b"http/1.1"], tls12)
        .await
        .unwrap();
    assert_eq!(leaf, der_of(&ca_pem));
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    let (_, alpn) = connect(&certs, &ca, "a.example.com", &[], tls13).await.unwrap();
    assert_eq!(alpn, None, "no ALPN offered, none chosen");
    let err = connect(&certs, &ca, "a.example.com", &[b"h3"], tls13)
        .await
        .unwrap_err();
    assert!(
        err.to_lowercase().contains("application protocol") || err.contains("NoApplicationProtocol"),
        "{err}"
    );
}
