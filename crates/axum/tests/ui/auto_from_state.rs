//! `Auto` is an extractor only for states that give an `Offload` through `FromRef`.

use axum::extract::FromRequestParts;
use offload_axum::Auto;

#[derive(Clone)]
struct AppState;

fn extracts<S, T: FromRequestParts<S>>() {}

fn main() {
    extracts::<AppState, Auto>();
}
