//! The `remote` gateway's line and each backend's room: who may send to which backend, and
//! when, under deadline admission; and how each backend's limit follows what it reports.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::Backend;
use crate::admission::{self, Cost, CostModel};
use crate::metrics::{Counter, Family, FloatGauge, Gauge, Outcome, Registry};
use crate::strategy::{Done, ExecError, RETRY_AFTER_SECS};
use crate::work::Classes;

/// The gateway's queue and each backend's room: who may send to which backend, and when.
#[derive(Debug)]
pub(super) struct Gate {
    state: Mutex<GateState>,
    backends: Arc<[Backend]>,
    /// Time per unit of work a request holds a backend's place, and the work admitted.
    model: CostModel,
    /// Each kind's class in `model`.
    classes: Classes,
    max_queue: usize,
    next: AtomicUsize,
    /// Requests by outcome; the four counters below are its series.
    requests: Family<Outcome, Counter>,
    late: Counter,
    full: Counter,
    /// Sent again after a refused connection or a busy backend's 503.
    pub(super) retried: Counter,
    /// Sent to another backend after theirs was lost mid-request.
    pub(super) resent: Counter,
    depth: Gauge,
    predicted_wait: FloatGauge,
}

#[derive(Debug)]
struct GateState {
    waiting: VecDeque<oneshot::Sender<usize>>,
    room: Vec<Limit>,
}

/// How many requests one backend gets at once.
///
/// Netflix's concurrency-limits and Envoy's adaptive concurrency compare each round trip
/// with the smallest one seen. That fits backends whose round trip at low load is their
/// service time; a compute service splits a lone request across all its threads, so its
/// idle round trip is a fraction of its loaded one, and that gradient would shrink the
/// limit to a handful and idle most of a big machine. The compute service says directly
/// how long each request queued inside it (`wait_us`) and ran (`run_us`). At its capacity
/// (two per thread) a request waits about one run. The gateway keeps a moving average of
/// wait over run; when it stays above [`QUEUE_RATIO_HIGH`] the backend is slower than it
/// said or shared with other gateways, and the limit shrinks by a twentieth (never below
/// the backend's thread count, which a 503 alone can go under). While the limit is what
/// holds requests back and the ratio is normal, it grows back by one per limit's worth of
/// answers, never past the capacity. A 503 halves it.
#[derive(Debug, Clone)]
pub(super) struct Limit {
    /// Requests sent and not yet answered.
    pub(super) outstanding: usize,
    /// The latency-adjusted limit, 1..=capacity.
    pub(super) limit: f64,
    /// What the backend reported on `/health` (1 until it has).
    pub(super) capacity: usize,
    /// The backend's threads, as reported (1 until known).
    threads: usize,
    /// Whether `capacity` came from the backend.
    known: bool,
    /// Moving average of the backend's wait over run.
    queue_ratio: f64,
}

impl Limit {
    fn room(&self) -> usize {
        (self.limit.floor() as usize)
            .max(1)
            .saturating_sub(self.outstanding)
    }
}

/// Wait over run, averaged, past which a backend queues more than its capacity implies.
const QUEUE_RATIO_HIGH: f64 = 2.0;
/// Below this average, a limit-bound backend may take one more.
const QUEUE_RATIO_OK: f64 = 1.5;

/// Added to a backend's run time when judging its wait: timer and scheduling noise on a
/// busy machine, so tiny requests do not read as long queues.
const WAIT_SLACK: Duration = Duration::from_millis(2);

impl Gate {
    pub(super) fn new(backends: Arc<[Backend]>, max_queue: usize) -> Gate {
        let room = vec![
            Limit {
                outstanding: 0,
                limit: 1.0,
                capacity: 1,
                threads: 1,
                known: false,
                queue_ratio: 1.0,
            };
            backends.len()
        ];
        let requests = Family::default();
        let c = |outcome| requests.get_or_create_owned(&Outcome { outcome });
        let model = CostModel::default();
        let classes = Classes::of(&model);
        Gate {
            state: Mutex::new(GateState {
                waiting: VecDeque::new(),
                room,
            }),
            backends,
            model,
            classes,
            max_queue: max_queue.max(1),
            next: AtomicUsize::new(0),
            late: c("late"),
            full: c("full"),
            retried: c("retried"),
            resent: c("resent"),
            requests,
            depth: Gauge::default(),
            predicted_wait: FloatGauge::default(),
        }
    }

