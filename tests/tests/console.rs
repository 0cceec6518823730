//! The web console and the player page in headless Chromium (tests/browser/console.mjs drives
//! it with playwright-core), and the generated admin password that makes the API usable with
//! no config at all.

use std::time::Duration;

use ferrocast_tests::env::require_node_package;
use ferrocast_tests::env::target_dir;
use ferrocast_tests::http::request;
use ferrocast_tests::process::run_json;
use ferrocast_tests::{require_tool, unique_name, workspace_root, Publisher, TestServer};
use serde_json::Value;

/// The password the server generated, read from its log.
fn generated_password(server: &TestServer) -> String {
    let logs = server.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("API and console login"))
        .unwrap_or_else(|| panic!("no generated password in the log:\n{logs}"));
    let after = line.split("password ").nth(1).expect("password in the line");
    after.split_whitespace().next().expect("a password").to_string()
}

/// `METHOD /api/v1{path}` on the HTTP port: (status, body as text).
async fn api(server: &TestServer, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let (status, bytes) = server.api(method, path, token, body).await;
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn login(server: &TestServer, user: &str, password: &str) -> (u16, String) {
    let body = serde_json::json!({"username": user, "password": password}).to_string();
    api(server, "POST", "/login", None, Some(&body)).await
}

async fn token(server: &TestServer) -> String {
    let (status, body) = login(server, "admin", &generated_password(server)).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["data"]["token"].as_str().expect("token").to_string()
}

/// Runs console.mjs with `args` and returns its JSON result.
async fn browser(args: &[String]) -> Value {
    require_tool("node");
    require_tool("chromium");
    require_tool("ffmpeg");
    require_node_package("playwright-core");
    let mut all = vec![workspace_root().join("tests/browser/console.mjs").display().to_string()];
    all.extend(args.iter().cloned());
    run_json("node", &all, 180).await.0
}

/// The ffmpeg command line of a 60 s publisher to `url`, as console.mjs takes it.
fn publish_command(url: &str) -> String {
    let mut cmd = vec!["ffmpeg".to_string()];
    cmd.extend(Publisher::builder(url).duration_secs(60).args());
    serde_json::to_string(&cmd).unwrap()
}

fn s(v: &str) -> String {
    v.to_string()
}

#[tokio::test]
async fn console_logs_in_with_the_generated_password_shows_a_new_stream_live_previews_and_kicks_it() {
    let server = TestServer::start().await.unwrap();
    let password = generated_password(&server);
    // A client that sends the password where a user name goes: it must not reach the log.
    let (status, _) = login(&server, &password, "wrong").await;
    assert_eq!(status, 401);

    let name = unique_name("console");
    let screenshot = target_dir().join("test-output/console.png");
    let _ = std::fs::remove_file(&screenshot);
    let r = browser(&[
        s("--scenario"),
        s("console"),
        s("--base"),
        format!("http://127.0.0.1:{}", server.http_port),
        s("--password"),
        password.clone(),
        s("--stream"),
        format!("live/{name}"),
        s("--publish"),
        publish_command(&server.rtmp_url(&name)),
        s("--screenshot"),
        screenshot.display().to_string(),
    ])
    .await;
    let pretty = serde_json::to_string_pretty(&r).unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{pretty}");
    assert_eq!(r["loggedIn"], true, "{pretty}");
    // Pushed by the event stream, without a reload, within the 2 s the issue asks for: the
    // console's polls were held from the publish until the row appeared, and every list
    // fetch in that time followed the `postPublish` event.
    assert_eq!(r["sameDocument"], true, "the page was not reloaded: {pretty}");
    assert_eq!(r["liveState"], "live", "{pretty}");
    assert_eq!(r["pollsHeld"], true, "{pretty}");
    assert_eq!(r["postPublishEvent"], true, "{pretty}");
    assert!(r["streamsFetchesBeforeRow"].as_u64().unwrap_or(0) >= 1, "{pretty}");
    assert_eq!(r["streamsFetchesBeforeEvent"], 0, "{pretty}");
    let appeared = r["rowAfterLiveMs"].as_u64().expect("row timing");
    println!("the stream's row appeared {appeared} ms after the stream went live");
    assert!(
        appeared <= 2000,
        "the stream's row appeared {appeared} ms after it went live: {pretty}"
    );
    let row = r["rowText"].as_str().unwrap();
    assert!(
        row.contains("h264") || row.contains("H264") || row.contains("avc"),
        "{row}"
    );
    assert!(row.contains("rtmp from 127.0.0.1"), "publisher address: {row}");
    // The embedded player played.
    assert!(r["preview"]["currentTime"].as_f64().unwrap_or(0.0) > 1.5, "{pretty}");
    assert_eq!(r["preview"]["width"], 1280, "{pretty}");
    // URLs with copy buttons.
    let play: Vec<&str> = r["playUrls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        play.iter()
            .any(|u| u.starts_with("ws://") && u.ends_with(&format!("/live/{name}.flv"))),
        "{play:?}"
    );
    assert!(
        play.iter().any(|u| u.ends_with(&format!("/live/{name}/index.m3u8"))),
        "{play:?}"
    );
    let urls = r["publishUrls"].as_array().unwrap().len() + play.len();
    assert_eq!(r["copyButtons"].as_u64(), Some(urls as u64), "{pretty}");
    assert!(r["loadSamples"].as_u64().unwrap_or(0) >= 1, "{pretty}");
    // Usable on a phone: nothing wider than its screen, the stream's card included (a table
    // wrapper scrolling sideways would hide it from the page's own width).
    assert!(r["phoneScrollWidth"].as_u64().unwrap_or(9999) <= 390, "{pretty}");
    assert!(r["phone"]["cardRight"].as_u64().unwrap_or(9999) <= 390, "{pretty}");
    assert_eq!(r["phone"]["overflowingWraps"], serde_json::json!([]), "{pretty}");
    // The kick ended the publisher's session (ffmpeg, set to publish for 60 s, was running
    // when the button was pressed and exited right after) and the stream left the console.
    assert_eq!(r["publisherRunningAtKick"], true, "{pretty}");
    assert_eq!(r["publisherExited"], true, "{pretty}");
    let exit_ms = r["publisherExitAfterKickMs"].as_u64().expect("exit time");
    println!(
        "the publisher exited {exit_ms} ms after Kick, code {}",
        r["publisherCode"]
    );
    assert!(
        exit_ms < 10_000,
        "the publisher exited {exit_ms} ms after Kick: {pretty}"
    );
    assert_ne!(r["publisherCode"], 0, "{pretty}");
    assert_eq!(r["rowGone"], true, "{pretty}");
    assert_eq!(r["cspViolations"], serde_json::json!([]), "{pretty}");
    assert!(screenshot.is_file(), "screenshot saved at {}", screenshot.display());

    // The session is gone from the API too.
    let token = token(&server).await;
    let kicked = r["kickedSession"].as_str().unwrap();
    let (_, sessions) = api(&server, "GET", "/sessions", Some(&token), None).await;
    assert!(!sessions.contains(&format!("\"id\":{kicked},")), "{sessions}");

    // The password was printed in exactly one log line, and nowhere else.
    let logs = server.logs();
    let lines: Vec<&str> = logs.lines().filter(|l| l.contains(&password)).collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(&format!("http://127.0.0.1:{}/admin/", server.http_port)),
        "{}",
        lines[0]
    );
    assert!(logs.contains("API login failed user=\"REDACTED\""), "{logs}");
    let (_, metrics) = ferrocast_tests::http::get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(!metrics.contains(&password));
    for path in ["/info", "/stats", "/streams", "/sessions", "/load", "/relays"] {
        let (status, body) = api(&server, "GET", path, Some(&token), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body.contains(&password), "{path}");
    }
}

