//! The REST API under /api/v1 against the real server: login and tokens, status codes and
//! JSON shapes of every route, a live ffmpeg publisher and HTTP-FLV player as the API sees
//! them, kicking both, and URLs from `/urls` that actually publish and play.

use std::time::{Duration, Instant};

use ferrocast_tests::http::request;
use ferrocast_tests::{
    argon2_phc, unique_name, FlvPlayer, Live, Publisher, StreamEnd, TempDir, TestServer, TestServerBuilder,
};
use serde_json::Value;

const USER: &str = "admin";
const PASSWORD: &str = "correct horse battery staple";

/// A users directory (Kubernetes Secret layout, dot-entries included) with `admin`.
fn users_dir() -> TempDir {
    let dir = TempDir::new("api-users").unwrap();
    std::fs::create_dir_all(dir.join("..data")).unwrap();
    let phc = argon2_phc(PASSWORD);
    std::fs::write(dir.join(USER), format!("{phc}\n")).unwrap();
    std::fs::write(dir.join("ops"), format!("{phc}\n")).unwrap();
    dir
}

fn with_api(builder: TestServerBuilder, users: &TempDir) -> TestServerBuilder {
    builder.yaml(&format!(
        "api:\n  users_dir: {:?}\n  login_max_failures: 3\n  login_window_secs: 60",
        users.path()
    ))
}

/// `METHOD /api/v1{path}`, with a bearer token when given: (status, JSON body), checking the
/// envelope every answer has.
async fn api(server: &TestServer, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let (status, json) = server.api_json(method, path, token, body).await;
    for field in ["success", "data", "message"] {
        assert!(
            json.get(field).is_some(),
            "{method} {path}: envelope lacks {field}: {json}"
        );
    }
    assert_eq!(
        json["success"].as_bool(),
        Some((200..300).contains(&status)),
        "{method} {path}: {json}"
    );
    (status, json)
}

async fn login(server: &TestServer, user: &str, password: &str) -> (u16, Value) {
    let body = serde_json::json!({"username": user, "password": password}).to_string();
    api(server, "POST", "/login", None, Some(&body)).await
}

async fn token(server: &TestServer) -> String {
    let (status, body) = login(server, USER, PASSWORD).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["expiresIn"], 3600);
    body["data"]["token"].as_str().expect("token").to_string()
}

