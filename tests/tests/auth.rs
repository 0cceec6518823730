//! Signed URLs (Node-Media-Server style) gate publish and play, with secrets from files and
//! several secrets accepted at once for rotation; publish and play have their own secrets (or
//! action-bound signatures), and signatures valid too far ahead are refused.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrocast_tests::http::get;
use ferrocast_tests::{publish_accepted, require_tool, unique_name, Publisher, TempDir, TestServer};

fn md5_hex(s: &str) -> String {
    let out = std::process::Command::new(require_tool("md5sum"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .expect("md5sum runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("hash")
        .to_string()
}

fn sign(name: &str, expires: u64, secret: &str) -> String {
    format!("{expires}-{}", md5_hex(&format!("/live/{name}-{expires}-{secret}")))
}

/// The action-bound variant: `-{action}` appended to the signed text.
fn sign_for(name: &str, expires: u64, secret: &str, action: &str) -> String {
    format!(
        "{expires}-{}",
        md5_hex(&format!("/live/{name}-{expires}-{secret}-{action}"))
    )
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Publishers sign with `old-secret` or `new-secret` (a rotation), viewers with `viewer-secret`.
async fn signed_server(dir: &TempDir) -> TestServer {
    std::fs::write(dir.join("old"), "old-secret\n").unwrap();
    std::fs::write(dir.join("new"), "new-secret\n").unwrap();
    std::fs::write(dir.join("viewer"), "viewer-secret\n").unwrap();
    let files = format!("[{:?}, {:?}]", dir.join("old"), dir.join("new"));
    TestServer::builder()
        .app_yaml(&format!("publish: {{auth: sign, sign_secret_files: {files}}}"))
        .app_yaml(&format!(
            "play: {{auth: sign, sign_secret_files: [{:?}]}}",
            dir.join("viewer")
        ))
        .start()
        .await
        .expect("server starts")
}

#[tokio::test]
async fn publish_needs_a_valid_unexpired_signature_for_its_stream() {
    let dir = TempDir::new("auth").unwrap();
    let server = signed_server(&dir).await;
    let name = unique_name("signed");
    let exp = now() + 300;
    let cases = [
        (
            "valid, new secret",
            format!("{}?sign={}", name, sign(&name, exp, "new-secret")),
            true,
        ),
        (
            "valid, old secret during rotation",
            format!("{}?sign={}", name, sign(&name, exp, "old-secret")),
            true,
        ),
        ("no signature", name.clone(), false),
        (
            "expired",
            format!("{}?sign={}", name, sign(&name, now() - 10, "new-secret")),
            false,
        ),
        (
            "wrong secret",
            format!("{}?sign={}", name, sign(&name, exp, "guess")),
            false,
        ),
        (
            "signed for another stream",
            format!("{}?sign={}", name, sign("other", exp, "new-secret")),
            false,
        ),
        (
            "a viewer's play signature",
            format!("{}?sign={}", name, sign(&name, exp, "viewer-secret")),
            false,
        ),
        (
            "valid for longer than the default 7 days",
            format!("{}?sign={}", name, sign(&name, now() + 8 * 86400, "new-secret")),
            false,
        ),
    ];
    for (what, path, want) in cases {
        assert_eq!(
            publish_accepted(&server.rtmp_url(&path)).await,
            want,
            "{what}\n{}",
            server.logs()
        );
    }
    assert!(server.logs().contains("request denied"), "denials are logged");
    assert!(!server.logs().contains("new-secret"), "secrets never reach the log");
    assert!(
        !server.logs().contains("share a sign secret"),
        "distinct secrets: no warning"
    );
}

#[tokio::test]
async fn http_flv_play_is_refused_without_or_with_bad_signature() {
    let dir = TempDir::new("auth").unwrap();
    let server = signed_server(&dir).await;
    let name = unique_name("signedplay");
    let exp = now() + 300;
    let missing = get(&server.flv_url(&name), &[], Duration::from_secs(5)).await.unwrap();
    assert_eq!(missing.status, 401);
    let bad = format!("{}?sign={}", server.flv_url(&name), sign(&name, exp, "guess"));
    assert_eq!(get(&bad, &[], Duration::from_secs(5)).await.unwrap().status, 403);
    let publisher_sig = format!("{}?sign={}", server.flv_url(&name), sign(&name, exp, "old-secret"));
    assert_eq!(
        get(&publisher_sig, &[], Duration::from_secs(5)).await.unwrap().status,
        403,
        "play has its own secret"
    );
    let good = format!("{}?sign={}", server.flv_url(&name), sign(&name, exp, "viewer-secret"));
    assert_eq!(get(&good, &[], Duration::from_secs(5)).await.unwrap().status, 200);
    let (_, metrics) = ferrocast_tests::http::get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"ferrocast_auth_failures_total{app="live",reason="missing"} 1"#)
            && metrics.contains(r#"ferrocast_auth_failures_total{app="live",reason="bad_signature"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn stream_key_as_name_publishes_the_public_stream() {
    let dir = TempDir::new("keys").unwrap();
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let name = unique_name("studio");
    std::fs::write(keys.join(&name), "live_8f2a9c71\n").unwrap();
    let server = TestServer::builder()
        .app_yaml(&format!("publish: {{auth: key, keys_dir: {keys:?}}}"))
        .start()
        .await
        .expect("server starts");
    assert!(
        !publish_accepted(&server.rtmp_url("live_wrongkey")).await,
        "unknown key refused"
    );
    let mut p = Publisher::builder(&server.rtmp_url("live_8f2a9c71"))
        .duration_secs(8)
        .start()
        .unwrap();
    server
        .wait_live(&name, Duration::from_secs(8))
        .await
        .expect("published under its public name");
    let probe = ferrocast_tests::fixtures::ffprobe(&server.flv_url(&name), &["-show_streams"], 15)
        .await
        .unwrap();
    ferrocast_tests::fixtures::assert_h264_720p_and_aac_only(&probe, "key-published stream");
    p.kill().await;
    assert!(
        !server.logs().contains("live_8f2a9c71"),
        "the key never reaches the log"
    );
}

/// An HS256 JWT made with python3's standard library (an independent implementation).
fn hs256_jwt(secret: &str, claims: &str) -> String {
    let script = r#"
import base64, hashlib, hmac, sys
b = lambda d: base64.urlsafe_b64encode(d).rstrip(b"=").decode()
head = b(b'{"alg":"HS256","typ":"JWT"}'); body = b(sys.argv[2].encode())
sig = b(hmac.new(sys.argv[1].encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
print(f"{head}.{body}.{sig}")
"#;
    let out = std::process::Command::new(require_tool("python3"))
        .args(["-c", script, secret, claims])
        .output()
        .expect("python3 runs");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn jwt_grants_only_its_stream_and_action() {
    let dir = TempDir::new("jwt").unwrap();
    std::fs::write(dir.join("hs"), "jwt-secret\n").unwrap();
    let server = TestServer::builder()
        .app_yaml(&format!(
            "publish: {{auth: token, token: {{algorithm: HS256, key_files: [{:?}]}}}}",
            dir.join("hs")
        ))
        .start()
        .await
        .expect("server starts");
    let name = unique_name("jwt");
    let exp = now() + 300;
    let claims = |stream: &str, action: &str, exp: u64| {
        format!(r#"{{"app":"live","stream":"{stream}","action":"{action}","exp":{exp}}}"#)
    };
    let cases = [
        ("valid", hs256_jwt("jwt-secret", &claims(&name, "publish", exp)), true),
        ("glob", hs256_jwt("jwt-secret", &claims("jwt_*", "publish", exp)), true),
        (
            "expired",
            hs256_jwt("jwt-secret", &claims(&name, "publish", now() - 300)),
            false,
        ),
        (
            "wrong stream",
            hs256_jwt("jwt-secret", &claims("other", "publish", exp)),
            false,
        ),
        (
            "wrong action",
            hs256_jwt("jwt-secret", &claims(&name, "play", exp)),
            false,
        ),
        (
            "wrong secret",
            hs256_jwt("guess", &claims(&name, "publish", exp)),
            false,
        ),
    ];
    for (what, token, want) in cases {
        let url = server.rtmp_url(&format!("{name}?token={token}"));
        assert_eq!(publish_accepted(&url).await, want, "{what}\n{}", server.logs());
    }
}

#[tokio::test]
async fn denied_addresses_can_neither_publish_nor_play() {
    let server = TestServer::builder()
        .app_yaml("deny: [\"127.0.0.0/8\"]")
        .start()
        .await
        .expect("server starts");
    let name = unique_name("denied");
    assert!(
        !publish_accepted(&server.rtmp_url(&name)).await,
        "publish from a denied address"
    );
    assert_eq!(
        get(&server.flv_url(&name), &[], Duration::from_secs(5))
            .await
            .unwrap()
            .status,
        403
    );
    let allowed = TestServer::builder()
        .app_yaml("allow: [\"127.0.0.1/32\"]")
        .start()
        .await
        .expect("server starts");
    assert!(
        publish_accepted(&allowed.rtmp_url(&name)).await,
        "publish from an allowed address"
    );
}

#[tokio::test]
async fn address_lists_apply_per_action() {
    // Play is closed to this address, publishing is not.
    let server = TestServer::builder()
        .app_yaml("play: {deny: [\"127.0.0.0/8\"]}")
        .start()
        .await
        .expect("server starts");
    let name = unique_name("per_action");
    assert!(
        publish_accepted(&server.rtmp_url(&name)).await,
        "publish is not covered by play's list\n{}",
        server.logs()
    );
    assert_eq!(
        get(&server.flv_url(&name), &[], Duration::from_secs(5))
            .await
            .unwrap()
            .status,
        403,
        "play from a denied address"
    );
    // A studio-only publish list: this address is not in it.
    let studio = TestServer::builder()
        .app_yaml("publish: {allow: [\"198.51.100.0/24\"]}")
        .start()
        .await
        .expect("server starts");
    assert!(
        !publish_accepted(&studio.rtmp_url(&name)).await,
        "publish from outside the studio list"
    );
}

#[tokio::test]
async fn changed_secret_applies_live_without_interrupting_streams() {
    let dir = TempDir::new("reload").unwrap();
    std::fs::write(dir.join("sign"), "first-secret\n").unwrap();
    let server = TestServer::builder()
        .app_yaml(&format!(
            "publish: {{auth: sign, sign_secret_files: [{:?}]}}",
            dir.join("sign")
        ))
        .start()
        .await
        .expect("server starts");
    let live = unique_name("live");
    let exp = now() + 300;
    let _publisher = Publisher::builder(&server.rtmp_url(&format!("{live}?sign={}", sign(&live, exp, "first-secret"))))
        .duration_secs(20)
        .start()
        .unwrap();
    server.wait_live(&live, Duration::from_secs(8)).await.unwrap();
    let mut player = server.http_player(&live).await.unwrap();
    player.read_for(Duration::from_secs(1)).await.unwrap();

    std::fs::write(dir.join("sign"), "second-secret\n").unwrap();
    let during = player.read_for(Duration::from_secs(5)).await.unwrap();
    assert!(
        during.iter().filter(|t| t.is_video()).count() > 100,
        "the live stream kept flowing through the reload"
    );
    assert!(server.logs().contains("configuration reloaded"), "{}", server.logs());

    let other = unique_name("after");
    let new_url = server.rtmp_url(&format!("{other}?sign={}", sign(&other, exp, "second-secret")));
    assert!(publish_accepted(&new_url).await, "the new secret works");
    let old_url = server.rtmp_url(&format!("{other}?sign={}", sign(&other, exp, "first-secret")));
    assert!(!publish_accepted(&old_url).await, "the replaced secret no longer works");
}

#[tokio::test]
async fn app_added_to_the_config_file_is_served_without_restart() {
    let server = TestServer::start().await.expect("server starts");
    let path = server.dir().join("ferrocast.yaml");
    let url = server.rtmp_url("cam").replace("/live/", "/studio/");
    assert!(!publish_accepted(&url).await, "unknown app refused before the reload");
    let mut yaml = std::fs::read_to_string(&path).unwrap();
    yaml.push_str("  - name: studio\n");
    std::fs::write(&path, yaml).unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(server.logs().contains("configuration reloaded"), "{}", server.logs());
    assert!(publish_accepted(&url).await, "new app served after the reload");
    std::fs::write(&path, "rtmp: {prot: 1}\n").unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        server.logs().contains("config change refused"),
        "a bad config is refused and logged"
    );
    assert!(
        publish_accepted(&url).await,
        "the running config stays after a bad change"
    );
}

#[tokio::test]
async fn refused_websocket_player_gets_a_policy_close_code() {
    use futures_util::StreamExt;
    let dir = TempDir::new("wsauth").unwrap();
    let server = signed_server(&dir).await;
    let url = server.flv_url(&unique_name("wsdenied")).replace("http://", "ws://");
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("upgrade is accepted, then closed");
    let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a close frame arrives");
    match msg {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1008);
            assert_eq!(frame.reason.as_str(), "missing credentials");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test]
async fn a_secret_shared_by_publish_and_play_is_warned_about_without_showing_it() {
    let dir = TempDir::new("shared").unwrap();
    std::fs::write(dir.join("s"), "one-shared-secret\n").unwrap();
    let file = dir.join("s");
    let server = TestServer::builder()
        .app_yaml(&format!("publish: {{auth: sign, sign_secret_files: [{file:?}]}}"))
        .app_yaml(&format!("play: {{auth: sign, sign_secret_files: [{file:?}]}}"))
        .start()
        .await
        .expect("server starts");
    let logs = server.logs();
    assert!(
        logs.contains("publish and play share a sign secret") && logs.contains("app=live"),
        "{logs}"
    );
    assert!(!logs.contains("one-shared-secret"), "{logs}");
    // What the warning is about: a play URL publishes.
    let name = unique_name("shared");
    let play_url = server.rtmp_url(&format!(
        "{name}?sign={}",
        sign(&name, now() + 300, "one-shared-secret")
    ));
    assert!(publish_accepted(&play_url).await);
}

#[tokio::test]
async fn action_bound_signatures_let_a_play_url_only_play_and_expiry_is_capped() {
    let dir = TempDir::new("bound").unwrap();
    std::fs::write(dir.join("s"), "one-shared-secret\n").unwrap();
    let file = dir.join("s");
    let server = TestServer::builder()
        .app_yaml(&format!(
            "publish: {{auth: sign, sign_action_bound: true, sign_max_ttl_secs: 600, sign_secret_files: [{file:?}]}}"
        ))
        .app_yaml(&format!(
            "play: {{auth: sign, sign_action_bound: true, sign_secret_files: [{file:?}]}}"
        ))
        .start()
        .await
        .expect("server starts");
    let name = unique_name("bound");
    let exp = now() + 300;
    let url = |sig: String| server.rtmp_url(&format!("{name}?sign={sig}"));
    for (what, sig, want) in [
        (
            "the play signature",
            sign_for(&name, exp, "one-shared-secret", "play"),
            false,
        ),
        (
            "a Node-Media-Server signature",
            sign(&name, exp, "one-shared-secret"),
            false,
        ),
        (
            "beyond sign_max_ttl_secs",
            sign_for(&name, now() + 3600, "one-shared-secret", "publish"),
            false,
        ),
        (
            "the publish signature",
            sign_for(&name, exp, "one-shared-secret", "publish"),
            true,
        ),
    ] {
        assert_eq!(publish_accepted(&url(sig)).await, want, "{what}\n{}", server.logs());
    }
    let play = |sig: String| format!("{}?sign={sig}", server.flv_url(&name));
    let publish_sig = play(sign_for(&name, exp, "one-shared-secret", "publish"));
    assert_eq!(
        get(&publish_sig, &[], Duration::from_secs(5)).await.unwrap().status,
        403
    );
    let play_sig = play(sign_for(&name, exp, "one-shared-secret", "play"));
    assert_eq!(get(&play_sig, &[], Duration::from_secs(5)).await.unwrap().status, 200);
    let (_, metrics) = ferrocast_tests::http::get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"ferrocast_auth_failures_total{app="live",reason="expiry_too_far"} 1"#),
        "{metrics}"
    );
    assert!(
        !server.logs().contains("share a sign secret"),
        "bound signatures make sharing safe"
    );
}
