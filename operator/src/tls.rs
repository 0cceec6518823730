//! TLS material for MediaApps: self-signed certificates generated with rcgen for apps without
//! a `secretName` (kept in an operator-owned Secret, renewed before expiry or when the hosts
//! change), and the checks that a certificate and key are usable before the fleet gets them.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Validity of a generated certificate.
pub const VALIDITY_SECS: i64 = 90 * 86_400;
/// A generated certificate is replaced when it has less than this left.
pub const RENEW_BEFORE_SECS: i64 = 30 * 86_400;
/// Annotation on a generated Secret: the certificate's notAfter, Unix seconds.
pub const NOT_AFTER_ANNOTATION: &str = "ferrocast.io/not-after";
/// Annotation on a generated Secret: the hosts it was made for, comma-separated.
pub const HOSTS_ANNOTATION: &str = "ferrocast.io/hosts";

/// A freshly generated certificate and key, PEM.
pub struct Generated {
    pub cert_pem: String,
    pub key_pem: String,
    pub not_after: i64,
}

impl std::fmt::Debug for Generated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key never reaches logs.
        f.debug_struct("Generated").field("not_after", &self.not_after).finish()
    }
}

/// Makes a self-signed ECDSA P-256 certificate for `hosts`, valid from an hour before `now`
/// (clock skew) for [`VALIDITY_SECS`].
pub fn generate(hosts: &[String], now: i64) -> Result<Generated, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec()).map_err(|e| format!("bad host name: {e}"))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        hosts.first().map_or("ferrocast", String::as_str),
    );
    dn.push(rcgen::DnType::OrganizationName, "Ferrocast self-signed");
    params.distinguished_name = dn;
    let at = |secs: i64| time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| e.to_string());
    params.not_before = at(now - 3600)?;
    let not_after = now + VALIDITY_SECS;
    params.not_after = at(not_after)?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot sign the certificate: {e}"))?;
    Ok(Generated {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        not_after,
    })
}

/// Why a generated certificate Secret must be (re)made, or `None` while it is good.
pub fn renewal_reason(secret: Option<&Secret>, hosts: &[String], now: i64) -> Option<&'static str> {
    let Some(secret) = secret else {
        return Some("no certificate yet");
    };
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    if annotations.get(HOSTS_ANNOTATION).map(String::as_str) != Some(hosts_annotation(hosts).as_str()) {
        return Some("the hosts changed");
    }
    let Some(not_after) = annotations
        .get(NOT_AFTER_ANNOTATION)
        .and_then(|v| v.parse::<i64>().ok())
    else {
        return Some("the expiry is unknown");
    };
    let data = secret.data.clone().unwrap_or_default();
    if !data.contains_key("tls.crt") || !data.contains_key("tls.key") {
        return Some("the certificate or key is missing");
    }
    if now + RENEW_BEFORE_SECS >= not_after {
        return Some("it expires soon");
    }
    None
}

/// When a generated certificate with this `not_after` is due for renewal (Unix seconds).
pub fn renew_at(secret: &Secret) -> Option<i64> {
    let v = secret.metadata.annotations.as_ref()?.get(NOT_AFTER_ANNOTATION)?;
    v.parse::<i64>().ok().map(|t| t - RENEW_BEFORE_SECS)
}

pub fn hosts_annotation(hosts: &[String]) -> String {
    let mut h = hosts.to_vec();
    h.sort();
    h.dedup();
    h.join(",")
}

/// The data and annotations of a generated certificate Secret.
pub fn secret_contents(g: &Generated, hosts: &[String]) -> (BTreeMap<String, ByteString>, BTreeMap<String, String>) {
    let data = BTreeMap::from([
        ("tls.crt".to_string(), ByteString(g.cert_pem.clone().into_bytes())),
        ("tls.key".to_string(), ByteString(g.key_pem.clone().into_bytes())),
    ]);
    let annotations = BTreeMap::from([
        (NOT_AFTER_ANNOTATION.to_string(), g.not_after.to_string()),
        (HOSTS_ANNOTATION.to_string(), hosts_annotation(hosts)),
    ]);
    (data, annotations)
}

