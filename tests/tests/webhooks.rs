//! Lifecycle webhooks against a real receiver: events in order with valid signatures, a
//! prePublish refusal, a hanging receiver that never stalls a live stream nor delays another
//! receiver, done* events delivered during a shutdown, and credentials redacted everywhere.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrocast_tests::webhook::{self, Hit};
use ferrocast_tests::{publish_accepted, unique_name, FlvPlayer, Publisher, TempDir, TestServer};

/// A receiver on 127.0.0.1. `answer(event)` gives the status, or None to hang.
async fn receiver(answer: fn(&str) -> Option<u16>) -> (String, Arc<Mutex<Vec<Hit>>>) {
    webhook::receiver(answer, Duration::ZERO).await
}

/// [`receiver`] that takes `delay` before each answer.
async fn slow_receiver(answer: fn(&str) -> Option<u16>, delay: Duration) -> (String, Arc<Mutex<Vec<Hit>>>) {
    webhook::receiver(answer, delay).await
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

/// The events a receiver got so far, by name.
fn received(hits: &Mutex<Vec<Hit>>, event: &str) -> usize {
    hits.lock().unwrap().iter().filter(|h| h.event == event).count()
}

#[tokio::test]
async fn a_dead_receiver_neither_delays_nor_drops_a_healthy_receivers_events() {
    let (healthy, hits) = receiver(|_| Some(200)).await;
    // Answers no post*/done* event: each costs 3 attempts of 2 s.
    let (dead, _) = receiver(|_| None).await;
    let server = TestServer::builder()
        .yaml(&format!(
            "webhooks:\n  timeout_ms: 2000\n  max_attempts: 3\n  queue_size: 4\n  hooks:\n    - {{url: {dead:?}, \
             events: [postConnect, doneConnect, postPublish, donePublish, postPlay, donePlay]}}\n    - {{url: {healthy:?}}}"
        ))
        .start()
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(publish_accepted(&server.rtmp_url(&unique_name("starved"))).await);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while received(&hits, "doneConnect") < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for event in ["postConnect", "postPublish", "donePublish", "doneConnect"] {
        assert_eq!(received(&hits, event), 3, "{event}: {:?}", hits.lock().unwrap());
    }
    let (_, metrics) = ferrocast_tests::http::get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
        .await
        .unwrap();
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ferrocast_webhook_deliveries_dropped_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(
        dropped >= 1.0,
        "the dead receiver's full queue drops and counts:\n{metrics}"
    );
}

#[tokio::test]
async fn done_events_queued_at_sigterm_are_delivered_while_readyz_answers_503() {
    // Each post*/done* delivery takes 700 ms, so several are still queued when the streams end.
    let (url, hits) = slow_receiver(|_| Some(200), Duration::from_millis(700)).await;
    let mut server = TestServer::builder()
        .yaml(&format!(
            "webhooks: {{hooks: [{{url: {url:?}, events: [donePublish, doneConnect, donePlay]}}]}}\nhub: {{shutdown_grace_secs: 20}}"
        ))
        .start()
        .await
        .unwrap();
    let name = unique_name("drain");
    let _publisher = Publisher::builder(&server.rtmp_url(&name))
        .duration_secs(30)
        .start()
        .unwrap();
    server.wait_live(&name, Duration::from_secs(8)).await.unwrap();
    let mut players = Vec::new();
    for _ in 0..3 {
        let mut p = server.http_player(&name).await.unwrap();
        p.read_for(Duration::from_millis(300)).await.unwrap();
        players.push(p);
    }
    // wait_live's own player ended before: its donePlay is delivered first.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while received(&hits, "donePlay") < 1 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = hits.lock().unwrap().len();
    server.sigterm();
    let readyz = server.admin_url("/readyz");
    let mut answers = Vec::new();
    let status = loop {
        if let Some(st) = server.wait_exit(Duration::from_millis(100)).await {
            break st;
        }
        match ferrocast_tests::http::get_text(&readyz, Duration::from_secs(2)).await {
            Ok((code, _)) => answers.push(code.to_string()),
            Err(e) => answers.push(format!("{e:#}")),
        }
        assert!(answers.len() < 400, "server still running 40 s after SIGTERM");
    };
    assert!(status.success(), "{status}\n{}", server.logs());
    assert!(
        answers.first().map(String::as_str) == Some("503") && !answers.iter().any(|a| a == "200"),
        "/readyz during the drain: {answers:?}"
    );
    let after: Vec<String> = hits.lock().unwrap()[before..].iter().map(|h| h.event.clone()).collect();
    let count = |e: &str| after.iter().filter(|x| *x == e).count();
    assert_eq!(
        (count("donePlay"), count("donePublish"), count("doneConnect")),
        (3, 1, 1),
        "delivered after SIGTERM: {after:?}\n{}",
        server.logs()
    );
}

#[tokio::test]
async fn stream_keys_tokens_and_signatures_never_reach_logs_webhooks_or_events() {
    use ferrocast_tests::http::{request, BodyEvent};
    let (url, hits) = receiver(|_| Some(200)).await;
    let dir = TempDir::new("redact").unwrap();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(dir.join("keys/cam"), "k-SECRET-cam-1234\n").unwrap();
    std::fs::write(dir.join("admin"), ferrocast_tests::argon2_phc("pw")).unwrap();
    let server = TestServer::builder()
        .log_level("debug")
        .app_yaml(&format!("publish: {{auth: key, keys_dir: {:?}}}", dir.join("keys")))
        .yaml(&format!(
            "webhooks: {{hooks: [{{url: {url:?}}}]}}\napi: {{users_dir: {:?}}}",
            dir.path()
        ))
        .start()
        .await
        .unwrap();
    let api = |path: &str| format!("http://127.0.0.1:{}/api/v1{path}", server.http_port);
    let mut resp = request(
        "POST",
        &api("/login"),
        &[("Content-Type", "application/json")],
        Some(br#"{"username":"admin","password":"pw"}"#),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let (body, _) = resp.read_to_end(Duration::from_secs(10)).await.unwrap();
    let token = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["data"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let mut sse = request(
        "GET",
        &api(&format!("/events?token={token}")),
        &[],
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();

    // OBS style: the key is the stream name, with a token in the query for good measure.
    let _publisher = Publisher::builder(&server.rtmp_url("k-SECRET-cam-1234?token=tok-SECRET-1"))
        .duration_secs(20)
        .start()
        .unwrap();
    server.wait_live("cam", Duration::from_secs(8)).await.unwrap();
    // While the stream is held: the same key again, by name and by ?key=, and a wrong key.
    assert!(!publish_accepted(&server.rtmp_url("k-SECRET-cam-1234")).await);
    assert!(!publish_accepted(&server.rtmp_url("cam?key=k-SECRET-cam-1234")).await);
    assert!(!publish_accepted(&server.rtmp_url("k-SECRET-wrong-9")).await);
    // Players with credentials in their query, and one asking for the key as a name.
    let mut p = FlvPlayer::http(
        &format!("{}?sign=1-SECRETSIG&token=tok-SECRET-2", server.flv_url("cam")),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    p.read_for(Duration::from_millis(500)).await.unwrap();
    drop(p);
    let mut p = server.http_player("k-SECRET-cam-1234").await.unwrap();
    p.read_until(Duration::from_secs(5), |t| t.is_video_frame())
        .await
        .expect("the key as a play name plays its public stream");
    drop(p);

    let mut events = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while std::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), sse.next_event()).await {
            Ok(BodyEvent::Data(d)) => events.push_str(&String::from_utf8_lossy(&d)),
            Ok(_) => break,
            Err(_) => {}
        }
    }
    let logs = server.logs();
    assert!(
        logs.contains("publish /live/cam: stream is already being published"),
        "the refusal names the public stream:\n{logs}"
    );
    let bodies: String = hits
        .lock()
        .unwrap()
        .iter()
        .map(|h| String::from_utf8_lossy(&h.body).into_owned())
        .collect();
    assert!(
        bodies.contains("postPublish") && events.contains("postPlay"),
        "{bodies}\n{events}"
    );
    assert!(
        bodies.contains("token=REDACTED"),
        "queries are kept, redacted: {bodies}"
    );
    for (what, text) in [("log", &logs), ("webhook bodies", &bodies), ("SSE events", &events)] {
        assert!(!text.contains("SECRET"), "a credential reached the {what}:\n{text}");
    }
}
