//! Traces across the 202: with `--otlp-endpoint`, the gateway's requests, their admission and
//! store calls, and the worker's runs are spans, exported over OTLP/HTTP in protobuf to a
//! collector ([`Layer`], and a thread of its own that sends them).
//!
//! The spans are `tracing` spans at the TRACE level whose target is one of offload's crates.
//! Only this layer takes them (the log's filter does not), so without the flag no span is made
//! at all: a disabled span is one cached check per call site.
//!
//! A span's parent is the span it was made in; a span with a `traceparent` field (a W3C trace
//! context: a request's header, or a job's stored context) continues that trace instead. The
//! gateway hands its request span's context on as the request's `traceparent`, so the job
//! stores it and the worker's `job.run` span is the request span's child.

mod export;
mod proto;

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

pub use self::export::{Endpoint, flush, register};
use crate::queue::TraceParent;

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
enum Attr {
    Str(String),
    Int(i64),
    Bool(bool),
    F64(f64),
}

/// OTLP's span kinds, as `otel.kind` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Internal = 1,
    Server = 2,
    Consumer = 5,
}

/// A span being recorded: kept in the span's extensions until it closes.
#[derive(Debug)]
struct Open {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
    remote_parent: bool,
    name: &'static str,
    kind: Kind,
    start_ns: u64,
    attrs: Vec<(&'static str, Attr)>,
    error: Option<String>,
}

/// A closed span, on its way to the collector.
#[derive(Debug)]
struct Finished {
    span: Open,
    end_ns: u64,
}

/// Whether a span is one this layer exports: offload's own, at the TRACE level.
pub fn is_exported(meta: &Metadata<'_>) -> bool {
    meta.is_span() && *meta.level() == tracing::Level::TRACE && meta.target().starts_with("offload")
}

/// The [`Layer`]'s filter: [`is_exported`], decided once per call site (a filter that is asked
/// at every event would be asked at each of the runtime's and hyper's own `trace!` lines).
#[derive(Debug, Clone, Copy)]
pub struct Exported;

impl<S> tracing_subscriber::layer::Filter<S> for Exported {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        is_exported(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        if is_exported(meta) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }
}

/// The `tracing` layer that records offload's spans and hands them to the exporter. Filter it
/// with [`Exported`].
#[derive(Debug)]
pub struct Layer {
    sender: export::Sender,
}

impl Layer {
    /// A layer exporting to `endpoint` as `service` (the `service.name` resource), with its
    /// exporting thread started.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(endpoint: Endpoint, service: String) -> std::io::Result<Layer> {
        Ok(Layer {
            sender: export::start(endpoint, service)?,
        })
    }
}

/// Reads a span's fields: the special ones (`traceparent`, `otel.kind`, `error`) and the rest
/// as attributes.
#[derive(Default)]
struct Fields {
    remote: Option<TraceParent>,
    kind: Option<Kind>,
    error: Option<String>,
    attrs: Vec<(&'static str, Attr)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "traceparent" => self.remote = TraceParent::parse(value),
            "otel.kind" => {
                self.kind = match value {
                    "server" => Some(Kind::Server),
                    "consumer" => Some(Kind::Consumer),
                    _ => Some(Kind::Internal),
                }
            }
            "error" => self.error = Some(value.to_owned()),
            name => self.attrs.push((name, Attr::Str(value.to_owned()))),
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.attrs.push((field.name(), Attr::Int(value)));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        let v = i64::try_from(value).unwrap_or(i64::MAX);
        self.attrs.push((field.name(), Attr::Int(v)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.attrs.push((field.name(), Attr::Bool(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.attrs.push((field.name(), Attr::F64(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

thread_local! {
    /// This thread's generator of ids (xorshift64*), seeded once from the OS.
    static IDS: Cell<u64> = Cell::new({
        let mut seed = [0u8; 8];
        getrandom::fill(&mut seed).expect("the OS random number generator failed");
        u64::from_le_bytes(seed) | 1
    });
}

/// A random non-zero id's bytes.
fn random<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let v = IDS.with(|s| {
            let mut x = s.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            s.set(x);
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        });
        chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
    }
    if out.iter().all(|&b| b == 0) {
        out[0] = 1;
    }
    out
}

impl<S> tracing_subscriber::Layer<S> for Layer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut f = Fields::default();
        attrs.record(&mut f);
        let inherited = || {
            let parent = span.parent()?;
            let ext = parent.extensions();
            let open = ext.get::<Open>()?;
            Some((open.trace_id, open.span_id))
        };
        let (trace_id, parent, remote_parent) = match (&f.remote, inherited()) {
            (Some(remote), _) => (remote.trace_id(), Some(remote.span_id()), true),
            (None, Some((trace_id, parent))) => (trace_id, Some(parent), false),
            (None, None) => (random(), None, false),
        };
        let open = Open {
            trace_id,
            span_id: random(),
            parent,
            remote_parent,
            name: span.metadata().name(),
            kind: f.kind.unwrap_or(Kind::Internal),
            start_ns: now_ns(),
            attrs: f.attrs,
            error: f.error,
        };
        span.extensions_mut().insert(open);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut f = Fields::default();
        values.record(&mut f);
        if let Some(open) = span.extensions_mut().get_mut::<Open>() {
            open.attrs.extend(f.attrs);
            if f.error.is_some() {
                open.error = f.error;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        let Some(o) = span.extensions_mut().remove::<Open>() else {
            return;
        };
        self.sender.send(Finished {
            span: o,
            end_ns: now_ns(),
        });
    }
}

/// The trace context of `span` (a span this layer records), for passing on as a
/// `traceparent`; `None` when spans are not exported.
pub fn context_of(span: &tracing::Span) -> Option<TraceParent> {
    span.with_subscriber(|(id, dispatch)| {
        let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
        let data = registry.span(id)?;
        let ext = data.extensions();
        let open = ext.get::<Open>()?;
        Some(TraceParent::new(open.trace_id, open.span_id))
    })
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_random_and_never_zero() {
        let a: [u8; 16] = random();
        let b: [u8; 16] = random();
        assert_ne!(a, b);
        assert!(a.iter().any(|&x| x != 0));
    }
}
