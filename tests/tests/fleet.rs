//! The fleet: three real server processes on loopback that know each other as peers. Publish
//! on one pod, play on the others; one publisher per name fleet-wide; a publisher moving to
//! another pod within the grace; the fleet-wide API; drain on SIGTERM; a dead peer; the shared
//! secret on pod-to-pod requests.

use std::time::{Duration, Instant};

use ferrocast_tests::fixtures::{assert_h264_720p_and_aac_only, ffprobe};
use ferrocast_tests::http::request;
use ferrocast_tests::player::{check_monotonic, summarize};
use ferrocast_tests::server::free_ports;
use ferrocast_tests::{
    argon2_phc, publish_accepted, unique_name, FlvPlayer, Publisher, TempDir, TestServer, TestServerBuilder,
};
use serde_json::Value;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const SECRET: &str = "fleet-test-secret-5d1c";
const PASSWORD: &str = "fleet admin password";

struct Fleet {
    pods: Vec<TestServer>,
    admin_ports: [u16; 3],
    _dir: TempDir,
}

impl Fleet {
    /// Three pods, each listing all three admin addresses (itself included) as peers.
    async fn start(tweak: impl Fn(TestServerBuilder) -> TestServerBuilder) -> Fleet {
        let dir = TempDir::new("fleet").unwrap();
        let secret = dir.join("cluster-secret");
        std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
        let users = dir.join("users");
        std::fs::create_dir_all(&users).unwrap();
        std::fs::write(users.join("admin"), argon2_phc(PASSWORD)).unwrap();
        let admin_ports = free_ports::<3>().unwrap();
        let peers: Vec<String> = admin_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut pods = Vec::new();
        for (i, port) in admin_ports.iter().enumerate() {
            let builder = tweak(TestServer::builder()).admin_port(*port).yaml(&format!(
                "cluster:\n  peers: {peers:?}\n  secret_file: {secret:?}\n  pod_name: pod-{i}\n  lookup_timeout_ms: 500\napi:\n  users_dir: {users:?}"
            ));
            pods.push(builder.start().await.unwrap());
        }
        Fleet {
            pods,
            admin_ports,
            _dir: dir,
        }
    }
}

async fn token(pod: &TestServer) -> String {
    let body = serde_json::json!({"username": "admin", "password": PASSWORD}).to_string();
    let (_, json) = api(pod, "POST", "/login", None, Some(&body)).await;
    json["data"]["token"].as_str().expect("token").to_string()
}

async fn api(pod: &TestServer, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    pod.api_json(method, path, token, body).await
}

/// The first video frame a player gets after the headers is a keyframe.
async fn first_frame_is_keyframe(player: &mut FlvPlayer) {
    let tags = player.read_until(SECS(15), |t| t.is_video_frame()).await.unwrap();
    let first = tags.iter().find(|t| t.is_video_frame()).unwrap();
    assert!(
        first.is_keyframe(),
        "first video frame is not a keyframe: {}",
        summarize(&tags)
    );
    assert!(
        tags.iter().any(|t| t.is_video_seq_header()),
        "no sequence header before the first frame: {}",
        summarize(&tags)
    );
}

#[tokio::test]
async fn a_stream_published_on_one_pod_plays_on_the_others_and_publishes_once() {
    let fleet = Fleet::start(|b| b).await;
    let [a, b, c] = [&fleet.pods[0], &fleet.pods[1], &fleet.pods[2]];
    let name = unique_name("anywhere");
    let mut publisher = Publisher::start(&a.rtmp_url(&name)).unwrap();
    a.wait_live(&name, SECS(20)).await.unwrap();

    // HEAD (what the player page polls) knows the stream is live on the fleet.
    for pod in [b, c] {
        let head = request("HEAD", &pod.flv_url(&name), &[], None, SECS(5)).await.unwrap();
        assert_eq!(head.status, 200, "HEAD on a pod without the publisher");
    }
    let gone = request("HEAD", &b.flv_url("nobody_publishes_this"), &[], None, SECS(5))
        .await
        .unwrap();
    assert_eq!(gone.status, 404);

    let mut ws = FlvPlayer::ws(&c.ws_url(&name), SECS(10)).await.unwrap();
    first_frame_is_keyframe(&mut ws).await;
    let mut http = b.http_player(&name).await.unwrap();
    first_frame_is_keyframe(&mut http).await;
    let probe = ffprobe(&b.flv_url(&name), &[], 30).await.unwrap();
    assert_h264_720p_and_aac_only(&probe, "ffprobe over HTTP-FLV on another pod");

    assert!(
        !publish_accepted(&b.rtmp_url(&name)).await,
        "a second publisher of the name on another pod was accepted"
    );
    let status = request("POST", &b.flv_url(&name), &[], Some(b"FLV"), SECS(5))
        .await
        .unwrap()
        .status;
    assert_eq!(status, 409, "an FLV push of a name live on another pod");
    assert!(
        publisher.is_running(),
        "the first publisher was disturbed:\n{}",
        publisher.log()
    );
    let more = ws.read_for(SECS(2)).await.unwrap();
    assert!(
        more.iter().filter(|t| t.is_video_frame()).count() >= 30,
        "{}",
        summarize(&more)
    );
}

