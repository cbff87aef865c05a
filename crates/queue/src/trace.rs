//! A job's place in a distributed trace: the W3C Trace Context `traceparent` of the request
//! that stored it ([`NewJob::trace`](crate::NewJob::trace)), handed to the run
//! ([`Claimed::trace`](crate::Claimed::trace)), so that the run's span is the request's child
//! across the 202. The worker opens its run span (`job.run`, at the TRACE level, target
//! `offload_queue::run`) with the context in its `traceparent` field, for a tracing layer that
//! exports spans to read.

use std::fmt;

/// A valid W3C `traceparent` (version 00): `00-{trace id: 32 hex}-{parent id: 16 hex}-{flags:
/// 2 hex}`, lowercase, neither id all zeros.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct TraceParent(String);

/// The length of a version-00 `traceparent`.
const LEN: usize = 55;

impl TraceParent {
    /// Parses a `traceparent` header's value; `None` if it is not a valid version-00 one (a
    /// receiver then starts a trace of its own, as the W3C spec says).
    pub fn parse(text: &str) -> Option<TraceParent> {
        let text = text.trim();
        let b = text.as_bytes();
        let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        let zero = |s: &[u8]| s.iter().all(|&c| c == b'0');
        let ok = b.len() == LEN
            && &b[..3] == b"00-"
            && b[35] == b'-'
            && b[52] == b'-'
            && hex(&b[3..35])
            && hex(&b[36..52])
            && hex(&b[53..])
            && !zero(&b[3..35])
            && !zero(&b[36..52]);
        ok.then(|| TraceParent(text.to_owned()))
    }

    /// The context of span `span_id` in trace `trace_id`, sampled.
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8]) -> TraceParent {
        let mut s = String::with_capacity(LEN);
        s.push_str("00-");
        push_hex(&mut s, &trace_id);
        s.push('-');
        push_hex(&mut s, &span_id);
        s.push_str("-01");
        TraceParent(s)
    }

    /// The trace id.
    pub fn trace_id(&self) -> [u8; 16] {
        from_hex(&self.0[3..35])
    }

    /// The parent's span id.
    pub fn span_id(&self) -> [u8; 8] {
        from_hex(&self.0[36..52])
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn push_hex(s: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
}

fn from_hex<const N: usize>(hex: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, pair) in hex.as_bytes().chunks_exact(2).take(N).enumerate() {
        let digit = |c: u8| match c {
            b'0'..=b'9' => c - b'0',
            _ => c - b'a' + 10,
        };
        out[i] = digit(pair[0]) << 4 | digit(pair[1]);
    }
    out
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_contexts_round_trip_and_bad_ones_are_refused() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t = TraceParent::parse(text).unwrap();
        assert_eq!(t.as_str(), text);
        assert_eq!(TraceParent::new(t.trace_id(), t.span_id()), t);
        assert_eq!(
            t.span_id(),
            [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }
}
