//! The `ferrocast` command line: --print-config, --check-config, --config; admin probes.

use std::process::Output;
use std::time::Duration;

use ferrocast_tests::process::{describe_output, run_bounded};
use ferrocast_tests::{http, server_bin, TempDir, TestServer};
use serde_yaml::Value;

async fn ferrocast(args: &[&str]) -> Output {
    let bin = server_bin().display().to_string();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    run_bounded(&bin, &args, 15).await.unwrap()
}

fn combined(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn parse_yaml(out: &Output) -> Value {
    assert!(out.status.success(), "--print-config failed\n{}", describe_output(out));
    serde_yaml::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("--print-config is not YAML ({e})\n{}", describe_output(out)))
}

const FULL_EXAMPLE: &str = r#"bind: 127.0.0.1
log: {level: info, format: human}
rtmp: {port: 1935, chunk_size: 60000, max_message_size: 16777216, max_connections: 20000, handshake_timeout_secs: 10, idle_timeout_secs: 30}
http: {port: 8000, allow_origin: "*"}
admin: {port: 9090}
hub: {publisher_grace_secs: 10, play_wait_secs: 30}
apps: [{name: live, gop_cache: true, gop_max_frames: 1024, gop_max_bytes: 16777216}]
"#;

#[tokio::test]
async fn print_config_shows_the_embedded_defaults() {
    let out = ferrocast(&["--print-config"]).await;
    let y = parse_yaml(&out);
    assert_eq!(y["rtmp"]["port"].as_u64(), Some(1935), "{y:?}");
    assert_eq!(y["http"]["port"].as_u64(), Some(8000), "{y:?}");
    assert_eq!(y["admin"]["port"].as_u64(), Some(9090), "{y:?}");
    assert_eq!(y["bind"].as_str(), Some("0.0.0.0"), "{y:?}");
    assert_eq!(y["http"]["allow_origin"].as_str(), Some("*"), "{y:?}");
    assert_eq!(y["hub"]["publisher_grace_secs"].as_u64(), Some(10), "{y:?}");
    assert_eq!(y["hub"]["play_wait_secs"].as_u64(), Some(30), "{y:?}");
    let apps = y["apps"].as_sequence().expect("apps is a list");
    assert_eq!(apps.len(), 1, "{y:?}");
    assert_eq!(apps[0]["name"].as_str(), Some("live"), "{y:?}");
    assert_eq!(apps[0]["gop_cache"].as_bool(), Some(true), "{y:?}");
}

#[tokio::test]
async fn print_config_shows_the_effective_config_of_a_file() {
    let dir = TempDir::new("ferrocast-cli").unwrap();
    let f = dir.join("c.yaml");
    std::fs::write(&f, "rtmp:\n  port: 19999\nhub:\n  publisher_grace_secs: 3\n").unwrap();
    let out = ferrocast(&["--config", f.to_str().unwrap(), "--print-config"]).await;
    let y = parse_yaml(&out);
    assert_eq!(y["rtmp"]["port"].as_u64(), Some(19999), "{y:?}");
    assert_eq!(y["hub"]["publisher_grace_secs"].as_u64(), Some(3), "{y:?}");
    // keys the file does not set keep their defaults
    assert_eq!(y["http"]["port"].as_u64(), Some(8000), "{y:?}");
}

#[tokio::test]
async fn printed_config_passes_check_config() {
    let printed = ferrocast(&["--print-config"]).await;
    assert!(printed.status.success(), "{}", describe_output(&printed));
    let dir = TempDir::new("ferrocast-cli").unwrap();
    let f = dir.join("printed.yaml");
    std::fs::write(&f, &printed.stdout).unwrap();
    let out = ferrocast(&["--check-config", f.to_str().unwrap()]).await;
    assert!(
        out.status.success(),
        "the printed config does not validate\n{}",
        describe_output(&out)
    );
}

#[tokio::test]
async fn check_config_accepts_a_valid_file() {
    let dir = TempDir::new("ferrocast-cli").unwrap();
    let f = dir.join("ok.yaml");
    std::fs::write(&f, FULL_EXAMPLE).unwrap();
    let out = ferrocast(&["--check-config", f.to_str().unwrap()]).await;
    assert!(out.status.success(), "valid config rejected\n{}", describe_output(&out));
}

