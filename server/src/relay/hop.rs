//! Relay loop detection. Every relay connection carries the path of server ids its stream
//! has passed through, origin first: in the RTMP `connect` object (`ferrocastVia`) and as the
//! HTTP header `Ferrocast-Via`. A server that finds its own id in an incoming path refuses the
//! request (the stream went round), and so does one that sees more than [`MAX_HOPS`] ids. A
//! stream published by a relay keeps its path, so pushing it on extends the path instead of
//! starting a new one.

use std::sync::OnceLock;

/// HTTP request header carrying the path.
pub const HEADER: &str = "ferrocast-via";
/// Longest path accepted: no sensible relay chain is longer, and a loop through servers that
/// drop the marker still ends here once the marker comes back.
pub const MAX_HOPS: usize = 8;
const MAX_ID_LEN: usize = 64;
/// Every refusal for a loop starts with this, so the far end's relay can tell it apart from
/// other refusals (and stop instead of retrying).
pub const LOOP_PREFIX: &str = "relay loop";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HopError {
    #[error("relay loop: this server ({0}) is already on the stream's relay path")]
    Loop(String),
    #[error("relay loop suspected: relay path longer than {MAX_HOPS} hops")]
    TooManyHops,
    #[error("malformed relay path")]
    Malformed,
}

/// This process's server id: random per start, so two processes never share one.
pub fn server_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| format!("{:016x}", rand::random::<u64>()))
}

/// Parses a path as sent on the wire (comma-separated ids); empty means none.
pub fn parse(raw: &str) -> Result<Vec<String>, HopError> {
    if raw.is_empty() {
        return Ok(Vec::new());
    }
    if raw.len() > MAX_HOPS * (MAX_ID_LEN + 1) {
        return Err(HopError::TooManyHops);
    }
    let ids: Vec<String> = raw.split(',').map(|s| s.trim().to_string()).collect();
    if ids.len() > MAX_HOPS {
        return Err(HopError::TooManyHops);
    }
    let valid = |id: &String| {
        !id.is_empty()
            && id.len() <= MAX_ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    };
    if !ids.iter().all(valid) {
        return Err(HopError::Malformed);
    }
    Ok(ids)
}

/// Checks a path an incoming request carries against `me`; the parsed path when it may pass.
pub fn check_incoming(raw: &str, me: &str) -> Result<Vec<String>, HopError> {
    let path = parse(raw)?;
    if path.iter().any(|id| id == me) {
        return Err(HopError::Loop(me.to_string()));
    }
    Ok(path)
}

/// The path an outgoing relay sends: the stream's path with `me` appended.
pub fn outgoing(path: &[String], me: &str) -> Result<String, HopError> {
    if path.iter().any(|id| id == me) {
        return Err(HopError::Loop(me.to_string()));
    }
    if path.len() >= MAX_HOPS {
        return Err(HopError::TooManyHops);
    }
    let mut ids = path.to_vec();
    ids.push(me.to_string());
    Ok(ids.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_id_on_the_path_is_a_loop() {
        assert_eq!(check_incoming("", "me").unwrap(), Vec::<String>::new());
        assert_eq!(check_incoming("a,b", "me").unwrap(), vec!["a", "b"]);
        assert_eq!(check_incoming("a,me", "me"), Err(HopError::Loop("me".into())));
        assert_eq!(outgoing(&["a".into()], "me").unwrap(), "a,me");
        assert!(outgoing(&["me".into()], "me").is_err());
    }

    #[test]
    fn long_or_malformed_paths_are_refused() {
        let long = ["x"; MAX_HOPS + 1].join(",");
        assert_eq!(parse(&long), Err(HopError::TooManyHops));
        assert_eq!(parse("a,,b"), Err(HopError::Malformed));
        assert_eq!(parse("a b"), Err(HopError::Malformed));
        assert_eq!(parse(&"y".repeat(4096)), Err(HopError::TooManyHops));
        let full: Vec<String> = (0..MAX_HOPS).map(|i| i.to_string()).collect();
        assert_eq!(outgoing(&full, "me"), Err(HopError::TooManyHops));
        assert_eq!(server_id(), server_id());
        assert_eq!(server_id().len(), 16);
    }
}
