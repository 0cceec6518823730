//! Relay URLs: parsing the sources and targets relays connect to, building on-demand and push
//! URLs from a prefix and a stream name, and redacting them for logs, events and the API
//! (stream keys sit in query strings, in user info, and often in a push target's last path
//! segment).

use std::fmt;

use super::RelayError;

/// The protocols a relay speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Rtmp,
    Rtmps,
    /// HTTP-FLV.
    Http,
    /// HTTP-FLV over TLS.
    Https,
    /// RTSP, RTP interleaved over the RTSP TCP connection.
    Rtsp,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Rtmp => "rtmp",
            Scheme::Rtmps => "rtmps",
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Rtsp => "rtsp",
        }
    }

    fn default_port(self) -> u16 {
        match self {
            Scheme::Rtmp => 1935,
            Scheme::Rtmps => 443,
            Scheme::Http => 80,
            Scheme::Https => 443,
            Scheme::Rtsp => 554,
        }
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Scheme::Rtmps | Scheme::Https)
    }
}

/// Longest relay URL accepted (config, API, or built from a player's request).
pub const MAX_URL_LEN: usize = 2048;

/// A parsed relay URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub scheme: Scheme,
    pub host: String,
    pub port: u16,
    /// Path without the leading `/` (percent-encoding kept as given).
    pub path: String,
    /// Query string without the `?` (empty when none).
    pub query: String,
    /// `user:password` for RTSP sources (empty when none).
    pub userinfo: String,
}

/// Debug never shows the raw URL: it would print keys into logs.
impl fmt::Debug for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayUrl({})", self.redacted(false))
    }
}

impl RelayUrl {
    pub fn parse(raw: &str) -> Result<RelayUrl, RelayError> {
        if raw.len() > MAX_URL_LEN {
            return Err(RelayError::Url(format!("longer than {MAX_URL_LEN} characters")));
        }
        let u = url::Url::parse(raw).map_err(|e| RelayError::Url(e.to_string()))?;
        let scheme = match u.scheme() {
            "rtmp" => Scheme::Rtmp,
            "rtmps" => Scheme::Rtmps,
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "rtsp" => Scheme::Rtsp,
            other => {
                return Err(RelayError::Url(format!(
                    "unsupported scheme {other:?} (use rtmp, rtmps, http, https or rtsp)"
                )))
            }
        };
        let host = match u.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(RelayError::Url("no host".into())),
        };
        let userinfo = match (u.username(), u.password()) {
            ("", None) => String::new(),
            (user, None) => user.to_string(),
            (user, Some(pass)) => format!("{user}:{pass}"),
        };
        Ok(RelayUrl {
            scheme,
            host,
            port: u.port().unwrap_or(scheme.default_port()),
            path: u.path().trim_start_matches('/').to_string(),
            query: u.query().unwrap_or("").to_string(),
            userinfo,
        })
    }

    /// `host:port` (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL back as text, keys included: only for the wire, never for logs.
    pub fn to_wire(&self) -> String {
        let user = if self.userinfo.is_empty() {
            String::new()
        } else {
            format!("{}@", self.userinfo)
        };
        let query = if self.query.is_empty() {
            String::new()
        } else {
            format!("?{}", self.query)
        };
        format!(
            "{}://{user}{}/{}{query}",
            self.scheme.as_str(),
            self.authority(),
            self.path
        )
    }

    /// The RTMP app (first path segment) and stream name (the rest) of an `rtmp(s)://` URL.
    pub fn rtmp_app_and_name(&self) -> Result<(String, String), RelayError> {
        match self.path.split_once('/') {
            Some((app, name)) if !app.is_empty() && !name.is_empty() => Ok((app.to_string(), name.to_string())),
            _ => Err(RelayError::Url("an RTMP URL needs rtmp://host[:port]/app/name".into())),
        }
    }

    /// For logs, events and the API: user info and query string replaced by `***`, and the
    /// last path segment too when `mask_last_segment` (a push target's stream key).
    pub fn redacted(&self, mask_last_segment: bool) -> String {
        let user = if self.userinfo.is_empty() { "" } else { "***@" };
        let path = match (mask_last_segment, self.path.rsplit_once('/')) {
            (true, Some((head, _))) => format!("{head}/***"),
            (true, None) if !self.path.is_empty() => "***".to_string(),
            _ => self.path.clone(),
        };
        let query = if self.query.is_empty() { "" } else { "?***" };
        format!("{}://{user}{}/{path}{query}", self.scheme.as_str(), self.authority())
    }
}

/// Redacts a URL given as text (for errors about a URL that did not parse too).
pub fn redact(raw: &str, mask_last_segment: bool) -> String {
    match RelayUrl::parse(raw) {
        Ok(u) => u.redacted(mask_last_segment),
        Err(_) => {
            let scheme = raw.split_once("://").map_or("?", |(s, _)| s);
            format!(
                "{}://***",
                scheme
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric())
                    .take(8)
                    .collect::<String>()
            )
        }
    }
}

