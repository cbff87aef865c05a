//! Paced refusals for a router: [`PaceRefusals`] holds every 503 the routes under it answer
//! until its slot on a [`Pacer`]'s schedule (offload-pool's [`pace`](offload_pool::pace)), so a
//! client that resends the moment it is refused cannot spin, and the CPU that answering
//! refusals would take stays with the admitted work. A lone 503 on a quiet server goes out at
//! once. Holding a response costs no thread: it is a parked future.
//!
//! [`Auto`](crate::Auto) paces its own 503s with the [`Offload`](crate::Offload)'s pacer; put
//! this layer on the routes whose handlers refuse by themselves (work on the pool, say), and
//! give both the same pacer ([`Offload::pacer`](crate::Offload::pacer)) so that the server
//! has one schedule.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{Request, StatusCode};
use axum::response::Response;
pub use offload_pool::pace::{DEFAULT_MAX_HOLD, DEFAULT_REFUSALS_PER_CORE, PaceStats, Pacer};
use tower_layer::Layer;
use tower_service::Service;

/// A tower layer that holds the 503s of the routes under it to a [`Pacer`]'s schedule:
/// `router.layer(PaceRefusals::default())`. Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct PaceRefusals {
    pacer: Arc<Pacer>,
}

impl Default for PaceRefusals {
    /// A pacer of its own with the defaults ([`Pacer::default`]: 100 refusals a second per
    /// core, each held at most 2 s).
    fn default() -> PaceRefusals {
        PaceRefusals::new(Arc::new(Pacer::default()))
    }
}

impl PaceRefusals {
    /// Holds 503s to `pacer`'s schedule (share it with [`Offload::pacer`](crate::Offload::pacer)).
    pub fn new(pacer: Arc<Pacer>) -> PaceRefusals {
        PaceRefusals { pacer }
    }

    /// The schedule, and its counts ([`Pacer::stats`]).
    pub fn pacer(&self) -> &Arc<Pacer> {
        &self.pacer
    }
}

impl<S> Layer<S> for PaceRefusals {
    type Service = Paced<S>;

    fn layer(&self, inner: S) -> Paced<S> {
        Paced {
            inner,
            pacer: Arc::clone(&self.pacer),
        }
    }
}

/// A service whose 503s are held to a [`Pacer`]'s schedule ([`PaceRefusals`]).
#[derive(Debug, Clone)]
pub struct Paced<S> {
    inner: S,
    pacer: Arc<Pacer>,
}

impl<S, B> Service<Request<B>> for Paced<S>
where
    S: Service<Request<B>, Response = Response>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let answer = self.inner.call(req);
        let pacer = Arc::clone(&self.pacer);
        Box::pin(async move {
            let resp = answer.await?;
            if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
                hold(&pacer).await;
            }
            Ok(resp)
        })
    }
}

/// Waits out the hold of a refusal made now.
pub(crate) async fn hold(pacer: &Pacer) {
    let hold = pacer.hold();
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
}
