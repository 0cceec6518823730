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

#[tokio::test]
async fn counters_never_decrease_under_concurrent_scrapes() {
    let server = TestServer::start().await.unwrap();
    let name = unique_name("scraped");
    let _publisher = Publisher::builder(&server.rtmp_url(&name))
        .duration_secs(20)
        .start()
        .unwrap();
    server.wait_live(&name, Duration::from_secs(8)).await.unwrap();
    let mut player = server.http_player(&name).await.unwrap();
    // Four scrapers at once (an HA Prometheus pair, twice) while media flows; each sample
    // of each counter must be at least the one before it.
    let url = server.admin_url("/metrics");
    let scrapers = (0..4).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut samples: Vec<HashMap<String, f64>> = Vec::new();
            for _ in 0..150 {
                let (status, text) = get_text(&url, Duration::from_secs(5)).await.unwrap();
                assert_eq!(status, 200);
                samples.push(
                    parse(&text)
                        .into_iter()
                        .filter(|(k, _)| k.split('{').next().unwrap().ends_with("_total"))
                        .collect(),
                );
            }
            samples
        })
    });
    let reading = tokio::spawn(async move {
        let _ = player.read_for(Duration::from_secs(6)).await;
    });
    let mut checked = 0;
    for scraper in scrapers {
        let samples = scraper.await.unwrap();
        for pair in samples.windows(2) {
            for (series, before) in &pair[0] {
                if let Some(after) = pair[1].get(series) {
                    assert!(after >= before, "{series} went from {before} to {after}");
                    checked += 1;
                } else if series.contains(&name) {
                    panic!("{series} vanished while its stream is live");
                }
            }
        }
    }
    reading.await.unwrap();
    assert!(checked > 1000, "only {checked} comparisons");
    let m = scrape(&server).await;
    assert!(m[&format!(r#"ferrocast_stream_bytes_in_total{{app="live",stream="{name}"}}"#)] > 0.0);
}
