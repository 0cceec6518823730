//! FLV push, as Node-Media-Server v4 offers it: an HTTP POST whose body is an FLV stream, or
//! a WebSocket with subprotocol `publisher` (or `post`) whose binary messages carry one,
//! publishes `/{app}/{name}` exactly as an RTMP publisher would. A pusher that sends nothing
//! for `rtmp.idle_timeout_secs` is closed like an idle RTMP publisher, freeing the stream name;
//! every write to a WebSocket pusher is bounded by `hub.write_timeout_secs`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tracing::{debug, info};

use super::flv::timed_write;
use super::ws;
use crate::codec::amf0;
use crate::codec::flv::{FlvError, FlvReader, TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};
use crate::hub::{HubError, Publisher, PublisherInfo, StreamKey};
use crate::server::Context;
use crate::session::{Protocol, Role, SessionGuard};
use crate::webhooks::Activity;

/// Feeds FLV bytes to a publisher tag by tag.
pub struct FlvIngest {
    reader: FlvReader,
    publisher: Publisher,
    buf: BytesMut,
}

impl FlvIngest {
    pub fn new(publisher: Publisher, max_tag: usize) -> Self {
        FlvIngest {
            reader: FlvReader::new(max_tag),
            publisher,
            buf: BytesMut::new(),
        }
    }

    /// Publishes every complete tag in `data` (plus what was buffered before).
    pub fn feed(&mut self, data: &[u8]) -> Result<(), FlvError> {
        self.buf.extend_from_slice(data);
        while let Some(tag) = self.reader.next_tag(&mut self.buf)? {
            let result = match tag.tag_type {
                TAG_VIDEO if !tag.body.is_empty() => self.publisher.push_video(tag.timestamp, tag.body),
                TAG_AUDIO if !tag.body.is_empty() => self.publisher.push_audio(tag.timestamp, tag.body),
                TAG_SCRIPT => {
                    if let Ok(values) = amf0::decode_all(&tag.body) {
                        let mut it = values.into_iter().skip_while(|v| v.as_str() == Some("@setDataFrame"));
                        if it.next().as_ref().and_then(|v| v.as_str()) == Some("onMetaData") {
                            self.publisher.push_metadata(&it.collect::<Vec<_>>());
                        }
                    }
                    Ok(())
                }
                _ => Ok(()),
            };
            if let Err(e) = result {
                debug!("dropping FLV tag: {e}");
            }
        }
        Ok(())
    }
}

pub(super) async fn claim(
    ctx: &Context,
    key: &StreamKey,
    id: u64,
    protocol: &'static str,
    peer: Option<SocketAddr>,
) -> Result<Publisher, HubError> {
    ctx.publish(
        key,
        PublisherInfo {
            session_id: id,
            protocol,
            remote: peer.map(|p| p.to_string()).unwrap_or_default(),
            started: SystemTime::now(),
        },
        Vec::new(),
    )
    .await
}

