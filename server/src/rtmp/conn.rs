//! The RTMP connection driver: owns the socket, timeouts and the hub handles, and feeds the
//! sans-IO session. Players get the hub's shared chunk headers and the frames' payloads
//! written straight to the socket (vectored), never a copy per player.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::timeout;
use tracing::{debug, info, warn, Instrument};

use super::session::{Role as RtmpRole, Session, SessionConfig, SessionError, SessionEvent, StreamRequest, READ_SIZE};
use crate::hub::{HubError, Publisher, PublisherInfo, ReaderEnd, SubscribeOptions, Subscriber};
use crate::hub::{MediaFrame, StreamKey, SHARED_PLAY_STREAM_ID};
use crate::net::{self, write_all_bytes};
use crate::redact::RequestedName;
use crate::server::Context;
use crate::session::{Protocol, Role, SessionGuard};
use crate::webhooks::{millis, Event};

/// Frames written to a player in one vectored write at most.
const MAX_BATCH_FRAMES: usize = 64;

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Session(#[from] SessionError),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake not completed within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("no data from peer for {0:?}")]
    Idle(Duration),
    #[error("peer accepted no data for {0:?}")]
    WriteTimeout(Duration),
    #[error("refused: {0}")]
    Refused(String),
}

/// Serves one accepted RTMP connection until it ends; logs its end once.
///
/// `recv_fd` is the TCP socket under `socket`, for the read gate's wake-up threshold.
pub async fn serve<S>(socket: S, recv_fd: Option<RawFd>, peer: SocketAddr, protocol: Protocol, ctx: Arc<Context>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let guard = ctx.sessions.open(protocol, peer.to_string());
    let id = guard.id();
    let span = tracing::info_span!("rtmp", session = id, %peer);
    async move {
        let mut conn = Conn {
            id,
            guard,
            peer,
            protocol,
            ctx,
            socket,
            recv_fd,
            session: None,
            publisher: None,
            player: None,
            connected: None,
            active: None,
        };
        match conn.run().await {
            Ok(()) => debug!("connection closed"),
            Err(ConnError::Io(e)) if is_disconnect(&e) => debug!("peer disconnected"),
            Err(e) => info!("connection closed: {e}"),
        }
        conn.activity_done();
        if let Some(app) = conn.connected.take() {
            let ev = conn.event("doneConnect", "connect", &app, "", "", true);
            conn.ctx.webhooks.notify(ev);
        }
    }
    .instrument(span)
    .await
}

fn is_disconnect(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionReset | BrokenPipe | UnexpectedEof | ConnectionAborted
    )
}

struct Player {
    sub: Subscriber,
    stream_id: u32,
}

struct Conn<S> {
    id: u64,
    guard: SessionGuard,
    peer: SocketAddr,
    protocol: Protocol,
    ctx: Arc<Context>,
    socket: S,
    recv_fd: Option<RawFd>,
    session: Option<Session>,
    publisher: Option<(Publisher, u32)>,
    player: Option<Player>,
    /// The app of an accepted connect, for `doneConnect`.
    connected: Option<String>,
    /// What the connection publishes or plays (stream and query), for `done*` events.
    active: Option<(Role, StreamKey, String)>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn session(&mut self) -> &mut Session {
        self.session.as_mut().expect("session exists while running")
    }

