//! What the server fleet runs, read from each ready server pod's admin port (`/metrics`):
//! live stream and session counts (`ferrocast_streams_active{app}`,
//! `ferrocast_sessions_active{app,protocol,role}`) summed per app, and the config revision each
//! pod has in service (`ferrocast_config_info{revision}`, `ferrocast_config_pending`) with the
//! TLS listeners it listens on (`ferrocast_tls_listening{listener}`), from which [`rollout`]
//! tells whether every ready pod runs the current config and which TLS listeners all serve. Polled on a timer
//! with a short per-pod timeout, so a slow or failed pod never holds up a reconcile;
//! reconciles read the last poll.

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
    /// Every ready pod polled, by name, with the config it runs (`None`: it did not answer).
    pub pods: BTreeMap<String, Option<PodConfig>>,
}

/// The config one server pod has in service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodConfig {
    /// `revision.id` of the config in service (empty: none).
    pub revision: String,
    /// A newer config on its disk is not in service (waiting for its files, or refused).
    pub pending: bool,
    /// The TLS listeners it listens on (`ferrocast_tls_listening`).
    pub tls: TlsListening,
}

/// Which TLS listeners listen: on one pod, or on every ready pod of the fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsListening {
    pub rtmps: bool,
    pub https: bool,
}

impl TlsListening {
    pub const BOTH: TlsListening = TlsListening {
        rtmps: true,
        https: true,
    };
}

/// Whether the fleet runs a given config revision, from the last poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rollout {
    /// No poll since the revision was written (or at all).
    Unknown,
    /// No server pod is ready.
    NoPods,
    /// Every ready pod runs the revision; `tls`: the TLS listeners every one of them listens
    /// on (a certificate in the config opens them, a port that cannot be bound leaves them
    /// closed), so status lists only TLS endpoints that every pod serves.
    Applied { pods: usize, tls: TlsListening },
    /// Some ready pods do not (yet): by name, what each runs (`None`: no answer).
    Pending {
        pods: usize,
        behind: BTreeMap<String, Option<PodConfig>>,
    },
}

/// The rollout of `revision` over the ready pods of `live`.
pub fn rollout(revision: &str, live: Option<&Live>) -> Rollout {
    let Some(live) = live else { return Rollout::Unknown };
    if live.pods.is_empty() {
        return Rollout::NoPods;
    }
    let behind: BTreeMap<String, Option<PodConfig>> = live
        .pods
        .iter()
        .filter(|(_, c)| c.as_ref().is_none_or(|c| c.revision != revision))
        .map(|(n, c)| (n.clone(), c.clone()))
        .collect();
    if behind.is_empty() {
        let mut tls = TlsListening::BOTH;
        for c in live.pods.values().flatten() {
            tls.rtmps &= c.tls.rtmps;
            tls.https &= c.tls.https;
        }
        Rollout::Applied {
            pods: live.pods.len(),
            tls,
        }
    } else {
        Rollout::Pending {
            pods: live.pods.len(),
            behind,
        }
    }
}

impl Live {
    /// The counts of `app`; zero when no pod reported it.
    pub fn app(&self, app: &str) -> AppLive {
        self.apps.get(app).copied().unwrap_or_default()
    }

