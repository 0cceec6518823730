//! Headless Chromium plays the live stream with mpegts.js over HTTP-FLV and WS-FLV, with
//! hls.js over HLS and LL-HLS (with delta updates), and with dash.js over DASH (tests/browser/play.mjs drives it
//! with playwright-core from .tools/node).

use ferrocast_tests::env::require_node_package;
use ferrocast_tests::process::{describe_output, run_json};
use std::time::Duration;

use ferrocast_tests::{http, require_tool, workspace_root, Live};
use serde_json::Value;

async fn browser_plays(url: &str) {
    browser_plays_with(url, "flv").await;
}

/// Plays `url` with `player` (flv, hls, hls-ll, dash) and returns play.mjs's result.
async fn browser_plays_with(url: &str, player: &str) -> Value {
    require_tool("node");
    require_tool("chromium");
    require_node_package("playwright-core");
    require_node_package(match player {
        "flv" => "mpegts.js",
        "hls" | "hls-ll" => "hls.js",
        _ => "dashjs",
    });
    let script = workspace_root().join("tests/browser/play.mjs");
    let args: Vec<String> = vec![
        script.display().to_string(),
        "--player".into(),
        player.into(),
        "--url".into(),
        url.into(),
        "--timeout-ms".into(),
        "20000".into(),
        "--min-time".into(),
        "1.5".into(),
    ];
    let (r, out) = run_json("node", &args, 60).await;
    let pretty = serde_json::to_string_pretty(&r).unwrap();
    assert_eq!(
        r["h264"], true,
        "this Chromium cannot decode H.264 through MSE (Media Source Extensions): {pretty}"
    );
    assert_eq!(
        r["ok"],
        true,
        "Chromium did not play {url}: {pretty}\n{}",
        describe_output(&out)
    );
    assert!(r["currentTime"].as_f64().unwrap_or(0.0) > 1.5, "{pretty}");
    assert!(r["totalVideoFrames"].as_u64().unwrap_or(0) > 0, "{pretty}");
    assert_eq!(r["videoWidth"], 1280, "{pretty}");
    assert_eq!(r["videoHeight"], 720, "{pretty}");
    r
}

fn hls_url(live: &Live, file: &str) -> String {
    format!("http://127.0.0.1:{}/live/{}/{file}", live.server.http_port, live.name)
}

#[tokio::test]
async fn chromium_with_hls_js_plays_hls() {
    let live = Live::start("browser_hls").await.unwrap();
    browser_plays_with(&hls_url(&live, "index.m3u8"), "hls").await;
}

/// The body of `GET url` as text, which must answer 200.
async fn get_ok(url: &str) -> String {
    let (status, text) = http::get_text(url, Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:#}"));
    assert_eq!(status, 200, "GET {url}: {text}");
    text
}

/// Waits until the stream's window is long enough for a delta update to leave segments out.
async fn wait_for_delta_updates(live: &Live) {
    let index = get_ok(&hls_url(live, "index.m3u8")).await;
    let media = index
        .lines()
        .skip_while(|l| !l.starts_with("#EXT-X-STREAM-INF"))
        .nth(1)
        .expect("a variant");
    let sep = if media.contains('?') { '&' } else { '?' };
    let url = hls_url(live, &format!("{media}{sep}_HLS_skip=YES"));
    for _ in 0..60 {
        if get_ok(&url).await.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    panic!("no delta update within 60 s: {url}");
}

#[tokio::test]
async fn chromium_with_hls_js_plays_low_latency_hls_from_parts_and_delta_updates() {
    let live = Live::start("browser_llhls").await.unwrap();
    wait_for_delta_updates(&live).await;
    let r = browser_plays_with(&hls_url(&live, "index.m3u8"), "hls-ll").await;
    let pretty = serde_json::to_string_pretty(&r).unwrap();
    assert_eq!(r["canBlockReload"], true, "{pretty}");
    assert!(
        r["parts"].as_u64().unwrap_or(0) > 0,
        "hls.js loaded LL-HLS parts: {pretty}"
    );
    assert!(
        r["deltaUpdates"].as_u64().unwrap_or(0) > 0,
        "hls.js reloaded with delta updates: {pretty}"
    );
    assert_eq!(r["deltaUpdatesFailed"].as_u64().unwrap_or(0), 0, "{pretty}");
}

#[tokio::test]
async fn chromium_with_dash_js_plays_dash() {
    let live = Live::start("browser_dash").await.unwrap();
    browser_plays_with(&hls_url(&live, "index.mpd"), "dash").await;
}

#[tokio::test]
async fn chromium_with_mpegts_js_plays_http_flv() {
    let live = Live::start("browser_http").await.unwrap();
    browser_plays(&live.flv_url()).await;
}

#[tokio::test]
async fn chromium_with_mpegts_js_plays_ws_flv() {
    let live = Live::start("browser_ws").await.unwrap();
    browser_plays(&live.ws_url()).await;
}
