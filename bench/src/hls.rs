//! HLS players: follow a live playlist in real time and fetch what it lists, like a player.
//!
//! - Standard HLS: reload each media playlist (every target duration, half of it when nothing
//!   changed) and fetch every new segment, starting three segments from the live edge.
//! - LL-HLS (`--ll-hls`): blocking playlist reloads (`_HLS_msn`/`_HLS_part` of the next part)
//!   and every new part fetched as soon as it is listed, starting at the live edge.
//!
//! A multivariant playlist is followed into all its media playlists (video and the audio
//! group), each on its own keep-alive connection; the first one is the player's clock. A
//! simulated playback buffer counts stalls: playback starts once enough media is loaded and a
//! stall is counted each time the buffer ran dry before the next media arrived.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::http::{parse_response_head, MAX_HEAD};
use crate::stats::{PlayerStats, CONNECTED};
use crate::target::Target;

/// Bound on any response body (segments of a few Mbit/s are far below).
const MAX_BODY: usize = 64 << 20;
/// A request must be answered within this (blocking reloads are held up to 3 targets).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    addr: SocketAddr,
    authority: String,
    sock: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr, authority: &str) -> Conn {
        Conn {
            addr,
            authority: authority.to_string(),
            sock: None,
            buf: Vec::with_capacity(64 * 1024),
        }
    }

    /// GETs `path`; returns the status and the body. Reconnects once if a kept-alive
    /// connection was closed by the server.
    async fn get(&mut self, path: &str, stats: &PlayerStats) -> Result<(u16, Vec<u8>)> {
        for attempt in 0..2 {
            if self.sock.is_none() {
                let s = TcpStream::connect(self.addr).await.context("connect")?;
                s.set_nodelay(true).ok();
                self.sock = Some(s);
            }
            match timeout(REQUEST_TIMEOUT, self.exchange(path, stats)).await {
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) if attempt == 0 && self.buf.is_empty() => {
                    // Most likely an idle keep-alive connection the server closed.
                    self.sock = None;
                    let _ = e;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"),
            }
        }
        bail!("GET {path}: connection closed twice")
    }

    async fn exchange(&mut self, path: &str, stats: &PlayerStats) -> Result<(u16, Vec<u8>)> {
        let sock = self.sock.as_mut().expect("connected");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ferrocast-bench\r\n\r\n",
            self.authority
        );
        sock.write_all(req.as_bytes()).await.context("send request")?;
        self.buf.clear();
        let mut chunk = vec![0u8; 64 * 1024];
        let head = loop {
            let n = sock.read(&mut chunk).await.context("read response")?;
            if n == 0 {
                self.sock = None;
                bail!("server closed the connection");
            }
            stats.add_bytes(n);
            self.buf.extend_from_slice(&chunk[..n]);
            if let Some(h) = parse_response_head(&self.buf)? {
                break h;
            }
            if self.buf.len() > MAX_HEAD {
                bail!("response head too large");
            }
        };
        if head.chunked {
            bail!("chunked responses are not supported by the HLS player");
        }
        let head_text = String::from_utf8_lossy(&self.buf[..head.len]).to_ascii_lowercase();
        let len: usize = head_text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .context("response without Content-Length")?;
        if len > MAX_BODY {
            bail!("response body of {len} bytes");
        }
        let mut body = self.buf[head.len..].to_vec();
        while body.len() < len {
            let n = sock.read(&mut chunk).await.context("read body")?;
            if n == 0 {
                self.sock = None;
                bail!("server closed the connection in a body");
            }
            stats.add_bytes(n);
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(len);
        self.buf.clear();
        Ok((head.status, body))
    }
}

/// `uri` relative to the directory of `base` (both paths with queries).
fn resolve(base: &str, uri: &str) -> String {
    if uri.starts_with('/') {
        return uri.to_string();
    }
    let dir = base.split('?').next().unwrap_or(base);
    let dir = &dir[..dir.rfind('/').map_or(0, |i| i + 1)];
    let mut out: Vec<&str> = dir.split('/').collect();
    out.pop(); // the empty element after the last '/'
    for seg in uri.split('/') {
        match seg {
            ".." => {
                out.pop();
            }
            "." => {}
            s => out.push(s),
        }
    }
    out.join("/")
}

