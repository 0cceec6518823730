//! Client side of WebSocket framing (RFC 6455), just enough for a player: data frame
//! payloads are handed out as slices of the input (no copies, no reassembly), control
//! frames (ping, pong, close) are collected whole (they are at most 125 bytes).

use anyhow::{bail, Result};

pub const OP_CONTINUATION: u8 = 0;
pub const OP_TEXT: u8 = 1;
pub const OP_BINARY: u8 = 2;
pub const OP_CLOSE: u8 = 8;
pub const OP_PING: u8 = 9;
pub const OP_PONG: u8 = 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Ping(Vec<u8>),
    Pong,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Data(u64),
    Control { opcode: u8, remaining: usize },
}

#[derive(Debug)]
pub struct WsDecoder {
    state: State,
    head: [u8; 10],
    have: usize,
    control: Vec<u8>,
}

impl Default for WsDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl WsDecoder {
    pub fn new() -> Self {
        WsDecoder {
            state: State::Head,
            head: [0; 10],
            have: 0,
            control: Vec::new(),
        }
    }

    fn head_len(&self) -> usize {
        if self.have < 2 {
            return 2;
        }
        2 + match self.head[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        }
    }

    /// Decodes `data`: data frame payloads go to `on_data`; control frames are returned.
    pub fn feed(&mut self, mut data: &[u8], mut on_data: impl FnMut(&[u8]) -> Result<()>) -> Result<Vec<Control>> {
        let mut controls = Vec::new();
        while !data.is_empty() {
            match self.state {
                State::Data(n) => {
                    let take = n.min(data.len() as u64) as usize;
                    on_data(&data[..take])?;
                    data = &data[take..];
                    let left = n - take as u64;
                    self.state = if left == 0 { State::Head } else { State::Data(left) };
                }
                State::Control { opcode, remaining } => {
                    let take = remaining.min(data.len());
                    self.control.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if take == remaining {
                        controls.push(self.finish_control(opcode));
                    } else {
                        self.state = State::Control {
                            opcode,
                            remaining: remaining - take,
                        };
                    }
                }
                State::Head => {
                    self.head[self.have] = data[0];
                    data = &data[1..];
                    self.have += 1;
                    if self.have < self.head_len() {
                        continue;
                    }
                    let b0 = self.head[0];
                    let b1 = self.head[1];
                    if b1 & 0x80 != 0 {
                        bail!("WebSocket server sent a masked frame");
                    }
                    if b0 & 0x70 != 0 {
                        bail!("WebSocket frame with reserved bits set (no extension was negotiated)");
                    }
                    let len = match b1 & 0x7f {
                        126 => u64::from(u16::from_be_bytes([self.head[2], self.head[3]])),
                        127 => u64::from_be_bytes(self.head[2..10].try_into().expect("8 bytes")),
                        n => u64::from(n),
                    };
                    self.have = 0;
                    let opcode = b0 & 0x0f;
                    match opcode {
                        OP_CONTINUATION | OP_TEXT | OP_BINARY => {
                            self.state = if len == 0 { State::Head } else { State::Data(len) };
                        }
                        OP_CLOSE | OP_PING | OP_PONG => {
                            if len > 125 || b0 & 0x80 == 0 {
                                bail!("bad WebSocket control frame (opcode {opcode}, length {len})");
                            }
                            self.control.clear();
                            if len == 0 {
                                controls.push(self.finish_control(opcode));
                            } else {
                                self.state = State::Control {
                                    opcode,
                                    remaining: len as usize,
                                };
                            }
                        }
                        other => bail!("unknown WebSocket opcode {other}"),
                    }
                }
            }
        }
        Ok(controls)
    }

    fn finish_control(&mut self, opcode: u8) -> Control {
        self.state = State::Head;
        match opcode {
            OP_PING => Control::Ping(std::mem::take(&mut self.control)),
            OP_PONG => Control::Pong,
            _ => Control::Close,
        }
    }
}

/// A masked client frame (FIN set) carrying `payload` (control frames only: < 126 bytes).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    debug_assert!(payload.len() < 126);
    let mask = [0x5a, 0x17, 0xc3, 0x8e];
    let mut out = Vec::with_capacity(6 + payload.len());
    out.push(0x80 | opcode);
    out.push(0x80 | payload.len() as u8);
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![b0];
        match payload.len() {
            n if n < 126 => v.push(n as u8),
            n if n < 65536 => {
                v.push(126);
                v.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                v.push(127);
                v.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn frames_at_every_split() {
        let big: Vec<u8> = (0..70_000u32).map(|i| i as u8).collect();
        let mut input = Vec::new();
        input.extend(frame(0x82, b"FLV\x01"));
        input.extend(frame(0x89, b"hi"));
        input.extend(frame(0x02, &big[..300])); // fragmented binary message
        input.extend(frame(0x80, &big[300..]));
        input.extend(frame(0x82, b""));
        input.extend(frame(0x8a, b""));
        input.extend(frame(0x88, &[0x03, 0xe8]));
        let mut want_data = b"FLV\x01".to_vec();
        want_data.extend_from_slice(&big);
        let want_controls = vec![Control::Ping(b"hi".to_vec()), Control::Pong, Control::Close];
        for cut in (0..input.len())
            .step_by(97)
            .chain([1, 2, 5, 6, 7, 8, 9, 10, 11, input.len() - 1])
        {
            let mut d = WsDecoder::new();
            let mut data = Vec::new();
            let mut controls = d
                .feed(&input[..cut], |b| {
                    data.extend_from_slice(b);
                    Ok(())
                })
                .unwrap();
            controls.extend(
                d.feed(&input[cut..], |b| {
                    data.extend_from_slice(b);
                    Ok(())
                })
                .unwrap(),
            );
            assert_eq!(data, want_data, "cut at {cut}");
            assert_eq!(controls, want_controls, "cut at {cut}");
        }
    }

    #[test]
    fn protocol_errors() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("masked server frame", vec![0x82, 0x81, 1, 2, 3, 4, 0]),
            ("reserved bits", vec![0xc2, 0x00]),
            ("unknown opcode", vec![0x83, 0x00]),
            ("long control frame", frame(0x89, &[0; 126])),
            ("fragmented control frame", vec![0x09, 0x00]),
        ];
        for (name, input) in cases {
            assert!(WsDecoder::new().feed(&input, |_| Ok(())).is_err(), "{name}");
        }
    }

    #[test]
    fn client_frames_are_masked() {
        let f = client_frame(OP_PONG, b"hi");
        assert_eq!(f[0], 0x8a);
        assert_eq!(f[1], 0x82);
        let mask = &f[2..6];
        let unmasked: Vec<u8> = f[6..].iter().enumerate().map(|(i, b)| b ^ mask[i % 4]).collect();
        assert_eq!(unmasked, b"hi");
    }
}
