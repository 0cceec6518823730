//! The socket side of the RTMP client: connects (TCP, or TLS for `rtmps://`), drives the
//! sans-IO [`Client`] until play or publish has started, then hands media in (pull) or writes
//! the hub's pre-encoded chunks out (push).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::source::{Ingest, LinkOptions};
use super::tls::{self, Io};
use super::url::{RelayUrl, Scheme};
use super::RelayError;
use crate::net::write_all_bytes;
use crate::rtmp::client::{Client, ClientConfig, ClientEvent, ClientMode};

/// An RTMP connection that has started playing or publishing.
pub struct RtmpLink {
    io: Box<dyn Io>,
    client: Client,
    buf: BytesMut,
    opts: LinkOptions,
    /// The far end announced enhanced RTMP (a `fourCcList`).
    pub enhanced: bool,
}

/// Opens TCP (and TLS for `rtmps`/`https`) to the URL's host within the connect timeout.
pub async fn dial(url: &RelayUrl, opts: &LinkOptions, alpn: &[&[u8]]) -> Result<Box<dyn Io>, RelayError> {
    let tcp = timeout(opts.connect_timeout, TcpStream::connect((url.host.as_str(), url.port)))
        .await
        .map_err(|_| RelayError::Timeout("connect"))?
        .map_err(|e| RelayError::Connect(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    if url.scheme.is_tls() {
        let config = tls::client_config(opts.ca_file.as_deref(), opts.tls_verify, alpn)?;
        let stream = timeout(opts.connect_timeout, tls::connect(tcp, &url.host, config))
            .await
            .map_err(|_| RelayError::Timeout("TLS handshake"))??;
        Ok(Box::new(stream))
    } else {
        Ok(Box::new(tcp))
    }
}

impl RtmpLink {
    /// Connects and runs connect / createStream / play or publish until the far end starts.
    pub async fn open(url: &RelayUrl, mode: ClientMode, opts: LinkOptions) -> Result<RtmpLink, RelayError> {
        debug_assert!(matches!(url.scheme, Scheme::Rtmp | Scheme::Rtmps));
        let (app, name) = url.rtmp_app_and_name()?;
        let stream = if url.query.is_empty() {
            name
        } else {
            format!("{name}?{}", url.query)
        };
        let io = dial(url, &opts, &[]).await?;
        let client = Client::new(ClientConfig {
            mode,
            tc_url: format!("{}://{}/{app}", url.scheme.as_str(), url.authority()),
            app,
            stream,
            chunk_size: opts.chunk_size,
            max_peer_chunk_size: opts.max_peer_chunk_size,
            max_message_size: opts.max_message_size,
            via: opts.via.clone(),
        });
        let mut link = RtmpLink {
            io,
            client,
            buf: BytesMut::with_capacity(64 * 1024),
            opts,
            enhanced: false,
        };
        let limit = link.opts.connect_timeout;
        timeout(limit, link.start())
            .await
            .map_err(|_| RelayError::Timeout("RTMP connect"))??;
        Ok(link)
    }

    async fn start(&mut self) -> Result<(), RelayError> {
        loop {
            self.flush().await?;
            while let Some(e) = self.client.next_event() {
                match e {
                    ClientEvent::Connected { fourccs } => self.enhanced = !fourccs.is_empty(),
                    ClientEvent::Started => return Ok(()),
                    ClientEvent::Refused { code, description } => return Err(refusal(code, description)),
                    ClientEvent::Ended { .. } => return Err(RelayError::Ended),
                    // Media cannot come before Play.Start; anything else waits for it.
                    _ => {}
                }
            }
            self.read().await?;
        }
    }

    pub fn stream_id(&self) -> u32 {
        self.client.stream_id()
    }

    pub fn chunk_size(&self) -> u32 {
        self.client.chunk_size()
    }

    /// Reads once from the socket into the client (bounded by the idle timeout).
    async fn read(&mut self) -> Result<(), RelayError> {
        let n = timeout(self.opts.idle_timeout, self.io.read_buf(&mut self.buf))
            .await
            .map_err(|_| RelayError::Timeout("waiting for data"))??;
        if n == 0 {
            return Err(RelayError::Connect("connection closed by the far end".into()));
        }
        self.opts.counters.add_in(n);
        self.client.handle_input(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), RelayError> {
        if self.client.has_output() {
            let mut out = vec![self.client.take_output()];
            self.write(&mut out).await?;
        }
        Ok(())
    }

    /// Writes pre-encoded chunks (after anything the client has to say first).
    pub async fn write(&mut self, batch: &mut Vec<Bytes>) -> Result<(), RelayError> {
        if self.client.has_output() {
            batch.insert(0, self.client.take_output());
        }
        let n: usize = batch.iter().map(|b| b.len()).sum();
        timeout(self.opts.write_timeout, write_all_bytes(&mut self.io, batch))
            .await
            .map_err(|_| RelayError::Timeout("writing to the far end"))??;
        self.opts.counters.add_out(n);
        Ok(())
    }

    /// Pull: the next media item.
    pub async fn next(&mut self) -> Result<Ingest, RelayError> {
        loop {
            while let Some(e) = self.client.next_event() {
                match e {
                    ClientEvent::Video { timestamp, payload } => return Ok(Ingest::Video(timestamp, payload)),
                    ClientEvent::Audio { timestamp, payload } => return Ok(Ingest::Audio(timestamp, payload)),
                    ClientEvent::Metadata(values) => return Ok(Ingest::Metadata(values)),
                    ClientEvent::Refused { code, description } => return Err(refusal(code, description)),
                    ClientEvent::Ended { .. } => return Err(RelayError::Ended),
                    ClientEvent::Connected { .. } | ClientEvent::Started => {}
                }
            }
            self.read().await?;
            // Acknowledgements and ping answers go out as soon as they are due.
            self.flush().await?;
        }
    }

    /// Push: reads what the far end says while we publish (acks, pings, a late refusal).
    /// Cancel-safe: only the socket read is awaited before the bytes are processed.
    pub async fn poll_control(&mut self) -> Result<(), RelayError> {
        let n = self.io.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(RelayError::Connect("connection closed by the far end".into()));
        }
        self.opts.counters.add_in(n);
        self.client.handle_input(&self.buf)?;
        self.buf.clear();
        while let Some(e) = self.client.next_event() {
            match e {
                ClientEvent::Refused { code, description } => return Err(refusal(code, description)),
                ClientEvent::Ended { .. } => return Err(RelayError::Ended),
                _ => {}
            }
        }
        self.flush().await
    }

    /// Push: ends the publish politely, bounded by a second.
    pub async fn close(mut self) {
        self.client.close();
        let _ = timeout(Duration::from_secs(1), self.flush()).await;
    }
}

/// Turns an RTMP refusal into the error that says what to do about it.
fn refusal(code: String, description: String) -> RelayError {
    if code == "NetStream.Play.StreamNotFound" {
        return RelayError::NotFound;
    }
    if description.starts_with(super::hop::LOOP_PREFIX) {
        return RelayError::LoopRefused(description);
    }
    RelayError::Refused { code, description }
}