#[tokio::test]
async fn check_config_rejects_an_unknown_key_and_names_it() {
    let dir = TempDir::new("ferrocast-cli").unwrap();
    let f = dir.join("typo.yaml");
    std::fs::write(&f, "rtmp:\n  prot: 1935\n").unwrap();
    let out = ferrocast(&["--check-config", f.to_str().unwrap()]).await;
    assert!(!out.status.success(), "unknown key accepted\n{}", describe_output(&out));
    assert!(
        combined(&out).contains("rtmp.prot"),
        "the message should name the key `rtmp.prot`\n{}",
        describe_output(&out)
    );
}

#[tokio::test]
async fn check_config_rejects_an_unknown_top_level_key() {
    let dir = TempDir::new("ferrocast-cli").unwrap();
    let f = dir.join("typo.yaml");
    std::fs::write(&f, "hubb:\n  play_wait_secs: 3\n").unwrap();
    let out = ferrocast(&["--check-config", f.to_str().unwrap()]).await;
    assert!(!out.status.success(), "unknown key accepted\n{}", describe_output(&out));
    assert!(
        combined(&out).contains("hubb"),
        "the message should name `hubb`\n{}",
        describe_output(&out)
    );
}

#[tokio::test]
async fn check_config_rejects_a_bad_value_and_names_its_key() {
    let dir = TempDir::new("ferrocast-cli").unwrap();
    let f = dir.join("bad.yaml");
    std::fs::write(&f, "rtmp:\n  port: not-a-port\n").unwrap();
    let out = ferrocast(&["--check-config", f.to_str().unwrap()]).await;
    assert!(!out.status.success(), "bad value accepted\n{}", describe_output(&out));
    assert!(
        combined(&out).contains("rtmp.port"),
        "the message should name `rtmp.port`\n{}",
        describe_output(&out)
    );
}

#[tokio::test]
async fn check_config_refuses_zero_and_absurd_durations_naming_the_key() {
    let dir = TempDir::new("ferrocast-cli").unwrap();
    for (yaml, key) in [
        ("hub:\n  write_timeout_secs: 0\n", "hub.write_timeout_secs"),
        (
            "rtmp:\n  idle_timeout_secs: 18446744073709551615\n",
            "rtmp.idle_timeout_secs",
        ),
        ("webhooks:\n  timeout_ms: 0\n", "webhooks.timeout_ms"),
    ] {
        let f = dir.join("bad.yaml");
        std::fs::write(&f, yaml).unwrap();
        let out = ferrocast(&["--check-config", f.to_str().unwrap()]).await;
        assert!(!out.status.success(), "{yaml} accepted\n{}", describe_output(&out));
        assert!(
            combined(&out).contains(&format!("`{key}`")),
            "the message should name `{key}`\n{}",
            describe_output(&out)
        );
    }
}

#[tokio::test]
async fn check_config_fails_on_a_missing_file() {
    let out = ferrocast(&["--check-config", "/nonexistent/ferrocast.yaml"]).await;
    assert!(!out.status.success(), "{}", describe_output(&out));
}

#[tokio::test]
async fn admin_listener_answers_healthz_and_readyz() {
    let server = TestServer::start().await.unwrap();
    for path in ["/healthz", "/readyz"] {
        let (status, body) = http::get_text(&server.admin_url(path), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
    }
    // the probes are not on the public HTTP port
    let public = format!("http://127.0.0.1:{}/healthz", server.http_port);
    let (status, _) = http::get_text(&public, Duration::from_secs(5)).await.unwrap();
    assert_ne!(status, 200, "/healthz should only be served on the admin port");
}

#[tokio::test]
async fn server_logs_the_urls_to_publish_to_and_play_from() {
    let server = TestServer::start().await.unwrap();
    let logs = server.logs();
    for needle in [
        "rtmp://".to_string(),
        format!(":{}", server.rtmp_port),
        format!(":{}", server.http_port),
    ] {
        assert!(logs.contains(&needle), "start-up log lacks {needle:?}:\n{logs}");
    }
}
