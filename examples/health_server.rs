//! A minimal axum server with a `/health` route, the trivial endpoint `scripts/load-vs-wrk.sh`
//! points both `offload load` and `wrk` at. Usage: `health_server [PORT] [THREADS]`.

use axum::{Router, routing::get};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(3000);
    let threads: usize = args
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let app = Router::new().route("/health", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        eprintln!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, app).await
    })
}