/// The URL an on-demand pull of `name` reads: `{prefix}/{name}` (`.flv` appended for
/// HTTP-FLV), the player's query string merged with the prefix's.
pub fn pull_url(prefix: &str, name: &str, query: &str) -> Result<RelayUrl, RelayError> {
    let mut u = RelayUrl::parse(prefix)?;
    let file = match u.scheme {
        Scheme::Http | Scheme::Https => format!("{name}.flv"),
        _ => name.to_string(),
    };
    u.path = if u.path.is_empty() {
        file
    } else {
        format!("{}/{file}", u.path.trim_end_matches('/'))
    };
    u.query = merge_query(&u.query, query);
    Ok(u)
}

/// The URL a push of stream `name` writes to: placeholders `{name}` and `{key}` replaced, or
/// `{target}/{name}` when the target has neither. Returns the URL and whether its last path
/// segment is a stream key (to mask in logs).
pub fn push_url(target: &str, name: &str, key: Option<&str>) -> Result<(RelayUrl, bool), RelayError> {
    let has_name = target.contains("{name}");
    let has_key = target.contains("{key}");
    let filled = if has_name || has_key {
        let key = match (has_key, key) {
            (true, Some(k)) => k,
            (true, None) => return Err(RelayError::Url("`{key}` in the target but no key file".into())),
            (false, _) => "",
        };
        target.replace("{name}", name).replace("{key}", key)
    } else {
        let (base, query) = target.split_once('?').unwrap_or((target, ""));
        let q = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{}/{name}{q}", base.trim_end_matches('/'))
    };
    let u = RelayUrl::parse(&filled)?;
    // The last segment is our own public stream name unless a key or a literal went there.
    let last_is_name = u.path.rsplit('/').next() == Some(name) && !(has_key && key == Some(name));
    Ok((u, !last_is_name))
}

fn merge_query(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_string(),
        (_, true) => a.to_string(),
        _ => format!("{a}&{b}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_urls_split_into_app_and_name_with_the_query_kept() {
        let u = RelayUrl::parse("rtmp://origin.example:1940/live/cam?key=s3cret").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port),
            (Scheme::Rtmp, "origin.example", 1940)
        );
        assert_eq!(u.rtmp_app_and_name().unwrap(), ("live".into(), "cam".into()));
        assert_eq!(u.query, "key=s3cret");
        assert_eq!(u.to_wire(), "rtmp://origin.example:1940/live/cam?key=s3cret");
        assert_eq!(RelayUrl::parse("rtmps://h/a/b").unwrap().port, 443);
        assert!(RelayUrl::parse("rtmp://h/onlyapp")
            .unwrap()
            .rtmp_app_and_name()
            .is_err());
        assert!(RelayUrl::parse("ftp://h/a/b").is_err());
        assert!(RelayUrl::parse(&format!("rtmp://h/{}", "a".repeat(MAX_URL_LEN))).is_err());
    }

    #[test]
    fn redaction_hides_queries_user_info_and_push_keys() {
        let u = RelayUrl::parse("rtmp://a.rtmp.example/live2/abcd-efgh-ijkl?auth=xyz").unwrap();
        assert_eq!(u.redacted(true), "rtmp://a.rtmp.example:1935/live2/***?***");
        assert_eq!(u.redacted(false), "rtmp://a.rtmp.example:1935/live2/abcd-efgh-ijkl?***");
        let u = RelayUrl::parse("rtsp://admin:pa55@[::1]:8554/cam").unwrap();
        assert_eq!(u.redacted(false), "rtsp://***@[::1]:8554/cam");
        assert!(!format!("{u:?}").contains("pa55"));
        assert_eq!(redact("rtmp://h:1/a/k?x=1", true), "rtmp://h:1/a/***?***");
        assert_eq!(redact("rtmp:// bad url?key=1", false), "rtmp://***");
    }

    #[test]
    fn on_demand_urls_append_the_name_and_pass_the_query() {
        let u = pull_url("rtmp://origin:1935/live", "cam", "sign=1-ab").unwrap();
        assert_eq!(u.to_wire(), "rtmp://origin:1935/live/cam?sign=1-ab");
        let u = pull_url("http://origin:8000/live/?x=1", "cam", "sign=2").unwrap();
        assert_eq!(u.to_wire(), "http://origin:8000/live/cam.flv?x=1&sign=2");
    }

    #[test]
    fn push_urls_fill_placeholders_or_append_the_name() {
        let (u, masked) = push_url("rtmp://t:1935/app", "cam", None).unwrap();
        assert_eq!((u.to_wire().as_str(), masked), ("rtmp://t:1935/app/cam", false));
        let (u, masked) = push_url("rtmp://t/app?token=1", "cam", None).unwrap();
        assert_eq!((u.to_wire().as_str(), masked), ("rtmp://t:1935/app/cam?token=1", false));
        let (u, masked) = push_url("rtmp://yt/live2/{key}", "cam", Some("k-123")).unwrap();
        assert_eq!((u.to_wire().as_str(), masked), ("rtmp://yt:1935/live2/k-123", true));
        let (u, masked) = push_url("rtmp://svc/in/{name}?key={key}", "cam", Some("k")).unwrap();
        assert_eq!((u.to_wire().as_str(), masked), ("rtmp://svc:1935/in/cam?key=k", false));
        assert!(push_url("rtmp://yt/live2/{key}", "cam", None).is_err());
    }
}
