//! The push task: a hub subscriber like any player (same queue, same slow-reader policy)
//! that publishes the stream to another server over RTMP(S). It connects first and subscribes
//! once the far end accepted, so each (re)connection starts at the GOP cache's keyframe with
//! the current headers. An app push ends with its stream; a static push waits for the stream
//! to be published again.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tracing::{info, warn, Instrument};

use super::backoff::Backoff;
use super::rtmp::RtmpLink;
use super::url;
use super::{hop, read_key, Origin, PushSpec, Relay, RelayError, RelayState, Relays};
use crate::codec::amf0::{self, Amf0Value};
use crate::codec::chunk::encode_message;
use crate::codec::message::{CSID_DATA, TYPE_DATA_AMF0};
use crate::hub::{FrameKind, MediaFrame, ReaderEnd, SubscribeOptions};
use crate::rtmp::client::ClientMode;

const MAX_BATCH_FRAMES: usize = 64;
/// How often a static push looks for its stream while it is not published.
const WAIT_POLL: Duration = Duration::from_millis(500);

pub(super) async fn run(relays: Arc<Relays>, relay: Arc<Relay>, spec: PushSpec) {
    let span = tracing::info_span!("relay", id = relay.id, stream = %spec.stream);
    supervise(&relays, &relay, &spec).instrument(span).await;
    if relay.origin == Origin::App && relay.state() == RelayState::Failed {
        // A refused app push stays listed (failed, with its reason) while its stream is live.
        let mut stopping = relay.stopping();
        while is_live(&relays, &spec) && !relay.is_stopping() {
            tokio::select! {
                _ = tokio::time::sleep(WAIT_POLL) => {}
                _ = stopping.changed() => break,
            }
        }
    }
    let listed = matches!(relay.origin, Origin::Config | Origin::Api)
        && !relay.is_stopping()
        && relay.state() == RelayState::Failed;
    if !listed {
        if !relay.state().is_final() {
            relays.set_state(&relay, RelayState::Stopped, None);
        }
        relays.forget(&relay);
    }
}

fn is_live(relays: &Relays, spec: &PushSpec) -> bool {
    relays.hub.stream(&spec.stream).is_some_and(|s| s.is_published())
}

async fn supervise(relays: &Relays, relay: &Arc<Relay>, spec: &PushSpec) {
    let mut backoff = Backoff::default();
    let mut stopping = relay.stopping();
    let mut shutdown = relays.shutdown.clone();
    let follows_stream = relay.origin == Origin::App;
    loop {
        if relay.is_stopping() || relays.is_shutting_down() {
            return;
        }
        if !is_live(relays, spec) {
            if follows_stream {
                return;
            }
            relays.set_state(relay, RelayState::Waiting, None);
            tokio::select! {
                _ = tokio::time::sleep(WAIT_POLL) => continue,
                _ = stopping.changed() => return,
                _ = shutdown.changed() => return,
            }
        }
        relays.set_state(relay, RelayState::Connecting, None);
        let mut went_live = false;
        let result = tokio::select! {
            r = attempt(relays, relay, spec, &mut went_live) => r,
            _ = stopping.changed() => return,
            _ = shutdown.changed() => return,
        };
        if went_live {
            backoff.reset();
        }
        let e = match result {
            // The stream ended: an app push ends with it, a static one waits for the next.
            Ok(()) if follows_stream => return,
            Ok(()) => continue,
            Err(e) => e,
        };
        let reason = e.to_string();
        if e.is_loop() {
            warn!("push refused, not retrying: {}", relay.scrub(&reason));
            relays.set_state(relay, RelayState::Failed, Some(&reason));
            return;
        }
        let delay = backoff.next_delay();
        relays.retry_later(relay, &reason, delay);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stopping.changed() => return,
            _ = shutdown.changed() => return,
        }
    }
}

/// One connection: `Ok` when the stream ended here, `Err` when the far end failed.
async fn attempt(relays: &Relays, relay: &Relay, spec: &PushSpec, went_live: &mut bool) -> Result<(), RelayError> {
    let key = read_key(spec.key_file.as_deref())?;
    let (target, masked) = url::push_url(&spec.target, &spec.stream.name, key.as_deref())?;
    relay.add_secrets(
        key.into_iter()
            .chain(masked.then(|| target.path.rsplit('/').next().unwrap_or("").to_string())),
    );
    let Some(stream) = relays.hub.stream(&spec.stream).filter(|s| s.is_published()) else {
        return Ok(());
    };
    // The stream's own path plus us: a far end that already carried it refuses.
    let via = hop::outgoing(&stream.relay_path(), hop::server_id())?;
    let opts = relays.link_options(relay, via, &spec.tls);
    let mut link = RtmpLink::open(&target, ClientMode::Publish, opts).await?;
    if !link.enhanced && stream.info().video_codec.is_some_and(is_enhanced_only) {
        warn!("the target announced no enhanced RTMP; it may not take this stream's codec");
    }
    let mut sub = relays
        .hub
        .subscribe_with(&spec.stream, SubscribeOptions { multitrack: true })?;
    relays.set_state(relay, RelayState::Live, None);
    *went_live = true;
    info!(target = %relay.url, "relay push live");
    let (stream_id, chunk_size) = (link.stream_id(), link.chunk_size());
    let mut frames: Vec<Arc<MediaFrame>> = Vec::with_capacity(MAX_BATCH_FRAMES);
    let mut batch: Vec<Bytes> = Vec::with_capacity(MAX_BATCH_FRAMES);
    loop {
        tokio::select! {
            got = sub.recv_batch(&mut frames, MAX_BATCH_FRAMES) => match got {
                Ok(()) => {
                    for f in frames.drain(..) {
                        encode(&f, stream_id, chunk_size, &mut batch);
                    }
                    sub.count_out(batch.iter().map(|b| b.len()).sum());
                    link.write(&mut batch).await?;
                    batch.clear();
                }
                Err(ReaderEnd::StreamEnded) => {
                    info!("stream ended; push closed");
                    link.close().await;
                    return Ok(());
                }
                Err(e @ ReaderEnd::TooSlow(_)) => return Err(RelayError::TooSlow(e.to_string())),
            },
            control = link.poll_control() => control?,
        }
    }
}

/// Appends a frame as RTMP chunks for the far end. Media is the payload itself between chunk
/// headers; metadata goes out as `@setDataFrame`, as publishers send.
fn encode(f: &MediaFrame, stream_id: u32, chunk_size: u32, out: &mut Vec<Bytes>) {
    if f.kind != FrameKind::Data {
        f.rtmp_chunks(stream_id, chunk_size).append_to(out);
        return;
    }
    let mut body = BytesMut::with_capacity(f.payload.len() + 16);
    amf0::encode(&Amf0Value::String("@setDataFrame".into()), &mut body);
    body.extend_from_slice(&f.payload);
    let mut data = BytesMut::new();
    encode_message(&mut data, CSID_DATA, 0, TYPE_DATA_AMF0, stream_id, &body, chunk_size);
    out.push(data.freeze());
}

/// Codecs only enhanced RTMP carries.
fn is_enhanced_only(c: crate::codec::media::FourCc) -> bool {
    use crate::codec::media::FourCc;
    matches!(c, FourCc::HEVC | FourCc::AV1 | FourCc::VP9 | FourCc::VP8)
}