    /// Adds one pod's `/metrics` text; returns the config it reports.
    pub fn add_exposition(&mut self, text: &str) -> PodConfig {
        let mut config = PodConfig::default();
        for sample in text.lines().filter_map(parse_sample) {
            match sample.name {
                ferrocast_server::metrics::CONFIG_INFO if sample.value == 1.0 => {
                    config.revision = sample.label("revision").unwrap_or_default().to_string();
                }
                ferrocast_server::metrics::CONFIG_PENDING => config.pending = sample.value == 1.0,
                ferrocast_server::metrics::TLS_LISTENING => match sample.label("listener") {
                    Some("rtmps") => config.tls.rtmps = sample.value == 1.0,
                    Some("https") => config.tls.https = sample.value == 1.0,
                    _ => {}
                },
                _ => {}
            }
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
        config
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

/// Polls every pod (name, admin address) concurrently and sums what answered.
pub async fn poll(pods: &[(String, SocketAddr)], timeout: Duration) -> Live {
    let reads = futures::future::join_all(pods.iter().map(|(_, a)| read_pod(*a, timeout))).await;
    let mut live = Live::default();
    for ((name, addr), r) in pods.iter().zip(reads) {
        match r {
            Ok(text) => {
                let config = live.add_exposition(&text);
                live.pods.insert(name.clone(), Some(config));
                live.pods_read += 1;
            }
            Err(e) => {
                tracing::debug!(pod = %name, %addr, "server pod metrics unavailable: {e}");
                live.pods.insert(name.clone(), None);
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
        let live = poll(
            &[("good".into(), good), ("closed".into(), closed)],
            Duration::from_secs(2),
        )
        .await;
        assert_eq!((live.pods_read, live.pods_failed), (1, 1));
        assert_eq!(live.app("live").streams, 1);
        assert_eq!(live.pods["closed"], None, "a pod that did not answer is known as such");
    }

    fn pod(revision: &str, pending: bool) -> Option<PodConfig> {
        Some(PodConfig {
            revision: revision.into(),
            pending,
            tls: TlsListening::default(),
        })
    }

    #[test]
    fn config_info_and_pending_are_read_from_the_exposition() {
        let mut live = Live::default();
        let text = "# TYPE ferrocast_config_info gauge\nferrocast_config_info{hash=\"ab\",revision=\"r2\"} 1\nferrocast_config_pending 1\n";
        assert_eq!(live.add_exposition(text), pod("r2", true).unwrap());
        assert_eq!(
            live.add_exposition("ferrocast_streams_active{app=\"live\"} 1\n"),
            PodConfig::default()
        );
    }

    #[test]
    fn rollout_is_applied_only_when_every_ready_pod_runs_the_revision() {
        let live = |pods: Vec<(&str, Option<PodConfig>)>| Live {
            pods: pods.into_iter().map(|(n, c)| (n.to_string(), c)).collect(),
            ..Live::default()
        };
        assert_eq!(rollout("r2", None), Rollout::Unknown, "never polled");
        assert_eq!(
            rollout("r2", Some(&live(vec![]))),
            Rollout::NoPods,
            "zero pods is not serving"
        );
        assert_eq!(
            rollout(
                "r2",
                Some(&live(vec![("a", pod("r2", false)), ("b", pod("r2", false))]))
            ),
            Rollout::Applied {
                pods: 2,
                tls: TlsListening::default()
            }
        );
        let pending = rollout(
            "r2",
            Some(&live(vec![
                ("a", pod("r2", false)),
                ("b", pod("r1", true)),
                ("c", None),
            ])),
        );
        let Rollout::Pending { pods, behind } = pending else {
            panic!("{pending:?}")
        };
        assert_eq!(pods, 3);
        assert_eq!(
            behind.keys().collect::<Vec<_>>(),
            ["b", "c"],
            "the stale pod and the silent one"
        );
    }

    #[test]
    fn tls_listeners_are_read_from_the_exposition() {
        let mut live = Live::default();
        let text = "ferrocast_config_info{hash=\"ab\",revision=\"r2\"} 1\n\
            ferrocast_tls_listening{listener=\"https\"} 1\nferrocast_tls_listening{listener=\"rtmps\"} 0\n";
        assert_eq!(
            live.add_exposition(text).tls,
            TlsListening {
                rtmps: false,
                https: true
            }
        );
    }

    #[test]
    fn tls_is_served_only_where_every_ready_pod_listens() {
        let with = |tls: TlsListening| {
            Some(PodConfig {
                revision: "r2".into(),
                pending: false,
                tls,
            })
        };
        let live = |pods: Vec<(&str, Option<PodConfig>)>| Live {
            pods: pods.into_iter().map(|(n, c)| (n.to_string(), c)).collect(),
            ..Live::default()
        };
        let https_only = TlsListening {
            rtmps: false,
            https: true,
        };
        assert_eq!(
            rollout(
                "r2",
                Some(&live(vec![
                    ("a", with(TlsListening::BOTH)),
                    ("b", with(TlsListening::BOTH))
                ]))
            ),
            Rollout::Applied {
                pods: 2,
                tls: TlsListening::BOTH
            }
        );
        // Pod b could not bind its RTMPS port on reload: RTMPS is served by no pod for sure.
        assert_eq!(
            rollout(
                "r2",
                Some(&live(vec![("a", with(TlsListening::BOTH)), ("b", with(https_only))]))
            ),
            Rollout::Applied {
                pods: 2,
                tls: https_only
            }
        );
    }
}