/// Polls `f` every 200 ms until it returns `Some`, up to `d`.
async fn eventually<T, F, Fut>(d: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + d;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The session of `name` with `role`, from GET /sessions.
async fn session_id(server: &TestServer, token: &str, name: &str, role: &str) -> u64 {
    eventually(
        Duration::from_secs(10),
        &format!("{role} session of {name}"),
        || async {
            let (_, body) = api(server, "GET", "/sessions", Some(token), None).await;
            body["data"]["sessions"]
                .as_array()?
                .iter()
                .find(|s| s["name"] == name && s["role"] == role)
                .and_then(|s| s["id"].as_u64())
        },
    )
    .await
}

#[tokio::test]
async fn login_tokens_and_status_codes() {
    let users = users_dir();
    let server = with_api(TestServer::builder(), &users).start().await.unwrap();

    let (status, body) = api(&server, "GET", "/health", None, None).await;
    assert_eq!((status, body["data"]["status"].as_str()), (200, Some("ok")));

    for path in [
        "/info",
        "/stats",
        "/streams",
        "/sessions",
        "/streams/live/x",
        "/streams/live/x/urls",
    ] {
        assert_eq!(
            api(&server, "GET", path, None, None).await.0,
            401,
            "{path} without a token"
        );
        assert_eq!(
            api(&server, "GET", path, Some("not.a.token"), None).await.0,
            401,
            "{path} with a bad token"
        );
    }
    assert_eq!(api(&server, "DELETE", "/sessions/1", None, None).await.0, 401);

    assert_eq!(login(&server, USER, "wrong").await.0, 401);
    assert_eq!(login(&server, "nobody", PASSWORD).await.0, 401);
    assert_eq!(
        login(&server, "..data", PASSWORD).await.0,
        401,
        "dot-entries are not users"
    );
    assert_eq!(api(&server, "POST", "/login", None, Some("{\"user\": 1}")).await.0, 400);

    // Three failures for `ops` from this IP: the fourth attempt is refused even when right.
    for _ in 0..3 {
        assert_eq!(login(&server, "ops", "wrong").await.0, 401);
    }
    assert_eq!(login(&server, "ops", PASSWORD).await.0, 429);

    let token = token(&server).await;
    let (status, info) = api(&server, "GET", "/info", Some(&token), None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["data"]["name"], "ferrocast");
    assert_eq!(info["data"]["ports"]["http"], server.http_port);
    assert_eq!(info["data"]["ports"]["rtmp"], server.rtmp_port);
    assert!(
        info["data"]["ports"]["rtmps"].is_null() && info["data"]["ports"]["https"].is_null(),
        "TLS is off: {info}"
    );
    assert_eq!(info["data"]["apps"][0]["name"], "live");
    assert!(info["data"]["version"].is_string() && info["data"]["uptime"].is_u64());

    // ?token= works as well as the header.
    let url = format!("http://127.0.0.1:{}/api/v1/stats?token={token}", server.http_port);
    let mut resp = request("GET", &url, &[], None, Duration::from_secs(10)).await.unwrap();
    let (bytes, _) = resp.read_to_end(Duration::from_secs(10)).await.unwrap();
    assert_eq!(resp.status, 200);
    let stats: Value = serde_json::from_slice(&bytes).unwrap();
    let d = &stats["data"];
    assert!(
        d["cpu"]["total"].is_number() && d["memory"]["rss"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert_eq!(
        (d["sessions"].as_u64(), d["streams"].as_u64()),
        (Some(0), Some(0)),
        "{stats}"
    );

    let (status, streams) = api(&server, "GET", "/streams", Some(&token), None).await;
    assert_eq!(
        (status, streams["data"]["streams"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    assert_eq!(
        api(&server, "GET", "/streams/live/absent", Some(&token), None).await.0,
        404
    );
    assert_eq!(api(&server, "GET", "/streams/noapp/x", Some(&token), None).await.0, 404);
    assert_eq!(
        api(&server, "DELETE", "/sessions/999999", Some(&token), None).await.0,
        404
    );
    assert_eq!(api(&server, "DELETE", "/sessions/abc", Some(&token), None).await.0, 404);
    assert_eq!(api(&server, "GET", "/nothing-here", Some(&token), None).await.0, 404);
    assert_eq!(
        api(&server, "GET", "/streams/live/x/urls?ttl=0", Some(&token), None)
            .await
            .0,
        400
    );

    let logs = server.logs();
    assert!(
        !logs.contains(PASSWORD) && !logs.contains(&token),
        "secrets never reach the log"
    );
}

#[tokio::test]
async fn streams_and_sessions_show_a_live_publisher_and_player() {
    let users = users_dir();
    let live = Live::start_with("apistreams", with_api(TestServer::builder(), &users), |p| p)
        .await
        .unwrap();
    let server = &live.server;
    let token = token(server).await;
    let mut player = server.http_player(&live.name).await.unwrap();
    player
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();

    // Bitrate and fps are measured over a window of about two seconds.
    let path = format!("/streams/live/{}", live.name);
    let s = eventually(
        Duration::from_secs(10),
        "stream with bitrate and a subscriber",
        || async {
            let (status, body) = api(server, "GET", &path, Some(&token), None).await;
            assert_eq!(status, 200, "{body}");
            let d = body["data"].clone();
            (d["bitrate"].as_u64() > Some(0)
                && d["bitrateOut"].as_u64() > Some(0)
                && d["subscribers"].as_u64() >= Some(1))
            .then_some(d)
        },
    )
    .await;
    assert_eq!(
        (s["app"].as_str(), s["name"].as_str()),
        (Some("live"), Some(live.name.as_str()))
    );
    let p = &s["publisher"];
    assert_eq!(
        (p["protocol"].as_str(), p["ip"].as_str()),
        (Some("rtmp"), Some("127.0.0.1")),
        "{s}"
    );
    assert!(
        p["createTime"].as_u64() > Some(1_600_000_000_000) && p["id"].is_u64(),
        "{s}"
    );
    let v = &s["video"];
    assert_eq!(
        v["codec"].as_str().map(str::to_ascii_lowercase).as_deref(),
        Some("h264"),
        "{s}"
    );
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(1280), Some(720)),
        "{s}"
    );
    assert!(v["profile"].is_string() && v["level"].is_string(), "{s}");
    let fps = v["fps"].as_f64().unwrap_or(0.0);
    assert!((20.0..=40.0).contains(&fps), "fps {fps}: {s}");
    let a = &s["audio"];
    assert_eq!(
        a["codec"].as_str().map(str::to_ascii_lowercase).as_deref(),
        Some("aac"),
        "{s}"
    );
    assert_eq!(
        (a["samplerate"].as_u64(), a["channels"].is_u64()),
        (Some(44100), true),
        "{s}"
    );
    assert!(
        s["inBytes"].as_u64() > Some(0) && s["outBytes"].as_u64() > Some(0),
        "{s}"
    );

    let (_, list) = api(server, "GET", "/streams", Some(&token), None).await;
    let names: Vec<_> = list["data"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, vec![Value::from(live.name.as_str())]);

    let publisher = session_id(server, &token, &live.name, "publisher").await;
    let player_id = session_id(server, &token, &live.name, "player").await;
    assert_eq!(
        p["id"].as_u64(),
        Some(publisher),
        "the stream names its publisher's session"
    );
    let (_, sessions) = api(server, "GET", "/sessions", Some(&token), None).await;
    let all = sessions["data"]["sessions"].as_array().unwrap();
    let by_id = |id: u64| all.iter().find(|s| s["id"] == id).unwrap().clone();
    let (ps, pl) = (by_id(publisher), by_id(player_id));
    assert_eq!(
        (ps["protocol"].as_str(), ps["app"].as_str()),
        (Some("rtmp"), Some("live")),
        "{ps}"
    );
    assert_eq!(pl["protocol"].as_str(), Some("http_flv"), "{pl}");
    for s in [&ps, &pl] {
        assert_eq!(s["ip"].as_str(), Some("127.0.0.1"), "{s}");
        assert!(
            s["connectTime"].is_u64() && s["inBytes"].is_u64() && s["outBytes"].is_u64(),
            "{s}"
        );
    }
    assert!(
        ps["inBytes"].as_u64() > Some(0) && pl["outBytes"].as_u64() > Some(0),
        "{ps} {pl}"
    );
}

#[tokio::test]
async fn kick_ends_a_live_player_and_publisher_and_the_stream_leaves() {
    let users = users_dir();
    let builder = with_api(TestServer::builder().grace_secs(1), &users);
    let mut live = Live::start_with("apikick", builder, |p| p).await.unwrap();
    let token = token(&live.server).await;
    let mut player = live.server.http_player(&live.name).await.unwrap();
    player
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();

    let player_id = session_id(&live.server, &token, &live.name, "player").await;
    let (status, body) = api(
        &live.server,
        "DELETE",
        &format!("/sessions/{player_id}"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!((status, body["data"]["id"].as_u64()), (200, Some(player_id)), "{body}");
    let (end, _) = player
        .wait_end(Duration::from_secs(5))
        .await
        .expect("kicked player's response ends");
    assert!(
        matches!(end, StreamEnd::HttpComplete | StreamEnd::HttpTruncated(_)),
        "{end:?}"
    );
    assert!(
        live.publisher.is_running(),
        "kicking a player leaves the publisher alone"
    );

    let publisher = session_id(&live.server, &token, &live.name, "publisher").await;
    assert_eq!(
        api(
            &live.server,
            "DELETE",
            &format!("/sessions/{publisher}"),
            Some(&token),
            None
        )
        .await
        .0,
        200
    );
    let st = live.publisher.wait_within(Duration::from_secs(10)).await;
    assert!(st.is_some(), "ffmpeg still publishing after its session was kicked");

    // Ended streams do not linger in the API.
    let path = format!("/streams/live/{}", live.name);
    eventually(
        Duration::from_secs(10),
        "the kicked stream to leave /streams",
        || async { (api(&live.server, "GET", &path, Some(&token), None).await.0 == 404).then_some(()) },
    )
    .await;
    let (_, list) = api(&live.server, "GET", "/streams", Some(&token), None).await;
    assert_eq!(list["data"]["streams"].as_array().map(Vec::len), Some(0), "{list}");
    assert_eq!(
        api(
            &live.server,
            "DELETE",
            &format!("/sessions/{publisher}"),
            Some(&token),
            None
        )
        .await
        .0,
        404
    );
}

#[tokio::test]
async fn urls_are_signed_for_sign_apps_and_actually_publish_and_play() {
    let users = users_dir();
    let secrets = TempDir::new("api-sign").unwrap();
    std::fs::write(secrets.join("s1"), "first-secret\n").unwrap();
    std::fs::write(secrets.join("s2"), "second-secret\n").unwrap();
    std::fs::write(secrets.join("v1"), "viewer-secret\n").unwrap();
    // Publishers and viewers sign with different secrets, so a play URL cannot publish.
    let files = format!("[{:?}, {:?}]", secrets.join("s1"), secrets.join("s2"));
    let builder = TestServer::builder()
        .app_yaml(&format!("publish: {{auth: sign, sign_secret_files: {files}}}"))
        .app_yaml(&format!(
            "play: {{auth: sign, sign_secret_files: [{:?}]}}",
            secrets.join("v1")
        ));
    let server = with_api(builder, &users).start().await.unwrap();
    let token = token(&server).await;
    let name = unique_name("apiurls");

    let (status, body) = api(
        &server,
        "GET",
        &format!("/streams/live/{name}/urls?ttl=120"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let d = &body["data"];
    let (rtmp, http) = (server.rtmp_port, server.http_port);
    let expires = d["expires"].as_u64().expect("expires");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 100..=now + 130).contains(&expires),
        "expires {expires}, now {now}"
    );
    let publish = d["publish"]["rtmp"].as_str().unwrap();
    let play = d["play"]["httpFlv"].as_str().unwrap();
    assert!(
        publish.starts_with(&format!("rtmp://127.0.0.1:{rtmp}/live/{name}?sign={expires}-")),
        "{publish}"
    );
    assert!(
        play.starts_with(&format!("http://127.0.0.1:{http}/live/{name}.flv?sign={expires}-")),
        "{play}"
    );
    assert!(
        d["play"]["wsFlv"]
            .as_str()
            .unwrap()
            .starts_with(&format!("ws://127.0.0.1:{http}/live/{name}.flv?sign=")),
        "{d}"
    );
    assert!(d["play"]["rtmp"].as_str().unwrap().contains("?sign="), "{d}");

    let mut publisher = Publisher::start(publish).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut player = loop {
        if let Some(st) = publisher.try_status() {
            panic!("ffmpeg refused with the API's publish URL ({st}): {}", publisher.log());
        }
        if let Ok(mut p) = FlvPlayer::http(play, Duration::from_secs(5)).await {
            if p.read_until(Duration::from_secs(5), |t| t.is_video_frame())
                .await
                .is_ok()
            {
                break p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the signed stream did not play:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(player.bytes > 0);
    drop(player.read_for(Duration::from_millis(200)).await);

    // The same URL without its signature is refused, so the signature is what let it play.
    let bare = format!("http://127.0.0.1:{http}/live/{name}.flv");
    let resp = ferrocast_tests::http::get(&bare, &[], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(resp.status, 401);
    assert!(!server.logs().contains("first-secret"), "secrets never reach the log");
    publisher.kill().await;

    // The play URL the API hands out cannot publish.
    let other = unique_name("apiurlsplay");
    let (_, body) = api(
        &server,
        "GET",
        &format!("/streams/live/{other}/urls"),
        Some(&token),
        None,
    )
    .await;
    let play_rtmp = body["data"]["play"]["rtmp"].as_str().unwrap();
    assert!(play_rtmp.contains("?sign="), "{body}");
    assert!(
        !ferrocast_tests::publish_accepted(play_rtmp).await,
        "a viewer's URL published"
    );
    // Nor can a URL be signed beyond the longest validity the server accepts (7 days).
    assert_eq!(
        api(
            &server,
            "GET",
            &format!("/streams/live/{other}/urls?ttl=31536000"),
            Some(&token),
            None
        )
        .await
        .0,
        400
    );
    assert!(!server.logs().contains("share a sign secret"), "{}", server.logs());
}

#[tokio::test]
async fn urls_follow_the_reloaded_config_with_keys_files_and_action_bound_signatures() {
    let users = users_dir();
    let secrets = TempDir::new("api-reload").unwrap();
    let server = with_api(TestServer::builder(), &users).start().await.unwrap();
    let token = token(&server).await;
    let (status, _) = api(&server, "GET", "/streams/studio/cam/urls", Some(&token), None).await;
    assert_eq!(status, 404, "no app studio yet");

    // Add two apps by editing the config file: key auth from a keys file, and signatures
    // bound to their action.
    std::fs::write(secrets.join("keys.yaml"), "cam: k-cam-0123456789\n").unwrap();
    std::fs::write(secrets.join("sign"), "one-shared-secret\n").unwrap();
    let sign = secrets.join("sign");
    let path = server.dir().join("ferrocast.yaml");
    let yaml = std::fs::read_to_string(&path).unwrap().replace(
        "apps:\n  - name: live\n",
        &format!(
            "apps:\n  - name: studio\n    publish: {{auth: key, keys_file: {:?}}}\n  - name: events\n    \
             publish: {{auth: sign, sign_action_bound: true, sign_secret_files: [{sign:?}]}}\n    \
             play: {{auth: sign, sign_action_bound: true, sign_secret_files: [{sign:?}]}}\n  - name: live\n",
            secrets.join("keys.yaml")
        ),
    );
    std::fs::write(&path, yaml).unwrap();
    let (status, body) = eventually(Duration::from_secs(10), "the reload", || async {
        let r = api(&server, "GET", "/streams/studio/cam/urls", Some(&token), None).await;
        (r.0 != 404).then_some(r)
    })
    .await;
    assert_eq!(status, 200, "{body}");
    let publish = body["data"]["publish"]["rtmp"].as_str().unwrap();
    assert!(publish.ends_with("/studio/cam?key=k-cam-0123456789"), "{publish}");
    assert!(ferrocast_tests::publish_accepted(publish).await, "{publish}");

    let (status, body) = api(&server, "GET", "/streams/events/cam/urls", Some(&token), None).await;
    assert_eq!(status, 200, "{body}");
    let (publish, play) = (
        body["data"]["publish"]["rtmp"].as_str().unwrap(),
        body["data"]["play"]["rtmp"].as_str().unwrap(),
    );
    assert_ne!(publish, play, "each action has its own signature");
    assert!(
        !ferrocast_tests::publish_accepted(play).await,
        "an action-bound play URL published"
    );
    assert!(ferrocast_tests::publish_accepted(publish).await, "{publish}");
    assert!(
        !server.logs().contains("share a sign secret"),
        "action-bound signatures make a shared secret safe"
    );
}

/// Resident memory of a process, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// `n` logins sent at once: the status of each.
async fn parallel_logins(server: &TestServer, n: usize, user: &str, password: &str) -> Vec<u16> {
    let logins = (0..n).map(|_| login(server, user, password));
    futures_util::future::join_all(logins)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect()
}

#[tokio::test]
async fn parallel_logins_are_bounded_in_memory_and_refused_at_once_when_busy() {
    let users = users_dir();
    // Failures are not what is limited here: let every attempt reach the password check.
    let server = TestServer::builder()
        .yaml(&format!(
            "api:\n  users_dir: {:?}\n  login_max_failures: 100000\n  login_max_failures_per_ip: 100000",
            users.path()
        ))
        .start()
        .await
        .unwrap();
    let pid = server.server_pid().expect("server pid");
    assert_eq!(login(&server, USER, PASSWORD).await.0, 200);
    let before = rss_bytes(pid);
    let mut statuses = Vec::new();
    for round in 0..4 {
        let password = if round % 2 == 0 { PASSWORD } else { "wrong" };
        statuses.extend(parallel_logins(&server, 48, USER, password).await);
    }
    let grown = rss_bytes(pid).saturating_sub(before);
    // Each argon2 check holds about 19 MiB: two checker threads hold about 40 MiB, where
    // unbounded checks took this server from 11 MiB to 2.7 GiB.
    assert!(
        grown < 96 << 20,
        "RSS grew by {} MiB under 4 x 48 parallel logins",
        grown >> 20
    );
    assert!(statuses.iter().all(|s| [200, 401, 503].contains(s)), "{statuses:?}");
    assert!(statuses.contains(&503), "excess logins are refused: {statuses:?}");
    assert!(statuses.contains(&200), "some logins still succeed: {statuses:?}");

    // A refused login says when to come back.
    let url = format!("http://127.0.0.1:{}/api/v1/login", server.http_port);
    let body = serde_json::json!({"username": USER, "password": PASSWORD}).to_string();
    let busy = (0..48).map(|_| {
        request(
            "POST",
            &url,
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
            Duration::from_secs(10),
        )
    });
    let answers = futures_util::future::join_all(busy).await;
    let refused = answers
        .iter()
        .flatten()
        .find(|r| r.status == 503)
        .expect("a login refused while the checks are busy");
    assert_eq!(refused.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn parallel_guesses_are_counted_before_the_password_is_checked() {
    let users = users_dir();
    let server = TestServer::builder()
        .yaml(&format!(
            "api:\n  users_dir: {:?}\n  login_max_failures: 5\n  login_max_concurrent: 32",
            users.path()
        ))
        .start()
        .await
        .unwrap();
    let mut statuses = parallel_logins(&server, 20, USER, "guess").await;
    statuses.sort();
    assert_eq!(
        statuses,
        [vec![401; 5], vec![429; 15]].concat(),
        "only login_max_failures guesses may be checked"
    );
    // The user stays locked, even with the right password.
    assert_eq!(login(&server, USER, PASSWORD).await.0, 429);
    // Per address too: guesses at many user names from one client are limited (default 20).
    let names: Vec<String> = (0..30).map(|i| format!("user{i}")).collect();
    let statuses = futures_util::future::join_all(names.iter().map(|n| login(&server, n, "guess"))).await;
    let limited = statuses.iter().filter(|(s, _)| *s == 429).count();
    assert_eq!(limited, 30 - (20 - 5), "{statuses:?}");
}

#[tokio::test]
async fn without_users_the_generated_password_is_checked_without_password_work_under_the_limits() {
    let server = TestServer::builder()
        .yaml("api:\n  login_max_concurrent: 1")
        .start()
        .await
        .unwrap();
    // Guesses at the generated `admin` password: compared at once (never 503 busy, even
    // with one password-check thread), and counted by the same per-user limit.
    let mut statuses = parallel_logins(&server, 20, "admin", PASSWORD).await;
    statuses.sort();
    let mut expected = vec![401; 5];
    expected.extend([429; 15]);
    assert_eq!(statuses, expected, "5 failures allowed for a user, then 429");
}

#[tokio::test]
async fn events_stream_lifecycle_events_as_server_sent_events() {
    let users = users_dir();
    let server = with_api(TestServer::builder(), &users).start().await.unwrap();
    let token = token(&server).await;
    let url = format!("http://127.0.0.1:{}/api/v1/events?token={token}", server.http_port);
    let mut resp = request("GET", &url, &[], None, Duration::from_secs(5)).await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let (unauthorized, _) = api(&server, "GET", "/events", None, None).await;
    assert_eq!(unauthorized, 401);
    let name = unique_name("sse");
    let mut publisher = Publisher::builder(&server.rtmp_url(&name))
        .duration_secs(6)
        .start()
        .unwrap();
    server.wait_live(&name, Duration::from_secs(8)).await.unwrap();
    publisher.kill().await;
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !text.contains("event: donePublish") && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(2), resp.next_event()).await {
            Ok(ferrocast_tests::http::BodyEvent::Data(d)) => text.push_str(&String::from_utf8_lossy(&d)),
            Ok(_) => break,
            Err(_) => {}
        }
    }
    let order: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    let wanted = ["prePublish", "postPublish", "donePublish"];
    let seen: Vec<&str> = order.iter().copied().filter(|e| wanted.contains(e)).collect();
    assert_eq!(seen, wanted, "{text}");
    assert!(text.contains(&format!("\"name\":\"{name}\"")), "{text}");
}

#[tokio::test]
async fn an_api_on_the_admin_listener_is_off_the_public_port() {
    let users = users_dir();
    let server = TestServer::builder()
        .yaml(&format!("api:\n  listener: admin\n  users_dir: {:?}", users.path()))
        .start()
        .await
        .unwrap();
    let body = serde_json::json!({"username": USER, "password": PASSWORD}).to_string();
    let headers = [("Content-Type", "application/json")];
    let public = format!("http://127.0.0.1:{}/api/v1/login", server.http_port);
    let resp = request(
        "POST",
        &public,
        &headers,
        Some(body.as_bytes()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 404, "no password login on the public port");
    let admin = server.admin_url("/api/v1/login");
    let mut resp = request("POST", &admin, &headers, Some(body.as_bytes()), Duration::from_secs(10))
        .await
        .unwrap();
    let (bytes, _) = resp.read_to_end(Duration::from_secs(10)).await.unwrap();
    assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&bytes));
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    assert!(json["data"]["token"].as_str().is_some(), "{json}");
}
