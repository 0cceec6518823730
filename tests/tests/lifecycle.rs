//! Stream lifecycle: publisher conflicts, drop and republish within the grace period, the end
//! after it, late joiners and the GOP cache, waiting players, SIGTERM.

use std::time::{Duration, Instant};

use ferrocast_tests::player::{check_monotonic, summarize};
use ferrocast_tests::process::{describe_output, run_bounded};
use ferrocast_tests::{require_tool, unique_name, FlvPlayer, Live, Publisher, StreamEnd, TestServer};

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test]
async fn second_publisher_is_refused_while_the_first_keeps_flowing() {
    let live = Live::start("dup").await.unwrap();
    let mut player = live.server.http_player(&live.name).await.unwrap();
    player.read_until(SECS(10), |t| t.is_video_frame()).await.unwrap();

    let mut second = Publisher::builder(&live.rtmp_url()).duration_secs(20).start().unwrap();
    let status = second.wait_within(SECS(10)).await;
    let status = status.unwrap_or_else(|| {
        panic!(
            "second publisher still running after 10 s: not refused\n{}",
            second.log()
        )
    });
    assert!(
        !status.success(),
        "second publisher exited successfully: {status}\n{}",
        second.log()
    );

    // the first publisher and its player are unaffected
    let mut publisher = live.publisher;
    assert!(publisher.is_running(), "first publisher died:\n{}", publisher.log());
    let tags = player.read_for(SECS(2)).await.unwrap();
    let frames = tags.iter().filter(|t| t.is_video_frame()).count();
    assert!(
        frames >= 30,
        "player got {frames} video frames in 2 s after the refusal: {}",
        summarize(&tags)
    );
    assert!(player.end.is_none(), "player ended: {:?}", player.end);
}

#[tokio::test]
async fn republish_within_grace_keeps_players_playing_with_increasing_timestamps() {
    let live = Live::start_with("republish", TestServer::builder().grace_secs(6), |p| p)
        .await
        .unwrap();
    let (server, mut first, name) = (live.server, live.publisher, live.name);
    let mut player = server.http_player(&name).await.unwrap();
    let mut tags = player.read_for(SECS(2)).await.unwrap();
    let before = tags.iter().filter(|t| t.is_video_frame()).count();
    assert!(
        before >= 30,
        "player received {before} video frames in 2 s: {}",
        summarize(&tags)
    );
    let last_ts_before = tags.iter().map(|t| t.timestamp).max().unwrap();

    first.kill().await; // the encoder's connection drops without a goodbye
    tags.extend(player.read_for(SECS(1)).await.unwrap());
    assert!(
        player.end.is_none(),
        "player ended 1 s after the publisher dropped: {:?}",
        player.end
    );

    let _second = Publisher::start(&server.rtmp_url(&name)).unwrap();
    let republished_at = tags.len();
    let after = player
        .read_until(SECS(15), |t| t.is_video_frame())
        .await
        .unwrap_or_else(|e| panic!("no video after the republish: {e:#}"));
    tags.extend(after);
    tags.extend(player.read_for(SECS(3)).await.unwrap());
    assert!(
        player.end.is_none(),
        "player ended after the republish: {:?}",
        player.end
    );

    let new_tags = &tags[republished_at..];
    let new_frames: Vec<_> = new_tags.iter().filter(|t| t.is_video_frame()).collect();
    assert!(
        new_frames.len() >= 45,
        "only {} video frames in ~3 s after the republish",
        new_frames.len()
    );
    assert!(
        new_frames[0].is_keyframe(),
        "video after the republish does not start with a keyframe: {}",
        summarize(new_tags)
    );
    assert!(
        new_frames[0].timestamp > last_ts_before,
        "timestamps restarted on republish: last before the drop {last_ts_before} ms, first after {} ms",
        new_frames[0].timestamp
    );
    if let Err(e) = check_monotonic(&tags) {
        panic!("timestamps go backwards across the republish: {e}");
    }
}

