//! Relays against real peers: nginx-rtmp as a pull source and a push target, a second
//! Ferrocast as the origin of on-demand pulls (RTMP and HTTP-FLV), GStreamer's RTSP server
//! (H.264 + AAC, H.265 + AAC), FFmpeg 9 publishing HEVC through a push and a pull, an RTMPS
//! target behind a test CA, a source that restarts under a player, and a push loop.

use std::time::{Duration, Instant};

use ferrocast_tests::fixtures::LIVE_TIMEOUT;
use ferrocast_tests::http::{get_text, request};
use ferrocast_tests::peers::{NginxRtmp, RtspServer};
use ferrocast_tests::rtmp_client::RtmpClient;
use ferrocast_tests::server::TlsCertificate;
use ferrocast_tests::tls::{SecretDir, TestCa};
use ferrocast_tests::{
    argon2_phc, modern, run_bounded, unique_name, FlvPlayer, Publisher, TempDir, TestServer, TestServerBuilder,
};
use serde_json::Value;

const USER: &str = "admin";
const PASSWORD: &str = "relay test password";

/// A users directory with `admin`, kept alive by the caller.
fn users() -> TempDir {
    let dir = TempDir::new("relay-users").unwrap();
    std::fs::write(dir.join(USER), format!("{}\n", argon2_phc(PASSWORD))).unwrap();
    dir
}

fn with_api(builder: TestServerBuilder, users: &TempDir) -> TestServerBuilder {
    builder.yaml(&format!("api:\n  users_dir: {:?}", users.path()))
}

/// `METHOD /api/v1{path}` with a bearer token: (status, JSON body).
async fn call(server: &TestServer, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    server.api_json(method, path, token, body).await
}

async fn token(server: &TestServer) -> String {
    let body = serde_json::json!({"username": USER, "password": PASSWORD}).to_string();
    let (status, json) = call(server, "POST", "/login", None, Some(&body)).await;
    assert_eq!(status, 200, "{json}");
    json["data"]["token"].as_str().expect("token").to_string()
}

/// `GET /api/v1/relays`.
async fn relays(server: &TestServer, token: &str) -> Vec<Value> {
    let (status, json) = call(server, "GET", "/relays", Some(token), None).await;
    assert_eq!(status, 200, "{json}");
    json["data"]["relays"].as_array().cloned().unwrap_or_default()
}

