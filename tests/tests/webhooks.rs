//! Lifecycle webhooks against a real receiver: events in order with valid signatures, a
//! prePublish refusal, and a hanging receiver that never stalls a live stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrocast_tests::{unique_name, Publisher, TempDir, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One received webhook: event name, body and signature header.
#[derive(Debug, Clone)]
struct Hit {
    event: String,
    body: Vec<u8>,
    signature: String,
}

/// A tiny HTTP receiver on 127.0.0.1. `answer(event)` gives the status, or None to hang.
async fn receiver(answer: fn(&str) -> Option<u16>) -> (String, Arc<Mutex<Vec<Hit>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(Vec::new()));
    let store = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let Ok(n) = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut tmp))
                        .await
                        .unwrap_or(Ok(0))
                    else {
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
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() < end + 4 + len {
                        continue;
                    }
                    let body = buf[end + 4..end + 4 + len].to_vec();
                    let signature = head
                        .lines()
                        .find_map(|l| l.strip_prefix("x-ferrocast-signature:"))
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let event = v["event"].as_str().unwrap_or("").to_string();
                    store.lock().unwrap().push(Hit {
                        event: event.clone(),
                        body,
                        signature,
                    });
                    match answer(&event) {
                        Some(status) => {
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

fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let script = "import hmac,hashlib,sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())";
    let mut child = std::process::Command::new(ferrocast_tests::require_tool("python3"))
        .args(["-c", script, secret])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn publish_play_stop_cycle_is_reported_in_order_and_signed() {
    let (url, hits) = receiver(|_| Some(200)).await;
    let dir = TempDir::new("hooks").unwrap();
    std::fs::write(dir.join("hmac"), "hook-secret\n").unwrap();
    let server = TestServer::builder()
        .yaml(&format!(
            "webhooks: {{hooks: [{{url: {url:?}, secret_file: {:?}}}]}}",
            dir.join("hmac")
        ))
        .start()
        .await
        .unwrap();
    let name = unique_name("hooked");
    let mut publisher = Publisher::builder(&server.rtmp_url(&name))
        .duration_secs(10)
        .start()
        .unwrap();
    server.wait_live(&name, Duration::from_secs(8)).await.unwrap();
    let mut player = server.http_player(&name).await.unwrap();
    player.read_for(Duration::from_secs(1)).await.unwrap();
    drop(player);
    publisher.kill().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let hits = hits.lock().unwrap().clone();
    let publish_events: Vec<&str> = hits
        .iter()
        .filter(|h| String::from_utf8_lossy(&h.body).contains("\"action\":\"publish\"") || h.event.ends_with("Connect"))
        .map(|h| h.event.as_str())
        .collect();
    assert_eq!(
        publish_events
            .iter()
            .filter(|e| [
                "preConnect",
                "postConnect",
                "prePublish",
                "postPublish",
                "donePublish",
                "doneConnect"
            ]
            .contains(e))
            .copied()
            .collect::<Vec<_>>(),
        vec![
            "preConnect",
            "postConnect",
            "prePublish",
            "postPublish",
            "donePublish",
            "doneConnect"
        ],
        "{hits:?}"
    );
    for hit in &hits {
        assert_eq!(
            hit.signature,
            format!("sha256={}", hmac_hex("hook-secret", &hit.body)),
            "{}",
            hit.event
        );
        let v: serde_json::Value = serde_json::from_slice(&hit.body).unwrap();
        for field in [
            "id",
            "ip",
            "app",
            "name",
            "query",
            "protocol",
            "createtime",
            "inbytes",
            "outbytes",
            "action",
        ] {
            assert!(v.get(field).is_some(), "{} lacks {field}: {v}", hit.event);
        }
    }
    let done = hits.iter().find(|h| h.event == "donePublish").unwrap();
    let v: serde_json::Value = serde_json::from_slice(&done.body).unwrap();
    assert_eq!(v["name"], name.as_str());
    assert!(
        v["inbytes"].as_u64().unwrap() > 10_000 && v["endtime"].as_u64().is_some(),
        "{v}"
    );
}

#[tokio::test]
async fn pre_publish_refusal_keeps_ffmpeg_out() {
    let (url, hits) = receiver(|e| Some(if e == "prePublish" { 403 } else { 200 })).await;
    let server = TestServer::builder()
        .yaml(&format!("webhooks: {{hooks: [{{url: {url:?}}}]}}"))
        .start()
        .await
        .unwrap();
    let mut publisher = Publisher::builder(&server.rtmp_url(&unique_name("refused")))
        .duration_secs(6)
        .start()
        .unwrap();
    let status = publisher.wait_within(Duration::from_secs(4)).await;
    assert!(
        status.is_some_and(|s| !s.success()),
        "ffmpeg must fail to publish: {status:?}"
    );
    assert!(hits.lock().unwrap().iter().any(|h| h.event == "prePublish"));
}

#[tokio::test]
async fn hanging_receiver_never_stalls_a_live_stream() {
    // post*/done* hang forever; pre* answer at once.
    let (url, _hits) = receiver(|e| if e.starts_with("pre") { Some(200) } else { None }).await;
    let server = TestServer::builder()
        .yaml(&format!("webhooks: {{timeout_ms: 500, hooks: [{{url: {url:?}}}]}}"))
        .start()
        .await
        .unwrap();
    let name = unique_name("hang");
    let _publisher = Publisher::builder(&server.rtmp_url(&name))
        .duration_secs(10)
        .start()
        .unwrap();
    server.wait_live(&name, Duration::from_secs(8)).await.unwrap();
    let mut players = Vec::new();
    for _ in 0..3 {
        players.push(server.http_player(&name).await.unwrap());
    }
    for p in &mut players {
        let tags = p.read_for(Duration::from_secs(2)).await.unwrap();
        assert!(tags.iter().filter(|t| t.is_video()).count() > 30, "media keeps flowing");
    }
}

#[tokio::test]
async fn http_flv_players_raise_play_events_and_pre_play_can_refuse() {
    let (url, hits) = receiver(|e| Some(if e == "prePlay" { 403 } else { 200 })).await;
    let server = TestServer::builder()
        .yaml(&format!("webhooks: {{hooks: [{{url: {url:?}}}]}}"))
        .start()
        .await
        .unwrap();
    let name = unique_name("httphook");
    let resp = ferrocast_tests::http::get(&server.flv_url(&name), &[], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(resp.status, 403, "prePlay refusal");

    let (url, hits2) = receiver(|_| Some(200)).await;
    let server = TestServer::builder()
        .yaml(&format!("webhooks: {{hooks: [{{url: {url:?}}}]}}"))
        .start()
        .await
        .unwrap();
    let _publisher = Publisher::builder(&server.rtmp_url(&name))
        .duration_secs(8)
        .start()
        .unwrap();
    server.wait_live(&name, Duration::from_secs(8)).await.unwrap();
    let mut player = server.http_player(&name).await.unwrap();
    player.read_for(Duration::from_secs(1)).await.unwrap();
    drop(player);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // wait_live itself plays the stream briefly over HTTP-FLV, so there may be more than one
    // session; each must report the complete cycle, in order.
    let mut by_session: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    for h in hits2.lock().unwrap().iter() {
        let v: serde_json::Value = serde_json::from_slice(&h.body).unwrap();
        if h.event.ends_with("Play") && v["protocol"] == "http_flv" {
            by_session
                .entry(v["id"].as_u64().unwrap())
                .or_default()
                .push(h.event.clone());
        }
    }
    assert!(!by_session.is_empty());
    for (id, events) in &by_session {
        assert_eq!(
            events,
            &["prePlay", "postPlay", "donePlay"],
            "session {id}: {by_session:?}"
        );
    }
    assert!(hits.lock().unwrap().iter().any(|h| h.event == "prePlay"));
}