#[tokio::test]
async fn a_publisher_moving_to_another_pod_keeps_players_on_a_third_playing() {
    let fleet = Fleet::start(|b| b.grace_secs(10)).await;
    let [a, b, c] = [&fleet.pods[0], &fleet.pods[1], &fleet.pods[2]];
    let name = unique_name("moves");
    let mut first = Publisher::start(&a.rtmp_url(&name)).unwrap();
    a.wait_live(&name, SECS(20)).await.unwrap();
    let mut player = b.http_player(&name).await.unwrap();
    let mut tags = player.read_until(SECS(15), |t| t.is_video_frame()).await.unwrap();
    tags.extend(player.read_for(SECS(2)).await.unwrap());

    first.kill().await;
    let _second = Publisher::start(&c.rtmp_url(&name)).unwrap();
    let moved_at = tags.len();
    let deadline = Instant::now() + SECS(20);
    // Frames from the new publisher: past the old stream's last timestamp and still flowing.
    let last_before = tags.iter().map(|t| t.timestamp).max().unwrap();
    loop {
        let batch = player.read_for(SECS(1)).await.unwrap();
        tags.extend(batch);
        assert!(
            player.end.is_none(),
            "the player on the third pod was cut: {:?}",
            player.end
        );
        let after: Vec<_> = tags[moved_at..].iter().filter(|t| t.is_video_frame()).collect();
        if after.len() >= 60 && after.iter().any(|t| t.timestamp > last_before + 1000) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no media from the new pod: {}",
            summarize(&tags[moved_at..])
        );
    }
    check_monotonic(&tags).unwrap_or_else(|e| panic!("timestamps went back across the move: {e}"));
}

