//! TLS end to end: ffmpeg publishing and playing over RTMPS; HTTPS-FLV over HTTP/1.1 and
//! HTTP/2, WSS-FLV, FLV push and the API on the HTTPS port with a rustls client trusting a
//! throwaway CA; SNI certificate selection; certificate files swapped like a Kubernetes
//! Secret while an RTMPS publisher stays live; broken replacements refused; bad certificate
//! files at start named by config key; SIGTERM closing the TLS ports with the others.

use std::path::Path;
use std::time::{Duration, Instant};

use ferrocast_tests::fixtures::{assert_h264_720p_and_aac_only, ffprobe, LIVE_TIMEOUT};
use ferrocast_tests::process::{describe_output, run_bounded};
use ferrocast_tests::server::{free_ports, TlsCertificate};
use ferrocast_tests::tls::{
    connect, h2_flv_player, h2_get_with_window, https_flv_player, https_request, presented, wss_flv_player, Issued,
    SecretDir, TestCa, Trust, ALPN_HTTP11,
};
use ferrocast_tests::{argon2_phc, http, server_bin, unique_name, Publisher, TempDir, TestServer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const USER: &str = "admin";
const PASSWORD: &str = "tls test password";

/// A CA with a default certificate (for clients connecting by address, without SNI) kept in
/// Kubernetes Secret layout.
struct Certs {
    ca: TestCa,
    default: Issued,
    secret: SecretDir,
    dir: TempDir,
}

impl Certs {
    fn new() -> Certs {
        let ca = TestCa::new("ferrocast test CA");
        let default = ca.issue(&["localhost", "127.0.0.1"]);
        let dir = TempDir::new("tls-certs").unwrap();
        let secret = SecretDir::create(&dir.join("default"), &default).unwrap();
        Certs {
            ca,
            default,
            secret,
            dir,
        }
    }

    fn default_entry(&self) -> TlsCertificate {
        TlsCertificate::new(self.secret.cert_file(), self.secret.key_file(), &[])
    }

    /// Another certificate in its own Secret directory, for `hosts`.
    fn named(&self, hosts: &[&str]) -> (Issued, TlsCertificate) {
        let names: Vec<String> = hosts.iter().map(|h| h.replace("*.", "cam.")).collect();
        let issued = self.ca.issue(&names.iter().map(String::as_str).collect::<Vec<_>>());
        let dir = self.dir.join(&hosts[0].replace('*', "wild"));
        let secret = SecretDir::create(&dir, &issued).unwrap();
        (
            issued,
            TlsCertificate::new(secret.cert_file(), secret.key_file(), hosts),
        )
    }
}

/// Publishes with ffmpeg to `url` and waits until the stream is live (checked over plain
/// HTTP-FLV); the failure names ffmpeg's log.
async fn publish(server: &TestServer, url: &str, name: &str) -> Publisher {
    let mut publisher = Publisher::builder(url).duration_secs(120).start().unwrap();
    if let Err(e) = server.wait_live(name, LIVE_TIMEOUT).await {
        panic!(
            "{e:#}\npublisher ({url}) status {:?}, log:\n{}",
            publisher.try_status(),
            publisher.log()
        );
    }
    publisher
}

async fn metrics(server: &TestServer) -> String {
    http::get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
        .await
        .unwrap()
        .1
}

/// The value of one metric series, by its exact `name{labels}`.
fn series(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn ffmpeg_publishes_over_rtmps_and_ffprobe_and_ffmpeg_play_over_rtmps() {
    let certs = Certs::new();
    let server = TestServer::builder()
        .tls(vec![certs.default_entry()])
        .start()
        .await
        .unwrap();
    let name = unique_name("rtmps");
    let mut publisher = publish(&server, &server.rtmps_url(&name), &name).await;

    let m = metrics(&server).await;
    assert_eq!(
        series(
            &m,
            r#"ferrocast_sessions_active{app="live",protocol="rtmps",role="publisher"}"#
        ),
        Some(1.0),
        "the publisher is counted as rtmps:\n{m}"
    );

    let probe = ffprobe(&server.rtmps_url(&name), &[], 30).await.unwrap();
    assert_h264_720p_and_aac_only(&probe, "ffprobe over RTMPS");

    // ffmpeg plays 3 s over RTMPS into a file, whose frames are then counted.
    let out = server.dir().join("rtmps-play.flv");
    let args: Vec<String> = [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-rw_timeout",
        "5000000",
        "-i",
        &server.rtmps_url(&name),
        "-t",
        "3",
        "-c",
        "copy",
        "-f",
        "flv",
        "-y",
        &out.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let res = run_bounded("ffmpeg", &args, 30).await.unwrap();
    assert!(
        res.status.success(),
        "ffmpeg playing over RTMPS failed\n{}",
        describe_output(&res)
    );
    let probe = ffprobe(&out.display().to_string(), &["-count_frames"], 30)
        .await
        .unwrap();
    assert_h264_720p_and_aac_only(&probe, "ffmpeg's recording of the RTMPS stream");
    let video = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == "video")
        .unwrap();
    let frames: u64 = video["nb_read_frames"].as_str().unwrap_or("0").parse().unwrap_or(0);
    assert!(
        frames >= 45,
        "3 s of 30 fps played over RTMPS gave {frames} video frames"
    );
    assert!(publisher.is_running(), "publisher still live: {}", publisher.log());
}

#[tokio::test]
async fn https_serves_http_flv_over_http1_and_h2_wss_flv_flv_push_and_the_api() {
    let certs = Certs::new();
    let server = TestServer::builder()
        .tls(vec![certs.default_entry()])
        .start()
        .await
        .unwrap();
    let port = server.https_port();
    let name = unique_name("https");
    // FLV push over HTTPS (ffmpeg -method POST to https://).
    let mut publisher = publish(&server, &format!("https://127.0.0.1:{port}/live/{name}.flv"), &name).await;
    let path = format!("/live/{name}.flv");
    let ca = &certs.ca;

    let mut h1 = https_flv_player(port, "localhost", ca, &path).await.unwrap();
    let head = h1
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();
    let header = h1.header().expect("FLV header");
    assert!(
        header.has_video() && header.has_audio(),
        "FLV header flags {:#x}",
        header.flags
    );
    assert!(
        head.iter().any(|t| t.is_video_frame() && t.is_keyframe()),
        "playback starts at a keyframe"
    );
    h1.read_until(Duration::from_secs(10), |t| t.is_audio_frame())
        .await
        .unwrap();

    let (mut h2, parts) = h2_flv_player(port, "localhost", ca, &path).await.unwrap();
    assert_eq!(
        parts.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("video/x-flv"),
        "{parts:?}"
    );
    for hop_by_hop in ["connection", "transfer-encoding", "keep-alive", "upgrade"] {
        assert!(
            parts.headers.get(hop_by_hop).is_none(),
            "HTTP/2 response carries {hop_by_hop}: {parts:?}"
        );
    }
    let first = h2
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();
    assert!(
        first.iter().any(|t| t.is_video_frame() && t.is_keyframe()),
        "HTTP/2 playback starts at a keyframe"
    );
    let start_ts = first.last().unwrap().timestamp;
    h2.read_until(Duration::from_secs(10), |t| {
        t.is_video_frame() && t.timestamp >= start_ts + 1000
    })
    .await
    .unwrap();

    let mut wss = wss_flv_player(port, "localhost", ca, &path).await.unwrap();
    wss.read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();
    assert!(wss.ws_messages > 0);

    let mut health = https_request(port, "localhost", ca, "GET", "/api/v1/health", &[], None)
        .await
        .unwrap();
    let (body, _) = health.read_to_end(Duration::from_secs(5)).await.unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((health.status, body["success"].as_bool()), (200, Some(true)), "{body}");

    // A plain-HTTP client on the TLS port gets no HTTP answer, and the port keeps working.
    let mut plain = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    plain
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), plain.read_to_end(&mut answer))
        .await
        .expect("the server closes the connection");
    assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was answered on the TLS port");
    let again = connect(port, "localhost", Trust::Ca(ca), ALPN_HTTP11).await.unwrap();
    assert_eq!(presented(&again), certs.default.der());

    let m = metrics(&server).await;
    assert_eq!(
        series(
            &m,
            r#"ferrocast_sessions_active{app="live",protocol="http_flv",role="player"}"#
        ),
        Some(2.0),
        "HTTPS-FLV players over HTTP/1.1 and HTTP/2:\n{m}"
    );
    assert_eq!(
        series(
            &m,
            r#"ferrocast_sessions_active{app="live",protocol="ws_flv",role="player"}"#
        ),
        Some(1.0),
        "WSS-FLV player:\n{m}"
    );
    assert!(publisher.is_running(), "HTTPS push still live: {}", publisher.log());
}