/// Polls `f` every 200 ms until it gives `Some`, up to `d`; panics naming `what`.
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
        assert!(Instant::now() < deadline, "timed out after {d:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of one metric series (`name{labels}` exactly as exposed).
async fn metric(server: &TestServer, series: &str) -> Option<f64> {
    let (_, text) = get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

/// The one relay of `server` whose stream is `app/name`.
async fn relay_of(server: &TestServer, token: &str, stream: &str) -> Option<Value> {
    relays(server, token).await.into_iter().find(|r| r["stream"] == stream)
}

/// ffprobe decodes a few seconds of `url`: (video codec, video frames decoded).
async fn probe_decodes(url: &str) -> (String, u64) {
    let args: Vec<String> = [
        "-v",
        "error",
        "-rw_timeout",
        "5000000",
        "-read_intervals",
        "%+3",
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=codec_name,nb_read_frames",
        "-of",
        "json",
        url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = run_bounded("ffprobe", &args, 40).await.unwrap();
    let json: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("ffprobe {url}: {}", ferrocast_tests::process::describe_output(&out)));
    let s = &json["streams"][0];
    let frames = s["nb_read_frames"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0);
    (s["codec_name"].as_str().unwrap_or("none").to_string(), frames)
}

/// Waits until an HTTP-FLV player of `url` gets a video frame.
async fn wait_video(url: &str, what: &str) -> FlvPlayer {
    let mut p = FlvPlayer::http(url, LIVE_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    p.read_until(LIVE_TIMEOUT, |t| t.is_video_frame())
        .await
        .unwrap_or_else(|e| panic!("{what}: no video frame: {e:#}"));
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_rtmp_stream_is_pulled_by_a_static_relay_and_decodes() {
    let nginx = NginxRtmp::start().await.unwrap();
    let name = unique_name("ngx_src");
    let _publisher = Publisher::start(&nginx.url(&name)).unwrap();
    let users = users();
    let server = with_api(TestServer::builder(), &users)
        .yaml(&format!(
            "relays:\n  - {{mode: pull, source: {:?}, stream: live/pulled}}",
            nginx.url(&name)
        ))
        .start()
        .await
        .unwrap();
    // nginx answers a play of a stream nobody publishes yet with Play.Start and silence; the
    // relay waits for the first frame, then publishes here.
    server.wait_live("pulled", LIVE_TIMEOUT).await.unwrap();
    let (codec, frames) = probe_decodes(&server.flv_url("pulled")).await;
    assert_eq!(codec, "h264");
    assert!(frames > 10, "{frames} frames decoded from the relayed stream");
    let token = token(&server).await;
    let r = relay_of(&server, &token, "live/pulled")
        .await
        .expect("the static pull is listed");
    assert_eq!(
        (r["mode"].as_str(), r["origin"].as_str(), r["state"].as_str()),
        (Some("pull"), Some("config"), Some("live")),
        "{r}"
    );
    assert!(r["bytes_in"].as_u64().unwrap() > 100_000, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_push_reaches_nginx_rtmp_and_decodes_there_without_logging_the_key() {
    let nginx = NginxRtmp::start().await.unwrap();
    let users = users();
    let secret = "k3y-7f9e2c";
    let server = with_api(TestServer::builder(), &users)
        .app_yaml(&format!(
            "push: [{{target: \"rtmp://127.0.0.1:{}/live/{{name}}?key={secret}\"}}]",
            nginx.port
        ))
        .start()
        .await
        .unwrap();
    let name = unique_name("pushed");
    let _publisher = Publisher::start(&server.rtmp_url(&name)).unwrap();
    server.wait_live(&name, LIVE_TIMEOUT).await.unwrap();
    let (codec, frames) = probe_decodes(&nginx.url(&name)).await;
    assert_eq!(codec, "h264", "nginx log:\n{}", nginx.log());
    assert!(frames > 10, "{frames} frames decoded at nginx");
    let token = token(&server).await;
    let r = relay_of(&server, &token, &format!("live/{name}"))
        .await
        .expect("the app push is listed");
    assert_eq!(
        (r["mode"].as_str(), r["origin"].as_str(), r["state"].as_str()),
        (Some("push"), Some("app"), Some("live")),
        "{r}"
    );
    assert!(r["bytes_out"].as_u64().unwrap() > 100_000, "{r}");
    assert_eq!(r["target"], format!("rtmp://127.0.0.1:{}/live/{name}?***", nginx.port));
    assert!(!server.logs().contains(secret), "the key reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_pulls_on_demand_over_rtmp_and_stops_after_the_idle_time() {
    let origin = TestServer::start().await.unwrap();
    let users = users();
    let edge = with_api(TestServer::builder(), &users)
        .app_yaml(&format!(
            "pull: {{source: \"rtmp://127.0.0.1:{}/live\", idle_close_secs: 2}}",
            origin.rtmp_port
        ))
        .start()
        .await
        .unwrap();
    let name = unique_name("edge");
    let _publisher = Publisher::start(&origin.rtmp_url(&name)).unwrap();
    origin.wait_live(&name, LIVE_TIMEOUT).await.unwrap();
    let token = token(&edge).await;
    assert!(
        relays(&edge, &token).await.is_empty(),
        "nothing pulled before a player asks"
    );

    // Relay state changes are on the event stream.
    let events_url = format!("http://127.0.0.1:{}/api/v1/events?token={token}", edge.http_port);
    let mut events = request("GET", &events_url, &[], None, Duration::from_secs(5))
        .await
        .unwrap();

    let mut first = wait_video(&edge.flv_url(&name), "first edge player").await;
    let mut second = wait_video(&edge.flv_url(&name), "second edge player").await;
    let live = relays(&edge, &token).await;
    assert_eq!(live.len(), 1, "two players share one pull: {live:?}");
    assert_eq!(
        (live[0]["origin"].as_str(), live[0]["state"].as_str()),
        (Some("on_demand"), Some("live"))
    );
    assert_eq!(
        live[0]["source"],
        format!("rtmp://127.0.0.1:{}/live/{name}", origin.rtmp_port)
    );
    assert_eq!(
        metric(&edge, "ferrocast_relay_count{mode=\"pull\",state=\"live\"}").await,
        Some(1.0)
    );
    assert!(
        metric(&edge, "ferrocast_relay_bytes_in_total{mode=\"pull\"}")
            .await
            .unwrap()
            > 10_000.0
    );
    first
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();
    second
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();

    drop(first);
    drop(second);
    eventually(Duration::from_secs(20), "the idle pull to stop", || async {
        relays(&edge, &token).await.is_empty().then_some(())
    })
    .await;
    assert_eq!(
        metric(&edge, "ferrocast_relay_count{mode=\"pull\",state=\"live\"}").await,
        Some(0.0)
    );
    let mut seen = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(seen.contains("\"state\":\"live\"") && seen.contains("\"state\":\"stopped\"")) && Instant::now() < deadline
    {
        match tokio::time::timeout(Duration::from_secs(1), events.next_event()).await {
            Ok(ferrocast_tests::http::BodyEvent::Data(d)) => seen.push_str(&String::from_utf8_lossy(&d)),
            Ok(other) => panic!("the event stream ended: {other:?}; so far: {seen}"),
            Err(_) => {}
        }
    }
    assert!(seen.contains("event: relayState"), "SSE: {seen}");
    assert!(
        seen.contains("\"state\":\"live\"") && seen.contains("\"state\":\"stopped\""),
        "SSE: {seen}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_pulls_on_demand_over_http_flv() {
    let origin = TestServer::start().await.unwrap();
    let edge = TestServer::builder()
        .app_yaml(&format!(
            "pull: {{source: \"http://127.0.0.1:{}/live\"}}",
            origin.http_port
        ))
        .start()
        .await
        .unwrap();
    let name = unique_name("edgeflv");
    let _publisher = Publisher::start(&origin.rtmp_url(&name)).unwrap();
    origin.wait_live(&name, LIVE_TIMEOUT).await.unwrap();
    let (codec, frames) = probe_decodes(&edge.rtmp_url(&name)).await;
    assert_eq!(codec, "h264", "edge log:\n{}", edge.logs());
    assert!(frames > 10, "{frames} frames decoded through the HTTP-FLV pull");
    assert!(edge
        .logs()
        .contains(&format!("source=http://127.0.0.1:{}/live/{name}.flv", origin.http_port)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_stream_is_not_found_at_once_through_the_edge() {
    let origin = TestServer::start().await.unwrap();
    // Players of an unpublished stream would wait 120 s without the not-found answer.
    let edge = TestServer::builder()
        .play_wait_secs(120)
        .app_yaml(&format!(
            "pull: {{source: \"rtmp://127.0.0.1:{}/live\"}}",
            origin.rtmp_port
        ))
        .start()
        .await
        .unwrap();
    let mut client = RtmpClient::connect(edge.rtmp_port, "live").await.unwrap();
    let err = client
        .play("nobody_here")
        .await
        .expect_err("a missing stream is refused");
    assert!(format!("{err:#}").contains("NetStream.Play.StreamNotFound"), "{err:#}");

    let flv_edge = TestServer::builder()
        .play_wait_secs(120)
        .app_yaml(&format!(
            "pull: {{source: \"http://127.0.0.1:{}/live\"}}",
            origin.http_port
        ))
        .start()
        .await
        .unwrap();
    let resp = request(
        "GET",
        &flv_edge.flv_url("nobody_here"),
        &[],
        None,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_pulls_of_made_up_names_stay_within_the_waiting_caps_for_plays_and_heads() {
    // A source that accepts connections and never answers: each on-demand pull hangs there
    // until the play wait ends, so every pull the edge started is still counted here.
    let source = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let source_port = source.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = source.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(sock);
        }
    });
    let edge = TestServer::builder()
        .play_wait_secs(4)
        .section_yaml("hub", "max_waiting_streams_per_ip: 2")
        .app_yaml(&format!("pull: {{source: \"rtmp://127.0.0.1:{source_port}/live\"}}"))
        .start()
        .await
        .unwrap();
    // Plays, and HEADs (the player page's probe, which asks the pull too).
    let requests: Vec<_> = (0..6)
        .map(|i| {
            let url = edge.flv_url(&format!("made_up_{i}"));
            let method = if i % 2 == 0 { "GET" } else { "HEAD" };
            tokio::spawn(async move {
                request(method, &url, &[], None, Duration::from_secs(15))
                    .await
                    .map(|r| r.status)
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap().unwrap());
    }
    let pulls = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        pulls <= 2,
        "{pulls} pulls started for 6 made-up names with a cap of 2 waiting streams"
    );
    assert_eq!(statuses.iter().filter(|s| **s == 404).count(), pulls, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s != 200), "{statuses:?}");
    // The names found missing leave no waiting stream behind: the caps are free again.
    let status = request(
        "HEAD",
        &edge.flv_url("made_up_again"),
        &[],
        None,
        Duration::from_secs(15),
    )
    .await
    .unwrap()
    .status;
    assert_eq!(status, 404, "edge log:\n{}", edge.logs());
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), pulls + 1);
    holder.abort();
}

/// GStreamer's RTSP server serving `codec`, and a server relaying it to `live/cam`, live.
async fn rtsp_relay_live(codec: &str) -> (RtspServer, TestServer) {
    let rtsp = RtspServer::start(codec).await.unwrap();
    let server = TestServer::builder()
        .yaml(&format!(
            "relays:\n  - {{mode: pull, source: {:?}, stream: live/cam}}",
            rtsp.url()
        ))
        .start()
        .await
        .unwrap();
    server
        .wait_live("cam", LIVE_TIMEOUT)
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nrtsp log:\n{}", rtsp.log()));
    (rtsp, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_h264_aac_source_decodes_over_http_flv() {
    let (_rtsp, server) = rtsp_relay_live("h264").await;
    let probe = ferrocast_tests::fixtures::ffprobe(&server.flv_url("cam"), &["-read_intervals", "%+2"], 30)
        .await
        .unwrap();
    let codecs: Vec<&str> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["codec_name"].as_str())
        .collect();
    assert!(codecs.contains(&"h264") && codecs.contains(&"aac"), "{probe}");
    let (codec, frames) = probe_decodes(&server.flv_url("cam")).await;
    assert_eq!(codec, "h264");
    assert!(frames > 10, "{frames} H.264 frames decoded from the RTSP relay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtsp_h265_source_keeps_its_codec_over_http_flv() {
    let (_rtsp, server) = rtsp_relay_live("h265").await;
    // Debian's FFmpeg 5.1 reads no HEVC in FLV; FFmpeg 9 reads enhanced RTMP.
    let report = modern::decode(&modern::modern_ffmpeg(), &server.flv_url("cam"), Some(3), 60)
        .await
        .unwrap();
    report.assert_decoded("RTSP H.265 relayed to HTTP-FLV", "hevc", Some((640, 360)), "aac", 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hevc_keeps_its_codec_through_a_push_and_a_pull() {
    // origin --app push--> middle <--static pull-- edge
    let middle = TestServer::start().await.unwrap();
    let origin = TestServer::builder()
        .app_yaml(&format!(
            "push: [{{target: \"rtmp://127.0.0.1:{}/live\"}}]",
            middle.rtmp_port
        ))
        .start()
        .await
        .unwrap();
    let name = unique_name("hevc");
    let edge = TestServer::builder()
        .yaml(&format!(
            "relays:\n  - {{mode: pull, source: \"rtmp://127.0.0.1:{}/live/{name}\", stream: live/{name}}}",
            middle.rtmp_port
        ))
        .start()
        .await
        .unwrap();
    let dir = TempDir::new("relay-hevc").unwrap();
    let _slot = modern::encoder_slot().await;
    let _publisher = modern::start_publisher(&origin.rtmp_url(&name), "hevc", "aac", 40, &dir).unwrap();
    middle.wait_live(&name, LIVE_TIMEOUT).await.unwrap();
    edge.wait_live(&name, LIVE_TIMEOUT).await.unwrap();
    let ffmpeg = modern::modern_ffmpeg();
    let pushed = modern::decode(&ffmpeg, &middle.flv_url(&name), Some(2), 60)
        .await
        .unwrap();
    pushed.assert_decoded("HEVC after a push", "hevc", Some((640, 360)), "aac", 20);
    let pulled = modern::decode(&ffmpeg, &edge.flv_url(&name), Some(2), 60)
        .await
        .unwrap();
    pulled.assert_decoded("HEVC after a push and a pull", "hevc", Some((640, 360)), "aac", 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtmps_push_verifies_the_target_with_the_configured_ca() {
    let ca = TestCa::new("relay test CA");
    let dir = TempDir::new("relay-rtmps").unwrap();
    let secret = SecretDir::create(&dir.join("tls"), &ca.issue(&["localhost"])).unwrap();
    let target = TestServer::builder()
        .tls(vec![TlsCertificate::new(secret.cert_file(), secret.key_file(), &[])])
        .start()
        .await
        .unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let port = target.rtmps_port.unwrap();
    let users = users();
    // The same target three times: trusting the test CA, with the system roots only, and
    // without verification.
    let source = with_api(TestServer::builder(), &users)
        .app_yaml(&format!(
            "push:\n      - {{target: \"rtmps://localhost:{port}/live/{{name}}\", ca_file: {ca_file:?}}}\n      - {{target: \"rtmps://localhost:{port}/live/{{name}}_untrusted\"}}\n      - {{target: \"rtmps://localhost:{port}/live/{{name}}_unverified\", tls_verify: false}}"
        ))
        .start()
        .await
        .unwrap();
    let name = unique_name("tlspush");
    let _publisher = Publisher::start(&source.rtmp_url(&name)).unwrap();
    target.wait_live(&name, LIVE_TIMEOUT).await.unwrap();
    let (codec, frames) = probe_decodes(&target.flv_url(&name)).await;
    assert_eq!((codec.as_str(), frames > 10), ("h264", true), "{frames} frames");
    let token = token(&source).await;
    let untrusted = eventually(Duration::from_secs(20), "the untrusted push to fail", || async {
        // Its last path segment is not the stream's name, so it is shown masked.
        relays(&source, &token)
            .await
            .into_iter()
            .find(|r| r["target"] == format!("rtmps://localhost:{port}/live/***") && !r["last_error"].is_null())
    })
    .await;
    assert_ne!(untrusted["state"], "live", "{untrusted}");
    assert!(untrusted["last_error"].as_str().unwrap().contains("TLS"), "{untrusted}");
    assert!(
        !target
            .logs()
            .contains(&format!("publish started stream=/live/{name}_untrusted")),
        "a push to an untrusted target went through"
    );
    // `tls_verify: false` is the way to a self-signed target.
    target
        .wait_live(&format!("{name}_unverified"), LIVE_TIMEOUT)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_reconnects_after_the_source_restarts_and_the_player_stays() {
    // The origin keeps its RTMP and HTTP ports across the restart (readiness uses the admin port
    // the harness picks).
    let [rtmp, http] = ferrocast_tests::server::free_ports::<2>().unwrap();
    let origin_config = move |dir: &TempDir, ports: [u16; 5]| {
        let path = dir.join("origin.yaml");
        std::fs::write(
            &path,
            format!(
                "bind: 127.0.0.1\nrtmp: {{port: {rtmp}}}\nhttp: {{port: {http}}}\nadmin: {{port: {}}}\n",
                ports[2]
            ),
        )?;
        Ok(path)
    };
    let origin = TestServer::builder().start_with(origin_config).await.unwrap();
    let name = unique_name("restart");
    let users = users();
    let edge = with_api(TestServer::builder().grace_secs(30), &users)
        .yaml(&format!(
            "relays:\n  - {{mode: pull, source: \"rtmp://127.0.0.1:{rtmp}/live/{name}\", stream: live/{name}}}"
        ))
        .start()
        .await
        .unwrap();
    let url = format!("rtmp://127.0.0.1:{rtmp}/live/{name}");
    let mut publisher = Publisher::start(&url).unwrap();
    let mut player = wait_video(&edge.flv_url(&name), "edge player").await;
    let before = player
        .read_until(Duration::from_secs(5), |t| t.is_video_frame())
        .await
        .unwrap();
    let last_ts = before.iter().rev().find(|t| t.is_video()).map(|t| t.timestamp).unwrap();

    // The source dies (SIGKILL) and comes back on the same ports with a new publisher.
    publisher.kill().await;
    drop(origin);
    let token = token(&edge).await;
    eventually(Duration::from_secs(15), "the relay to notice", || async {
        relay_of(&edge, &token, &format!("live/{name}"))
            .await
            .filter(|r| r["state"] != "live")
    })
    .await;
    // What the player had buffered before the source died; nothing new arrives while it is down.
    let buffered = player.read_for(Duration::from_millis(500)).await.unwrap();
    let last_ts = buffered
        .iter()
        .filter(|t| t.is_video_frame())
        .map(|t| t.timestamp)
        .max()
        .unwrap_or(last_ts);
    let _origin = TestServer::builder().start_with(origin_config).await.unwrap();
    let _publisher = Publisher::start(&url).unwrap();
    drop(
        wait_video(
            &format!("http://127.0.0.1:{http}/live/{name}.flv"),
            "the restarted origin",
        )
        .await,
    );
    eventually(Duration::from_secs(30), "the relay to reconnect", || async {
        relay_of(&edge, &token, &format!("live/{name}"))
            .await
            .filter(|r| r["state"] == "live" && r["reconnects"].as_u64() >= Some(1))
    })
    .await;

    // The same player connection continues, from a keyframe of the new source, with
    // timestamps that keep increasing.
    let after = player
        .read_until(Duration::from_secs(30), |t| {
            t.is_video_frame() && t.is_keyframe() && t.timestamp > last_ts
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the player lost the stream across the restart: {e:#}\nedge log:\n{}",
                edge.logs()
            )
        });
    if let Err(e) = ferrocast_tests::player::check_monotonic(&after) {
        panic!("timestamps went back across the reconnect: {e}");
    }
    let r = relay_of(&edge, &token, &format!("live/{name}")).await.unwrap();
    assert_eq!(r["state"], "live", "{r}");
    assert!(r["reconnects"].as_u64().unwrap() >= 1, "{r}");
    assert!(
        metric(&edge, "ferrocast_relay_reconnects_total{mode=\"pull\"}")
            .await
            .unwrap()
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_the_same_server_is_refused_not_amplified() {
    let users = users();
    let users_path = users.path().to_path_buf();
    let server = TestServer::builder()
        .start_with(move |dir, [rtmp, http, admin, _, _]| {
            let path = dir.join("loop.yaml");
            std::fs::write(
                &path,
                format!(
                    "bind: 127.0.0.1\nrtmp: {{port: {rtmp}}}\nhttp: {{port: {http}}}\nadmin: {{port: {admin}}}\n\
                     api: {{users_dir: {users_path:?}}}\n\
                     apps:\n  - name: live\n    push: [{{target: \"rtmp://127.0.0.1:{rtmp}/live/{{name}}_copy\"}}]\n"
                ),
            )?;
            Ok(path)
        })
        .await
        .unwrap();
    let name = unique_name("loop");
    let _publisher = Publisher::start(&server.rtmp_url(&name)).unwrap();
    server.wait_live(&name, LIVE_TIMEOUT).await.unwrap();
    let token = token(&server).await;
    let r = eventually(Duration::from_secs(15), "the loop to be refused", || async {
        relay_of(&server, &token, &format!("live/{name}"))
            .await
            .filter(|r| r["state"] == "failed")
    })
    .await;
    assert!(r["last_error"].as_str().unwrap().contains("relay loop"), "{r}");
    assert_eq!(r["reconnects"], 0, "a loop is not retried: {r}");
    assert!(
        server.logs().contains("relay connection refused: relay loop"),
        "the refusal is logged"
    );
    assert!(metric(&server, "ferrocast_relay_loops_refused_total").await.unwrap() >= 1.0);
    let (_, streams) = call(&server, "GET", "/streams", Some(&token), None).await;
    let names: Vec<&str> = streams["data"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, vec![name.as_str()], "no copy was published");
    assert_eq!(relays(&server, &token).await.len(), 1, "no relay of a copy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_starts_and_deletes_a_static_pull() {
    let origin = TestServer::start().await.unwrap();
    let name = unique_name("apipull");
    let _publisher = Publisher::start(&origin.rtmp_url(&name)).unwrap();
    origin.wait_live(&name, LIVE_TIMEOUT).await.unwrap();
    let users = users();
    let server = with_api(TestServer::builder().grace_secs(1), &users)
        .start()
        .await
        .unwrap();
    let token = token(&server).await;
    let (status, json) = call(&server, "POST", "/relays", None, Some("{}")).await;
    assert_eq!(status, 401, "{json}");
    let bad = r#"{"mode": "pull", "source": "ftp://x/y", "stream": "live/x"}"#;
    let (status, json) = call(&server, "POST", "/relays", Some(&token), Some(bad)).await;
    assert_eq!(status, 400, "{json}");
    assert!(json["message"].as_str().unwrap().contains("`source`"), "{json}");
    let body = serde_json::json!({
        "mode": "pull",
        "source": format!("http://127.0.0.1:{}/live/{name}.flv?sign=abc123def", origin.http_port),
        "stream": "live/copy",
    })
    .to_string();
    let (status, json) = call(&server, "POST", "/relays", Some(&token), Some(&body)).await;
    assert_eq!(status, 201, "{json}");
    assert_eq!(
        json["data"]["source"],
        format!("http://127.0.0.1:{}/live/{name}.flv?***", origin.http_port)
    );
    let id = json["data"]["id"].as_u64().unwrap();
    let mut player = wait_video(&server.flv_url("copy"), "player of the API pull").await;
    let (status, _) = call(&server, "DELETE", &format!("/relays/{id}"), Some(&token), None).await;
    assert_eq!(status, 200);
    assert!(relays(&server, &token).await.is_empty());
    let (end, _) = player.wait_end(Duration::from_secs(15)).await.unwrap();
    assert_eq!(
        end,
        ferrocast_tests::StreamEnd::HttpComplete,
        "the stream ends once its relay is deleted"
    );
    let (status, _) = call(&server, "DELETE", &format!("/relays/{id}"), Some(&token), None).await;
    assert_eq!(status, 404);
    assert!(!server.logs().contains("abc123def"), "the signature reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_through_another_server_is_refused_where_it_closes() {
    // a --push live/{name}_b--> b --push live/{name}_b_a--> a: the stream would go round for ever.
    let [a_rtmp, b_rtmp] = ferrocast_tests::server::free_ports::<2>().unwrap();
    let users = users();
    let config = |own: u16, peer: u16, suffix: &'static str| {
        let users_path = users.path().to_path_buf();
        move |dir: &TempDir, ports: [u16; 5]| {
            let path = dir.join("loop.yaml");
            std::fs::write(
                &path,
                format!(
                    "bind: 127.0.0.1\nrtmp: {{port: {own}}}\nhttp: {{port: {}}}\nadmin: {{port: {}}}\n\
                     api: {{users_dir: {users_path:?}}}\n\
                     apps:\n  - name: live\n    push: [{{target: \"rtmp://127.0.0.1:{peer}/live/{{name}}_{suffix}\"}}]\n",
                    ports[1], ports[2]
                ),
            )?;
            Ok(path)
        }
    };
    let a = TestServer::builder()
        .start_with(config(a_rtmp, b_rtmp, "b"))
        .await
        .unwrap();
    let b = TestServer::builder()
        .start_with(config(b_rtmp, a_rtmp, "a"))
        .await
        .unwrap();
    let name = unique_name("round");
    let _publisher = Publisher::start(&format!("rtmp://127.0.0.1:{a_rtmp}/live/{name}")).unwrap();
    // The first hop is fine: b carries the stream.
    b.wait_live(&format!("{name}_b"), LIVE_TIMEOUT).await.unwrap();
    let token_b = token(&b).await;
    let back = eventually(Duration::from_secs(15), "b's push back to a to be refused", || async {
        relay_of(&b, &token_b, &format!("live/{name}_b"))
            .await
            .filter(|r| r["state"] == "failed")
    })
    .await;
    assert!(back["last_error"].as_str().unwrap().contains("relay loop"), "{back}");
    assert!(
        a.logs().contains("relay connection refused: relay loop"),
        "a logs the refusal"
    );
    let token_a = token(&a).await;
    let (_, streams) = call(&a, "GET", "/streams", Some(&token_a), None).await;
    let names: Vec<&str> = streams["data"]["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, vec![name.as_str()], "nothing came back round to a");
}