    async fn run(&mut self) -> Result<(), ConnError> {
        let cfg = &self.ctx.config.rtmp;
        let hs_timeout = Duration::from_secs(cfg.handshake_timeout_secs);
        self.session = Some(Session::new(SessionConfig {
            chunk_size: cfg.chunk_size,
            max_peer_chunk_size: cfg.max_peer_chunk_size,
            max_message_size: cfg.max_message_size,
        }));
        timeout(hs_timeout, async {
            while !self.session().handshake_done() {
                self.read_some().await?;
                self.flush().await?;
            }
            Ok::<_, ConnError>(())
        })
        .await
        .map_err(|_| ConnError::HandshakeTimeout(hs_timeout))??;
        debug!(complex = self.session().used_complex_handshake(), "handshake done");
        self.handle_events().await?;
        self.flush().await?;

        // The loop runs once per frame for every player, so what it waits on is set up once
        // here rather than per iteration: re-arming an idle timer and re-registering with the
        // shared shutdown/kick notifiers for every frame of every player costs more than
        // writing the frame.
        let idle = Duration::from_secs(self.ctx.config.rtmp.idle_timeout_secs);
        let idle_timer = tokio::time::sleep(idle);
        tokio::pin!(idle_timer);
        // The idle deadline follows the last read, but the timer is only moved when it fires
        // early: resetting it on every read of every publisher costs more than the check.
        let mut last_read = tokio::time::Instant::now();
        let mut shutdown = self.ctx.shutdown.clone();
        let shutdown_wait = async move {
            let _ = shutdown.changed().await;
        };
        tokio::pin!(shutdown_wait);
        let mut kicked = self.guard.entry().kicked();
        let kick_wait = async move {
            let _ = kicked.changed().await;
        };
        tokio::pin!(kick_wait);
        let mut batch: Vec<Bytes> = Vec::with_capacity(MAX_BATCH_FRAMES);
        let mut frames = Vec::with_capacity(MAX_BATCH_FRAMES);
        // Read coalescing: a publisher whose socket was drained is read again once this much
        // later, so each read takes several messages instead of one.
        let coalesce = Duration::from_millis(self.ctx.config.rtmp.read_coalesce_ms);
        let read_gate = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(read_gate);
        let mut gated = false;
        loop {
            let playing = self.player.is_some();
            let offered = {
                let input = self.session.as_mut().expect("session exists").input_buffer();
                input.capacity() - input.len()
            };
            tokio::select! {
                biased;
                _ = &mut shutdown_wait => {
                    self.end_now("Server is shutting down").await;
                    return Ok(());
                }
                _ = &mut kick_wait => {
                    info!("kicked by the API");
                    self.end_now("Session closed by the server").await;
                    return Ok(());
                }
                got = next_frames(&mut self.player, &mut frames), if playing => {
                    match got {
                        Ok(()) => {
                            let Some(p) = self.player.as_ref() else {
                                frames.clear();
                                continue;
                            };
                            let chunk_size = self.ctx.config.rtmp.chunk_size;
                            if p.stream_id == SHARED_PLAY_STREAM_ID {
                                self.write_frames(&frames, chunk_size as usize).await?;
                                frames.clear();
                            } else {
                                for f in frames.drain(..) {
                                    f.rtmp_chunks(p.stream_id, chunk_size).append_to(&mut batch);
                                }
                                p.sub.count_out(batch.iter().map(|b| b.len()).sum());
                                self.write_batch(&mut batch).await?;
                            }
                        }
                        Err(ReaderEnd::StreamEnded) => {
                            let stream_id = self.player.take().map_or(1, |p| p.stream_id);
                            info!("stream ended, closing player");
                            self.session().end_play(stream_id);
                            self.flush().await?;
                            return Ok(());
                        }
                        Err(e @ ReaderEnd::TooSlow(_)) => {
                            warn!("disconnecting player: {e}");
                            return Ok(());
                        }
                    }
                }
                // Players legitimately send nothing while they receive media.
                _ = &mut idle_timer, if !playing => {
                    if last_read.elapsed() >= idle {
                        return Err(ConnError::Idle(idle));
                    }
                    idle_timer.as_mut().reset(last_read + idle);
                }
                _ = &mut read_gate, if gated => {
                    gated = false;
                    if let Some(fd) = self.recv_fd {
                        net::set_recv_low_water(fd, 1);
                    }
                }
                // Straight into the session's buffer: no copy of what publishers send.
                read = self.socket.read_buf(self.session.as_mut().expect("session exists").input_buffer()), if !gated => {
                    match read {
                        Ok(0) => return Ok(()),
                        Ok(n) => {
                            let now = tokio::time::Instant::now();
                            last_read = now;
                            self.guard.entry().add_in(n);
                            self.session().process()?;
                            // Players take what one read brought as one batch.
                            if let Some((p, _)) = &self.publisher {
                                p.defer_wakeups();
                            }
                            let handled = self.handle_events().await;
                            if let Some((p, _)) = &self.publisher {
                                p.wake_readers();
                            }
                            handled?;
                            self.flush().await?;
                            // A read that filled what was offered may have left more waiting.
                            if self.publisher.is_some() && !coalesce.is_zero() && n < offered {
                                read_gate.as_mut().reset(now + coalesce);
                                gated = true;
                                // Messages arriving while the gate is shut would each wake a
                                // worker thread for nothing: have the kernel report the socket
                                // only once a full read is queued (or at the gate's end).
                                if let Some(fd) = self.recv_fd {
                                    net::set_recv_low_water(fd, READ_SIZE);
                                }
                            }
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    async fn read_some(&mut self) -> Result<(), ConnError> {
        let session = self.session.as_mut().expect("session exists while running");
        let n = self.socket.read_buf(session.input_buffer()).await?;
        if n == 0 {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        self.guard.entry().add_in(n);
        self.session().process()?;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.session().has_output() {
            return Ok(());
        }
        let mut out = vec![self.session().take_output()];
        self.write_batch(&mut out).await
    }

    /// Writes frames to a player on the shared stream id: their shared chunk headers and
    /// payloads go to the socket straight from the frames, nothing allocated or cloned.
    async fn write_frames(&mut self, frames: &[Arc<MediaFrame>], chunk_size: usize) -> Result<(), ConnError> {
        let len = frames
            .iter()
            .map(|f| f.shared_rtmp_headers().wire_len(f.payload.len(), chunk_size))
            .sum();
        if let Some(p) = &self.player {
            p.sub.count_out(len);
        }
        self.guard.entry().add_out(len);
        let limit = Duration::from_secs(self.ctx.config.hub.write_timeout_secs);
        let pieces = || {
            frames
                .iter()
                .flat_map(move |f| f.shared_rtmp_headers().pieces(&f.payload, chunk_size))
        };
        timeout(limit, net::write_all_pieces(&mut self.socket, pieces))
            .await
            .map_err(|_| ConnError::WriteTimeout(limit))??;
        Ok(())
    }

    async fn write_batch(&mut self, batch: &mut Vec<Bytes>) -> Result<(), ConnError> {
        let limit = Duration::from_secs(self.ctx.config.hub.write_timeout_secs);
        self.guard.entry().add_out(batch.iter().map(|b| b.len()).sum());
        timeout(limit, write_all_bytes(&mut self.socket, batch))
            .await
            .map_err(|_| ConnError::WriteTimeout(limit))??;
        Ok(())
    }

    async fn handle_events(&mut self) -> Result<(), ConnError> {
        while let Some(event) = self.session().poll_event()? {
            match event {
                SessionEvent::ConnectRequested(info) => {
                    if let Err(e) = crate::relay::hop::check_incoming(&info.via, self.ctx.relays.server_id()) {
                        self.ctx.relays.loop_refused();
                        warn!(app = %info.app, "relay connection refused: {e}");
                        self.session().reject_connect(&e.to_string());
                        self.flush().await?;
                        return Err(ConnError::Refused(e.to_string()));
                    }
                    if self.ctx.hub.apps().iter().any(|a| a.name == info.app) {
                        debug!(app = %info.app, "connect");
                        let ev = self.event("preConnect", "connect", &info.app, "", &info.query, false);
                        if let Err(why) = self.ctx.webhooks.ask(&ev).await {
                            self.session().reject_connect(&why);
                            self.flush().await?;
                            return Err(ConnError::Refused(why));
                        }
                        self.session().accept_connect();
                        self.connected = Some(info.app.clone());
                        let ev = self.event("postConnect", "connect", &info.app, "", &info.query, false);
                        self.ctx.webhooks.notify(ev);
                    } else {
                        self.session().reject_connect("Unknown application");
                        self.flush().await?;
                        return Err(ConnError::Refused(format!("unknown app {:?}", info.app)));
                    }
                }
                SessionEvent::PublishRequested(req) => self.start_publish(req).await?,
                SessionEvent::PlayRequested(req) => self.start_play(req).await?,
                SessionEvent::Video { timestamp, payload } => {
                    if let Some((p, _)) = &self.publisher {
                        if let Err(e) = p.push_video(timestamp, payload) {
                            debug!("dropping video message: {e}");
                        }
                    }
                }
                SessionEvent::Audio { timestamp, payload } => {
                    if let Some((p, _)) = &self.publisher {
                        if let Err(e) = p.push_audio(timestamp, payload) {
                            debug!("dropping audio message: {e}");
                        }
                    }
                }
                SessionEvent::Metadata(values) => {
                    if let Some((p, _)) = &self.publisher {
                        p.push_metadata(&values);
                    }
                }
                SessionEvent::Unpublished { .. } => {
                    if let Some((p, _)) = self.publisher.take() {
                        info!(stream = %p.stream().key, "publish stopped");
                        self.guard.set_activity(None);
                        self.activity_done();
                    }
                }
                SessionEvent::PlayStopped { .. } => {
                    if let Some(p) = self.player.take() {
                        info!(stream = %p.sub.stream().key, "play stopped");
                        self.guard.set_activity(None);
                        self.activity_done();
                    }
                }
            }
        }
        Ok(())
    }

    /// A lifecycle event about this connection.
    fn event(
        &self,
        event: &'static str,
        action: &'static str,
        app: &str,
        name: &str,
        query: &str,
        ended: bool,
    ) -> Event {
        let e = self.guard.entry();
        Event {
            event,
            id: self.id,
            ip: self.peer.ip().to_string(),
            app: app.to_string(),
            name: name.to_string(),
            query: crate::redact::Query::new(query),
            protocol: self.protocol.as_str(),
            createtime: millis(e.connected),
            endtime: ended.then(|| millis(SystemTime::now())),
            inbytes: e.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
            outbytes: e.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
            action,
        }
    }

    /// Sends `donePublish`/`donePlay` for the current activity, once.
    fn activity_done(&mut self) {
        if let Some((role, key, query)) = self.active.take() {
            let (name, action) = if role == Role::Publisher {
                ("donePublish", "publish")
            } else {
                ("donePlay", "play")
            };
            let ev = self.event(name, action, &key.app, &key.name, &query, true);
            self.ctx.webhooks.notify(ev);
        }
    }

    /// Asks the `pre*` webhooks; `Err` is the refusal reason.
    async fn ask(&self, role: Role, key: &StreamKey, query: &str) -> Result<(), String> {
        let (name, action) = if role == Role::Publisher {
            ("prePublish", "publish")
        } else {
            ("prePlay", "play")
        };
        self.ctx
            .webhooks
            .ask(&self.event(name, action, &key.app, &key.name, query, false))
            .await
    }

    fn started(&mut self, role: Role, key: &StreamKey, query: &str) {
        let (name, action) = if role == Role::Publisher {
            ("postPublish", "publish")
        } else {
            ("postPlay", "play")
        };
        self.ctx
            .webhooks
            .notify(self.event(name, action, &key.app, &key.name, query, false));
        self.active = Some((role, key.clone(), query.to_string()));
    }

    /// The relay hop path of a relay client (checked at connect), empty for others.
    fn relay_path(&self) -> Vec<String> {
        let via = self
            .session
            .as_ref()
            .and_then(|s| s.connect_info())
            .map(|c| c.via.as_str());
        crate::relay::hop::parse(via.unwrap_or("")).unwrap_or_default()
    }

    fn app(&self) -> String {
        self.session
            .as_ref()
            .and_then(|s| s.connect_info())
            .map(|c| c.app.clone())
            .unwrap_or_default()
    }

    async fn start_publish(&mut self, req: StreamRequest) -> Result<(), ConnError> {
        let app = self.app();
        let key = match self.ctx.hub.key(&app, &req.name) {
            Ok(k) => k,
            Err(e) => return self.refuse_publish(&req, None, "NetStream.Publish.BadName", e).await,
        };
        let key = match self
            .ctx
            .authorize(&key, Role::Publisher, &req.query, Some(self.peer.ip()), self.id)
        {
            Ok(public) => public.unwrap_or(key),
            Err(d) => {
                self.session()
                    .reject_publish(req.stream_id, "NetStream.Publish.Unauthorized", &d.to_string());
                self.flush().await?;
                // The name may be a stream key: never log it.
                return Err(ConnError::Refused(format!("publish: {d}")));
            }
        };
        if let Err(why) = self.ask(Role::Publisher, &key, &req.query).await {
            self.session()
                .reject_publish(req.stream_id, "NetStream.Publish.Unauthorized", &why);
            self.flush().await?;
            return Err(ConnError::Refused(format!("publish: {why}")));
        }
        let info = PublisherInfo {
            session_id: self.id,
            protocol: self.protocol.as_str(),
            remote: self.peer.to_string(),
            started: SystemTime::now(),
        };
        match self.ctx.publish(&key, info, self.relay_path()).await {
            Ok(p) => {
                info!(stream = %key, "publish started");
                self.guard.set_activity(Some((Role::Publisher, key.clone())));
                self.session().accept_publish(req.stream_id);
                self.publisher = Some((p, req.stream_id));
                self.started(Role::Publisher, &key, &req.query);
                Ok(())
            }
            Err(e) => {
                self.refuse_publish(&req, Some(&key), "NetStream.Publish.BadName", e)
                    .await
            }
        }
    }

    /// Refuses a publish; the log names the public stream once a policy resolved it, and
    /// never the requested name, which may be the stream key.
    async fn refuse_publish(
        &mut self,
        req: &StreamRequest,
        public: Option<&StreamKey>,
        code: &str,
        e: HubError,
    ) -> Result<(), ConnError> {
        self.session().reject_publish(req.stream_id, code, &e.to_string());
        self.flush().await?;
        let shown = public.map_or_else(|| RequestedName(&req.name).to_string(), |k| k.to_string());
        Err(ConnError::Refused(format!("publish {shown}: {e}")))
    }

    async fn start_play(&mut self, req: StreamRequest) -> Result<(), ConnError> {
        let app = self.app();
        let options = SubscribeOptions {
            multitrack: self
                .session
                .as_ref()
                .and_then(|s| s.connect_info())
                .is_some_and(|c| c.wants_multitrack()),
        };
        let mut key = self.ctx.hub.key(&app, &req.name);
        if let Ok(k) = &key {
            match self
                .ctx
                .authorize(k, Role::Player, &req.query, Some(self.peer.ip()), self.id)
            {
                Ok(Some(public)) => key = Ok(public),
                Ok(None) => {}
                Err(d) => {
                    self.session()
                        .reject_play(req.stream_id, "NetStream.Play.Unauthorized", &d.to_string());
                    self.flush().await?;
                    return Err(ConnError::Refused(format!("play: {d}")));
                }
            }
        }
        if let Ok(k) = &key {
            if let Err(why) = self.ask(Role::Player, k, &req.query).await {
                self.session()
                    .reject_play(req.stream_id, "NetStream.Play.Unauthorized", &why);
                self.flush().await?;
                return Err(ConnError::Refused(format!("play: {why}")));
            }
        }
        if let Ok(k) = &key {
            if !crate::relay::admit_player(&self.ctx.hub, k, &req.query, self.relay_path(), Some(self.peer.ip())).await
            {
                self.session()
                    .reject_play(req.stream_id, "NetStream.Play.StreamNotFound", "No such stream");
                self.flush().await?;
                return Err(ConnError::Refused(format!("play {}: no such stream", k.app)));
            }
        }
        let client = Some(self.peer.ip());
        let sub = key.and_then(|key| self.ctx.hub.subscribe_from(&key, options, client));
        match sub {
            Ok(sub) => {
                crate::cluster::pull::wake(&self.ctx, &sub.stream().key);
                info!(stream = %sub.stream().key, "play started");
                self.guard.set_activity(Some((Role::Player, sub.stream().key.clone())));
                self.session().accept_play(req.stream_id);
                let key = sub.stream().key.clone();
                self.player = Some(Player {
                    sub,
                    stream_id: req.stream_id,
                });
                self.started(Role::Player, &key, &req.query);
                Ok(())
            }
            Err(e) => {
                self.session()
                    .reject_play(req.stream_id, "NetStream.Play.StreamNotFound", &e.to_string());
                self.flush().await?;
                Err(ConnError::Refused(format!("play {}: {e}", RequestedName(&req.name))))
            }
        }
    }

    /// On server shutdown or a kick: tell the peer its stream ends, then close.
    async fn end_now(&mut self, why: &str) {
        match self.session.as_ref().map(|s| s.role()) {
            Some(RtmpRole::Playing(id)) => self.session().end_play(id),
            Some(RtmpRole::Publishing(id)) => self.session().end_publish(id, why),
            _ => {}
        }
        self.publisher = None;
        self.player = None;
        let _ = timeout(Duration::from_secs(1), self.flush()).await;
    }
}

async fn next_frames(player: &mut Option<Player>, out: &mut Vec<Arc<crate::hub::MediaFrame>>) -> Result<(), ReaderEnd> {
    match player {
        Some(p) => p.sub.recv_batch(out, MAX_BATCH_FRAMES).await,
        None => std::future::pending().await,
    }
}