#[tokio::test]
async fn sni_picks_each_hostnames_certificate_and_the_default_without_sni() {
    let certs = Certs::new();
    let (a, a_entry) = certs.named(&["a.ferrocast.test"]);
    let (b, b_entry) = certs.named(&["*.b.ferrocast.test"]);
    let server = TestServer::builder()
        .tls(vec![a_entry, certs.default_entry(), b_entry])
        .start()
        .await
        .unwrap();
    let ca = &certs.ca;
    for (listener, port) in [("https", server.https_port()), ("rtmps", server.rtmps_port.unwrap())] {
        let cases: [(&str, Trust, &Issued); 4] = [
            ("a.ferrocast.test", Trust::Ca(ca), &a),
            ("cam.b.ferrocast.test", Trust::Ca(ca), &b),
            // An address as the name: the client sends no SNI.
            ("127.0.0.1", Trust::Ca(ca), &certs.default),
            // A name no certificate lists: the default one (which the client cannot verify).
            ("other.ferrocast.test", Trust::Anything, &certs.default),
        ];
        for (name, trust, want) in cases {
            let s = connect(port, name, trust, &[])
                .await
                .unwrap_or_else(|e| panic!("{listener} as {name}: {e:#}"));
            assert_eq!(
                presented(&s),
                want.der(),
                "{listener}: certificate presented for {name}"
            );
        }
    }
    // The names work for playback too: the API over HTTPS as a.ferrocast.test.
    let resp = https_request(
        server.https_port(),
        "a.ferrocast.test",
        ca,
        "GET",
        "/api/v1/health",
        &[],
        None,
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200);
}

