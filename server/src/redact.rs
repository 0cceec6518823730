//! Redaction of credentials (stream keys, tokens, signatures, passwords) from everything the
//! server says to someone other than the client itself: log lines, webhook bodies and the
//! API's event stream.
//!
//! Two places carry them: query strings (`?sign=`, `?key=`, `?token=`), redacted by
//! [`Query`], and the stream name an encoder asks for, which is its stream key in key mode
//! (OBS puts the key in the name). A name is shown only once a policy has turned it into a
//! public stream name; before that it is a [`RequestedName`], shown by its length only.
//!
//! A third kind is a secret the server made itself (the generated admin password): it is
//! registered with [`register_secret`] once its single announcement is logged, and the log
//! writer passes every later line through [`scrub`], so a client that sends it where a name
//! is expected (a password typed into the user field) cannot make it reappear.

use std::borrow::Cow;
use std::fmt;
use std::sync::RwLock;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "REDACTED";

/// Query parameters whose values are credentials (compared case-insensitively, after
/// percent-decoding the name); names containing `token`, `secret` or `passw` count too.
pub const SECRET_PARAMS: &[&str] = &[
    "sign",
    "key",
    "token",
    "jwt",
    "auth",
    "sig",
    "signature",
    "pass",
    "pwd",
    "apikey",
    "api_key",
    "streamkey",
    "stream_key",
];

/// A query string safe to log or send to a webhook: the values of credential parameters
/// are replaced with [`REDACTED`], everything else is kept as the client sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Query(String);

impl Query {
    pub fn new(raw: &str) -> Query {
        let redacted: Vec<String> = raw
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, value)) if is_secret_param(name) && !value.is_empty() => format!("{name}={REDACTED}"),
                _ => pair.to_string(),
            })
            .collect();
        Query(redacted.join("&"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `url` with its query string redacted (see [`Query`]).
pub fn url(url: &str) -> String {
    match url.split_once('?') {
        Some((base, query)) => format!("{base}?{}", Query::new(query)),
        None => url.to_string(),
    }
}

fn is_secret_param(name: &str) -> bool {
    let name = percent_decode(name).to_ascii_lowercase();
    SECRET_PARAMS.contains(&name.as_str()) || ["token", "secret", "passw"].iter().any(|s| name.contains(s))
}

/// Decodes `%XX` escapes and `+`; invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Secrets the server generated; [`scrub`] removes them from text.
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Shortest secret accepted: a shorter one would scrub ordinary words out of log lines.
const MIN_SECRET_LEN: usize = 16;

/// From now on, [`scrub`] replaces `secret` with [`REDACTED`].
pub fn register_secret(secret: &str) {
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !secrets.iter().any(|s| s == secret) {
        secrets.push(secret.to_string());
    }
}

/// `text` with every registered secret replaced by [`REDACTED`] (borrowed when none occurs,
/// the common case: one substring search per secret).
pub fn scrub(text: &str) -> Cow<'_, str> {
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = Cow::Borrowed(text);
    for s in secrets.iter() {
        if out.contains(s.as_str()) {
            out = Cow::Owned(out.replace(s.as_str(), REDACTED));
        }
    }
    out
}

/// A log writer that scrubs registered secrets from every line it is given.
pub struct ScrubbingWriter<W>(pub W);

impl<W: std::io::Write> std::io::Write for ScrubbingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => match scrub(text) {
                Cow::Borrowed(_) => self.0.write_all(buf)?,
                Cow::Owned(clean) => self.0.write_all(clean.as_bytes())?,
            },
            // Log lines are UTF-8; anything else goes through as it is.
            Err(_) => self.0.write_all(buf)?,
        }
        // The whole buffer was taken: a partial count would make the caller resend a tail
        // of the original, not of the scrubbed text.
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A stream name as a client asked for it, before any policy vouched for it: it may be a
/// stream key, so only its length is shown.
#[derive(Clone, Copy)]
pub struct RequestedName<'a>(pub &'a str);

impl fmt::Display for RequestedName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<requested name of {} bytes>", self.0.len())
    }
}

impl fmt::Debug for RequestedName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_values_are_redacted_and_the_rest_kept() {
        let cases = [
            ("sign=1700000000-abcdef", "sign=REDACTED"),
            ("key=k-123&user=bob", "key=REDACTED&user=bob"),
            ("a=1&token=eyJ.x.y&b=2", "a=1&token=REDACTED&b=2"),
            ("Key=K&TOKEN=T", "Key=REDACTED&TOKEN=REDACTED"),
            ("%6Bey=k&%73ign=s", "%6Bey=REDACTED&%73ign=REDACTED"),
            (
                "access_token=t&client_secret=s&password=p",
                "access_token=REDACTED&client_secret=REDACTED&password=REDACTED",
            ),
            ("key=", "key="),
            ("keyframe=1&monkey=2", "keyframe=1&monkey=2"),
            ("", ""),
            ("flag&sign=x", "flag&sign=REDACTED"),
        ];
        for (raw, want) in cases {
            assert_eq!(Query::new(raw).as_str(), want, "{raw}");
        }
        assert_eq!(url("rtmp://h/live?key=abc&x=1"), "rtmp://h/live?key=REDACTED&x=1");
        assert_eq!(url("rtmp://h/live"), "rtmp://h/live");
        assert_eq!(
            serde_json::to_string(&Query::new("token=t")).unwrap(),
            "\"token=REDACTED\""
        );
    }

    #[test]
    fn requested_names_show_only_their_length() {
        let shown = format!("{} {:?}", RequestedName("k-secret-key"), RequestedName("k-secret-key"));
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("12 bytes"), "{shown}");
    }

    #[test]
    fn registered_secrets_are_scrubbed_from_text_and_log_writes() {
        let secret = "Gen3rated-Secret-Value-0123456789";
        assert_eq!(
            scrub(&format!("user={secret}")),
            format!("user={secret}"),
            "not yet registered"
        );
        register_secret(secret);
        register_secret("short");
        assert_eq!(scrub(&format!("a {secret} b {secret}")), "a REDACTED b REDACTED");
        assert_eq!(scrub("short words stay"), "short words stay");
        assert!(matches!(scrub("nothing here"), Cow::Borrowed(_)));
        let mut out = Vec::new();
        let line = format!("WARN API login failed user=\"{secret}\"\n");
        let n = std::io::Write::write(&mut ScrubbingWriter(&mut out), line.as_bytes()).unwrap();
        assert_eq!(n, line.len());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "WARN API login failed user=\"REDACTED\"\n"
        );
    }

    #[test]
    fn percent_decoding_is_total() {
        for s in ["%", "%4", "%zz", "a%41", "%E2%82%AC", "+"] {
            let _ = percent_decode(s);
        }
        assert_eq!(percent_decode("a%41+b"), "aA b");
    }
}
