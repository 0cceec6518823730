//! PROXY protocol v1 and v2 on the RTMP, HTTP, RTMPS and HTTPS listeners: a raw TCP client
//! plays the load balancer, writing the header before RTMP, HTTP or TLS bytes. The API's
//! session list and an app's deny list see the forwarded client; a header from an untrusted
//! address, or a malformed one, closes the connection; plain clients keep working.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{anyhow, Result};
use ferrocast_tests::http::{connect_from, request, request_on};
use ferrocast_tests::rtmp_raw::{client_handshake, wait_closed};
use ferrocast_tests::server::TlsCertificate;
use ferrocast_tests::tls::{connect_on, SecretDir, TestCa, ALPN_HTTP11};
use ferrocast_tests::{argon2_phc, TempDir, TestServer, TestServerBuilder};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const PASSWORD: &str = "proxy protocol test";
/// The app refuses this client range, so a forwarded address in it is visibly applied.
const DENIED: &str = "203.0.113.0/24";

/// A PROXY v1 header for a TCP4 client.
fn v1(client: &str) -> Vec<u8> {
    let c: SocketAddr = client.parse().unwrap();
    format!("PROXY TCP4 {} 127.0.0.1 {} 1935\r\n", c.ip(), c.port()).into_bytes()
}

/// A PROXY v2 header (command PROXY, TCP over IPv4) for a client, with one TLV as AWS NLB
/// sends (its VPC endpoint id).
fn v2(client: &str) -> Vec<u8> {
    let c: SocketAddr = client.parse().unwrap();
    let IpAddr::V4(ip) = c.ip() else { panic!("IPv4 only") };
    let mut body = ip.octets().to_vec();
    body.extend_from_slice(&[127, 0, 0, 1]);
    body.extend_from_slice(&c.port().to_be_bytes());
    body.extend_from_slice(&1935u16.to_be_bytes());
    body.extend_from_slice(&[0xEA, 0x00, 0x04, 0x01, b'v', b'p', b'e']);
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x21, 0x11]);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// A PROXY v2 LOCAL header (a load balancer's health check).
fn v2_local() -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
    out
}

fn builder(listeners: &str, trusted: &str, users: &TempDir) -> TestServerBuilder {
    TestServer::builder()
        .app_yaml(&format!("deny: [{DENIED:?}]"))
        .yaml(&format!(
            "proxy_protocol:\n  listeners: [{listeners}]\n  trusted_cidrs: [{trusted:?}]\n  header_timeout_secs: 3"
        ))
        .yaml(&format!("api:\n  users_dir: {:?}", users.path()))
}

fn users() -> TempDir {
    let dir = TempDir::new("pp-users").unwrap();
    std::fs::write(dir.join("admin"), format!("{}\n", argon2_phc(PASSWORD))).unwrap();
    dir
}