fn attr<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let i = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = &line[i..];
    Some(match rest.strip_prefix('"') {
        Some(q) => &q[..q.find('"')?],
        None => rest.split(',').next()?,
    })
}

/// What a media playlist says, as far as a player needs.
#[derive(Debug, Default)]
struct MediaPlaylist {
    target: f64,
    sequence: u64,
    /// (uri, seconds) of complete segments.
    segments: Vec<(String, f64)>,
    /// (uri, seconds) of every listed part, in order.
    parts: Vec<(String, f64)>,
    /// Parts listed after the last complete segment (the next part's index).
    open_parts: usize,
}

fn parse_media(text: &str) -> MediaPlaylist {
    let mut p = MediaPlaylist::default();
    let mut duration = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target = v.trim().parse().unwrap_or(2.0);
        } else if let Some(v) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.sequence = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("#EXTINF:") {
            duration = v.split(',').next().and_then(|d| d.trim().parse().ok());
        } else if line.starts_with("#EXT-X-PART:") {
            if let (Some(d), Some(u)) = (attr(line, "DURATION"), attr(line, "URI")) {
                p.parts.push((u.to_string(), d.parse().unwrap_or(0.0)));
                p.open_parts += 1;
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            p.segments
                .push((line.trim().to_string(), duration.take().unwrap_or(0.0)));
            p.open_parts = 0;
        }
    }
    p
}

/// Playback simulation of the player's clock playlist.
struct Playback {
    /// Media loaded so far, ms.
    loaded_ms: f64,
    /// When playback (re)started and the media position then.
    clock: Option<(Instant, f64)>,
    start_after_ms: f64,
}

impl Playback {
    fn add(&mut self, stats: &PlayerStats, ms: f64) {
        if let Some((since, at)) = self.clock {
            let position = at + since.elapsed().as_secs_f64() * 1000.0;
            if position > self.loaded_ms {
                // The buffer ran dry before this media arrived: a stall; resume from here.
                stats.stall();
                self.clock = Some((Instant::now(), self.loaded_ms));
            }
        }
        self.loaded_ms += ms;
        if self.clock.is_none() && self.loaded_ms >= self.start_after_ms {
            self.clock = Some((Instant::now(), 0.0));
        }
        stats.media(self.loaded_ms as u32);
    }
}