#[tokio::test]
async fn the_api_on_any_pod_shows_the_fleet_and_kicks_anywhere() {
    let fleet = Fleet::start(|b| b).await;
    let [a, b, c] = [&fleet.pods[0], &fleet.pods[1], &fleet.pods[2]];
    let name = unique_name("fleetapi");
    let mut publisher = Publisher::builder(&a.rtmp_url(&name))
        .duration_secs(60)
        .start()
        .unwrap();
    a.wait_live(&name, SECS(20)).await.unwrap();
    let token_b = token(b).await;
    let (status, body) = api(b, "GET", "/streams", Some(&token_b), None).await;
    assert_eq!(status, 200, "{body}");
    let streams = body["data"]["streams"].as_array().unwrap();
    let ours: Vec<_> = streams.iter().filter(|s| s["name"] == name.as_str()).collect();
    assert_eq!(ours.len(), 1, "the stream once, from its own pod: {body}");
    assert_eq!(ours[0]["pod"], "pod-0", "{body}");
    assert_eq!(body["data"]["missingPods"], serde_json::json!([]), "{body}");

    let (_, body) = api(b, "GET", "/sessions", Some(&token_b), None).await;
    let publisher_session = body["data"]["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name.as_str() && s["role"] == "publisher")
        .unwrap_or_else(|| panic!("no publisher session in {body}"))
        .clone();
    assert_eq!(publisher_session["pod"], "pod-0");
    let id = publisher_session["id"].as_u64().unwrap();

    let token_c = token(c).await;
    let (status, body) = api(c, "DELETE", &format!("/sessions/{id}"), Some(&token_c), None).await;
    assert_eq!(status, 200, "kick through another pod: {body}");
    assert!(
        publisher.wait_within(SECS(10)).await.is_some(),
        "the publisher on pod-0 still runs after the kick"
    );
    let (status, _) = api(c, "DELETE", &format!("/sessions/{id}"), Some(&token_c), None).await;
    assert_eq!(status, 404, "an ended session is not found anywhere");
}

#[tokio::test]
async fn a_killed_peer_is_reported_missing_and_the_others_keep_serving() {
    let mut fleet = Fleet::start(|b| b).await;
    fleet.pods[0].kill();
    assert!(fleet.pods[0].wait_exit(SECS(10)).await.is_some());
    let [b, c] = [&fleet.pods[1], &fleet.pods[2]];
    let name = unique_name("survivors");
    let _publisher = Publisher::start(&b.rtmp_url(&name)).unwrap();
    b.wait_live(&name, SECS(20)).await.unwrap();
    let mut player = c.http_player(&name).await.unwrap();
    first_frame_is_keyframe(&mut player).await;
    let token_c = token(c).await;
    let (_, body) = api(c, "GET", "/streams", Some(&token_c), None).await;
    assert_eq!(
        body["data"]["missingPods"],
        serde_json::json!([format!("127.0.0.1:{}", fleet.admin_ports[0])]),
        "{body}"
    );
}

#[tokio::test]
async fn pod_to_pod_requests_need_the_secret() {
    let fleet = Fleet::start(|b| b).await;
    let url = fleet.pods[0].admin_url("/cluster/v1/sessions");
    for headers in [vec![], vec![("x-ferrocast-cluster-secret", "wrong")]] {
        let status = request("GET", &url, &headers, None, SECS(5)).await.unwrap().status;
        assert_eq!(status, 401, "{headers:?}");
    }
    let flv = fleet.pods[0].admin_url("/cluster/v1/flv/live/anything");
    let status = request("GET", &flv, &[], None, SECS(5)).await.unwrap().status;
    assert_eq!(status, 401, "a stream pull without the secret");
    let ok = request("GET", &url, &[("x-ferrocast-cluster-secret", SECRET)], None, SECS(5))
        .await
        .unwrap()
        .status;
    assert_eq!(ok, 200);
}

#[tokio::test]
async fn sigterm_drains_a_pod_not_ready_at_once_players_kept_then_ended_cleanly() {
    let mut fleet = Fleet::start(|b| b.yaml("hub:\n  drain_secs: 4")).await;
    let name = unique_name("drain");
    let a = &fleet.pods[0];
    let mut publisher = Publisher::start(&a.rtmp_url(&name)).unwrap();
    a.wait_live(&name, SECS(20)).await.unwrap();
    let mut local = a.http_player(&name).await.unwrap();
    local.read_until(SECS(10), |t| t.is_video_frame()).await.unwrap();
    let mut remote = fleet.pods[1].ws_player(&name).await.unwrap();
    remote.read_until(SECS(10), |t| t.is_video_frame()).await.unwrap();
    // An HLS player's kept-alive connection.
    let mut hls = tokio::net::TcpStream::connect(("127.0.0.1", a.http_port))
        .await
        .unwrap();
    let close = hls_index_on(&mut hls, &name).await;
    assert_eq!(close, None, "no Connection: close before the drain");

    a.sigterm();
    let sent = Instant::now();
    let readyz = a.admin_url("/readyz");
    // The signal is handled asynchronously: poll briefly for the 503.
    let mut status = 0;
    for _ in 0..20 {
        status = request("GET", &readyz, &[], None, SECS(2)).await.unwrap().status;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, 503, "/readyz right after SIGTERM");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", a.rtmp_port)).is_err(),
        "the RTMP port still accepts during the drain"
    );
    // Live sessions continue through the drain...
    let during = local.read_for(SECS(2)).await.unwrap();
    assert!(local.end.is_none(), "the local player was cut at once: {:?}", local.end);
    assert!(
        during.iter().filter(|t| t.is_video_frame()).count() >= 30,
        "{}",
        summarize(&during)
    );
    let status = request("GET", &readyz, &[], None, SECS(2)).await.unwrap().status;
    assert_eq!(status, 503, "/readyz during the drain (admin listener up)");
    // HLS is still answered, and the player is sent to another pod for its next request.
    let close = hls_index_on(&mut hls, &name).await;
    assert_eq!(close.as_deref(), Some("close"), "HLS during the drain");
    let mut rest = Vec::new();
    let eof = tokio::time::timeout(SECS(5), tokio::io::AsyncReadExt::read_to_end(&mut hls, &mut rest)).await;
    assert!(
        matches!(eof, Ok(Ok(_))),
        "the HLS connection is closed after the answer: {eof:?}"
    );
    // ... and end cleanly after it.
    let (end, _) = local.wait_end(SECS(10)).await.unwrap();
    assert_eq!(end, ferrocast_tests::StreamEnd::HttpComplete);
    assert!(
        sent.elapsed() >= SECS(3),
        "ended before the drain period: {:?}",
        sent.elapsed()
    );
    let status = fleet.pods[0]
        .wait_exit(SECS(15))
        .await
        .expect("pod exits after the drain");
    assert!(status.success(), "exit status {status}");
    assert!(
        publisher.wait_within(SECS(10)).await.is_some(),
        "the publisher was not ended"
    );
    // The player on another pod rides the publisher grace instead of being cut.
    let _ = remote.read_for(SECS(1)).await.unwrap();
    assert!(remote.end.is_none(), "the remote player was cut: {:?}", remote.end);
}