/// The IPs of the sessions the API lists.
async fn session_ips(server: &TestServer) -> Vec<String> {
    let api = |path: &str| format!("http://127.0.0.1:{}/api/v1{path}", server.http_port);
    let body = serde_json::json!({"username": "admin", "password": PASSWORD}).to_string();
    let mut resp = request(
        "POST",
        &api("/login"),
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let (bytes, _) = resp.read_to_end(Duration::from_secs(10)).await.unwrap();
    let login: Value = serde_json::from_slice(&bytes).unwrap();
    let token = login["data"]["token"].as_str().expect("a token").to_string();
    let auth = format!("Bearer {token}");
    let mut resp = request(
        "GET",
        &api("/sessions"),
        &[("Authorization", &auth)],
        None,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let (bytes, _) = resp.read_to_end(Duration::from_secs(10)).await.unwrap();
    let sessions: Value = serde_json::from_slice(&bytes).unwrap();
    sessions["data"]["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("no session list: {sessions}"))
        .iter()
        .map(|s| s["ip"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `GET /live/{name}.flv` on a connection that first sends `preamble`: the status.
async fn get_after(mut tcp: TcpStream, preamble: &[u8], name: &str) -> Result<u16> {
    tcp.write_all(preamble).await?;
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        request_on(
            Box::new(tcp),
            "GET",
            "127.0.0.1",
            &format!("/live/{name}.flv"),
            &[],
            None,
        ),
    )
    .await
    .map_err(|_| anyhow!("no response head within 5 s"))??;
    Ok(resp.status)
}

#[tokio::test]
async fn rtmp_clients_behind_proxy_headers_are_listed_with_their_own_address() {
    let users = users();
    let server = builder("rtmp, http", "127.0.0.0/8", &users).start().await.unwrap();
    let mut held = Vec::new();
    for header in [v1("198.51.100.7:5000"), v2("198.51.100.8:6000"), v2_local()] {
        let mut s = TcpStream::connect(("127.0.0.1", server.rtmp_port)).await.unwrap();
        s.write_all(&header).await.unwrap();
        client_handshake(&mut s)
            .await
            .expect("RTMP after a PROXY header completes its handshake");
        held.push(s);
    }
    let ips = session_ips(&server).await;
    for want in ["198.51.100.7", "198.51.100.8", "127.0.0.1"] {
        assert!(
            ips.iter().any(|ip| ip == want),
            "sessions list {want} (v1, v2, and a v2 LOCAL connection as itself): {ips:?}"
        );
    }
}

#[tokio::test]
async fn http_clients_behind_proxy_headers_meet_the_apps_deny_list() {
    let users = users();
    let server = builder("rtmp, http", "127.0.0.0/8", &users).start().await.unwrap();
    let connect = || TcpStream::connect(("127.0.0.1", server.http_port));
    let cases: [(&str, Vec<u8>, u16); 4] = [
        ("v1 from a denied client", v1("203.0.113.9:4000"), 403),
        ("v2 from a denied client", v2("203.0.113.10:4000"), 403),
        ("v2 from an allowed client", v2("198.51.100.1:4000"), 200),
        ("a trusted peer without a header", Vec::new(), 200),
    ];
    for (what, header, want) in cases {
        let status = get_after(connect().await.unwrap(), &header, "pp_http")
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!(status, want, "{what}");
    }
}

#[tokio::test]
async fn a_header_from_an_untrusted_address_closes_the_connection() {
    let users = users();
    let server = builder("rtmp, http", "127.0.0.2/32", &users).start().await.unwrap();
    let (untrusted, trusted) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
    let mut s = connect_from(untrusted, server.http_port).await.unwrap();
    s.write_all(&v1("198.51.100.1:4000")).await.unwrap();
    s.write_all(b"GET /live/x.flv HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    wait_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("an untrusted HTTP header closes the connection");
    let mut logged = false;
    for _ in 0..50 {
        logged = server.logs().contains("PROXY header from an untrusted address");
        if logged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(logged, "the refusal is logged");
    let plain = get_after(
        connect_from(untrusted, server.http_port).await.unwrap(),
        b"",
        "pp_plain",
    )
    .await
    .unwrap();
    assert_eq!(plain, 200, "an untrusted client without a header is served as itself");
    let forwarded = get_after(
        connect_from(trusted, server.http_port).await.unwrap(),
        &v1("203.0.113.1:4000"),
        "pp_trusted",
    )
    .await
    .unwrap();
    assert_eq!(forwarded, 403, "the trusted balancer's header applies");

    let mut r = connect_from(untrusted, server.rtmp_port).await.unwrap();
    r.write_all(&v2("198.51.100.1:4000")).await.unwrap();
    wait_closed(&mut r, Duration::from_secs(5))
        .await
        .expect("an untrusted RTMP header closes the connection");
}

#[tokio::test]
async fn malformed_headers_close_the_connection() {
    let users = users();
    let mut server = builder("rtmp, http", "127.0.0.0/8", &users).start().await.unwrap();
    let mut oversized = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    oversized.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
    let mut endless = b"PROXY TCP4 ".to_vec();
    endless.extend_from_slice(&[b'9'; 200]);
    let cases: [(&str, Vec<u8>, u16); 4] = [
        (
            "v1 with a bad address",
            b"PROXY TCP4 1.2.3 4.5.6.7 1 2\r\n".to_vec(),
            server.http_port,
        ),
        ("v1 without CRLF in 107 bytes", endless, server.rtmp_port),
        ("v2 announcing 65535 bytes", oversized, server.http_port),
        (
            "v2 of version 1",
            {
                let mut h = v2("198.51.100.1:1");
                h[12] = 0x11;
                h
            },
            server.rtmp_port,
        ),
    ];
    for (what, bytes, port) in cases {
        let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let _ = s.write_all(&bytes).await;
        wait_closed(&mut s, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
    }
    // A peer that starts a header and stalls is closed after proxy_protocol.header_timeout_secs.
    let mut s = TcpStream::connect(("127.0.0.1", server.rtmp_port)).await.unwrap();
    s.write_all(b"PROXY TCP4 1.2.3.4").await.unwrap();
    wait_closed(&mut s, Duration::from_secs(8))
        .await
        .expect("a stalled header times out");
    assert!(server.is_running());
}

#[tokio::test]
async fn rtmps_and_https_read_the_header_before_tls() {
    let ca = TestCa::new("proxy protocol test CA");
    let dir = TempDir::new("pp-tls").unwrap();
    let secret = SecretDir::create(&dir.join("default"), &ca.issue(&["localhost"])).unwrap();
    let users = users();
    let server = builder("rtmps, https", "127.0.0.0/8", &users)
        .tls(vec![TlsCertificate::new(secret.cert_file(), secret.key_file(), &[])])
        .start()
        .await
        .unwrap();
    for (header, want) in [(v1("203.0.113.5:4000"), 403), (v2("198.51.100.5:4000"), 200)] {
        let mut tcp = TcpStream::connect(("127.0.0.1", server.https_port())).await.unwrap();
        tcp.write_all(&header).await.unwrap();
        let tls = connect_on(tcp, "localhost", &ca, ALPN_HTTP11).await.unwrap();
        let resp = tokio::time::timeout(
            Duration::from_secs(5),
            request_on(Box::new(tls), "GET", "localhost", "/live/pp_tls.flv", &[], None),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(resp.status, want, "HTTPS after a PROXY header");
    }
    let mut tcp = TcpStream::connect(("127.0.0.1", server.rtmps_port.unwrap()))
        .await
        .unwrap();
    tcp.write_all(&v2("198.51.100.6:7000")).await.unwrap();
    let _rtmps = connect_on(tcp, "localhost", &ca, &[])
        .await
        .expect("TLS after a PROXY header on the RTMPS port");
    let mut ips = Vec::new();
    for _ in 0..25 {
        ips = session_ips(&server).await;
        if ips.iter().any(|ip| ip == "198.51.100.6") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ips.iter().any(|ip| ip == "198.51.100.6"),
        "the RTMPS session has the forwarded address: {ips:?}"
    );
    // Plain HTTP stays plain: the header is only read where configured.
    let mut s = TcpStream::connect(("127.0.0.1", server.http_port)).await.unwrap();
    s.write_all(&v1("198.51.100.1:1")).await.unwrap();
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        request_on(Box::new(s), "GET", "a", "/live/x.flv", &[], None),
    )
    .await
    .expect("answered or closed at once");
    assert!(
        resp.map_or(true, |r| r.status == 400),
        "on a listener without PROXY protocol a header is just a bad request"
    );
}