#[tokio::test]
async fn console_opened_over_https_previews_over_the_tls_port() {
    let ca = ferrocast_tests::tls::TestCa::new("console test CA");
    let cert = ca.issue(&["localhost", "127.0.0.1"]);
    let dir = ferrocast_tests::env::TempDir::new("console-tls").unwrap();
    std::fs::write(dir.join("tls.crt"), &cert.cert_pem).unwrap();
    std::fs::write(dir.join("tls.key"), &cert.key_pem).unwrap();
    let server = TestServer::builder()
        .tls(vec![ferrocast_tests::server::TlsCertificate::new(
            dir.join("tls.crt"),
            dir.join("tls.key"),
            &[],
        )])
        .start()
        .await
        .unwrap();
    let name = unique_name("tlsconsole");
    let https = server.https_port();
    let r = browser(&[
        s("--scenario"),
        s("preview"),
        s("--base"),
        format!("https://127.0.0.1:{https}"),
        s("--password"),
        generated_password(&server),
        s("--stream"),
        format!("live/{name}"),
        s("--publish"),
        publish_command(&server.rtmp_url(&name)),
    ])
    .await;
    let pretty = serde_json::to_string_pretty(&r).unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{pretty}");
    assert!(r["preview"]["currentTime"].as_f64().unwrap_or(0.0) > 1.5, "{pretty}");
    // The preview's default, WS-FLV, went to the TLS port: ws:// from an https: page is
    // blocked as mixed content.
    let media: Vec<&str> = r["previewMedia"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        media.contains(&format!("wss://127.0.0.1:{https}/live/{name}.flv").as_str()),
        "{pretty}"
    );
    assert!(
        media
            .iter()
            .all(|u| u.starts_with("wss://") || u.starts_with("https://")),
        "{pretty}"
    );
    assert_eq!(r["cspViolations"], serde_json::json!([]), "{pretty}");
}

