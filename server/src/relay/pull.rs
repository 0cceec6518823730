//! The pull task: connect to the source, publish its media into the hub from the first frame
//! on, reconnect with backoff while it fails. Players ride the hub's publisher grace across a
//! reconnect. An on-demand pull stops when its first attempt finds nothing (waiting players
//! are answered not-found) or when it has had no reader for its idle time.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn, Instrument};

use super::backoff::Backoff;
use super::source::{Ingest, Source};
use super::{hop, PullSpec, Relay, RelayError, RelayState, Relays};
use crate::hub::{Publisher, PublisherInfo};

/// How an attempt ended without an error.
enum Finish {
    /// No reader for the idle time (on demand).
    Idle,
    /// Asked to stop (API delete, shutdown).
    Stopped,
}

pub(super) async fn run(relays: Arc<Relays>, relay: Arc<Relay>, spec: PullSpec) {
    let span = tracing::info_span!("relay", id = relay.id, stream = %spec.stream);
    supervise(&relays, &relay, &spec).instrument(span).await;
    // The relay stays listed (failed or stopped) only when it was static and not deleted.
    let listed = matches!(relay.origin, super::Origin::Config | super::Origin::Api)
        && !relay.is_stopping()
        && relay.state() == RelayState::Failed;
    if !listed {
        if !relay.state().is_final() {
            relays.set_state(&relay, RelayState::Stopped, None);
        }
        relays.forget(&relay);
    }
}

async fn supervise(relays: &Relays, relay: &Arc<Relay>, spec: &PullSpec) {
    let mut backoff = Backoff::default();
    let mut ever_live = false;
    let mut stopping = relay.stopping();
    let mut shutdown = relays.shutdown.clone();
    loop {
        if relay.is_stopping() || relays.is_shutting_down() {
            return;
        }
        relays.set_state(relay, RelayState::Connecting, None);
        let mut went_live = false;
        let result = tokio::select! {
            r = attempt(relays, relay, spec, &mut went_live) => r,
            _ = stopping.changed() => Ok(Finish::Stopped),
            _ = shutdown.changed() => Ok(Finish::Stopped),
        };
        ever_live |= went_live;
        if went_live {
            backoff.reset();
        }
        let e = match result {
            Ok(Finish::Idle) => {
                info!("no player for the idle time; pull stopped");
                relays.set_state(relay, RelayState::Stopped, Some("idle"));
                return;
            }
            Ok(Finish::Stopped) => return,
            Err(e) => e,
        };
        let reason = e.to_string();
        if e.is_loop() {
            warn!("pull refused, not retrying: {}", relay.scrub(&reason));
            relays.set_state(relay, RelayState::Failed, Some(&reason));
            return;
        }
        if spec.idle_close.is_some() && !ever_live {
            // The first attempt of an on-demand pull decides for the players waiting on it.
            info!("on-demand pull found no stream: {}", relay.scrub(&reason));
            relays.set_state(relay, RelayState::NotFound, Some(&reason));
            return;
        }
        let delay = backoff.next_delay();
        relays.retry_later(relay, &reason, delay);
        let wait = async {
            tokio::time::sleep(delay).await;
            false
        };
        let idle = async {
            match spec.idle_close {
                Some(limit) => wait_idle(relays, spec, limit).await,
                None => std::future::pending().await,
            }
        };
        let idle_out = tokio::select! {
            i = wait => i,
            i = idle => i,
            _ = stopping.changed() => return,
            _ = shutdown.changed() => return,
        };
        if idle_out {
            info!("no player left while reconnecting; pull stopped");
            relays.set_state(relay, RelayState::Stopped, Some("idle"));
            return;
        }
    }
}

/// One connection: returns when the source ends or fails, or when idle.
async fn attempt(relays: &Relays, relay: &Relay, spec: &PullSpec, went_live: &mut bool) -> Result<Finish, RelayError> {
    let via = hop::outgoing(&spec.via, hop::server_id())?;
    let opts = relays.link_options(relay, via, &spec.tls);
    let mut source = Source::open(&spec.source, opts).await?;
    debug!("source answered; waiting for its first frame");
    // A source may accept a play and send nothing (nginx-rtmp for a stream nobody publishes).
    let first = timeout(relays.settings.play_wait, source.next())
        .await
        .map_err(|_| RelayError::NotFound)??;
    let publisher = relays.hub.publish_via(
        &spec.stream,
        PublisherInfo {
            session_id: 0,
            protocol: "relay",
            remote: spec.source.authority(),
            started: SystemTime::now(),
        },
        spec.via.clone(),
    )?;
    relays.set_state(relay, RelayState::Live, None);
    *went_live = true;
    info!(source = %relay.url, "relay pull live");
    feed(&publisher, first);
    let mut idle_check = tokio::time::interval(Duration::from_secs(1));
    let mut idle_since: Option<Instant> = None;
    loop {
        tokio::select! {
            item = source.next() => feed(&publisher, item?),
            _ = idle_check.tick(), if spec.idle_close.is_some() => {
                let readers = publisher.stream().stats.readers.load(std::sync::atomic::Ordering::Relaxed);
                if readers > 0 {
                    idle_since = None;
                } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= spec.idle_close.unwrap_or_default() {
                    return Ok(Finish::Idle);
                }
            }
        }
    }
}

fn feed(p: &Publisher, item: Ingest) {
    let res = match item {
        Ingest::Video(ts, payload) => p.push_video(ts, payload),
        Ingest::Audio(ts, payload) => p.push_audio(ts, payload),
        Ingest::Metadata(values) => {
            p.push_metadata(&values);
            Ok(())
        }
    };
    if let Err(e) = res {
        debug!("dropping a source message: {e}");
    }
}

/// Resolves `true` once the stream has had no reader for `limit` (checked every second).
async fn wait_idle(relays: &Relays, spec: &PullSpec, limit: Duration) -> bool {
    let mut since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let readers = relays
            .hub
            .stream(&spec.stream)
            .map_or(0, |s| s.stats.readers.load(std::sync::atomic::Ordering::Relaxed));
        if readers > 0 {
            since = None;
        } else if since.get_or_insert_with(Instant::now).elapsed() >= limit {
            return true;
        }
    }
}
