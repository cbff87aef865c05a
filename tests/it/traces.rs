//! Traces across the 202: a gateway and a worker, both with `--otlp-endpoint`, export to a small
//! OTLP/HTTP receiver of the test's own. The worker's `job.run` span of a stored job is the
//! child of the gateway's `http.request` span that stored it, in the same trace; the request's
//! admission and store call are its children too; and a caller's `traceparent` is continued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use offload_queue::testing::Backend;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::support::{Proc, get, request};

/// One field of a protobuf message: a number (varint or fixed) or bytes.
#[derive(Debug, Clone)]
enum Field<'a> {
    Num(u64),
    Bytes(&'a [u8]),
}

fn varint(b: &[u8], at: &mut usize) -> u64 {
    let (mut v, mut shift) = (0u64, 0);
    loop {
        let byte = b[*at];
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return v;
        }
        shift += 7;
    }
}

/// A message's fields, in order, by number.
fn fields(b: &[u8]) -> Vec<(u64, Field<'_>)> {
    let (mut out, mut at) = (Vec::new(), 0);
    while at < b.len() {
        let key = varint(b, &mut at);
        let field = match key & 7 {
            0 => Field::Num(varint(b, &mut at)),
            1 => {
                at += 8;
                Field::Num(u64::from_le_bytes(b[at - 8..at].try_into().unwrap()))
            }
            2 => {
                let len = varint(b, &mut at) as usize;
                at += len;
                Field::Bytes(&b[at - len..at])
            }
            5 => {
                at += 4;
                Field::Num(u64::from(u32::from_le_bytes(
                    b[at - 4..at].try_into().unwrap(),
                )))
            }
            w => panic!("wire type {w} in a span export"),
        };
        out.push((key >> 3, field));
    }
    out
}

fn all(b: &[u8], number: u64) -> Vec<&[u8]> {
    fields(b)
        .into_iter()
        .filter_map(|(n, f)| match (n == number, f) {
            (true, Field::Bytes(x)) => Some(x),
            _ => None,
        })
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A span as the receiver got it.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace: String,
    id: String,
    parent: String,
    attrs: HashMap<String, String>,
}

/// `KeyValue { key = 1; AnyValue value = 2 }` as text.
fn key_value(kv: &[u8]) -> (String, String) {
    let key = String::from_utf8(all(kv, 1)[0].to_vec()).unwrap();
    let value = match fields(all(kv, 2)[0]).first() {
        Some((1, Field::Bytes(s))) => String::from_utf8(s.to_vec()).unwrap(),
        Some((_, Field::Num(n))) => n.to_string(),
        other => format!("{other:?}"),
    };
    (key, value)
}

/// The spans of one `ExportTraceServiceRequest`.
fn spans(body: &[u8]) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in all(body, 1) {
        let resource: HashMap<_, _> = all(rs, 1)
            .first()
            .map(|r| all(r, 1).into_iter().map(key_value).collect())
            .unwrap_or_default();
        let service = resource.get("service.name").cloned().unwrap_or_default();
        for ss in all(rs, 2) {
            for s in all(ss, 2) {
                let one = |n| all(s, n).first().map(|b| b.to_vec()).unwrap_or_default();
                out.push(Span {
                    service: service.clone(),
                    name: String::from_utf8(one(5)).unwrap(),
                    trace: hex(&one(1)),
                    id: hex(&one(2)),
                    parent: hex(&one(4)),
                    attrs: all(s, 9).into_iter().map(key_value).collect(),
                });
            }
        }
    }
    out
}

/// An OTLP/HTTP receiver: answers 200 to every POST and keeps the spans.
async fn receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<Span>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&got);
    tokio::spawn(async move {
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            let keep = Arc::clone(&keep);
            tokio::spawn(async move {
                let mut conn = BufReader::new(conn);
                let (mut line, mut len, mut path) = (String::new(), 0usize, String::new());
                loop {
                    line.clear();
                    if conn.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if path.is_empty() {
                        path = line
                            .split_whitespace()
                            .nth(1)
                            .unwrap_or_default()
                            .to_owned();
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                conn.read_exact(&mut body).await.unwrap();
                assert_eq!(path, "/v1/traces");
                keep.lock().unwrap().extend(spans(&body));
                let _ = conn
                    .get_mut()
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, got)
}

/// Waits (at most 20 s) for the spans `found` picks out of what was received.
async fn wait_for<T>(got: &Mutex<Vec<Span>>, found: impl Fn(&[Span]) -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(t) = found(&got.lock().unwrap()) {
            return t;
        }
        assert!(
            Instant::now() < end,
            "the spans never came: {:#?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `http.request` span that stored job `id` (its child `queue.enqueue` names the job), and
/// the job's `job.run` span.
fn request_and_run(spans: &[Span], id: &str) -> Option<(Span, Span)> {
    let run = spans
        .iter()
        .find(|s| s.name == "job.run" && s.attrs.get("job.id").map(String::as_str) == Some(id))?;
    let enqueue = spans.iter().find(|s| {
        s.name == "queue.enqueue" && s.attrs.get("job.id").map(String::as_str) == Some(id)
    })?;
    let admission = spans.iter().find(|s| s.id == enqueue.parent)?;
    let request = spans.iter().find(|s| s.id == admission.parent)?;
    Some((request.clone(), run.clone()))
}

#[tokio::test]
async fn the_run_span_is_the_child_of_the_request_that_stored_the_job() {
    let (collector, got) = receiver().await;
    let Some(place) = Backend::Sqlite.place("traces") else {
        return;
    };
    let endpoint = format!("http://{collector}");
    let (url, name) = (place.url(), place.name().as_str());
    let gateway = Proc::start_queue_gateway(&place, &["--otlp-endpoint", &endpoint]);
    let worker = Proc::start_worker(&[
        "--queue",
        url,
        "--queue-name",
        name,
        "--otlp-endpoint",
        &endpoint,
    ]);
    let g = gateway.addr;
    let caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let mut ids = Vec::new();
    for headers in [vec![], vec![("traceparent", caller)]] {
        let r = request(g, "GET", "/heavy?work=count&n=1000", &headers, "").await;
        assert_eq!(r.status, 202, "{:?}", r.body);
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let end = Instant::now() + Duration::from_secs(20);
        while get(g, &format!("/jobs/{id}")).await.json()["status"] != "done" {
            assert!(Instant::now() < end, "job {id} never ran");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // A request with no context of its own starts a trace; the run is in it, the child of the
    // request span, across the two processes.
    let (req, run) = wait_for(&got, |s| request_and_run(s, &ids[0])).await;
    assert_eq!(
        (req.service.as_str(), run.service.as_str()),
        ("offload-serve", "offload-worker")
    );
    assert_eq!(req.attrs["http.route"], "/heavy");
    assert_eq!(req.attrs["http.response.status_code"], "202");
    assert_eq!(req.parent, "", "a root span");
    assert_eq!(run.trace, req.trace, "one trace across the 202");
    assert_eq!(run.parent, req.id, "the run is the request's child");
    assert_eq!(run.attrs["job.type"], "count");
    assert_eq!(run.attrs["job.outcome"], "done");
    assert_eq!(req.trace.len(), 32);
    assert_ne!(req.trace, "0".repeat(32));

    // A caller's context is continued: its trace, the request span its child.
    let (req, run) = wait_for(&got, |s| request_and_run(s, &ids[1])).await;
    assert_eq!(req.trace, "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(req.parent, "b7ad6b7169203331");
    assert_eq!(
        (run.trace.as_str(), run.parent.as_str()),
        (req.trace.as_str(), req.id.as_str())
    );
    drop(worker);
}
