//! The OTLP trace export request in protobuf (opentelemetry-proto's
//! `ExportTraceServiceRequest`), written by hand: the few messages a span needs, with the
//! field numbers of `opentelemetry/proto/trace/v1/trace.proto` and `common/v1/common.proto`.
//!
//! Each message's length is worked out before it is written, so the request is written once,
//! front to back, into one buffer: no message is built apart and copied into its parent.

use super::{Attr, Finished, Open};

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// Bytes of `v` as a varint.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Bytes of a field whose key (number and wire type) fits in one byte (numbers up to 15) or
/// two (up to 2047): all of ours.
fn key_len(field: u32) -> usize {
    varint_len(u64::from(field) << 3)
}

/// Bytes of a length-delimited field holding `len` bytes.
fn len_field(field: u32, len: usize) -> usize {
    key_len(field) + varint_len(len as u64) + len
}

/// The request being written.
struct Out(Vec<u8>);

impl Out {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn key(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    /// The key and length of a length-delimited field; its `len` bytes follow.
    fn open(&mut self, field: u32, len: usize) {
        self.key(field, LEN);
        self.varint(len as u64);
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.open(field, b.len());
        self.0.extend_from_slice(b);
    }

    fn uint(&mut self, field: u32, v: u64) {
        self.key(field, VARINT);
        self.varint(v);
    }

    fn fixed64(&mut self, field: u32, v: u64) {
        self.key(field, FIXED64);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn fixed32(&mut self, field: u32, v: u32) {
        self.key(field, FIXED32);
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

/// `AnyValue { string_value = 1; bool_value = 2; int_value = 3; double_value = 4 }`.
fn any_len(value: &Attr) -> usize {
    match value {
        Attr::Str(s) => len_field(1, s.len()),
        Attr::Bool(b) => key_len(2) + varint_len(u64::from(*b)),
        Attr::Int(i) => key_len(3) + varint_len(*i as u64),
        Attr::F64(_) => key_len(4) + 8,
    }
}

/// `KeyValue { key = 1; AnyValue value = 2 }`.
fn kv_len(key: &str, value: &Attr) -> usize {
    len_field(1, key.len()) + len_field(2, any_len(value))
}

fn write_kv(out: &mut Out, field: u32, key: &str, value: &Attr) {
    out.open(field, kv_len(key, value));
    out.bytes(1, key.as_bytes());
    out.open(2, any_len(value));
    match value {
        Attr::Str(s) => out.bytes(1, s.as_bytes()),
        Attr::Bool(b) => out.uint(2, u64::from(*b)),
        Attr::Int(i) => out.uint(3, *i as u64),
        Attr::F64(f) => out.fixed64(4, f.to_bits()),
    }
}

/// `Status { message = 2; code = 3 }`, code 2: STATUS_CODE_ERROR.
fn status_len(message: &str) -> usize {
    len_field(2, message.len()) + key_len(3) + 1
}

/// SPAN_FLAGS: the W3C sampled flag, and "the parent's remoteness is known" (0x100), with
/// "remote" (0x200) when the parent came in a traceparent.
fn flags(s: &Open) -> u32 {
    0x01 | if s.remote_parent { 0x300 } else { 0x100 }
}

/// `Span`: trace_id = 1, span_id = 2, parent_span_id = 4, name = 5, kind = 6,
/// start_time_unix_nano = 7, end_time_unix_nano = 8, attributes = 9, status = 15, flags = 16.
fn span_len(f: &Finished) -> usize {
    let s = &f.span;
    let mut n = len_field(1, 16) + len_field(2, 8);
    if s.parent.is_some() {
        n += len_field(4, 8);
    }
    n += len_field(5, s.name.len());
    n += key_len(6) + varint_len(s.kind as u64);
    n += 2 * (key_len(7) + 8);
    for (k, v) in &s.attrs {
        n += len_field(9, kv_len(k, v));
    }
    if let Some(error) = &s.error {
        n += len_field(15, status_len(error));
    }
    n + key_len(16) + 4
}

fn write_span(out: &mut Out, f: &Finished, len: usize) {
    let s = &f.span;
    out.open(2, len);
    out.bytes(1, &s.trace_id);
    out.bytes(2, &s.span_id);
    if let Some(parent) = &s.parent {
        out.bytes(4, parent);
    }
    out.bytes(5, s.name.as_bytes());
    out.uint(6, s.kind as u64);
    out.fixed64(7, s.start_ns);
    out.fixed64(8, f.end_ns);
    for (k, v) in &s.attrs {
        write_kv(out, 9, k, v);
    }
    if let Some(error) = &s.error {
        out.open(15, status_len(error));
        out.bytes(2, error.as_bytes());
        out.uint(3, 2);
    }
    out.fixed32(16, flags(s));
}

/// The instrumentation scope: `{ name = 1; version = 2 }`.
const SCOPE: &str = "offload";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1 }`, one
/// `ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2 }` whose
/// resource (`Resource { repeated KeyValue attributes = 1 }`) is `service.name`, one
/// `ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2 }`.
pub(super) fn export_request(service: &str, spans: &[Finished]) -> Vec<u8> {
    let service = Attr::Str(service.to_owned());
    let resource = len_field(1, kv_len("service.name", &service));
    let scope = len_field(1, SCOPE.len()) + len_field(2, VERSION.len());
    let lens: Vec<usize> = spans.iter().map(span_len).collect();
    let scope_spans = len_field(1, scope) + lens.iter().map(|&n| len_field(2, n)).sum::<usize>();
    let resource_spans = len_field(1, resource) + len_field(2, scope_spans);
    let total = len_field(1, resource_spans);
    let mut out = Out(Vec::with_capacity(total));
    out.open(1, resource_spans);
    out.open(1, resource);
    write_kv(&mut out, 1, "service.name", &service);
    out.open(2, scope_spans);
    out.open(1, scope);
    out.bytes(1, SCOPE.as_bytes());
    out.bytes(2, VERSION.as_bytes());
    for (s, &len) in spans.iter().zip(&lens) {
        write_span(&mut out, s, len);
    }
    debug_assert_eq!(
        out.0.len(),
        total,
        "the lengths worked out match what was written"
    );
    out.0
}

#[cfg(test)]
mod tests {
    use super::super::Kind;
    use super::*;

    #[test]
    fn varints_and_fields_are_written_as_protobuf_says() {
        let mut m = Out(Vec::new());
        m.uint(1, 150);
        assert_eq!(m.0, [0x08, 0x96, 0x01], "the protobuf guide's example");
        let mut m = Out(Vec::new());
        m.bytes(2, b"testing");
        assert_eq!(m.0[..2], [0x12, 0x07]);
        let mut m = Out(Vec::new());
        m.fixed64(7, 1);
        assert_eq!(m.0, [0x39, 1, 0, 0, 0, 0, 0, 0, 0]);
        for v in [0, 1, 127, 128, 16_383, 16_384, u64::MAX] {
            let mut m = Out(Vec::new());
            m.varint(v);
            assert_eq!(m.0.len(), varint_len(v), "{v}");
        }
    }

    /// Every length worked out ahead matches what is written, for spans of every shape (the
    /// debug assertion in `export_request` checks it).
    #[test]
    fn a_request_is_as_long_as_its_lengths_say() {
        let span = |parent: Option<[u8; 8]>, error: Option<String>, attrs| Finished {
            span: Open {
                trace_id: [1; 16],
                span_id: [2; 8],
                parent,
                remote_parent: parent.is_some(),
                name: "http.request",
                kind: Kind::Server,
                start_ns: 1_700_000_000_000_000_000,
                attrs,
                error,
            },
            end_ns: 1_700_000_000_000_500_000,
        };
        let long = "x".repeat(300);
        let spans = vec![
            span(None, None, vec![]),
            span(
                Some([3; 8]),
                Some("failed".into()),
                vec![
                    ("http.route", Attr::Str("/heavy".into())),
                    ("http.response.status_code", Attr::Int(202)),
                    ("n", Attr::Int(-1)),
                    ("ok", Attr::Bool(true)),
                    ("f", Attr::F64(0.5)),
                    ("long", Attr::Str(long)),
                ],
            ),
        ];
        let body = export_request("offload-serve", &spans);
        assert!(body.len() > 400);
        assert_eq!(body[0], 0x0a, "field 1, length-delimited");
    }
}
