//! A handler extracting `Auto`, routed in a router whose state has no `Offload`.

use axum::{Router, response::Response, routing::post};
use offload_axum::Auto;

#[derive(Clone)]
struct AppState;

async fn blur(auto: Auto) -> Response {
    auto.run(Blur).await
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Blur;
impl offload_queue::Job for Blur {
    const NAME: &'static str = "blur";
    type Output = ();
}

fn main() {
    let _app: Router = Router::new()
        .route("/blur", post(blur))
        .with_state(AppState);
}
