//! The OTLP trace export request in protobuf (opentelemetry-proto's
//! `ExportTraceServiceRequest`), written by hand: the few messages a span needs, with the
//! field numbers of `opentelemetry/proto/trace/v1/trace.proto` and `common/v1/common.proto`.

use super::{Attr, Finished};

/// Protobuf wire types.
const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;

/// A protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint(u64::from(field) << 3 | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.tag(field, LEN);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    fn uint(&mut self, field: u32, v: u64) {
        self.tag(field, VARINT);
        self.varint(v);
    }

    fn fixed64(&mut self, field: u32, v: u64) {
        self.tag(field, FIXED64);
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
}

/// `KeyValue { key = 1; AnyValue value = 2 }`, `AnyValue { string_value = 1; bool_value = 2;
/// int_value = 3; double_value = 4 }`.
fn key_value(key: &str, value: &Attr) -> Msg {
    let mut v = Msg::default();
    match value {
        Attr::Str(s) => v.string(1, s),
        Attr::Bool(b) => v.uint(2, u64::from(*b)),
        Attr::Int(i) => v.uint(3, *i as u64),
        Attr::F64(f) => v.fixed64(4, f.to_bits()),
    }
    let mut kv = Msg::default();
    kv.string(1, key);
    kv.message(2, v);
    kv
}

/// `Span`: trace_id = 1, span_id = 2, parent_span_id = 4, name = 5, kind = 6,
/// start_time_unix_nano = 7, end_time_unix_nano = 8, attributes = 9, status = 15
/// (`Status { message = 2; code = 3 }`), flags = 16 (sampled, and whether the parent is
/// remote).
fn span(s: &Finished) -> Msg {
    let mut m = Msg::default();
    m.bytes(1, &s.trace_id);
    m.bytes(2, &s.span_id);
    if let Some(parent) = &s.parent {
        m.bytes(4, parent);
    }
    m.string(5, s.name);
    m.uint(6, s.kind as u64);
    m.fixed64(7, s.start_ns);
    m.fixed64(8, s.end_ns);
    for (k, v) in &s.attrs {
        m.message(9, key_value(k, v));
    }
    if let Some(error) = &s.error {
        let mut status = Msg::default();
        status.string(2, error);
        status.uint(3, 2); // STATUS_CODE_ERROR
        m.message(15, status);
    }
    // SPAN_FLAGS: the W3C sampled flag, and "the parent's remoteness is known" (0x100), with
    // "remote" (0x200) when the parent came in a traceparent.
    let remote = if s.remote_parent { 0x300 } else { 0x100 };
    m.tag(16, 5);
    m.0.extend_from_slice(&(0x01u32 | remote).to_le_bytes());
    m
}

/// `ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1 }`, one
/// `ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2 }` whose
/// resource is `service.name`, one `ScopeSpans { InstrumentationScope scope = 1; repeated
/// Span spans = 2 }`.
pub(super) fn export_request(service: &str, spans: &[Finished]) -> Vec<u8> {
    let mut resource = Msg::default();
    resource.message(1, key_value("service.name", &Attr::Str(service.to_owned())));
    let mut scope = Msg::default();
    scope.string(1, "offload");
    scope.string(2, env!("CARGO_PKG_VERSION"));
    let mut scope_spans = Msg::default();
    scope_spans.message(1, scope);
    for s in spans {
        scope_spans.message(2, span(s));
    }
    let mut resource_spans = Msg::default();
    resource_spans.message(1, resource);
    resource_spans.message(2, scope_spans);
    let mut req = Msg::default();
    req.message(1, resource_spans);
    req.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields_are_written_as_protobuf_says() {
        let mut m = Msg::default();
        m.uint(1, 150);
        assert_eq!(m.0, [0x08, 0x96, 0x01], "the protobuf guide's example");
        let mut m = Msg::default();
        m.string(2, "testing");
        assert_eq!(m.0[..2], [0x12, 0x07]);
        let mut m = Msg::default();
        m.fixed64(7, 1);
        assert_eq!(m.0, [0x39, 1, 0, 0, 0, 0, 0, 0, 0]);
    }
}
