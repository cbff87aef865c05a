//! The gateway: the axum router for `/heavy`, `/jobs`, `/health`, `/metrics` and `/ui`, its
//! shared state, and [`serve`], which runs it on a listener until a shutdown future completes.

pub mod conns;
mod error;
mod heavy;
mod metrics;
mod pace;
mod ui;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{OriginalUri, State};
use axum::http::{Method, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

pub use error::ApiError;
pub(crate) use heavy::post as heavy_post;
pub use metrics::RequestMetrics;
pub use pace::{DEFAULT_MAX_HOLD, DEFAULT_REFUSALS_PER_CORE, PaceMetrics, Pacer};
pub use ui::UiReads;

use crate::metrics::Registry;
use crate::strategy::Strategy;
use crate::work::Limits;

/// Request limits and deadlines of a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub limits: Limits,
    /// How long a heavy request may take, queueing included.
    pub timeout: Duration,
    /// Largest accepted request body, in bytes.
    pub max_body: usize,
    /// Largest accepted query string, in bytes.
    pub max_query: usize,
    /// How long shutdown waits for work in hand.
    pub grace: Duration,
    /// Refusals (503 for overload) a second before they are held ([`Pacer`]); 0: never held.
    pub refusals_per_second: u64,
    /// Longest a refusal is held.
    pub max_refusal_hold: Duration,
    /// Header and idle timeouts and the connection cap.
    pub conns: conns::ConnLimits,
    /// The open-file limit in force (after [`conns::raise_open_files`]).
    pub open_files: u64,
    /// Who may cancel and retry jobs: [`job_changes`] of `--bind` and `--admin-token`.
    pub changes: offload_axum::Changes,
}

/// The state every handler sees.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<GatewayConfig>,
    pub strategy: Arc<Strategy>,
    pub metrics: Arc<RequestMetrics>,
    /// The schedule that 503s for overload are held to.
    pub pacer: Arc<Pacer>,
    pub pace_metrics: Arc<PaceMetrics>,
    /// The open client connections.
    pub conns: Arc<conns::Conns>,
    /// Every metric of this server, for `/metrics`.
    pub registry: Arc<Registry>,
    /// What `/ui/state` keeps between calls.
    pub ui: Arc<ui::UiReads>,
}

impl AppState {
    /// The state, with each part's metrics registered once in the server's registry.
    pub fn new(config: GatewayConfig, strategy: Strategy) -> AppState {
        let pacer = Arc::new(Pacer::new(
            config.refusals_per_second,
            config.max_refusal_hold,
        ));
        let pace_metrics = PaceMetrics::new(Arc::clone(&pacer));
        let conns = conns::Conns::new(config.conns, config.open_files);
        let metrics = RequestMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        pace_metrics.register(&mut registry);
        conns.register(&mut registry);
        crate::logs::register(&mut registry);
        crate::otel::register(&mut registry);
        strategy.register(&mut registry);
        AppState {
            pacer,
            pace_metrics: Arc::new(pace_metrics),
            conns: Arc::new(conns),
            config: Arc::new(config),
            strategy: Arc::new(strategy),
            metrics: Arc::new(metrics),
            registry: Arc::new(registry),
            ui: Arc::default(),
        }
    }
}

/// Who may change jobs on a gateway bound to `bind` with `token`: with a token, whoever sends
/// it; without one, anyone on loopback (only this machine reaches it) and nobody otherwise.
pub fn job_changes(bind: IpAddr, token: Option<offload_axum::AdminToken>) -> offload_axum::Changes {
    use offload_axum::Changes;
    match token {
        Some(t) => Changes::Token(t),
        None if is_loopback(bind) => Changes::Open,
        None => Changes::Closed,
    }
}

/// Loopback, including an IPv4 loopback written as IPv6 (`::ffff:127.0.0.1`).
fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(v6.is_loopback(), |v4| v4.is_loopback()),
    }
}

/// The gateway's router: `/heavy`, the live page (`/ui`, `/ui/state`), and for a strategy
/// that stores jobs, offload-axum's `/jobs` routes ([`offload_axum::JobRoutes`]) over its
/// queue, sharing its [`Reach`] so that both refuse at once while the store is out of reach,
/// and changed only as [`GatewayConfig::changes`] allows.
///
/// [`Reach`]: crate::queue::Reach
pub fn app(state: AppState) -> Router {
    let mut routes = Router::new()
        .route("/heavy", get(heavy::get).post(heavy::post))
        .route("/ui", get(ui::page))
        .route("/ui/state", get(ui::state));
    if let Some(q) = state.strategy.queue() {
        let jobs = offload_axum::JobRoutes::new(q.queue().clone())
            .reach(q.reach().clone())
            .changes(state.config.changes.clone());
        routes = routes.merge(jobs.router());
    }
    with_common(routes, state)
}

/// Adds what every offload service has to `routes`: `/health`, `/metrics`, JSON 404 and 405,
/// and the request metrics.
pub(crate) fn with_common(routes: Router<AppState>, state: AppState) -> Router {
    routes
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

async fn health(State(app): State<AppState>) -> impl IntoResponse {
    let mut body = crate::api::Health::ok(app.strategy.as_str());
    app.strategy.describe_capacity(&mut body);
    axum::Json(body)
}

/// Sets the gauges read from live state, then encodes the registry.
async fn metrics_text(State(app): State<AppState>) -> impl IntoResponse {
    app.strategy.refresh_metrics();
    app.pace_metrics.refresh();
    if let Some(q) = app.strategy.queue() {
        q.refresh_metrics().await;
    }
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::encode(&app.registry),
    )
}

async fn not_found(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound(uri.path().chars().take(128).collect())
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::MethodNotAllowed(method.to_string())
}

/// Serves `router` on `listener` ([`conns::serve`], with `state`'s connection bounds) until
/// `shutdown` completes, then stops taking connections, lets requests in flight finish, and
/// drains the strategy.
///
/// # Errors
/// An I/O error from the listener.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    state: &AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config.grace;
    conns::serve(listener, router, Arc::clone(&state.conns), grace, shutdown).await?;
    let strategy = Arc::clone(&state.strategy);
    tokio::task::spawn_blocking(move || strategy.drain(grace))
        .await
        .ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use IpAddr;

    use super::*;

    #[test]
    fn changes_are_open_on_loopback_only_unless_a_token_is_given() {
        use offload_axum::{AdminToken, Changes};
        let token = AdminToken::new("0123456789abcdef").unwrap();
        for (bind, open) in [
            ("127.0.0.1", true),
            ("127.0.0.2", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("0.0.0.0", false),
            ("::", false),
            ("192.168.1.10", false),
            ("::ffff:10.0.0.1", false),
        ] {
            let ip: IpAddr = bind.parse().unwrap();
            let want = if open { Changes::Open } else { Changes::Closed };
            assert_eq!(job_changes(ip, None), want, "{bind}");
            assert_eq!(
                job_changes(ip, Some(token.clone())),
                Changes::Token(token.clone()),
                "{bind}"
            );
        }
    }
}
