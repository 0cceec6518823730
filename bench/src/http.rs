//! The little HTTP/1.1 the players need: a response head, and a streaming decoder for
//! `Transfer-Encoding: chunked` bodies that hands out slices of the input (no copies).

use anyhow::{bail, Result};

/// Upper bound on a response head; real ones are a few hundred bytes.
pub const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub chunked: bool,
    /// Bytes of the head including the final blank line; the body starts after them.
    pub len: usize,
}

/// Parses a response head from the front of `buf`; `Ok(None)` while it is incomplete.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<ResponseHead>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            bail!("HTTP response head larger than {MAX_HEAD} bytes");
        }
        if buf.len() >= 5 && !buf.starts_with(b"HTTP/") {
            bail!("not an HTTP response");
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| anyhow::anyhow!("HTTP response head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        bail!("bad HTTP status line {status_line:?}");
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad HTTP status line {status_line:?}"))?;
    let mut chunked = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.split(',').any(|v| v.trim().eq_ignore_ascii_case("chunked"))
            {
                chunked = true;
            }
        }
    }
    Ok(Some(ResponseHead {
        status,
        chunked,
        len: end + 4,
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    Size,
    Extension,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    Done,
}

/// Streaming `Transfer-Encoding: chunked` decoder.
#[derive(Debug)]
pub struct ChunkedDecoder {
    state: ChunkState,
    size: u64,
    digits: u32,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        ChunkedDecoder {
            state: ChunkState::Size,
            size: 0,
            digits: 0,
        }
    }

    /// True once the last (zero-size) chunk was read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes `data`, passing each piece of body to `body` (slices of `data`).
    pub fn feed(&mut self, mut data: &[u8], mut body: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
        while !data.is_empty() {
            if let ChunkState::Data(n) = self.state {
                let take = n.min(data.len() as u64) as usize;
                body(&data[..take])?;
                data = &data[take..];
                let left = n - take as u64;
                self.state = if left == 0 {
                    ChunkState::DataCr
                } else {
                    ChunkState::Data(left)
                };
                continue;
            }
            let b = data[0];
            data = &data[1..];
            self.state = match (self.state, b) {
                (ChunkState::Size, b) if b.is_ascii_hexdigit() => {
                    self.digits += 1;
                    if self.digits > 12 {
                        bail!("HTTP chunk size too long");
                    }
                    self.size = self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                    ChunkState::Size
                }
                (ChunkState::Size, b';' | b' ' | b'\t') if self.digits > 0 => ChunkState::Extension,
                (ChunkState::Size | ChunkState::Extension, b'\r') if self.digits > 0 => ChunkState::SizeLf,
                (ChunkState::Extension, _) => ChunkState::Extension,
                (ChunkState::SizeLf, b'\n') => {
                    let size = std::mem::take(&mut self.size);
                    self.digits = 0;
                    if size == 0 {
                        ChunkState::Done
                    } else {
                        ChunkState::Data(size)
                    }
                }
                (ChunkState::DataCr, b'\r') => ChunkState::DataLf,
                (ChunkState::DataLf, b'\n') => ChunkState::Size,
                (ChunkState::Done, _) => return Ok(()),
                (state, b) => bail!("bad chunked encoding: byte {b:#04x} in state {state:?}"),
            };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let cases: Vec<(&str, &[u8], Option<ResponseHead>)> = vec![
            ("incomplete", b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\n", None),
            (
                "chunked flv",
                b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\nTransfer-Encoding: chunked\r\n\r\nFLV",
                Some(ResponseHead {
                    status: 200,
                    chunked: true,
                    len: 74,
                }),
            ),
            (
                "close-delimited, lower-case header",
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\n",
                Some(ResponseHead {
                    status: 200,
                    chunked: false,
                    len: 48,
                }),
            ),
            (
                "websocket upgrade",
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                Some(ResponseHead {
                    status: 101,
                    chunked: false,
                    len: 56,
                }),
            ),
            (
                "not found",
                b"HTTP/1.0 404 Not Found\r\n\r\n",
                Some(ResponseHead {
                    status: 404,
                    chunked: false,
                    len: 26,
                }),
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(parse_response_head(input).unwrap(), want, "{name}");
        }
        assert!(parse_response_head(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_response_head(b"HTTP/2 200\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_body_at_every_split() {
        let input = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
        let want = b"helloabcdefghijklmnopqrstuvwxyz".to_vec();
        for cut in 0..input.len() {
            let mut d = ChunkedDecoder::new();
            let mut got = Vec::new();
            d.feed(&input[..cut], |b| {
                got.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
            d.feed(&input[cut..], |b| {
                got.extend_from_slice(b);
                Ok(())
            })
            .unwrap();
            assert_eq!(got, want, "cut at {cut}");
            assert!(d.is_done());
        }
    }

    #[test]
    fn chunked_errors() {
        for bad in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"\r\n"] {
            assert!(ChunkedDecoder::new().feed(bad, |_| Ok(())).is_err(), "{bad:?}");
        }
    }
}