/// Runs one HLS player until it fails.
pub async fn play(target: &Target, stats: &PlayerStats, start: Instant, ll: bool) -> Result<()> {
    let mut conn = Conn::new(target.addr, &target.authority);
    let (status, body) = conn.get(&target.path, stats).await?;
    if status != 200 {
        bail!("{} answered {status}", target.path);
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    let mut media = Vec::new();
    if text.contains("#EXT-X-STREAM-INF") {
        let mut lines = text.lines();
        while let Some(l) = lines.next() {
            if l.starts_with("#EXT-X-STREAM-INF") {
                if let Some(u) = lines.next() {
                    media.insert(0, resolve(&target.path, u.trim()));
                }
            } else if l.starts_with("#EXT-X-MEDIA:") && l.contains("TYPE=AUDIO") {
                if let Some(u) = attr(l, "URI") {
                    media.push(resolve(&target.path, u));
                }
            }
        }
    } else {
        media.push(target.path.clone());
    }
    let Some(main) = media.first().cloned() else {
        bail!("the multivariant playlist lists no media playlist");
    };
    stats.set_state(CONNECTED);
    let other = media.get(1).cloned();
    let follow_other = async {
        match other {
            Some(u) => follow(target, &u, stats, ll, start, None).await,
            None => std::future::pending().await,
        }
    };
    let mut playback = Playback {
        loaded_ms: 0.0,
        clock: None,
        start_after_ms: if ll { 600.0 } else { 1.0 },
    };
    tokio::try_join!(
        follow(target, &main, stats, ll, start, Some(&mut playback)),
        follow_other
    )?;
    bail!("playlist following ended")
}

/// Follows one media playlist forever.
async fn follow(
    target: &Target,
    url: &str,
    stats: &PlayerStats,
    ll: bool,
    start: Instant,
    mut playback: Option<&mut Playback>,
) -> Result<()> {
    let mut conn = Conn::new(target.addr, &target.authority);
    let mut seen: VecDeque<String> = VecDeque::new();
    let mut first = true;
    let mut next: Option<(u64, usize)> = None;
    let sep = if url.contains('?') { '&' } else { '?' };
    loop {
        let path = match (ll, next) {
            (true, Some((msn, part))) => format!("{url}{sep}_HLS_msn={msn}&_HLS_part={part}"),
            _ => url.to_string(),
        };
        let reloaded = Instant::now();
        let (status, body) = conn.get(&path, stats).await?;
        if status != 200 {
            bail!("playlist answered {status}");
        }
        let pl = parse_media(&String::from_utf8_lossy(&body));
        let mut items: Vec<(String, f64)> = if ll {
            next = Some((pl.sequence + pl.segments.len() as u64, pl.open_parts));
            pl.parts.clone()
        } else {
            pl.segments.clone()
        };
        if first {
            // A standard player starts three segments from the live edge, an LL-HLS player at
            // the edge: what lies before is history, never fetched.
            let keep = if ll { 0 } else { 3 };
            let history = items.len().saturating_sub(keep);
            seen.extend(items.drain(..history).map(|(uri, _)| uri));
        }
        let mut new = 0;
        for (uri, secs) in items {
            if seen.contains(&uri) {
                continue;
            }
            seen.push_back(uri.clone());
            if seen.len() > 256 {
                seen.pop_front();
            }
            let (status, _) = conn.get(&resolve(url, &uri), stats).await?;
            if status != 200 {
                bail!("{uri} answered {status}");
            }
            new += 1;
            if let Some(p) = playback.as_deref_mut() {
                p.add(stats, secs * 1000.0);
                stats.video_frame();
                // "First keyframe": the first media a player has (segments and parts start
                // with one, or depend on one it already has).
                stats.keyframe(start.elapsed());
            }
        }
        first = false;
        if !ll {
            // RFC 8216: reload after the target duration, half of it when nothing changed.
            let wait = if new > 0 { pl.target } else { pl.target / 2.0 };
            let wait = Duration::from_secs_f64(wait.max(0.1)).saturating_sub(reloaded.elapsed());
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_uris_resolve_against_the_playlist() {
        assert_eq!(
            resolve("/live/a/index.m3u8?x=1", "video.m3u8?hs=2"),
            "/live/a/video.m3u8?hs=2"
        );
        assert_eq!(resolve("/live/a/video.m3u8", "../b/video.m3u8"), "/live/b/video.m3u8");
        assert_eq!(resolve("/hls/a.m3u8", "a-1.ts"), "/hls/a-1.ts");
        assert_eq!(resolve("/x/y.m3u8", "/abs.ts"), "/abs.ts");
    }

    #[test]
    fn media_playlists_give_segments_parts_and_the_next_part() {
        let p = parse_media(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n\
             #EXT-X-PART:DURATION=0.2,URI=\"v-7.0.m4s\",INDEPENDENT=YES\n#EXTINF:2.0,\nv-7.m4s\n\
             #EXT-X-PART:DURATION=0.2,URI=\"v-8.0.m4s\"\n#EXT-X-PART:DURATION=0.2,URI=\"v-8.1.m4s\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"v-8.2.m4s\"\n",
        );
        assert_eq!((p.target, p.sequence), (2.0, 7));
        assert_eq!(p.segments, vec![("v-7.m4s".to_string(), 2.0)]);
        assert_eq!(p.parts.len(), 3);
        assert_eq!((p.sequence + p.segments.len() as u64, p.open_parts), (8, 2));
    }
}
