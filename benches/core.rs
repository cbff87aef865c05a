//! Figures for the work and the pool, printed (not asserted): the single-thread time of each
//! work and how it scales with n, and the round trip of a trivial task through the pool.
//! Run with `cargo bench --bench core`.

use std::time::{Duration, Instant};

use offload::pool::{Pool, PoolConfig};
use offload::work::{Kind, Limits, Work};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_work(kind: Kind, n: u64, reps: usize) -> Duration {
    let w = Work::new(kind, n, &Limits::default()).expect("valid work");
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(w.run(&|| false).expect("runs"));
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    println!("single-thread time, median of 7 runs");
    println!(
        "{:<8} {:>12} {:>12} {:>14}",
        "work", "n", "time", "per unit"
    );
    for (kind, ns) in [
        (
            Kind::Count,
            &[5_000_000u64, 10_000_000, 20_000_000, 40_000_000, 80_000_000][..],
        ),
        (
            Kind::Primes,
            &[1_000_000, 2_000_000, 5_000_000, 20_000_000][..],
        ),
        (Kind::Hash, &[1, 2, 4][..]),
    ] {
        for &n in ns {
            let t = time_work(kind, n, 7);
            println!(
                "{:<8} {:>12} {:>10.2}ms {:>12.3}ns",
                kind.name(),
                n,
                t.as_secs_f64() * 1e3,
                t.as_secs_f64() * 1e9 / n as f64
            );
        }
    }

    let pool = Pool::new(PoolConfig {
        threads: 1,
        max_queue: 16,
        priority: offload::pool::Priority::SAME,
        name: "bench-pool".into(),
    })
    .expect("pool");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let rounds = 50_000;
    let mut samples = Vec::with_capacity(rounds);
    rt.block_on(async {
        for _ in 0..1_000 {
            pool.submit(None, |_| 1u64)
                .expect("room")
                .await
                .expect("runs");
        }
        for _ in 0..rounds {
            let t = Instant::now();
            std::hint::black_box(
                pool.submit(None, |_| 1u64)
                    .expect("room")
                    .await
                    .expect("runs"),
            );
            samples.push(t.elapsed());
        }
    });
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "\npool round trip of a trivial task ({rounds} rounds, 1 pool thread, current-thread runtime): \
         p50 {:.1}us  p99 {:.1}us  p99.9 {:.1}us",
        pct(0.5).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        pct(0.999).as_secs_f64() * 1e6
    );
}
