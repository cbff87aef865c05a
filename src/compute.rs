//! The compute service (`offload compute`): `POST /compute` takes the same JSON body as
//! `/heavy` and gives the same answer, running the work on rayon behind an admission limit.
//! It shares the gateway's parsing, errors, `/health` and `/metrics`.

use axum::Router;
use axum::routing::post;

use crate::gateway::{self, AppState};

/// The compute service's router; `state` should hold a [`crate::strategy::Strategy::Rayon`].
pub fn app(state: AppState) -> Router {
    gateway::with_common(
        Router::new().route("/compute", post(gateway::heavy_post)),
        state,
    )
}
