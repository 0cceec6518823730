//! The URL a bench run plays, and what each protocol needs from it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{bail, Context, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Rtmp,
    HttpFlv,
    WsFlv,
    /// An `http://` URL of an `.m3u8` playlist: standard HLS (segments).
    Hls,
    /// The same with `--ll-hls`: LL-HLS parts and blocking playlist reload.
    LlHls,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rtmp => "rtmp",
            Protocol::HttpFlv => "http-flv",
            Protocol::WsFlv => "ws-flv",
            Protocol::Hls => "hls",
            Protocol::LlHls => "ll-hls",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub url: String,
    pub protocol: Protocol,
    pub addr: SocketAddr,
    /// `host[:port]` as written, for the HTTP Host header and the RTMP tcUrl.
    pub authority: String,
    /// Path and query, starting with '/'.
    pub path: String,
    /// RTMP: the application (first path segment) and the stream name (the rest, query
    /// included), and the tcUrl (`rtmp://authority/app`).
    pub app: String,
    pub stream: String,
    pub tc_url: String,
}

impl Target {
    /// Parses `rtmp://`, `http://` (HTTP-FLV) and `ws://` (WS-FLV) URLs. The host must be a
    /// loopback address: the benchmark runs next to the server it measures.
    pub fn parse(url: &str) -> Result<Target> {
        let (scheme, rest) = url
            .split_once("://")
            .context("URL needs a scheme: rtmp://, http:// or ws://")?;
        let (protocol, default_port) = match scheme.to_ascii_lowercase().as_str() {
            "rtmp" => (Protocol::Rtmp, 1935),
            "http" => (Protocol::HttpFlv, 80),
            "ws" => (Protocol::WsFlv, 80),
            other => bail!("unsupported scheme {other:?} (use rtmp://, http:// or ws://; TLS is not supported)"),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() => (h, p.parse::<u16>().with_context(|| format!("bad port in {url}"))?),
            _ => (authority, default_port),
        };
        let ip: IpAddr = match host {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => h
                .parse()
                .with_context(|| format!("host {h:?} must be a loopback IP address or localhost"))?,
        };
        if !ip.is_loopback() {
            bail!("host {host} is not a loopback address: ferrocast-bench only connects to 127.0.0.1");
        }
        let path_only = path.split('?').next().unwrap_or_default();
        let (app, stream) = match path.trim_start_matches('/').split_once('/') {
            Some((a, s)) => (a.to_string(), s.to_string()),
            None => (path.trim_start_matches('/').to_string(), String::new()),
        };
        if protocol == Protocol::Rtmp && (app.is_empty() || stream.is_empty()) {
            bail!("RTMP URL needs /app/stream, got {path:?}");
        }
        let protocol = if protocol == Protocol::HttpFlv && path_only.ends_with(".m3u8") {
            Protocol::Hls
        } else {
            protocol
        };
        if protocol != Protocol::Rtmp && path_only.len() <= 1 {
            bail!("URL needs a path such as /live/stream.flv");
        }
        Ok(Target {
            url: url.to_string(),
            protocol,
            addr: SocketAddr::new(ip, port),
            authority: authority.to_string(),
            path: path.to_string(),
            tc_url: format!("{scheme}://{authority}/{app}"),
            app,
            stream,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("rtmp://127.0.0.1:1935/live/bench?k=v").unwrap();
        assert_eq!(
            (t.protocol, t.addr.port(), t.app.as_str(), t.stream.as_str()),
            (Protocol::Rtmp, 1935, "live", "bench?k=v")
        );
        assert_eq!(t.tc_url, "rtmp://127.0.0.1:1935/live");
        let t = Target::parse("rtmp://localhost/live/a/b").unwrap();
        assert_eq!((t.addr.port(), t.stream.as_str()), (1935, "a/b"));
        let t = Target::parse("http://127.0.0.1:8000/live/bench.flv").unwrap();
        assert_eq!(
            (t.protocol, t.authority.as_str(), t.path.as_str()),
            (Protocol::HttpFlv, "127.0.0.1:8000", "/live/bench.flv")
        );
        let t = Target::parse("ws://127.0.0.1:8000/live/bench.flv").unwrap();
        assert_eq!(t.protocol, Protocol::WsFlv);
        let t = Target::parse("http://127.0.0.1:8000/live/bench/index.m3u8").unwrap();
        assert_eq!((t.protocol, t.path.as_str()), (Protocol::Hls, "/live/bench/index.m3u8"));
        for bad in [
            "127.0.0.1/live/x",
            "rtmps://127.0.0.1/live/x",
            "http://10.0.0.1:8000/live/x.flv",
            "rtmp://127.0.0.1/live",
            "http://127.0.0.1:80",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