    /// The predicted wait of a request arriving now.
    pub(super) fn predicted_wait(&self) -> Duration {
        let st = self.state.lock().expect("gate lock");
        self.wait(&st)
    }

    /// Each backend's room, in order.
    pub(super) fn rooms(&self) -> Vec<Limit> {
        self.state.lock().expect("gate lock").room.clone()
    }

    /// A backend came back up: it may take requests that wait.
    pub(super) fn backend_up(&self) {
        self.dispatch(&mut self.state.lock().expect("gate lock"));
    }

    /// Backends that may get requests: those up, or all when none is (so a request still
    /// finds out, and answers 502 at once rather than waiting for nothing).
    fn eligible(&self) -> impl Iterator<Item = usize> + '_ {
        let any_up = self.backends.iter().any(Backend::is_up);
        (0..self.backends.len()).filter(move |&i| !any_up || self.backends[i].is_up())
    }

    /// The predicted wait of a request arriving now: zero when a backend has room and nobody
    /// waits; otherwise the time all admitted work holds the backends' places, over them.
    fn wait(&self, st: &GateState) -> Duration {
        let free = self.eligible().any(|i| st.room[i].room() > 0);
        if free && st.waiting.is_empty() {
            return Duration::ZERO;
        }
        let places: f64 = self
            .eligible()
            .map(|i| st.room[i].limit.max(1.0))
            .sum::<f64>()
            .max(1.0);
        self.model.backlog().div_f64(places)
    }

    /// Each kind's class in the model that predicts the backends' places (a request's
    /// [`Cost`] is of these classes).
    pub(super) fn classes(&self) -> &Classes {
        &self.classes
    }

    /// Deadline admission: counts the request in the model, or refuses it at once.
    pub(super) fn admit(&self, cost: Cost, deadline: Instant) -> Result<Admitted<'_>, ExecError> {
        let st = self.state.lock().expect("gate lock");
        if st.waiting.len() >= self.max_queue {
            self.full.inc();
            return Err(ExecError::Overloaded {
                retry_after_secs: RETRY_AFTER_SECS,
            });
        }
        let wait = self.wait(&st);
        let remaining = deadline.saturating_duration_since(Instant::now());
        // The error the backends' answers have shown widens the prediction (CostModel::margin).
        let m = self.model.margin();
        let run = self.model.estimate(cost);
        if let Err(late) = admission::judge(wait.mul_f64(m), run.mul_f64(m), remaining) {
            self.late.inc();
            return Err(ExecError::Late(late));
        }
        self.model.admit(cost);
        Ok(Admitted { gate: self, cost })
    }

    /// Joins the line (at its head for a request sent back by a busy backend).
    pub(super) fn enqueue(&self, first: bool) -> SlotWait<'_> {
        let (tx, rx) = oneshot::channel();
        let mut st = self.state.lock().expect("gate lock");
        if first {
            st.waiting.push_front(tx);
        } else {
            st.waiting.push_back(tx);
        }
        self.dispatch(&mut st);
        SlotWait {
            rx: Some(rx),
            gate: self,
        }
    }

    /// Hands free places to waiting requests, in arrival order, each to the backend with the
    /// most room (ties in turn).
    fn dispatch(&self, st: &mut GateState) {
        let n = self.backends.len();
        while !st.waiting.is_empty() {
            let start = self.next.fetch_add(1, Relaxed);
            let best = self
                .eligible()
                .map(|i| ((i + n - start % n) % n, i))
                .filter(|&(_, i)| st.room[i].room() > 0)
                .max_by_key(|&(order, i)| (st.room[i].room(), std::cmp::Reverse(order)))
                .map(|(_, i)| i);
            let Some(i) = best else { return };
            let tx = st.waiting.pop_front().expect("not empty");
            if tx.is_closed() {
                continue; // its client left while it waited
            }
            st.room[i].outstanding += 1;
            if tx.send(i).is_err() {
                st.room[i].outstanding -= 1;
            }
        }
    }

    fn release(&self, i: usize) {
        let mut st = self.state.lock().expect("gate lock");
        st.room[i].outstanding = st.room[i].outstanding.saturating_sub(1);
        self.dispatch(&mut st);
    }

    /// Learns from an answer: the time a unit of work held a place, and whether the backend
    /// queued more than it should (see [`Limit`]).
    pub(super) fn answered(&self, slot: &Slot<'_>, cost: Cost, took: Duration, done: Done) {
        self.model.observe(cost.class, cost.units, took);
        let mut st = self.state.lock().expect("gate lock");
        let r = &mut st.room[slot.backend];
        let saturated = r.outstanding >= (r.limit.floor() as usize).max(1);
        let ratio = done.wait.as_secs_f64() / (done.run + WAIT_SLACK).as_secs_f64();
        r.queue_ratio += 0.1 * (ratio - r.queue_ratio);
        if r.queue_ratio > QUEUE_RATIO_HIGH {
            let floor = (r.threads as f64).min(r.limit);
            r.limit = (r.limit * 0.95).max(floor).max(1.0);
            r.queue_ratio = 1.0; // judge the smaller limit on fresh answers
        } else if saturated && r.queue_ratio < QUEUE_RATIO_OK {
            r.limit = (r.limit + 1.0 / r.limit).min(r.capacity as f64);
        }
    }

    /// A backend said 503: it has less room than its limit said.
    pub(super) fn overloaded(&self, slot: &Slot<'_>) {
        let mut st = self.state.lock().expect("gate lock");
        let r = &mut st.room[slot.backend];
        r.limit = (r.limit / 2.0).max(1.0);
    }

    /// What a backend's `/health` said it admits at once.
    ///
    /// `probe`: its seconds per unit of each class on one idle thread. Until the gateway has
    /// timed answers itself, a place's time per unit is taken as that, times the places per
    /// thread (Little's law: `capacity` places kept full finish `threads` requests at a time).
    pub(super) fn set_capacity(
        &self,
        i: usize,
        capacity: usize,
        threads: usize,
        probe: &[(crate::work::Kind, f64)],
    ) {
        let capacity = capacity.max(1);
        let per_thread = capacity as f64 / threads.clamp(1, capacity) as f64;
        for &(kind, secs) in probe {
            self.model.prior(self.classes.get(kind), secs * per_thread);
        }
        let mut st = self.state.lock().expect("gate lock");
        let r = &mut st.room[i];
        r.threads = threads.clamp(1, capacity);
        if r.known && r.capacity == capacity {
            return;
        }
        r.limit = if r.known {
            r.limit.min(capacity as f64)
        } else {
            capacity as f64
        };
        (r.capacity, r.known) = (capacity, true);
        self.dispatch(&mut st);
    }

    /// Registers the gateway's queue and its decisions (`offload_remote_*`).
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "offload_remote_queue_depth",
            "Requests waiting in the gateway for a compute service's place",
            self.depth.clone(),
        );
        registry.register(
            "offload_remote_predicted_wait_seconds",
            "Predicted wait of a request arriving now",
            self.predicted_wait.clone(),
        );
        registry.register(
            "offload_remote_requests",
            "Gateway decisions: refused as late, refused at the cap, sent again (a refused \
             connection, a busy backend), sent elsewhere after losing their backend (resent)",
            self.requests.clone(),
        );
    }

    /// Sets the queue's depth and predicted wait, before a scrape.
    pub(super) fn refresh_metrics(&self) {
        let st = self.state.lock().expect("gate lock");
        self.depth.set(st.waiting.len() as i64);
        self.predicted_wait.set(self.wait(&st).as_secs_f64());
    }
}

/// An admitted request: counted in the gate's model until it ends, however it ends.
pub(super) struct Admitted<'a> {
    gate: &'a Gate,
    cost: Cost,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.gate.model.finish(self.cost);
    }
}

/// A place in the gateway's line; dropping it (client gone, deadline) leaves the line, and
/// gives back a place that was handed over but not taken.
pub(super) struct SlotWait<'a> {
    rx: Option<oneshot::Receiver<usize>>,
    gate: &'a Gate,
}

impl<'a> SlotWait<'a> {
    /// Waits for a backend's place; `None` only when the gateway is going away.
    pub(super) async fn take(mut self) -> Option<Slot<'a>> {
        let got = self.rx.as_mut()?.await.ok();
        self.rx = None;
        got.map(|backend| Slot {
            backend,
            gate: self.gate,
        })
    }
}

impl Drop for SlotWait<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            rx.close();
            if let Ok(i) = rx.try_recv() {
                self.gate.release(i);
            }
        }
    }
}

/// A place at backend `backend`, given back when dropped.
pub(super) struct Slot<'a> {
    pub(super) backend: usize,
    gate: &'a Gate,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.gate.release(self.backend);
    }
}