#[tokio::test]
async fn generated_password_is_logged_once_and_configured_users_replace_it() {
    let server = TestServer::start().await.unwrap();
    let password = generated_password(&server);
    assert!(password.len() >= 32, "{password}");
    let (status, body) = login(&server, "admin", &password).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = login(&server, "admin", "not-the-password").await;
    assert_eq!(status, 401);
    let logs = server.logs();
    assert_eq!(logs.lines().filter(|l| l.contains(&password)).count(), 1, "{logs}");

    // Another process makes another password.
    let other = TestServer::start().await.unwrap();
    assert_ne!(generated_password(&other), password);

    // With users configured nothing is generated and `admin` has no password of ours.
    let users = ferrocast_tests::env::TempDir::new("console-users").unwrap();
    std::fs::write(users.join("ops"), ferrocast_tests::argon2_phc("ops password")).unwrap();
    let configured = TestServer::builder()
        .yaml(&format!("api:\n  users_dir: {:?}", users.path()))
        .start()
        .await
        .unwrap();
    assert!(
        !configured.logs().contains("API and console login"),
        "{}",
        configured.logs()
    );
    let (status, _) = login(&configured, "ops", "ops password").await;
    assert_eq!(status, 200);
    let (status, _) = login(&configured, "admin", &password).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn generated_password_is_shown_whatever_the_log_level() {
    for level in ["warn", "error"] {
        let server = TestServer::builder().log_level(level).start().await.unwrap();
        let password = generated_password(&server);
        let (status, body) = login(&server, "admin", &password).await;
        assert_eq!(status, 200, "{level}: {body}");
        let logs = server.logs();
        assert_eq!(
            logs.lines().filter(|l| l.contains(&password)).count(),
            1,
            "{level}: {logs}"
        );
        // The level still applies to everything else.
        assert!(!logs.contains("INFO"), "{level}: {logs}");
    }
}

#[tokio::test]
async fn console_assets_are_served_with_types_cache_headers_and_a_strict_policy() {
    let server = TestServer::start().await.unwrap();
    let base = format!("http://127.0.0.1:{}", server.http_port);
    let mut resp = request("GET", &format!("{base}/admin/"), &[], None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = resp.header("content-security-policy").unwrap().to_string();
    assert!(
        csp.contains("script-src 'self';") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    let (html, _) = resp.read_to_end(Duration::from_secs(5)).await.unwrap();
    let html = String::from_utf8(html).unwrap();
    for src in html.split("src=\"").skip(1).map(|s| &s[..s.find('"').unwrap()]) {
        let mut r = request("GET", &format!("{base}{src}"), &[], None, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{src}");
        assert_eq!(
            r.header("content-type"),
            Some("text/javascript; charset=utf-8"),
            "{src}"
        );
        let cache = r.header("cache-control").unwrap().to_string();
        let etag = r.header("etag").unwrap().to_string();
        let _ = r.read_to_end(Duration::from_secs(5)).await.unwrap();
        if src.contains("-1.") {
            assert!(
                cache.contains("immutable"),
                "{src}: versioned libraries are cached for good"
            );
        } else {
            assert_eq!(cache, "no-cache", "{src}");
        }
        let again = request(
            "GET",
            &format!("{base}{src}"),
            &[("If-None-Match", etag.as_str())],
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(again.status, 304, "{src}");
    }
    let css = request(
        "GET",
        &format!("{base}/admin/assets/console.css"),
        &[],
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    let missing = request(
        "GET",
        &format!("{base}/admin/assets/x.js"),
        &[],
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(missing.status, 404);
    // With the API on the admin port the console is served there too, and logs in there.
    let admin = TestServer::builder()
        .yaml("api:\n  listener: admin")
        .start()
        .await
        .unwrap();
    let password = generated_password(&admin);
    assert!(
        admin
            .logs()
            .contains(&format!("http://127.0.0.1:{}/admin/", admin.admin_port)),
        "the log names the admin port's console"
    );
    let resp = request("GET", &admin.admin_url("/admin/"), &[], None, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let body = serde_json::json!({"username": "admin", "password": password}).to_string();
    let resp = request(
        "POST",
        &admin.admin_url("/api/v1/login"),
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);

    // `api.console: false` turns it off.
    let off = TestServer::builder()
        .yaml("api:\n  console: false")
        .start()
        .await
        .unwrap();
    let resp = request(
        "GET",
        &format!("http://127.0.0.1:{}/admin/", off.http_port),
        &[],
        None,
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 404);
}

/// The vendored player libraries are the npm packages' own files at the pinned versions.
#[test]
fn vendored_player_libraries_match_their_pinned_npm_packages() {
    let vendor = workspace_root().join("server/console/vendor");
    let pins = std::fs::read_to_string(workspace_root().join("scripts/test.sh")).unwrap();
    for (package, dist, vendored, version) in [
        (
            "mpegts.js",
            "dist/mpegts.js",
            "mpegts.js",
            ferrocast_server::console::MPEGTS_JS_VERSION,
        ),
        (
            "hls.js",
            "dist/hls.min.js",
            "hls.min.js",
            ferrocast_server::console::HLS_JS_VERSION,
        ),
    ] {
        assert!(
            pins.contains(&format!("{package}@{version}")),
            "scripts/test.sh pins {package}@{version}"
        );
        let dir = require_node_package(package);
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("package.json")).unwrap()).unwrap();
        assert_eq!(manifest["version"], version, "{package} installed in .tools/node");
        let ours = std::fs::read(vendor.join(vendored)).unwrap();
        let theirs = std::fs::read(dir.join(dist)).unwrap();
        assert!(
            ours == theirs,
            "server/console/vendor/{vendored} differs from {package}@{version}/{dist}"
        );
        let license = std::fs::read(vendor.join(format!("{package}.LICENSE"))).unwrap();
        assert_eq!(
            license,
            std::fs::read(dir.join("LICENSE")).unwrap(),
            "{package} LICENSE"
        );
    }
}

#[tokio::test]
async fn player_page_shows_offline_then_plays_over_ws_flv_once_published() {
    let server = TestServer::start().await.unwrap();
    let name = unique_name("page");
    let url = format!("http://127.0.0.1:{}/live/{name}", server.http_port);
    let r = browser(&[
        s("--scenario"),
        s("page"),
        s("--url"),
        url,
        s("--publish"),
        publish_command(&server.rtmp_url(&name)),
    ])
    .await;
    let pretty = serde_json::to_string_pretty(&r).unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{pretty}");
    assert_eq!(r["status"], 200, "{pretty}");
    assert!(r["csp"].as_str().unwrap().contains("frame-ancestors *"), "{pretty}");
    assert_eq!(r["offline"]["state"], "offline", "{pretty}");
    assert!(
        r["offline"]["message"].as_str().unwrap().contains("offline"),
        "{pretty}"
    );
    assert_eq!(r["playing"]["state"], "playing", "{pretty}");
    assert_eq!(r["playing"]["protocol"], "ws", "{pretty}");
    assert!(r["playing"]["currentTime"].as_f64().unwrap() > 1.5, "{pretty}");
    assert_eq!(r["playing"]["width"], 1280, "{pretty}");
    assert_eq!(r["cspViolations"], serde_json::json!([]), "{pretty}");
}

#[tokio::test]
async fn player_page_picks_hls_for_ios_safari() {
    let server = TestServer::start().await.unwrap();
    let name = unique_name("iospage");
    let url = format!("http://127.0.0.1:{}/live/{name}", server.http_port);
    let iphone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 \
                  (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    let r = browser(&[
        s("--scenario"),
        s("page"),
        s("--url"),
        url,
        s("--user-agent"),
        s(iphone),
        s("--publish"),
        publish_command(&server.rtmp_url(&name)),
    ])
    .await;
    let pretty = serde_json::to_string_pretty(&r).unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{pretty}");
    assert_eq!(r["offline"]["state"], "offline", "{pretty}");
    assert_eq!(r["playing"]["protocol"], "hls", "{pretty}");
    assert!(r["playing"]["currentTime"].as_f64().unwrap() > 1.5, "{pretty}");
}

#[tokio::test]
async fn player_page_of_a_sign_app_is_refused_without_a_signature_and_plays_with_one() {
    let dir = ferrocast_tests::env::TempDir::new("console-sign").unwrap();
    let secret = dir.join("play-secret");
    std::fs::write(&secret, "play-secret-value\n").unwrap();
    let server = TestServer::builder()
        .app_yaml(&format!("play: {{auth: sign, sign_secret_files: [{secret:?}]}}"))
        .start()
        .await
        .unwrap();
    let name = unique_name("signpage");
    let bare = format!("http://127.0.0.1:{}/live/{name}", server.http_port);
    let refused = browser(&[s("--scenario"), s("page"), s("--url"), bare]).await;
    let pretty = serde_json::to_string_pretty(&refused).unwrap();
    assert_eq!(refused["status"], 401, "{pretty}");
    assert!(
        refused["message"].as_str().unwrap().contains("cannot be played"),
        "{pretty}"
    );

    // The signed page URL comes from the API, as the console gets it.
    let token = token(&server).await;
    let (status, body) = api(
        &server,
        "GET",
        &format!("/streams/live/{name}/urls"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let urls: Value = serde_json::from_str(&body).unwrap();
    let page = urls["data"]["play"]["page"].as_str().unwrap().to_string();
    assert!(page.contains("?sign="), "{page}");
    let r = browser(&[
        s("--scenario"),
        s("page"),
        s("--url"),
        page,
        s("--publish"),
        publish_command(&server.rtmp_url(&name)),
    ])
    .await;
    let pretty = serde_json::to_string_pretty(&r).unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{pretty}");
    assert_eq!(r["status"], 200, "{pretty}");
    assert_eq!(r["playing"]["state"], "playing", "{pretty}");
    assert!(r["playing"]["currentTime"].as_f64().unwrap() > 1.5, "{pretty}");
    // A forged signature is refused too.
    let forged = format!("http://127.0.0.1:{}/live/{name}?sign=9999999999-0123", server.http_port);
    let (status, _) = ferrocast_tests::http::get_text(&forged, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 403);
}

#[tokio::test]
async fn player_page_of_an_edge_app_starts_once_the_origin_has_the_stream() {
    let origin = TestServer::start().await.unwrap();
    let edge = TestServer::builder()
        .app_yaml(&format!(
            "pull: {{source: \"rtmp://127.0.0.1:{}/live\"}}",
            origin.rtmp_port
        ))
        .start()
        .await
        .unwrap();
    let name = unique_name("edgepage");
    // The page's probe asks the origin through the on-demand pull: nothing there yet.
    let head = request("HEAD", &edge.flv_url(&name), &[], None, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(head.status, 404);

    let url = format!("http://127.0.0.1:{}/live/{name}", edge.http_port);
    let r = browser(&[
        s("--scenario"),
        s("page"),
        s("--url"),
        url,
        s("--publish"),
        publish_command(&origin.rtmp_url(&name)),
    ])
    .await;
    let pretty = serde_json::to_string_pretty(&r).unwrap();
    assert_eq!(
        r["errors"],
        serde_json::json!([]),
        "{pretty}\nedge log:\n{}",
        edge.logs()
    );
    assert_eq!(r["offline"]["state"], "offline", "{pretty}");
    assert_eq!(r["playing"]["state"], "playing", "{pretty}");
    assert!(r["playing"]["currentTime"].as_f64().unwrap() > 1.5, "{pretty}");
    assert_eq!(r["playing"]["width"], 1280, "{pretty}");
    // The edge pulled it from the origin (nobody published on the edge).
    assert!(edge.logs().contains("relay pull starting"), "{}", edge.logs());
}

#[tokio::test]
async fn console_lists_recordings_with_every_documented_field_formatted() {
    let root = ferrocast_tests::env::TempDir::new("console-records").unwrap();
    let server = TestServer::builder()
        .app_yaml(&format!(
            "record: {{mode: always, format: flv, path: {:?}}}",
            root.path()
        ))
        .start()
        .await
        .unwrap();
    let name = unique_name("rec");
    let mut publisher = Publisher::builder(&server.rtmp_url(&name))
        .duration_secs(3)
        .start()
        .unwrap();
    let status = publisher.wait_within(Duration::from_secs(60)).await;
    assert!(status.is_some(), "publisher log:\n{}", publisher.log());
    let r = browser(&[
        s("--scenario"),
        s("records"),
        s("--base"),
        format!("http://127.0.0.1:{}", server.http_port),
        s("--password"),
        generated_password(&server),
    ])
    .await;
    let pretty = serde_json::to_string_pretty(&r).unwrap();
    assert_eq!(r["errors"], serde_json::json!([]), "{pretty}");
    // The nine fields docs/console.md lists, and the object of uploaded ones.
    assert_eq!(
        r["recordColumns"],
        serde_json::json!([
            "Id",
            "App",
            "Stream",
            "File",
            "Format",
            "Size",
            "Started",
            "State",
            "Local copy",
            "Object"
        ]),
        "{pretty}"
    );
    let rec = &r["firstRecord"];
    assert_eq!(rec["Stream"], name.as_str(), "{pretty}");
    assert_eq!(rec["Format"], "flv", "{pretty}");
    assert_eq!(rec["Local copy"], "yes", "{pretty}");
    assert_eq!(rec["Object"], "-", "{pretty}");
    // Sizes and times read as such, not as raw numbers.
    let size = rec["Size"].as_str().unwrap();
    assert!(size.ends_with(" KiB") || size.ends_with(" MiB"), "{pretty}");
    let started = rec["Started"].as_str().unwrap();
    let year = ferrocast_server::utc::Utc::of(std::time::SystemTime::now()).year;
    assert!(started.contains(&year.to_string()) && started.contains(':'), "{pretty}");
    assert!(r["phoneRecordRight"].as_u64().unwrap_or(9999) <= 390, "{pretty}");
}