/// One DER item: (tag, content, what follows). Lengths are bounded by the input.
fn der_item(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (
            rest[..n].iter().fold(0usize, |l, b| (l << 8) | usize::from(*b)),
            &rest[n..],
        )
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Days from 1970-01-01 to a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A DER UTCTime (0x17) or GeneralizedTime (0x18) `...Z` as Unix seconds.
fn der_time(tag: u8, content: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(content).ok()?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = s.get(0..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, s.get(2..)?)
        }
        0x18 => (s.get(0..4)?.parse().ok()?, s.get(4..)?),
        _ => return None,
    };
    if rest.len() != 11 || !rest.ends_with('Z') || !rest[..10].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| rest[i..i + 2].parse::<i64>().ok();
    let (mo, d, h, mi, se) = (n(0)?, n(2)?, n(4)?, n(6)?, n(8)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    Some(days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// The notAfter of a DER certificate, Unix seconds (`None` when it cannot be read).
pub fn not_after(cert_der: &[u8]) -> Option<i64> {
    let (0x30, cert, _) = der_item(cert_der)? else {
        return None;
    };
    let (0x30, tbs, _) = der_item(cert)? else { return None };
    let mut rest = tbs;
    let (tag, _, after_version) = der_item(rest)?;
    if tag == 0xa0 {
        rest = after_version;
    }
    // serialNumber, signature, issuer
    for _ in 0..3 {
        rest = der_item(rest)?.2;
    }
    let (0x30, validity, _) = der_item(rest)? else {
        return None;
    };
    let (_, _, after_not_before) = der_item(validity)?;
    let (tag, time, _) = der_item(after_not_before)?;
    der_time(tag, time)
}

/// Checks that `cert_pem` holds a certificate chain and `key_pem` its private key, in a form
/// the server's rustls accepts, and that the leaf covers each of `hosts`; returns the leaf's
/// notAfter (Unix seconds) when it can be read. The error says what is wrong without quoting
/// the material.
pub fn check_pair(cert_pem: &[u8], key_pem: &[u8], hosts: &[String]) -> Result<Option<i64>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|_| "tls.crt is not PEM".to_string())?;
    if certs.is_empty() {
        return Err("tls.crt holds no certificate".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| "tls.key holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_string())?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|_| "tls.key is not a supported RSA, ECDSA or Ed25519 key".to_string())?;
    let leaf = webpki::EndEntityCert::try_from(&certs[0])
        .map_err(|_| "tls.crt's first certificate cannot be parsed".to_string())?;
    match rustls::sign::CertifiedKey::new(certs.clone(), Arc::clone(&signer)).keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => return Err("tls.key does not belong to the certificate in tls.crt".into()),
    }
    for host in hosts {
        // A wildcard pattern is checked with a name it must cover.
        let probe = match host.strip_prefix("*.") {
            Some(rest) => format!("ferrocast-probe.{rest}"),
            None => host.clone(),
        };
        let name = ServerName::try_from(probe.as_str()).map_err(|_| format!("{host:?} is not a DNS name"))?;
        if leaf.verify_is_valid_for_subject_name(&name).is_err() {
            return Err(format!("the certificate does not cover host {host}"));
        }
    }
    Ok(not_after(&certs[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_after_is_read_from_the_certificate() {
        let g = generate(&["live.example.com".to_string()], 1_800_000_000).unwrap();
        let der = CertificateDer::from_pem_slice(g.cert_pem.as_bytes()).unwrap();
        assert_eq!(not_after(&der), Some(g.not_after));
        assert_eq!(
            check_pair(g.cert_pem.as_bytes(), g.key_pem.as_bytes(), &[]),
            Ok(Some(g.not_after))
        );
        assert_eq!(
            der_time(0x17, b"491231235959Z"),
            Some(2_524_607_999),
            "UTCTime 49 is 2049"
        );
        assert_eq!(der_time(0x18, b"20500101000000Z"), Some(2_524_608_000));
        assert_eq!(
            not_after(&der[..der.len() / 2]),
            None,
            "truncated input is refused, not panicked on"
        );
        assert_eq!(not_after(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }

    fn hosts(h: &[&str]) -> Vec<String> {
        h.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn generated_certificate_is_a_valid_pair_for_its_hosts() {
        let h = hosts(&["live.example.com", "*.cdn.example.com"]);
        let g = generate(&h, 1_800_000_000).unwrap();
        assert_eq!(g.not_after, 1_800_000_000 + VALIDITY_SECS);
        check_pair(g.cert_pem.as_bytes(), g.key_pem.as_bytes(), &h).unwrap();
        let err = check_pair(
            g.cert_pem.as_bytes(),
            g.key_pem.as_bytes(),
            &hosts(&["other.example.org"]),
        )
        .unwrap_err();
        assert!(err.contains("does not cover host other.example.org"), "{err}");
        assert!(!format!("{g:?}").contains("PRIVATE"), "Debug hides the key");
    }

    #[test]
    fn mismatched_or_broken_material_is_refused() {
        let h = hosts(&["a.example.com"]);
        let a = generate(&h, 1_800_000_000).unwrap();
        let b = generate(&h, 1_800_000_000).unwrap();
        let cases: Vec<(&str, &[u8], &[u8], &str)> = vec![
            (
                "key of another certificate",
                a.cert_pem.as_bytes(),
                b.key_pem.as_bytes(),
                "does not belong",
            ),
            ("no certificate", b"", a.key_pem.as_bytes(), "no certificate"),
            ("no key", a.cert_pem.as_bytes(), b"nothing", "no PEM private key"),
            (
                "certificate and key swapped",
                a.key_pem.as_bytes(),
                a.cert_pem.as_bytes(),
                "no certificate",
            ),
        ];
        for (name, cert, key, want) in cases {
            let err = check_pair(cert, key, &h).unwrap_err();
            assert!(err.contains(want), "{name}: {err}");
            assert!(!err.contains("BEGIN"), "{name}: no material in the message");
        }
    }

    #[test]
    fn renewal_when_missing_expiring_or_hosts_changed() {
        let h = hosts(&["live.example.com"]);
        let now = 1_800_000_000;
        let g = generate(&h, now).unwrap();
        let (data, annotations) = secret_contents(&g, &h);
        let mut s = Secret {
            data: Some(data),
            ..Default::default()
        };
        s.metadata.annotations = Some(annotations);
        assert_eq!(renewal_reason(None, &h, now), Some("no certificate yet"));
        assert_eq!(renewal_reason(Some(&s), &h, now), None);
        assert_eq!(renewal_reason(Some(&s), &h, g.not_after - RENEW_BEFORE_SECS - 1), None);
        assert_eq!(
            renewal_reason(Some(&s), &h, g.not_after - RENEW_BEFORE_SECS),
            Some("it expires soon")
        );
        assert_eq!(
            renewal_reason(Some(&s), &hosts(&["new.example.com"]), now),
            Some("the hosts changed")
        );
        assert_eq!(renew_at(&s), Some(g.not_after - RENEW_BEFORE_SECS));
        s.data.as_mut().unwrap().remove("tls.key");
        assert_eq!(
            renewal_reason(Some(&s), &h, now),
            Some("the certificate or key is missing")
        );
    }
}
