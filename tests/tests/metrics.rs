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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_never_decrease_under_concurrent_scrapes() {
    use ferrocast_tests::rtmp_client::RtmpClient;
    let server = TestServer::start().await.unwrap();
    // Many live streams (cheap AAC-only publishers) make each scrape's work long enough that
    // concurrent scrapes overlap.
    let prefix = unique_name("scraped");
    let mut publishers = Vec::new();
    for i in 0..80 {
        let mut c = RtmpClient::connect(server.rtmp_port, "live").await.unwrap();
        c.publish(&format!("{prefix}_{i}")).await.unwrap();
        c.send_media(8, 0, bytes::Bytes::from_static(&[0xAF, 0x00, 0x12, 0x10]))
            .await
            .unwrap();
        publishers.push(c);
    }
    let feeding = tokio::spawn(async move {
        for t in 1..200u32 {
            for c in &mut publishers {
                let frame = bytes::Bytes::from(vec![0xAF, 0x01, 0x21, 0x10, 0x04, 0x60, 0x8C, 0x1C]);
                if c.send_media(8, t * 23, frame).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // Several scrapers at once (HA Prometheus pairs) while media flows; each sample of each
    // counter must be at least the one before it.
    let url = server.admin_url("/metrics");
    let scrapers = (0..6).map(|_| {
        let url = url.clone();
        tokio::spawn(async move {
            let mut samples: Vec<HashMap<String, f64>> = Vec::new();
            for _ in 0..60 {
                let (status, text) = get_text(&url, Duration::from_secs(10)).await.unwrap();
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
    let mut checked = 0;
    for scraper in scrapers {
        let samples = scraper.await.unwrap();
        for pair in samples.windows(2) {
            for (series, before) in &pair[0] {
                match pair[1].get(series) {
                    Some(after) => assert!(after >= before, "{series} went from {before} to {after}"),
                    None => panic!("{series} vanished while its stream is live"),
                }
                checked += 1;
            }
        }
    }
    feeding.abort();
    assert!(checked > 10_000, "only {checked} comparisons");
    let m = scrape(&server).await;
    assert!(m[&format!(r#"ferrocast_stream_bytes_in_total{{app="live",stream="{prefix}_0"}}"#)] > 0.0);
}
