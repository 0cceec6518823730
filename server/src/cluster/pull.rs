//! Playing a stream published on another pod: one follower per stream on this pod finds the
//! pod that publishes it and pulls it once (FLV over the peer's admin port, with the secret),
//! as an ordinary hub publisher, for every local reader. It ends when the last local reader
//! has been gone for a moment, or when the stream gets a publisher of its own here.
//!
//! When the publisher moves to another pod, the stream here rides the publisher grace and the
//! follower, woken by the new owner's announcement, pulls from the new pod into the same hub
//! stream: local players keep their connections and timestamps keep increasing.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use http_body_util::BodyExt;
use hyper::Request;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, info};

use super::{Cluster, Owner, SECRET_HEADER};
use crate::http::push::FlvIngest;
use crate::hub::{PublisherInfo, StreamKey, SubscribeOptions};
use crate::server::Context;

/// The protocol recorded for a stream pulled from a peer: such a stream is not "published
/// here" for the fleet (a lookup never leads to a copy).
pub const PROTOCOL: &str = "cluster";

/// How long a stream with no local reader keeps its pull (a player reconnecting keeps it).
const IDLE_CLOSE: Duration = Duration::from_secs(3);
/// How often a waiting follower asks the peers again, besides being woken by announcements.
const RETRY: Duration = Duration::from_secs(2);
/// How long an HLS request waits for a pull from a peer to start.
const AWAIT_PUBLISHED: Duration = Duration::from_secs(3);

/// Makes sure `key` has a follower if it has local readers and no publisher here: called when
/// a player starts and when a peer announces a new publish.
pub fn wake(ctx: &Arc<Context>, key: &StreamKey) {
    let Some(cluster) = ctx.cluster.clone() else { return };
    let Some(stream) = ctx.hub.stream(key) else { return };
    if stream.is_published() || stream.stats.readers.load(Ordering::Relaxed) == 0 {
        return;
    }
    let follower = {
        let mut followers = cluster.followers();
        if let Some(f) = followers.get(key) {
            f.wake.notify_one();
            return;
        }
        let f = Arc::new(Follower::default());
        followers.insert(key.clone(), f.clone());
        f
    };
    let (ctx, key, rt) = (ctx.clone(), key.clone(), cluster.rt.clone());
    rt.spawn(async move {
        follow(&ctx, &cluster, &key, &follower).await;
        cluster.followers().remove(&key);
    });
}

/// A stream followed from a peer.
#[derive(Default)]
pub struct Follower {
    /// A peer announced the stream: look again now.
    wake: Notify,
    /// A publisher here takes the stream over: let go of it.
    pub(super) stop: Notify,
}

/// Makes a stream published on another pod available here for a reader that cannot wait
/// as a subscriber (an HLS request): holds a waiting reader while the follower pulls it, up
/// to a few seconds. `Err(())` at once when no pod publishes it, so a request for a made-up
/// name makes no waiting stream; the waiting reader counts against `client`'s waiting caps.
pub async fn await_published(ctx: &Arc<Context>, key: &StreamKey, client: Option<IpAddr>) -> Result<(), ()> {
    let cluster = ctx.cluster.as_ref().ok_or(())?;
    cluster.owner(key).await.ok_or(())?;
    let Ok(_waiting) = ctx.hub.subscribe_from(key, SubscribeOptions::default(), client) else {
        return Err(());
    };
    wake(ctx, key);
    let deadline = Instant::now() + AWAIT_PUBLISHED;
    while Instant::now() < deadline {
        if ctx.hub.stream(key).is_some_and(|s| s.is_published()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(())
}

async fn follow(ctx: &Arc<Context>, cluster: &Arc<Cluster>, key: &StreamKey, follower: &Follower) {
    let mut idle_since: Option<Instant> = None;
    loop {
        let Some(stream) = ctx.hub.stream(key) else { return };
        if stream.stats.readers.load(Ordering::Relaxed) == 0 {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= IDLE_CLOSE {
                return;
            }
        } else {
            idle_since = None;
        }
        if ctx.publishes_origin(key) || ctx.is_shutting_down() {
            return;
        }
        if let Some(owner) = cluster.owner(key).await {
            match pull(ctx, cluster, key, &owner, &follower.stop).await {
                Ok(why) => info!(stream = %key, pod = %owner.pod, "pull from peer ended: {why}"),
                Err(e) => info!(stream = %key, pod = %owner.pod, "pull from peer failed: {e}"),
            }
            cluster.forget_owner(key);
            continue;
        }
        drop(stream);
        let _ = tokio::time::timeout(RETRY, follower.wake.notified()).await;
    }
}

/// Pulls `key` from `owner` until the peer's stream ends or nobody here plays it any more.
async fn pull(
    ctx: &Context,
    cluster: &Cluster,
    key: &StreamKey,
    owner: &Owner,
    stop: &Notify,
) -> Result<&'static str, String> {
    let req = Request::get(format!("http://{}/cluster/v1/flv/{}/{}", owner.addr, key.app, key.name))
        .header(SECRET_HEADER, cluster.secret())
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(cluster.timeout * 4, cluster.client.request(req))
        .await
        .map_err(|_| "peer did not answer".to_string())?
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("peer answered {}", resp.status()));
    }
    // The origin's publish time: HLS segment names carry it, so every pod names them alike.
    let started = resp
        .headers()
        .get(super::routes::STARTED_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map_or_else(SystemTime::now, |ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms));
    let publisher = ctx
        .hub
        .publish(
            key,
            PublisherInfo {
                session_id: 0,
                protocol: PROTOCOL,
                remote: owner.pod.clone(),
                started,
            },
        )
        .map_err(|e| e.to_string())?;
    info!(stream = %key, pod = %owner.pod, "pulling from peer for local players");
    let stream = publisher.stream().clone();
    let mut ingest = FlvIngest::new(publisher, ctx.config.rtmp.max_message_size as usize);
    let mut body = resp.into_body().into_data_stream();
    let mut shutdown = ctx.shutdown.clone();
    let mut idle = tokio::time::interval(Duration::from_secs(1));
    let mut idle_since: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return Ok("server shutting down"),
            _ = stop.notified() => return Ok("a publisher here took the stream over"),
            _ = idle.tick() => {
                if stream.stats.readers.load(Ordering::Relaxed) == 0 {
                    if idle_since.get_or_insert_with(Instant::now).elapsed() >= IDLE_CLOSE {
                        return Ok("no local player left");
                    }
                } else {
                    idle_since = None;
                }
            }
            chunk = body.next() => match chunk {
                Some(Ok(data)) => {
                    if let Err(e) = ingest.feed(&data) {
                        return Err(format!("bad FLV from peer: {e}"));
                    }
                }
                Some(Err(e)) => {
                    debug!(stream = %key, "peer body error: {e}");
                    return Ok("peer connection lost");
                }
                None => return Ok("stream ended on the peer"),
            },
        }
    }
}