#[tokio::test]
async fn after_grace_http_flv_ends_and_ws_gets_a_close_frame() {
    let grace = 2;
    let live = Live::start_with("grace_end", TestServer::builder().grace_secs(grace), |p| p)
        .await
        .unwrap();
    let (server, mut publisher, name) = (live.server, live.publisher, live.name);
    let mut http = server.http_player(&name).await.unwrap();
    let mut ws = server.ws_player(&name).await.unwrap();
    http.read_until(SECS(10), |t| t.is_video_frame()).await.unwrap();
    ws.read_until(SECS(10), |t| t.is_video_frame()).await.unwrap();

    publisher.kill().await;
    let dropped = Instant::now();
    let (http_res, ws_res) = tokio::join!(
        async {
            let r = http.wait_end(SECS(grace + 8)).await;
            (r, dropped.elapsed())
        },
        async {
            let r = ws.wait_end(SECS(grace + 8)).await;
            (r, dropped.elapsed())
        }
    );
    let ((http_end, _), http_t) = (http_res.0.unwrap(), http_res.1);
    let ((ws_end, _), ws_t) = (ws_res.0.unwrap(), ws_res.1);
    // players stay attached for the grace period...
    let min = Duration::from_millis(grace * 1000 - 500);
    assert!(
        http_t >= min,
        "HTTP-FLV ended {http_t:?} after the drop, before the {grace} s grace"
    );
    assert!(
        ws_t >= min,
        "WS-FLV ended {ws_t:?} after the drop, before the {grace} s grace"
    );
    // ...then get a proper end
    assert_eq!(
        http_end,
        StreamEnd::HttpComplete,
        "HTTP-FLV response should end cleanly"
    );
    assert!(
        matches!(ws_end, StreamEnd::WsClose(_)),
        "WS should receive a close frame, got {ws_end:?}"
    );
}

