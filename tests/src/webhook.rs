//! A webhook receiver for tests: a tiny HTTP/1.1 server on 127.0.0.1 that records every
//! request it gets (event name, body, signature) and answers as the test says.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One received webhook: event name, body and signature header.
#[derive(Debug, Clone)]
pub struct Hit {
    pub event: String,
    pub body: Vec<u8>,
    pub signature: String,
}

impl Hit {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

/// Starts a receiver: its URL and what it received. `answer(event)` gives the status to
/// answer with, or `None` to hang (30 s); each answer waits `delay` first.
pub async fn receiver(answer: fn(&str) -> Option<u16>, delay: Duration) -> (String, Arc<Mutex<Vec<Hit>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("receiver address"));
    let hits = Arc::new(Mutex::new(Vec::new()));
    let store = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 8192];
                loop {
                    let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut tmp)).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(name))
                            .map(|v| v.trim().to_string())
                    };
                    let len: usize = header("content-length:").and_then(|v| v.parse().ok()).unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body = buf[end + 4..end + 4 + len].to_vec();
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let event = v["event"].as_str().unwrap_or("").to_string();
                    store.lock().expect("hits lock").push(Hit {
                        event: event.clone(),
                        body,
                        signature: header("x-ferrocast-signature:").unwrap_or_default(),
                    });
                    match answer(&event) {
                        Some(status) => {
                            tokio::time::sleep(delay).await;
                            let resp = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                            let _ = sock.write_all(resp.as_bytes()).await;
                        }
                        None => tokio::time::sleep(Duration::from_secs(30)).await,
                    }
                    buf.drain(..end + 4 + len);
                }
            });
        }
    });
    (url, hits)
}
