//! HTTP(S)-FLV source: one HTTP/1.1 GET, the response body read through the same FLV tag
//! reader the server's FLV push uses (tag sizes capped).

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use tokio::time::timeout;

use super::rtmp::dial;
use super::source::{Ingest, LinkOptions};
use super::url::RelayUrl;
use super::{hop, RelayError};
use crate::codec::{amf0, flv};

pub struct FlvLink {
    body: Incoming,
    reader: flv::FlvReader,
    buf: BytesMut,
    ready: VecDeque<Ingest>,
    opts: LinkOptions,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for FlvLink {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl FlvLink {
    pub async fn open(url: &RelayUrl, opts: LinkOptions) -> Result<FlvLink, RelayError> {
        let io = dial(url, &opts, &[b"http/1.1"]).await?;
        let (mut sender, conn) = timeout(
            opts.connect_timeout,
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(io)),
        )
        .await
        .map_err(|_| RelayError::Timeout("HTTP connect"))?
        .map_err(|e| RelayError::Http(e.to_string()))?;
        let conn = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("http-flv source connection ended: {e}");
            }
        });
        let path = if url.query.is_empty() {
            format!("/{}", url.path)
        } else {
            format!("/{}?{}", url.path, url.query)
        };
        let mut req = hyper::Request::get(path)
            .header(hyper::header::HOST, url.authority())
            .header(
                hyper::header::USER_AGENT,
                concat!("Ferrocast/", env!("CARGO_PKG_VERSION")),
            );
        if !opts.via.is_empty() {
            req = req.header(hop::HEADER, opts.via.as_str());
        }
        let req = req.body(Empty::new()).map_err(|e| RelayError::Http(e.to_string()))?;
        let resp = timeout(opts.connect_timeout, sender.send_request(req))
            .await
            .map_err(|_| RelayError::Timeout("HTTP response"))?
            .map_err(|e| RelayError::Http(e.to_string()))?;
        match resp.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND => return Err(RelayError::NotFound),
            StatusCode::LOOP_DETECTED => return Err(RelayError::LoopRefused("relay loop (HTTP 508)".into())),
            s => return Err(RelayError::Http(format!("status {}", s.as_u16()))),
        }
        Ok(FlvLink {
            body: resp.into_body(),
            reader: flv::FlvReader::new(opts.max_message_size as usize),
            buf: BytesMut::with_capacity(64 * 1024),
            ready: VecDeque::new(),
            opts,
            conn,
        })
    }

    pub async fn next(&mut self) -> Result<Ingest, RelayError> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Ok(item);
            }
            while let Some(tag) = self.reader.next_tag(&mut self.buf)? {
                if let Some(item) = ingest(tag) {
                    self.ready.push_back(item);
                }
            }
            if !self.ready.is_empty() {
                continue;
            }
            let frame = timeout(self.opts.idle_timeout, self.body.frame())
                .await
                .map_err(|_| RelayError::Timeout("waiting for data"))?;
            match frame {
                None => return Err(RelayError::Ended),
                Some(Err(e)) => return Err(RelayError::Http(e.to_string())),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.opts.counters.add_in(data.len());
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// An FLV tag as hub input; script tags other than `onMetaData` are dropped.
fn ingest(tag: flv::Tag) -> Option<Ingest> {
    match tag.tag_type {
        flv::TAG_VIDEO if !tag.body.is_empty() => Some(Ingest::Video(tag.timestamp, tag.body)),
        flv::TAG_AUDIO if !tag.body.is_empty() => Some(Ingest::Audio(tag.timestamp, tag.body)),
        flv::TAG_SCRIPT => {
            let values = amf0::decode_all(&tag.body).ok()?;
            let mut it = values.into_iter();
            match it.next() {
                Some(amf0::Amf0Value::String(name)) if name == "onMetaData" => Some(Ingest::Metadata(it.collect())),
                _ => None,
            }
        }
        _ => None,
    }
}