/// A users directory for the API with one argon2 user.
fn users_dir() -> TempDir {
    let dir = TempDir::new("tls-api-users").unwrap();
    let phc = argon2_phc(PASSWORD);
    std::fs::write(dir.join(USER), format!("{phc}\n")).unwrap();
    dir
}

/// `METHOD /api/v1{path}` over HTTPS: (status, JSON).
async fn api(
    port: u16,
    ca: &TestCa,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let mut resp = https_request(
        port,
        "localhost",
        ca,
        method,
        &format!("/api/v1{path}"),
        &headers,
        body.map(str::as_bytes),
    )
    .await
    .unwrap();
    let (bytes, _) = resp.read_to_end(Duration::from_secs(10)).await.unwrap();
    (
        resp.status,
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&bytes))),
    )
}

/// The certificate a new connection to `port` (without SNI) is presented.
async fn served(port: u16) -> rustls::pki_types::CertificateDer<'static> {
    presented(&connect(port, "127.0.0.1", Trust::Anything, &[]).await.unwrap())
}

/// Polls new connections until `want` is served on `port` (bounded: the server polls the
/// files every couple of seconds).
async fn wait_served(server: &TestServer, port: u16, want: &Issued, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while served(port).await != want.der() {
        assert!(
            Instant::now() < deadline,
            "{what}: not served within 30 s; server log:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the server log contains `needle` `n` times (bounded).
async fn wait_log(server: &TestServer, needle: &str, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.logs().matches(needle).count() < n {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} (x{n}) in the server log within 30 s:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn swapped_certificate_files_reach_new_connections_while_an_rtmps_publisher_keeps_publishing() {
    let mut certs = Certs::new();
    let users = users_dir();
    let server = TestServer::builder()
        .tls(vec![certs.default_entry()])
        .yaml(&format!("api:\n  users_dir: {:?}", users.path()))
        .start()
        .await
        .unwrap();
    let (https, rtmps) = (server.https_port(), server.rtmps_port.unwrap());
    let name = unique_name("reload");
    let mut publisher = publish(&server, &server.rtmps_url(&name), &name).await;

    let login = serde_json::json!({"username": USER, "password": PASSWORD}).to_string();
    let (status, body) = api(https, &certs.ca, "POST", "/login", None, Some(&login)).await;
    assert_eq!(status, 200, "{body}");
    let token = body["data"]["token"].as_str().unwrap().to_string();
    let stream_path = format!("/streams/live/{name}");
    let (_, before) = api(https, &certs.ca, "GET", &stream_path, Some(&token), None).await;
    let publisher_id = before["data"]["publisher"]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("{before}"));
    assert_eq!(
        before["data"]["publisher"]["protocol"].as_str(),
        Some("rtmps"),
        "{before}"
    );
    let (_, info) = api(https, &certs.ca, "GET", "/info", Some(&token), None).await;
    let ports = &info["data"]["ports"];
    assert_eq!(
        (ports["rtmps"].as_u64(), ports["https"].as_u64()),
        (Some(rtmps.into()), Some(https.into())),
        "{info}"
    );
    let (_, urls) = api(
        https,
        &certs.ca,
        "GET",
        &format!("{stream_path}/urls"),
        Some(&token),
        None,
    )
    .await;
    let play = &urls["data"]["play"];
    assert_eq!(
        play["rtmps"].as_str(),
        Some(format!("rtmps://localhost:{rtmps}/live/{name}").as_str()),
        "{urls}"
    );
    assert_eq!(
        play["httpsFlv"].as_str(),
        Some(format!("https://localhost:{https}/live/{name}.flv").as_str()),
        "{urls}"
    );
    assert_eq!(
        play["wssFlv"].as_str(),
        Some(format!("wss://localhost:{https}/live/{name}.flv").as_str()),
        "{urls}"
    );

    // An HTTPS-FLV player whose TLS connection spans the reload.
    let mut player = https_flv_player(https, "localhost", &certs.ca, &format!("/live/{name}.flv"))
        .await
        .unwrap();
    let seen = player
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();
    let before_swap = seen.last().unwrap().timestamp;
    assert_eq!(served(https).await, certs.default.der());

    let renewed = certs.ca.issue(&["localhost", "127.0.0.1"]);
    certs.secret.update(&renewed.cert_pem, &renewed.key_pem).unwrap();
    wait_served(&server, https, &renewed, "renewed certificate on HTTPS").await;
    assert_eq!(
        served(rtmps).await,
        renewed.der(),
        "RTMPS serves the renewed certificate too"
    );
    wait_log(&server, "certificate reloaded", 1).await;

    // The live connections went on: the player keeps receiving frames, 2 s of media past the
    // swap, from the same RTMPS publish session.
    player
        .read_until(Duration::from_secs(15), |t| {
            t.is_video_frame() && t.timestamp >= before_swap + 2000
        })
        .await
        .unwrap();
    let (_, after) = api(https, &certs.ca, "GET", &stream_path, Some(&token), None).await;
    assert_eq!(
        after["data"]["publisher"]["id"].as_u64(),
        Some(publisher_id),
        "same publish session: {after}"
    );
    assert!(
        publisher.is_running(),
        "ffmpeg kept publishing over RTMPS: {}",
        publisher.log()
    );
    let m = metrics(&server).await;
    assert_eq!(
        series(
            &m,
            r#"ferrocast_sessions_total{app="live",protocol="rtmps",role="publisher"}"#
        ),
        Some(1.0),
        "no second publish session:\n{m}"
    );
}

#[tokio::test]
async fn a_broken_certificate_replacement_is_refused_and_the_old_one_stays_served() {
    let mut certs = Certs::new();
    let server = TestServer::builder()
        .tls(vec![certs.default_entry()])
        .start()
        .await
        .unwrap();
    let https = server.https_port();
    assert_eq!(served(https).await, certs.default.der());
    let refused = "certificate change refused";

    let next = certs.ca.issue(&["localhost", "127.0.0.1"]);
    certs
        .secret
        .update(
            &next.cert_pem,
            "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
    wait_log(&server, refused, 1).await;
    assert_eq!(
        served(https).await,
        certs.default.der(),
        "garbage key: the old certificate stays"
    );

    let other = certs.ca.issue(&["localhost"]);
    certs.secret.update(&next.cert_pem, &other.key_pem).unwrap();
    wait_log(&server, refused, 2).await;
    assert!(
        server.logs().contains("does not match the certificate"),
        "{}",
        server.logs()
    );
    assert_eq!(
        served(https).await,
        certs.default.der(),
        "mismatched key: the old certificate stays"
    );
    assert_eq!(
        server.logs().matches(refused).count(),
        2,
        "each bad content is reported once, not at every poll"
    );

    certs.secret.update(&next.cert_pem, &next.key_pem).unwrap();
    wait_served(&server, https, &next, "the fixed certificate").await;
}

/// `ferrocast ARGS` to completion (bounded): (success, stdout + stderr).
async fn ferrocast(args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let out = run_bounded(&server_bin().display().to_string(), &args, 20)
        .await
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn bad_certificate_files_stop_the_start_with_an_error_naming_key_and_file() {
    let certs = Certs::new();
    let dir = TempDir::new("tls-bad").unwrap();
    let garbage = dir.join("garbage.crt");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let other_key = dir.join("other.key");
    std::fs::write(&other_key, certs.ca.issue(&["localhost"]).key_pem).unwrap();
    let missing = dir.join("missing.crt");
    let key = certs.secret.key_file();
    let cert = certs.secret.cert_file();
    let cases: [(&str, TlsCertificate, &str, &Path, &str); 3] = [
        (
            "missing file",
            TlsCertificate::new(&missing, &key, &[]),
            "tls.certificates[0].cert_file",
            &missing,
            "cannot read",
        ),
        (
            "garbage",
            TlsCertificate::new(&garbage, &key, &[]),
            "tls.certificates[0].cert_file",
            &garbage,
            "no PEM CERTIFICATE block",
        ),
        (
            "key of another certificate",
            TlsCertificate::new(&cert, &other_key, &[]),
            "tls.certificates[0].key_file",
            &other_key,
            "does not match the certificate",
        ),
    ];
    for (what, entry, key_name, file, reason) in cases {
        let [rtmp, http, admin, rtmps, https] = free_ports::<5>().unwrap();
        let config = dir.join("ferrocast.yaml");
        std::fs::write(
            &config,
            TestServer::builder()
                .tls(vec![entry])
                .config_yaml(rtmp, http, admin, (rtmps, https)),
        )
        .unwrap();
        let config = config.display().to_string();
        for args in [&["--check-config", &config][..], &["--config", &config][..]] {
            let (ok, out) = ferrocast(args).await;
            assert!(!ok, "{what}: {args:?} succeeded:\n{out}");
            assert!(
                out.contains(&format!("`{key_name}`")),
                "{what}: {args:?} names the key:\n{out}"
            );
            assert!(
                out.contains(&file.display().to_string()),
                "{what}: {args:?} names the file:\n{out}"
            );
            assert!(out.contains(reason), "{what}: {args:?} says {reason:?}:\n{out}");
        }
    }
    let [rtmp, http, admin, rtmps, https] = free_ports::<5>().unwrap();
    let config = dir.join("good.yaml");
    std::fs::write(
        &config,
        TestServer::builder()
            .tls(vec![certs.default_entry()])
            .config_yaml(rtmp, http, admin, (rtmps, https)),
    )
    .unwrap();
    let (ok, out) = ferrocast(&["--check-config", &config.display().to_string()]).await;
    assert!(ok, "a good certificate passes --check-config:\n{out}");
}

#[tokio::test]
async fn a_certificate_added_to_the_config_file_is_served_without_restart() {
    let certs = Certs::new();
    let builder = TestServer::builder().tls(vec![certs.default_entry()]);
    let server = builder.clone().start().await.unwrap();
    let https = server.https_port();
    let name_of = |port: u16, sni: &'static str| async move {
        presented(&connect(port, sni, Trust::Anything, &[]).await.unwrap())
    };
    assert_eq!(name_of(https, "studio.ferrocast.test").await, certs.default.der());

    let config = server.dir().join("ferrocast.yaml");
    let ports = (
        server.rtmp_port,
        server.http_port,
        server.admin_port,
        (server.rtmps_port.unwrap(), https),
    );
    let write = |entries: Vec<TlsCertificate>| {
        let yaml = builder
            .clone()
            .tls(entries)
            .config_yaml(ports.0, ports.1, ports.2, ports.3);
        std::fs::write(&config, yaml).unwrap();
    };

    // A list naming a file that does not exist is refused as a whole.
    let (_, broken) = certs.named(&["broken.ferrocast.test"]);
    write(vec![
        certs.default_entry(),
        TlsCertificate {
            cert_file: server.dir().join("missing.crt"),
            ..broken
        },
    ]);
    wait_log(&server, "config change refused", 1).await;
    assert!(
        server.logs().contains("tls.certificates[1].cert_file"),
        "{}",
        server.logs()
    );

    let (studio, entry) = certs.named(&["studio.ferrocast.test"]);
    write(vec![certs.default_entry(), entry]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while name_of(https, "studio.ferrocast.test").await != studio.der() {
        assert!(
            Instant::now() < deadline,
            "the new certificate is not served; log:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let verified = connect(
        server.rtmps_port.unwrap(),
        "studio.ferrocast.test",
        Trust::Ca(&certs.ca),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(presented(&verified), studio.der(), "RTMPS serves it too");
    assert_eq!(
        served(https).await,
        certs.default.der(),
        "clients without SNI still get the default"
    );
}

#[tokio::test]
async fn an_http2_player_whose_window_stays_closed_is_disconnected_and_others_play_on() {
    let certs = Certs::new();
    let server = TestServer::builder()
        .tls(vec![certs.default_entry()])
        .write_timeout_secs(2)
        .start()
        .await
        .unwrap();
    let port = server.https_port();
    let name = unique_name("h2stall");
    let mut publisher = publish(&server, &server.rtmp_url(&name), &name).await;
    let path = format!("/live/{name}.flv");
    let ca = &certs.ca;
    let players = r#"ferrocast_sessions_active{app="live",protocol="http_flv",role="player"}"#;

    let (mut healthy, _) = h2_flv_player(port, "localhost", ca, &path).await.unwrap();
    healthy
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();
    // Takes the response head and never reads the body: its 64 KiB window closes at once and
    // the server can no longer send to it, while the socket itself stays writable.
    let (parts, stalled_body, stalled_conn) = h2_get_with_window(port, "localhost", ca, &path, Some(65_535))
        .await
        .unwrap();
    assert_eq!(parts.status, 200);
    assert_eq!(series(&metrics(&server).await, players), Some(2.0));

    let deadline = Instant::now() + Duration::from_secs(30);
    while series(&metrics(&server).await, players) != Some(1.0) {
        assert!(
            Instant::now() < deadline,
            "the stalled HTTP/2 player is still attached:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        server.logs().contains("flow-control window closed"),
        "the reason is logged:\n{}",
        server.logs()
    );
    // The healthy player, on its own connection, keeps receiving live media.
    let before = healthy
        .read_until(Duration::from_secs(10), |t| t.is_video_frame())
        .await
        .unwrap();
    let ts = before.iter().rev().find(|t| t.is_video_frame()).unwrap().timestamp;
    healthy
        .read_until(Duration::from_secs(10), |t| {
            t.is_video_frame() && t.timestamp >= ts + 1000
        })
        .await
        .unwrap();
    assert!(publisher.is_running(), "publisher still live: {}", publisher.log());
    drop((stalled_body, stalled_conn));
}

/// Whether anything accepts TCP connections on `port` now.
async fn listening(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

#[tokio::test]
async fn tls_listeners_open_when_a_reload_brings_a_certificate_and_close_when_it_goes() {
    let certs = Certs::new();
    let builder = TestServer::builder();
    let server = builder.clone().start().await.unwrap();
    let [rtmps, https] = free_ports::<2>().unwrap();
    assert!(!listening(https).await && !listening(rtmps).await, "no TLS at start");

    let config = server.dir().join("ferrocast.yaml");
    let write = |entries: Vec<TlsCertificate>| {
        let yaml = builder.clone().tls(entries).config_yaml(
            server.rtmp_port,
            server.http_port,
            server.admin_port,
            (rtmps, https),
        );
        std::fs::write(&config, yaml).unwrap();
    };
    write(vec![certs.default_entry()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(s) = connect(https, "127.0.0.1", Trust::Ca(&certs.ca), &[]).await {
            assert_eq!(presented(&s), certs.default.der());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "HTTPS did not open on reload; log:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rtmps_tls = connect(rtmps, "127.0.0.1", Trust::Ca(&certs.ca), &[]).await.unwrap();
    assert_eq!(presented(&rtmps_tls), certs.default.der(), "RTMPS opened too");
    let status: Value = serde_json::from_str(
        &http::get_text(&server.admin_url("/config-status"), Duration::from_secs(5))
            .await
            .unwrap()
            .1,
    )
    .unwrap();
    assert!(status.get("pending").is_none(), "{status}");
    assert_eq!(
        status["tls_listening"],
        serde_json::json!(["rtmps", "https"]),
        "{status}"
    );
    let m = metrics(&server).await;
    assert_eq!(
        series(&m, "ferrocast_tls_listening{listener=\"rtmps\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        series(&m, "ferrocast_tls_listening{listener=\"https\"}"),
        Some(1.0),
        "{m}"
    );

    write(vec![]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while listening(https).await || listening(rtmps).await {
        assert!(
            Instant::now() < deadline,
            "TLS listeners stayed open after the last certificate went; log:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(listening(server.rtmp_port).await, "plain RTMP keeps serving");
    assert!(
        server.logs().contains("RTMPS and HTTPS listeners closed"),
        "{}",
        server.logs()
    );
    let status = config_status(&server).await;
    assert_eq!(status["tls_listening"], serde_json::json!([]), "{status}");
    let m = metrics(&server).await;
    assert_eq!(
        series(&m, "ferrocast_tls_listening{listener=\"rtmps\"}"),
        Some(0.0),
        "{m}"
    );
}

async fn config_status(server: &TestServer) -> Value {
    serde_json::from_str(
        &http::get_text(&server.admin_url("/config-status"), Duration::from_secs(5))
            .await
            .unwrap()
            .1,
    )
    .unwrap()
}

/// A reload that brings a certificate applies even when a TLS port is taken (the apps and
/// policies must not wait on a listener), but `/config-status` and the metrics report the
/// TLS listeners as not listening, so the operator lists no rtmps:// or https:// endpoint.
#[tokio::test]
async fn a_tls_port_taken_on_reload_is_reported_as_not_listening() {
    let certs = Certs::new();
    let builder = TestServer::builder();
    let server = builder.clone().start().await.unwrap();
    let [rtmps, https] = free_ports::<2>().unwrap();
    // Someone else holds the HTTPS port.
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", https)).unwrap();
    let before = config_status(&server).await;
    let yaml = builder.clone().tls(vec![certs.default_entry()]).config_yaml(
        server.rtmp_port,
        server.http_port,
        server.admin_port,
        (rtmps, https),
    );
    std::fs::write(server.dir().join("ferrocast.yaml"), yaml).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server.logs().contains("RTMPS and HTTPS stay closed") {
        assert!(
            Instant::now() < deadline,
            "the failed TLS bind was not logged; log:\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = config_status(&server).await;
    assert_ne!(status["hash"], before["hash"], "the config applied: {status}");
    assert!(status.get("pending").is_none(), "{status}");
    assert_eq!(status["tls_listening"], serde_json::json!([]), "{status}");
    let m = metrics(&server).await;
    assert_eq!(
        series(&m, "ferrocast_tls_listening{listener=\"rtmps\"}"),
        Some(0.0),
        "{m}"
    );
    assert_eq!(
        series(&m, "ferrocast_tls_listening{listener=\"https\"}"),
        Some(0.0),
        "{m}"
    );
    assert!(!listening(rtmps).await, "RTMPS stays closed with its HTTPS partner");
}

#[tokio::test]
async fn sigterm_closes_every_public_listener_before_readyz_answers_503() {
    let certs = Certs::new();
    let mut server = TestServer::builder()
        .tls(vec![certs.default_entry()])
        .yaml("hub:\n  drain_secs: 2")
        .start()
        .await
        .unwrap();
    let public = [
        ("rtmp", server.rtmp_port),
        ("http", server.http_port),
        ("rtmps", server.rtmps_port.unwrap()),
        ("https", server.https_port()),
    ];
    for (what, port) in public {
        assert!(listening(port).await, "{what} before the signal");
    }
    // A live RTMPS publisher keeps the pod draining (an idle pod would exit at once).
    let name = unique_name("drain");
    let mut publisher = publish(&server, &server.rtmps_url(&name), &name).await;
    server.sigterm();
    let readyz = server.admin_url("/readyz");
    let mut status = 0;
    for _ in 0..100 {
        status = http::request("GET", &readyz, &[], None, Duration::from_secs(2))
            .await
            .unwrap()
            .status;
        if status == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 503, "/readyz after SIGTERM");
    // Not ready means no port takes a new connection any more: none is still closing.
    for (what, port) in public {
        assert!(!listening(port).await, "{what} still accepts once /readyz answers 503");
    }
    assert!(
        publisher.is_running(),
        "the RTMPS publisher was cut at once: {}",
        publisher.log()
    );
    let exit = server
        .wait_exit(Duration::from_secs(15))
        .await
        .expect("exits after the drain");
    assert!(exit.success(), "exit status {exit}");
}