fn refusal(e: HubError) -> Response {
    let status = match e {
        HubError::AlreadyPublishing(_) | HubError::PublishedElsewhere(_) => StatusCode::CONFLICT,
        HubError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        HubError::UnknownApp => StatusCode::NOT_FOUND,
        HubError::BadName => StatusCode::BAD_REQUEST,
        HubError::TooManyWaitingInApp(_) | HubError::TooManyWaitingForClient(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{e}\n")).into_response()
}

/// `POST /{app}/{name}.flv`: the request body is the stream.
pub async fn http_post(
    ctx: Arc<Context>,
    key: StreamKey,
    query: String,
    body: Body,
    peer: Option<SocketAddr>,
) -> Response {
    let guard = ctx
        .sessions
        .open(Protocol::HttpFlv, peer.map(|p| p.to_string()).unwrap_or_default());
    let id = guard.id();
    let mut kicked = guard.entry().kicked();
    let _hooks = match Activity::begin(
        ctx.webhooks.clone(),
        guard.entry().clone(),
        Role::Publisher,
        key.clone(),
        query,
    )
    .await
    {
        Ok(a) => a,
        Err(why) => return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response(),
    };
    let publisher = match claim(&ctx, &key, id, "http_flv", peer).await {
        Ok(p) => p,
        Err(e) => return refusal(e),
    };
    info!(session = id, stream = %key, "http-flv push started");
    guard.set_activity(Some((Role::Publisher, key.clone())));
    let max = ctx.config.rtmp.max_message_size as usize;
    let mut ingest = FlvIngest::new(publisher, max);
    let mut body = body.into_data_stream();
    let mut shutdown = ctx.shutdown.clone();
    let idle = Duration::from_secs(ctx.config.rtmp.idle_timeout_secs);
    // One timer for the whole push, pushed back on each chunk: a fresh timeout per chunk
    // would register and cancel a timer for every message the publisher sends.
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        let chunk = tokio::select! {
            _ = shutdown.changed() => break,
            _ = kicked.changed() => {
                info!(session = id, "http-flv push kicked by the API");
                break;
            }
            _ = &mut idle_timer => {
                info!(session = id, stream = %key, "http-flv push closed: no data for {idle:?}");
                return (StatusCode::REQUEST_TIMEOUT, "no data from the publisher\n").into_response();
            }
            c = body.next() => c,
        };
        match chunk {
            Some(Ok(data)) => {
                idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
                guard.entry().add_in(data.len());
                if let Err(e) = ingest.feed(&data) {
                    info!(session = id, "http-flv push closed: {e}");
                    return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
                }
            }
            Some(Err(e)) => {
                debug!(session = id, "http-flv push body ended: {e}");
                break;
            }
            None => break,
        }
    }
    info!(session = id, stream = %key, "http-flv push ended");
    (StatusCode::OK, "stream ended\n").into_response()
}

/// Runs a WebSocket publisher: binary (and continuation) frames carry the FLV byte stream.
pub(super) async fn serve_ws_publisher<IO>(
    io: IO,
    publisher: Publisher,
    guard: &SessionGuard,
    ctx: &Context,
) -> std::io::Result<&'static str>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let max = ctx.config.rtmp.max_message_size as usize;
    let mut ingest = FlvIngest::new(publisher, max);
    let mut rbuf = BytesMut::with_capacity(64 * 1024);
    let mut shutdown = ctx.shutdown.clone();
    let mut kicked = guard.entry().kicked();
    let idle = Duration::from_secs(ctx.config.rtmp.idle_timeout_secs);
    let write_timeout = Duration::from_secs(ctx.config.hub.write_timeout_secs);
    let close = |code: u16, reason: &'static str| vec![ws::close_frame(code, reason)];
    // One timer for the whole push, pushed back on each read (not a timeout per read).
    let idle_timer = tokio::time::sleep(idle);
    tokio::pin!(idle_timer);
    loop {
        let n = tokio::select! {
            _ = kicked.changed() => {
                let _ = timed_write(&mut wr, &mut close(1008, "session closed by the server"), write_timeout).await;
                return Ok("kicked by the API");
            }
            _ = shutdown.changed() => {
                let _ = timed_write(&mut wr, &mut close(1001, "server shutting down"), write_timeout).await;
                return Ok("server shutdown");
            }
            _ = &mut idle_timer => {
                let _ = timed_write(&mut wr, &mut close(1008, "no data"), write_timeout).await;
                return Ok("no data from the publisher (idle timeout)");
            }
            n = rd.read_buf(&mut rbuf) => n?,
        };
        if n == 0 {
            return Ok("peer closed");
        }
        idle_timer.as_mut().reset(tokio::time::Instant::now() + idle);
        guard.entry().add_in(n);
        loop {
            match ws::parse_client_frame(&mut rbuf, max) {
                Ok(Some(frame)) => match frame.opcode {
                    ws::OP_BINARY | ws::OP_CONTINUATION => {
                        if let Err(e) = ingest.feed(&frame.payload) {
                            let _ = timed_write(&mut wr, &mut close(1003, "invalid FLV"), write_timeout).await;
                            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                        }
                    }
                    ws::OP_CLOSE => {
                        let _ = timed_write(&mut wr, &mut close(1000, ""), write_timeout).await;
                        return Ok("peer closed");
                    }
                    ws::OP_PING => {
                        let mut out = vec![ws::frame_header(ws::OP_PONG, frame.payload.len()), frame.payload];
                        timed_write(&mut wr, &mut out, write_timeout).await?;
                    }
                    _ => {}
                },
                Ok(None) => break,
                Err(e) => {
                    let _ = timed_write(&mut wr, &mut close(1002, "protocol error"), write_timeout).await;
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::flv::{encode_tag, header};
    use crate::config::AppConfig;
    use crate::hub::{FrameKind, Hub, HubSettings, ReaderLimits, WaitingLimits};
    use std::time::Duration;

    fn test_hub() -> Hub {
        Hub::new(HubSettings {
            publisher_grace: Duration::from_secs(1),
            play_wait: Duration::from_secs(1),
            queue_frames: 64,
            queue_bytes: 32 << 20,
            reader: ReaderLimits {
                max_skips: 3,
                window: Duration::from_secs(10),
                coalesce: Duration::ZERO,
            },
            apps: vec![AppConfig::default()],
            waiting: WaitingLimits::UNLIMITED,
        })
    }

    #[tokio::test]
    async fn flv_bytes_in_any_split_publish_the_same_frames() {
        let hub = test_hub();
        let key = StreamKey::new("live", "pushed").unwrap();
        let mut wire = header(true, true).to_vec();
        let mut meta = BytesMut::new();
        amf0::encode_all(
            &["onMetaData".into(), amf0::Amf0Value::object([("width", 1280.0.into())])],
            &mut meta,
        );
        wire.extend_from_slice(&encode_tag(TAG_SCRIPT, 0, &meta));
        wire.extend_from_slice(&encode_tag(TAG_VIDEO, 0, b"\x17\x00\x00\x00\x00\x01"));
        wire.extend_from_slice(&encode_tag(TAG_AUDIO, 0, b"\xaf\x00\x12\x10"));
        wire.extend_from_slice(&encode_tag(TAG_VIDEO, 40, b"\x17\x01\x00\x00\x00key"));
        let publisher = hub
            .publish(
                &key,
                PublisherInfo {
                    session_id: 1,
                    protocol: "http_flv",
                    remote: String::new(),
                    started: SystemTime::now(),
                },
            )
            .unwrap();
        let mut ingest = FlvIngest::new(publisher, 1 << 20);
        for piece in wire.chunks(7) {
            ingest.feed(piece).unwrap();
        }
        let mut sub = hub.subscribe(&key).unwrap();
        let mut kinds = Vec::new();
        while let Ok(Some(f)) = sub.try_recv() {
            kinds.push((f.kind, f.timestamp, f.keyframe));
        }
        assert_eq!(
            kinds,
            vec![
                (FrameKind::Data, 0, false),
                (FrameKind::Video, 0, false),
                (FrameKind::Audio, 0, false),
                (FrameKind::Video, 40, true)
            ]
        );
    }

    #[tokio::test]
    async fn non_flv_body_is_rejected() {
        let hub = test_hub();
        let key = StreamKey::new("live", "bad").unwrap();
        let publisher = hub
            .publish(
                &key,
                PublisherInfo {
                    session_id: 1,
                    protocol: "http_flv",
                    remote: String::new(),
                    started: SystemTime::now(),
                },
            )
            .unwrap();
        let mut ingest = FlvIngest::new(publisher, 1 << 20);
        assert_eq!(ingest.feed(b"GET / HTTP/1.1\r\n"), Err(FlvError::BadSignature));
    }
}