#[tokio::test]
async fn after_grace_rtmp_players_end() {
    require_tool("ffmpeg");
    let grace = 2;
    let live = Live::start_with("grace_rtmp", TestServer::builder().grace_secs(grace), |p| p)
        .await
        .unwrap();
    let (server, mut publisher, name) = (live.server, live.publisher, live.name);
    let url = server.rtmp_url(&name);
    let mut player = tokio::spawn(async move {
        let args: Vec<String> = [
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-rw_timeout",
            "30000000",
            "-i",
            &url,
            "-c",
            "copy",
            "-f",
            "null",
            "-",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        run_bounded("ffmpeg", &args, 40).await.unwrap()
    });
    tokio::time::sleep(SECS(3)).await;
    assert!(!player.is_finished(), "RTMP player ended while the stream was live");
    publisher.kill().await;
    let dropped = Instant::now();
    // ffmpeg's own read timeout is 30 s: only the server ending the stream (StreamEOF /
    // UnpublishNotify / close) ends it within grace + 5 s; and not before the grace period.
    let out = match tokio::time::timeout(SECS(grace + 5), &mut player).await {
        Ok(r) => r.unwrap(),
        Err(_) => {
            player.abort();
            panic!(
                "RTMP player (ffmpeg) still playing {} s after the publisher dropped",
                grace + 5
            )
        }
    };
    let t = dropped.elapsed();
    assert!(
        t >= Duration::from_millis(grace * 1000 - 500),
        "RTMP player ended {t:?} after the drop, before the grace period\n{}",
        describe_output(&out)
    );
}

/// Waits until the live edge of the stream is 2 to 2.5 s into a GOP (judged by a probe
/// player), so the next keyframe is more than 2.5 s away.
async fn wait_mid_gop(server: &TestServer, name: &str) {
    let mut probe = server.http_player(name).await.unwrap();
    let tags = probe.read_until(SECS(15), |t| t.is_video_frame()).await.unwrap();
    let mut key_ts = tags.last().unwrap().timestamp;
    // The probe first receives the cached GOP in a burst; it is at the live edge once a read
    // has to wait for the publisher.
    let mut at_edge = false;
    let deadline = Instant::now() + SECS(20);
    loop {
        assert!(Instant::now() < deadline, "could not find the middle of a GOP");
        let asked = Instant::now();
        let t = probe
            .next_tag_within(SECS(5))
            .await
            .unwrap()
            .expect("probe stream ended");
        if asked.elapsed() > Duration::from_millis(15) {
            at_edge = true;
        }
        if t.is_video_frame() && t.is_keyframe() {
            key_ts = t.timestamp;
        }
        if at_edge && t.is_video_frame() && t.timestamp >= key_ts + 2000 && t.timestamp < key_ts + 2500 {
            return;
        }
    }
}

async fn late_joiner_gets_a_keyframe_at_once(ws: bool) {
    // GOP of 5 s: a server that waited for the next keyframe would need 2.5 s or more here.
    let live = Live::start_with(if ws { "late_ws" } else { "late_http" }, TestServer::builder(), |p| {
        p.gop(150)
    })
    .await
    .unwrap();
    wait_mid_gop(&live.server, &live.name).await;
    let start = Instant::now();
    let mut p = if ws {
        live.server.ws_player(&live.name).await.unwrap()
    } else {
        live.server.http_player(&live.name).await.unwrap()
    };
    let tags = p.read_until(SECS(10), |t| t.is_video_frame()).await.unwrap();
    let waited = start.elapsed();
    assert_eq!(
        tags[0].script_name().as_deref(),
        Some("onMetaData"),
        "first tag: {}",
        summarize(&tags)
    );
    let seq_v = tags.iter().position(|t| t.is_video_seq_header());
    let seq_a = tags.iter().position(|t| t.is_audio_seq_header());
    assert!(
        seq_v.is_some() && seq_a.is_some(),
        "sequence headers missing: {}",
        summarize(&tags)
    );
    let first = tags.last().unwrap();
    assert!(
        first.is_keyframe(),
        "late joiner's first video frame is not a keyframe: {}",
        summarize(&tags)
    );
    assert!(
        waited < SECS(2),
        "late joiner waited {waited:?} for its first keyframe (GOP cache should give it at once)"
    );
    // the cached GOP is followed by live frames without a gap
    let more = p.read_for(SECS(2)).await.unwrap();
    assert!(
        more.iter().filter(|t| t.is_video_frame()).count() >= 45,
        "stream did not continue: {}",
        summarize(&more)
    );
}

#[tokio::test]
async fn late_http_flv_joiner_starts_at_a_cached_keyframe_without_waiting_for_the_next() {
    late_joiner_gets_a_keyframe_at_once(false).await;
}

#[tokio::test]
async fn late_ws_flv_joiner_starts_at_a_cached_keyframe_without_waiting_for_the_next() {
    late_joiner_gets_a_keyframe_at_once(true).await;
}

#[tokio::test]
async fn without_gop_cache_a_late_joiner_still_starts_at_a_keyframe() {
    let live = Live::start_with("nogop", TestServer::builder().gop_cache(false), |p| p.gop(150))
        .await
        .unwrap();
    wait_mid_gop(&live.server, &live.name).await;
    let start = Instant::now();
    let mut p = live.server.http_player(&live.name).await.unwrap();
    let tags = p.read_until(SECS(10), |t| t.is_video_frame()).await.unwrap();
    let waited = start.elapsed();
    assert!(
        tags.last().unwrap().is_keyframe(),
        "first video frame is not a keyframe: {}",
        summarize(&tags)
    );
    assert!(
        tags.iter().any(|t| t.is_video_seq_header()),
        "no sequence header: {}",
        summarize(&tags)
    );
    // nothing is cached: the first picture is the next keyframe, 2.5-3 s away
    assert!(
        waited > Duration::from_millis(1500),
        "with gop_cache off the first keyframe came after only {waited:?}"
    );
}

#[tokio::test]
async fn player_of_an_unpublished_stream_waits_and_starts_when_it_is_published() {
    let server = TestServer::builder().play_wait_secs(15).start().await.unwrap();
    let name = unique_name("waiting");
    let http_url = server.flv_url(&name);
    let ws_url = server.ws_url(&name);
    let http = tokio::spawn(async move {
        let mut p = FlvPlayer::http(&http_url, SECS(30)).await?;
        let tags = p.read_until(SECS(30), |t| t.is_video_frame()).await?;
        anyhow::Ok((Instant::now(), tags))
    });
    let ws = tokio::spawn(async move {
        let mut p = FlvPlayer::ws(&ws_url, SECS(10)).await?;
        let tags = p.read_until(SECS(30), |t| t.is_video_frame()).await?;
        anyhow::Ok((Instant::now(), tags))
    });
    tokio::time::sleep(SECS(3)).await;
    assert!(
        !http.is_finished(),
        "HTTP-FLV player gave up before the stream was published: {:?}",
        http.await
    );
    assert!(
        !ws.is_finished(),
        "WS-FLV player gave up before the stream was published: {:?}",
        ws.await
    );
    let published = Instant::now();
    let _publisher = Publisher::start(&server.rtmp_url(&name)).unwrap();
    for (what, task) in [("HTTP-FLV", http), ("WS-FLV", ws)] {
        let (at, tags) = tokio::time::timeout(SECS(20), task)
            .await
            .unwrap_or_else(|_| panic!("{what} player did not start within 20 s of the publish"))
            .unwrap()
            .unwrap_or_else(|e| panic!("{what} player: {e:#}"));
        assert!(at > published);
        assert!(
            tags.last().unwrap().is_keyframe(),
            "{what}: first video frame not a keyframe: {}",
            summarize(&tags)
        );
    }
}

#[tokio::test]
async fn player_of_a_stream_never_published_gives_up_after_play_wait() {
    let wait = 2;
    let server = TestServer::builder().play_wait_secs(wait).start().await.unwrap();
    let name = unique_name("never");
    let start = Instant::now();
    // Either answer is fine once play_wait_secs has passed: an error status, or a 200 whose
    // body then ends.
    let resp = ferrocast_tests::http::get(&server.flv_url(&name), &[], SECS(wait + 8))
        .await
        .unwrap();
    if resp.status == 200 {
        let mut p = FlvPlayer::from_http(&server.flv_url(&name), resp, start);
        let (_, tags) = p
            .wait_end(SECS(wait + 8))
            .await
            .unwrap_or_else(|e| panic!("player of a never-published stream: {e:#}"));
        assert!(
            tags.is_empty(),
            "tags from a never-published stream: {}",
            summarize(&tags)
        );
    }
    let t = start.elapsed();
    assert!(
        t >= Duration::from_millis(wait * 1000 - 500),
        "player gave up after {t:?}, before play_wait_secs={wait}"
    );
}

#[tokio::test]
async fn sigterm_ends_players_and_exits_zero() {
    let live = Live::start("sigterm").await.unwrap();
    let (mut server, mut publisher, name) = (live.server, live.publisher, live.name);
    let mut http = server.http_player(&name).await.unwrap();
    let mut ws = server.ws_player(&name).await.unwrap();
    http.read_until(SECS(10), |t| t.is_video_frame()).await.unwrap();
    ws.read_until(SECS(10), |t| t.is_video_frame()).await.unwrap();

    server.sigterm();
    let (h, w) = tokio::join!(http.wait_end(SECS(10)), ws.wait_end(SECS(10)));
    let (h_end, _) = h.unwrap_or_else(|e| panic!("HTTP-FLV player after SIGTERM: {e:#}"));
    let (w_end, _) = w.unwrap_or_else(|e| panic!("WS-FLV player after SIGTERM: {e:#}"));
    let status = server.wait_exit(SECS(10)).await;
    let logs = server.logs();
    let status = status.unwrap_or_else(|| panic!("server still running 10 s after SIGTERM\n{logs}"));
    assert!(status.success(), "server exited with {status} after SIGTERM\n{logs}");
    assert_eq!(
        h_end,
        StreamEnd::HttpComplete,
        "HTTP-FLV response should end cleanly on shutdown"
    );
    assert!(
        matches!(w_end, StreamEnd::WsClose(_)),
        "WS should get a close frame on shutdown, got {w_end:?}"
    );
    // the publisher is told too: ffmpeg ends
    assert!(
        publisher.wait_within(SECS(10)).await.is_some(),
        "publisher still running after shutdown"
    );
    // and the listeners are gone
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", server.rtmp_port)).is_err(),
        "RTMP port still open"
    );
}
