//! `/metrics` parsed as Prometheus text: values follow a known publish/play session, and the
//! series of a stream vanish once it ends.

use std::collections::HashMap;
use std::time::Duration;

use ferrocast_tests::http::get_text;
use ferrocast_tests::{unique_name, Publisher, TestServer};

/// `name{labels}` -> value, from the text exposition format.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

async fn scrape(server: &TestServer) -> HashMap<String, f64> {
    let (status, text) = get_text(&server.admin_url("/metrics"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(status, 200);
    parse(&text)
}

#[tokio::test]
async fn metrics_follow_a_session_and_vanish_with_the_stream() {
    let server = TestServer::builder().grace_secs(1).start().await.unwrap();
    let name = unique_name("metered");
    let mut publisher = Publisher::builder(&server.rtmp_url(&name))
        .duration_secs(12)
        .start()
        .unwrap();
    server.wait_live(&name, Duration::from_secs(8)).await.unwrap();
    let mut player = server.http_player(&name).await.unwrap();
    player.read_for(Duration::from_secs(3)).await.unwrap();

    let m = scrape(&server).await;
    let s = |metric: &str| format!(r#"{metric}{{app="live",stream="{name}"}}"#);
    assert_eq!(m[r#"ferrocast_streams_active{app="live"}"#], 1.0);
    assert_eq!(
        m[r#"ferrocast_sessions_active{app="live",protocol="rtmp",role="publisher"}"#],
        1.0
    );
    assert_eq!(
        m[r#"ferrocast_sessions_active{app="live",protocol="http_flv",role="player"}"#],
        1.0
    );
    assert_eq!(m[&s("ferrocast_stream_players")], 1.0);
    assert!(m[&s("ferrocast_stream_bytes_in_total")] > 50_000.0, "{m:?}");
    assert!(m[&s("ferrocast_stream_bytes_out_total")] > 50_000.0);
    assert!(m[&s("ferrocast_stream_publish_bitrate_bits_per_second")] > 10_000.0);
    assert!(m.contains_key(&s("ferrocast_stream_gop_cache_bytes")));
    assert!(
        m.contains_key("process_resident_memory_bytes"),
        "process metrics exported"
    );

    drop(player);
    publisher.kill().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let m = scrape(&server).await;
    assert!(
        !m.keys().any(|k| k.contains(&name)),
        "series of the ended stream remain: {:?}",
        m.keys().filter(|k| k.contains(&name)).collect::<Vec<_>>()
    );
    assert_eq!(m[r#"ferrocast_streams_active{app="live"}"#], 0.0);
    assert_eq!(
        m[r#"ferrocast_sessions_active{app="live",protocol="rtmp",role="publisher"}"#],
        0.0
    );
    assert_eq!(
        m[r#"ferrocast_sessions_total{app="live",protocol="rtmp",role="publisher"}"#],
        1.0
    );
}
