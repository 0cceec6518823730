//! Live stream and session counts of the server fleet, read from each server pod's admin
//! port (`/metrics`: `ferrocast_streams_active{app}`, `ferrocast_sessions_active{app,protocol,role}`)
//! and summed per app. Polled on a timer with a short per-pod timeout, so a slow or failed
//! pod never holds up a reconcile; reconciles read the last totals.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts of one app across the fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppLive {
    pub streams: i64,
    pub publishers: i64,
    pub players: i64,
}

/// The fleet's totals from one poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Live {
    /// By RTMP app path.
    pub apps: BTreeMap<String, AppLive>,
    /// Pods that answered.
    pub pods_read: usize,
    /// Pods that did not answer in time or answered garbage.
    pub pods_failed: usize,
}

impl Live {
    /// The counts of `app`; zero when no pod reported it.
    pub fn app(&self, app: &str) -> AppLive {
        self.apps.get(app).copied().unwrap_or_default()
    }

    /// Adds one pod's `/metrics` text.
    pub fn add_exposition(&mut self, text: &str) {
        for sample in text.lines().filter_map(parse_sample) {
            let Some(app) = sample.label("app") else { continue };
            let value = sample.value.round() as i64;
            match sample.name {
                ferrocast_server::metrics::STREAMS_ACTIVE => {
                    self.apps.entry(app.to_string()).or_default().streams += value
                }
                ferrocast_server::metrics::SESSIONS_ACTIVE => {
                    let counts = self.apps.entry(app.to_string()).or_default();
                    match sample.label("role") {
                        Some("publisher") => counts.publishers += value,
                        Some("player") => counts.players += value,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }
}

/// One sample line of the Prometheus text format.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    labels: Vec<(&'a str, String)>,
    value: f64,
}

impl Sample<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| *k == name).map(|(_, v)| v.as_str())
    }
}

/// Parses `name{k="v",...} value [timestamp]`; comments, blank and malformed lines give `None`.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = body.find('=')?;
            let key = body[..eq].trim();
            let quoted = body[eq + 1..].trim_start().strip_prefix('"')?;
            let (value, after) = unquote(quoted)?;
            labels.push((key, value));
            body = after;
        }
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    value.is_finite().then_some(Sample { name, labels, value })
}

/// Reads a label value up to its closing quote (escapes `\"`, `\\`, `\n`); returns the value
/// and the text after the quote.
fn unquote(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match (escaped, c) {
            (true, 'n') => {
                value.push('\n');
                escaped = false;
            }
            (true, c) => {
                value.push(c);
                escaped = false;
            }
            (false, '\\') => escaped = true,
            (false, '"') => return Some((value, &text[i + 1..])),
            (false, c) => value.push(c),
        }
    }
    None
}

/// Largest `/metrics` body read from one pod.
const MAX_BODY: usize = 8 << 20;

/// Fetches `http://{addr}/metrics` with one deadline for connect, request and body.
pub async fn read_pod(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    tokio::time::timeout(timeout, async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\nAccept: text/plain\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        let mut buf = Vec::new();
        (&mut s)
            .take(MAX_BODY as u64 + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if buf.len() > MAX_BODY {
            return Err("response too large".into());
        }
        let text = String::from_utf8(buf).map_err(|_| "response is not UTF-8".to_string())?;
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP header end")?;
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if status != "200" {
            return Err(format!("HTTP status {status}"));
        }
        Ok(body.to_string())
    })
    .await
    .map_err(|_| "timed out".to_string())?
}

/// Polls every address concurrently and sums what answered.
pub async fn poll(addrs: &[SocketAddr], timeout: Duration) -> Live {
    let reads = futures::future::join_all(addrs.iter().map(|a| read_pod(*a, timeout))).await;
    let mut live = Live::default();
    for (addr, r) in addrs.iter().zip(reads) {
        match r {
            Ok(text) => {
                live.add_exposition(&text);
                live.pods_read += 1;
            }
            Err(e) => {
                tracing::debug!(%addr, "server pod metrics unavailable: {e}");
                live.pods_failed += 1;
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_parsed_with_labels_and_escapes() {
        let s = parse_sample(r#"ferrocast_sessions_active{app="live",protocol="rtmp",role="publisher"} 2"#).unwrap();
        assert_eq!(s.name, "ferrocast_sessions_active");
        assert_eq!(
            (s.label("app"), s.label("role"), s.value),
            (Some("live"), Some("publisher"), 2.0)
        );
        let s = parse_sample(r#"m{a="x\"y\\z\n", b = "2",} 1.5 1700000000"#).unwrap();
        assert_eq!(
            (s.label("a"), s.label("b"), s.value),
            (Some("x\"y\\z\n"), Some("2"), 1.5)
        );
        assert_eq!(parse_sample("plain 3").map(|s| s.value), Some(3.0));
        for bad in [
            "# HELP x y",
            "",
            "m{a=\"x} 1",
            "m{a=x} 1",
            "m{a=\"x\"}",
            "m NaN",
            "m{a=\"1\"} notanumber",
        ] {
            assert!(parse_sample(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn expositions_of_several_pods_are_summed_per_app() {
        let pod1 = "# HELP ferrocast_streams_active Streams\n# TYPE ferrocast_streams_active gauge\n\
            ferrocast_streams_active{app=\"live\"} 2\nferrocast_streams_active{app=\"vod\"} 0\n\
            ferrocast_sessions_active{app=\"live\",protocol=\"rtmp\",role=\"publisher\"} 2\n\
            ferrocast_sessions_active{app=\"live\",protocol=\"http_flv\",role=\"player\"} 5\n\
            ferrocast_sessions_active{app=\"live\",protocol=\"ws_flv\",role=\"player\"} 1\n\
            ferrocast_stream_players{app=\"live\",stream=\"cam\"} 6\n";
        let pod2 = "ferrocast_streams_active{app=\"live\"} 1\nferrocast_sessions_active{app=\"live\",protocol=\"rtmp\",role=\"player\"} 4\n";
        let mut live = Live::default();
        live.add_exposition(pod1);
        live.add_exposition(pod2);
        assert_eq!(
            live.app("live"),
            AppLive {
                streams: 3,
                publishers: 2,
                players: 10
            }
        );
        assert_eq!(live.app("vod"), AppLive::default());
        assert_eq!(live.app("unknown"), AppLive::default());
    }

    #[tokio::test]
    async fn polling_reads_answering_pods_and_skips_failing_ones() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let good = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut req = [0u8; 1024];
                let _ = s.read(&mut req).await;
                let body = "ferrocast_streams_active{app=\"live\"} 1\n";
                let _ = s
                    .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
                    .await;
            }
        });
        // A port nothing listens on (bound then released).
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let live = poll(&[good, closed], Duration::from_secs(2)).await;
        assert_eq!((live.pods_read, live.pods_failed), (1, 1));
        assert_eq!(live.app("live").streams, 1);
    }
}