/// Media playlist of `name` on `pod`: the segment file names it lists (query strings cut).
/// GETs `/live/{name}/index.m3u8` on a kept-alive connection, asserts 200 and reads the whole
/// response; returns its `Connection` header.
async fn hls_index_on(s: &mut tokio::net::TcpStream, name: &str) -> Option<String> {
    use tokio::io::AsyncWriteExt;
    let req = format!("GET /live/{name}/index.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(SECS(20), ferrocast_tests::http::next_response(s, &mut buf, false))
        .await
        .expect("the playlist in time")
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.header("connection").map(str::to_string)
}

async fn hls_segments(pod: &TestServer, name: &str) -> Vec<String> {
    let base = format!("http://127.0.0.1:{}/live/{name}", pod.http_port);
    let (status, index) = ferrocast_tests::http::get_text(&format!("{base}/index.m3u8"), SECS(10))
        .await
        .unwrap();
    assert_eq!(status, 200, "index.m3u8: {index}");
    let media = index
        .lines()
        .find(|l| l.starts_with("muxed.m3u8") || l.starts_with("video.m3u8"))
        .or_else(|| {
            index
                .lines()
                .filter_map(|l| l.split("URI=\"").nth(1))
                .map(|u| u.trim_end_matches('"'))
                .find(|u| u.starts_with("video"))
        })
        .unwrap_or_else(|| panic!("no video playlist in {index}"))
        .to_string();
    let (status, playlist) = ferrocast_tests::http::get_text(&format!("{base}/{media}"), SECS(10))
        .await
        .unwrap();
    assert_eq!(status, 200, "{media}: {playlist}");
    playlist
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split('?').next().unwrap().to_string())
        .filter(|l| l.ends_with(".m4s"))
        .collect()
}

#[tokio::test]
async fn hls_plays_on_every_pod_with_the_same_segment_names() {
    let fleet = Fleet::start(|b| b).await;
    let [a, b] = [&fleet.pods[0], &fleet.pods[1]];
    let name = unique_name("fleethls");
    let _publisher = Publisher::start(&a.rtmp_url(&name)).unwrap();
    a.wait_live(&name, SECS(20)).await.unwrap();
    // Let both segmenters cut a few segments (GOP 1 s, segments 2 s).
    let deadline = Instant::now() + SECS(30);
    loop {
        let (on_a, on_b) = (hls_segments(a, &name).await, hls_segments(b, &name).await);
        let shared = on_b.iter().filter(|s| on_a.contains(s)).count();
        if on_b.len() >= 2 && shared >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod B's playlist does not match the origin's: A {on_a:?}, B {on_b:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn a_player_waiting_on_one_pod_starts_when_the_stream_is_published_on_another() {
    let fleet = Fleet::start(|b| b).await;
    let name = unique_name("waits");
    let mut player = FlvPlayer::http(&fleet.pods[1].flv_url(&name), SECS(30)).await;
    // The player's request is in; now the stream appears on another pod.
    let _publisher = Publisher::start(&fleet.pods[2].rtmp_url(&name)).unwrap();
    let player = player.as_mut().unwrap();
    first_frame_is_keyframe(player).await;
}

#[tokio::test]
async fn two_publishers_racing_on_two_pods_end_with_exactly_one_accepted() {
    let fleet = Fleet::start(|b| b).await;
    for round in 0..3 {
        let name = unique_name(&format!("race{round}"));
        let mut a = Publisher::builder(&fleet.pods[0].rtmp_url(&name))
            .duration_secs(30)
            .start()
            .unwrap();
        let mut b = Publisher::builder(&fleet.pods[1].rtmp_url(&name))
            .duration_secs(30)
            .start()
            .unwrap();
        tokio::time::sleep(SECS(6)).await;
        let running = [a.is_running(), b.is_running()];
        assert_eq!(
            running.iter().filter(|r| **r).count(),
            1,
            "round {round}: publishers still running {running:?}\nA: {}\nB: {}",
            a.log(),
            b.log()
        );
    }
}
