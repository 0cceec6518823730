//! HLS/DASH sessions: the `hs` value added to every URL a playlist hands out.
//!
//! A player proves its right to play once, on the playlist request, with the app's play
//! policy (signed URL, key, token, address lists). The server then gives it a session token,
//! `{id}.{issued}.{mac}`, with the MAC (HMAC-SHA256) over the app, the stream, the id and
//! the issue time. Segment and part URLs carry that token instead of the credential, so no
//! publish key or secret is ever put in a URL, and a token cannot be replayed for another
//! stream. The id doubles as the viewer id that counts HLS viewers.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::hub::StreamKey;

/// How long a session token stays valid after it was issued. A player keeps using the URLs
/// of its first playlist for as long as it plays, so this bounds a viewing session.
pub const SESSION_TTL_SECS: u64 = 24 * 3600;

/// Bytes of the MAC kept in the token (128 bits).
const MAC_LEN: usize = 16;

/// The key that signs session tokens, kept as the MAC's keyed state: every segment and part
/// request checks a token, and cloning the state spares hashing the key's two blocks again.
#[derive(Clone)]
pub struct SessionKey(Hmac<Sha256>);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(..)")
    }
}

impl SessionKey {
    fn new(key: [u8; 32]) -> SessionKey {
        SessionKey(Hmac::<Sha256>::new_from_slice(&key).expect("any key length"))
    }

    pub fn random() -> SessionKey {
        SessionKey::new(rand::random())
    }

    /// A key from a secret file (every replica given the same file accepts the others' tokens).
    pub fn from_file(path: &Path) -> std::io::Result<SessionKey> {
        let text = std::fs::read(path)?;
        let secret = text.trim_ascii();
        if secret.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "the file is empty",
            ));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(b"ferrocast hls session").expect("any key length");
        mac.update(secret);
        Ok(SessionKey::new(mac.finalize().into_bytes().into()))
    }

    fn mac(&self, key: &StreamKey, id: u64, issued: u64) -> [u8; MAC_LEN] {
        let mut mac = self.0.clone();
        mac.update(key.app.as_bytes());
        mac.update(&[0]);
        mac.update(key.name.as_bytes());
        mac.update(&[0]);
        mac.update(&id.to_be_bytes());
        mac.update(&issued.to_be_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0; MAC_LEN];
        out.copy_from_slice(&full[..MAC_LEN]);
        out
    }

    /// A new session token for `key`.
    pub fn issue(&self, key: &StreamKey, now: SystemTime) -> (u64, String) {
        let id: u64 = rand::random();
        let issued = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mac = self.mac(key, id, issued);
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        (id, format!("{id:016x}.{issued:x}.{hex}"))
    }

    /// When a token [`SessionKey::verify`] accepted stops being valid (seconds since the epoch).
    pub fn expires(token: &str) -> Option<u64> {
        let issued = token.split('.').nth(1)?;
        u64::from_str_radix(issued, 16).ok()?.checked_add(SESSION_TTL_SECS)
    }

    /// The session id of a valid, unexpired token for `key`.
    pub fn verify(&self, key: &StreamKey, token: &str, now: SystemTime) -> Option<u64> {
        let mut it = token.splitn(3, '.');
        let (id, issued, mac) = (it.next()?, it.next()?, it.next()?);
        if id.len() != 16 || issued.len() > 16 || mac.len() != MAC_LEN * 2 {
            return None;
        }
        let id = u64::from_str_radix(id, 16).ok()?;
        let issued = u64::from_str_radix(issued, 16).ok()?;
        let mut given = [0u8; MAC_LEN];
        for (i, b) in given.iter_mut().enumerate() {
            *b = u8::from_str_radix(mac.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        let want = self.mac(key, id, issued);
        let same = want.iter().zip(given).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        (same && issued <= now + 60 && now < issued.saturating_add(SESSION_TTL_SECS)).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(name: &str) -> StreamKey {
        StreamKey::new("live", name).unwrap()
    }

    #[test]
    fn token_is_valid_for_its_stream_only() {
        let k = SessionKey::random();
        let now = SystemTime::now();
        let (id, token) = k.issue(&key("cam"), now);
        assert_eq!(k.verify(&key("cam"), &token, now), Some(id));
        let issued = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(SessionKey::expires(&token), Some(issued + SESSION_TTL_SECS));
        assert_eq!(
            k.verify(&key("other"), &token, now),
            None,
            "replayed for another stream"
        );
        assert_eq!(
            SessionKey::random().verify(&key("cam"), &token, now),
            None,
            "another key"
        );
    }

    #[test]
    fn tampered_or_expired_tokens_are_refused() {
        let k = SessionKey::random();
        let now = SystemTime::now();
        let (_, token) = k.issue(&key("cam"), now);
        let mut bad = token.clone().into_bytes();
        let last = bad.len() - 1;
        bad[last] = if bad[last] == b'0' { b'1' } else { b'0' };
        assert_eq!(k.verify(&key("cam"), std::str::from_utf8(&bad).unwrap(), now), None);
        let later = now + Duration::from_secs(SESSION_TTL_SECS + 1);
        assert_eq!(k.verify(&key("cam"), &token, later), None);
        for junk in ["", "x", "..", "0000000000000000.1.zz", &"a".repeat(500)] {
            assert_eq!(k.verify(&key("cam"), junk, now), None, "{junk}");
        }
    }

    #[test]
    fn file_keys_agree_across_replicas() {
        let dir = std::env::temp_dir().join(format!("hls-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("secret");
        std::fs::write(&f, "s3cret\n").unwrap();
        let (a, b) = (SessionKey::from_file(&f).unwrap(), SessionKey::from_file(&f).unwrap());
        let now = SystemTime::now();
        let (id, token) = a.issue(&key("cam"), now);
        assert_eq!(b.verify(&key("cam"), &token, now), Some(id));
        std::fs::write(&f, "").unwrap();
        assert!(SessionKey::from_file(&f).is_err());
    }
}
