//! `remote` across the test network: a gateway host and three compute hosts, with delay on
//! every link, one link cut under load, one host made slow.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{Link, Net};
use crate::support::{Conn, Proc, count_n_for, crowd, get, metric};

/// 1 ms ± 0.2 ms on each host's link, as `netem delay 1ms 0.2ms` would add.
const LAN: Link = Link {
    delay: Duration::from_millis(1),
    jitter: Duration::from_micros(200),
    loss: 0.0,
};

const COMPUTE: [&str; 3] = ["c1", "c2", "c3"];

/// The gateway host `g` and compute hosts (`c1`..`c3` unless a test names others), each
/// compute service with one thread (the machine has few cores) and two places.
struct Cluster {
    // Field order is drop order: the processes go before their network.
    gateway: Proc,
    computes: Vec<Proc>,
    net: Net,
}

impl Cluster {
    /// Three compute hosts, their health checked every 200 ms.
    fn start(test: &str, gateway_flags: &[&str]) -> Option<Cluster> {
        let flags = [&["--health-interval", "200ms"], gateway_flags].concat();
        Cluster::build(test, &COMPUTE, &flags)
    }

    /// Compute hosts `names`; the gateway with `gateway_flags` and defaults for the rest.
    fn build(test: &str, names: &[&str], gateway_flags: &[&str]) -> Option<Cluster> {
        let net = Net::new(test, &[&["g"], names].concat())?;
        let computes: Vec<Proc> = names
            .iter()
            .map(|c| {
                let args = ["compute", "--threads", "1", "--max-inflight", "2"];
                net.offload(c, &args)
            })
            .collect();
        let urls: Vec<String> = computes
            .iter()
            .map(|c| format!("http://{}", c.addr))
            .collect();
        let urls = urls.join(",");
        let mut args = vec!["serve", "--strategy", "remote", "--compute", &urls];
        args.extend_from_slice(gateway_flags);
        let gateway = net.offload("g", &args);
        Some(Cluster {
            gateway,
            computes,
            net,
        })
    }

    /// Waits until the gateway has seen every compute service's `/health`.
    async fn ready(&self) {
        for c in &self.computes {
            let series = format!("offload_backend_capacity{{backend=\"http://{}\"}}", c.addr);
            crate::gateway::wait_for(self.gateway.addr, &series, 2.0).await;
        }
    }

    /// Answers the gateway counted as `ok` from compute host `i`.
    async fn ok_on(&self, i: usize) -> f64 {
        let series = format!(
            "offload_backend_requests_total{{backend=\"http://{}\",outcome=\"ok\"}}",
            self.computes[i].addr
        );
        metric(self.gateway.addr, &series).await
    }

    async fn up(&self, i: usize) -> bool {
        let series = format!(
            "offload_backend_up{{backend=\"http://{}\"}}",
            self.computes[i].addr
        );
        metric(self.gateway.addr, &series).await == 1.0
    }

    /// Work the compute service on host `i` took, by its own count.
    async fn handed_to(&self, i: usize) -> f64 {
        metric(self.computes[i].addr, "offload_work_handed_off_total").await
    }
}

/// Median time of `GET /heavy?n=1000` through the gateway, one at a time, each on a new
/// connection (as `support::get` does).
async fn median_small(addr: std::net::SocketAddr, runs: usize) -> Duration {
    let mut took = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let r = get(addr, "/heavy?n=1000").await;
        assert_eq!(r.status, 200, "{:?}", r.body);
        took.push(t.elapsed());
    }
    took.sort();
    took[runs / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_across_three_hosts_with_delay_stays_exact_and_spread() {
    let _serial = crate::support::exclusive().await;
    let test = "remote_across_three_hosts_with_delay_stays_exact_and_spread";
    let Some(cl) = Cluster::start(test, &[]) else {
        return;
    };
    cl.ready().await;
    let bare = median_small(cl.gateway.addr, 21).await;
    cl.net.set_all_links(LAN);
    let delayed = median_small(cl.gateway.addr, 21).await;

    let n = count_n_for(Duration::from_millis(5));
    let before: Vec<f64> = per_host(&cl, Cluster::handed_to).await;
    let seen = crowd(cl.gateway.addr, 12, 10, move |i| n + i as u64).await;
    assert_eq!(seen.statuses, [(200, 120)].into(), "{seen:?}");
    assert_eq!(seen.wrong, Vec::<String>::new());
    let after: Vec<f64> = per_host(&cl, Cluster::handed_to).await;
    let share: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!(
        "netns {test}: 120 requests, 0 failed; per compute host {share:?}; median small \
         request {bare:?} without delay, {delayed:?} with 1 ms ± 0.2 ms per link (added {:?})",
        delayed.saturating_sub(bare)
    );
    assert_eq!(share.iter().sum::<f64>(), 120.0, "{share:?}");
    // Equal hosts under least-outstanding: each takes a part (a third would be 40). Not a
    // fair third: on a busy machine a host whose core is shared answers slower and is rightly
    // given less (15 of 120 under `nice` beside a busy loop), but none is left out.
    for (i, s) in share.iter().enumerate() {
        assert!(
            *s >= 10.0,
            "compute host {} took only {s} of 120: {share:?}",
            i + 1
        );
    }
    // The delay is there: the client's handshake and request cross the gateway's link (two
    // round trips of 2 ms), the gateway's request to a compute host crosses two links (4 ms).
    assert!(
        delayed >= bare + Duration::from_millis(3),
        "no delay seen: {bare:?} -> {delayed:?}"
    );
}

/// `f` of each compute host, in order.
async fn per_host<'a, F, Fut>(cl: &'a Cluster, f: F) -> Vec<f64>
where
    F: Fn(&'a Cluster, usize) -> Fut,
    Fut: std::future::Future<Output = f64>,
{
    let mut out = Vec::new();
    for i in 0..cl.computes.len() {
        out.push(f(cl, i).await);
    }
    out
}

/// What the load's clients saw: answers by status, and wrong results.
#[derive(Debug, Default)]
struct Seen {
    statuses: BTreeMap<u16, u64>,
    /// Error codes of the answers that were not 200.
    codes: BTreeMap<String, u64>,
    wrong: Vec<String>,
    /// The longest any request took, sent to answered.
    slowest: Duration,
}

/// `clients` loops of `GET /heavy?n=...` (a new `n` each time, checked exactly) until `stop`,
/// each on a keep-alive connection of its own.
fn load(
    addr: std::net::SocketAddr,
    clients: usize,
    n: u64,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Seen>> {
    (0..clients)
        .map(|c| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut seen = Seen::default();
                let mut conn = Conn::open(addr).await;
                let mut k = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Apart for every request, and all within a fraction of a percent of `n`.
                    let want = n + k * clients as u64 + c as u64;
                    k += 1;
                    let t = Instant::now();
                    let r = conn.get(&format!("/heavy?n={want}")).await;
                    seen.slowest = seen.slowest.max(t.elapsed());
                    *seen.statuses.entry(r.status).or_default() += 1;
                    if r.status == 200 && r.json()["result"].as_u64() != Some(want) {
                        seen.wrong.push(format!("n={want}: {:?}", r.body));
                    }
                    if r.status != 200 {
                        *seen.codes.entry(r.code()).or_default() += 1;
                    }
                }
                seen
            })
        })
        .collect()
}

async fn gather(loops: Vec<tokio::task::JoinHandle<Seen>>) -> Seen {
    let mut all = Seen::default();
    for l in loops {
        let one = l.await.expect("client loop");
        for (s, k) in one.statuses {
            *all.statuses.entry(s).or_default() += k;
        }
        for (c, k) in one.codes {
            *all.codes.entry(c).or_default() += k;
        }
        all.wrong.extend(one.wrong);
        all.slowest = all.slowest.max(one.slowest);
    }
    all
}

/// Polls `check` every 20 ms; the time it took to hold, or a panic after `within`.
async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) -> Duration {
    let t = Instant::now();
    while !check().await {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

/// The measured problem: two compute hosts under a steady stream, one cut (a partition: no
/// reset, no refusal, silence) while both its places hold requests, everything else at its
/// default (a 30 s deadline, a 1 s health check). Those requests must not wait out their
/// deadline on a dead host while the other one is idle: every request gets its exact
/// result, within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_is_left_on_a_cut_compute_host() {
    let _serial = crate::support::exclusive().await;
    let test = "no_request_is_left_on_a_cut_compute_host";
    let Some(cl) = Cluster::build(test, &["c1", "c2"], &[]) else {
        return;
    };
    cl.ready().await;
    cl.net.set_all_links(LAN);
    // 100 ms of work; six clients on four places, so both of c2's are always taken.
    let n = count_n_for(Duration::from_millis(100));
    let stop = Arc::new(AtomicBool::new(false));
    let loops = load(cl.gateway.addr, 6, n, &stop);
    let c2 = cl.computes[1].addr;
    until("c2 runs two requests", Duration::from_secs(10), || async {
        cl.ok_on(1).await >= 3.0 && metric(c2, "offload_compute_in_flight").await >= 2.0
    })
    .await;
    cl.net.cut("c2");
    let down = until("c2 marked down", Duration::from_secs(10), || async {
        !cl.up(1).await
    })
    .await;
    // The requests caught on c2 have long been answered (or would wait for their 30 s).
    let on_c1 = cl.ok_on(0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let served = cl.ok_on(0).await - on_c1;
    stop.store(true, Ordering::Relaxed);
    let seen = gather(loops).await;
    eprintln!(
        "netns {test}: {:?} (status: requests), slowest {:?}; c2 marked down {down:?} after \
         the cut; c1 served {served} in the 3 s after",
        seen.statuses, seen.slowest
    );
    let resent = metric(
        cl.gateway.addr,
        r#"offload_remote_requests_total{outcome="resent"}"#,
    )
    .await;
    eprintln!("netns {test}: {resent} requests resent after their host was lost");
    assert_eq!(seen.wrong, Vec::<String>::new());
    assert_eq!(seen.statuses.keys().collect::<Vec<_>>(), [&200], "{seen:?}");
    assert!(
        seen.slowest < Duration::from_secs(5),
        "a request took {:?}",
        seen.slowest
    );
    // The two caught on c2 went to c1 (a health check that found c2 silent may also have
    // caught one more that went out to it just before).
    assert!(resent >= 2.0, "{resent} resent");
    assert!(served >= 5.0, "c1 served only {served}");
}

/// Three hosts under load, one cut with requests on it, then restored: the requests caught
/// on it are sent to the others, nothing fails, and it takes traffic again once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_compute_host_loses_no_request_and_is_taken_back() {
    let _serial = crate::support::exclusive().await;
    let test = "a_cut_compute_host_loses_no_request_and_is_taken_back";
    let Some(cl) = Cluster::start(test, &["--timeout", "3s"]) else {
        return;
    };
    cl.ready().await;
    cl.net.set_all_links(LAN);
    let n = count_n_for(Duration::from_millis(10));
    let stop = Arc::new(AtomicBool::new(false));
    let loops = load(cl.gateway.addr, 6, n, &stop);
    let c3 = cl.computes[2].addr;
    until("c3 takes traffic", Duration::from_secs(10), || async {
        cl.ok_on(2).await >= 5.0 && metric(c3, "offload_compute_in_flight").await >= 1.0
    })
    .await;
    cl.net.cut("c3");
    let down = until("c3 marked down", Duration::from_secs(10), || async {
        !cl.up(2).await
    })
    .await;
    // Longer than the 3 s deadline: anything left stuck on c3 would have failed by then.
    let during = cl.ok_on(0).await + cl.ok_on(1).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let served = cl.ok_on(0).await + cl.ok_on(1).await - during;
    let on_c3 = cl.ok_on(2).await;
    cl.net.restore("c3");
    let back = until("traffic returns to c3", Duration::from_secs(15), || async {
        cl.ok_on(2).await > on_c3
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let seen = gather(loops).await;
    let resent = metric(
        cl.gateway.addr,
        r#"offload_remote_requests_total{outcome="resent"}"#,
    )
    .await;
    eprintln!(
        "netns {test}: {:?} (status: requests), slowest {:?}; c3 marked down {down:?} after \
         the cut, {resent} resent from it; {served} served by c1 and c2 while it was out; \
         traffic back on c3 {back:?} after the link came up",
        seen.statuses, seen.slowest
    );
    assert_eq!(seen.wrong, Vec::<String>::new());
    // Those in flight on c3 when the cable went were sent to c1 and c2: nothing failed.
    assert_eq!(
        seen.statuses.keys().collect::<Vec<_>>(),
        [&200],
        "{:?} {:?}",
        seen.statuses,
        seen.codes
    );
    assert!(resent >= 1.0, "nothing resent from c3");
    assert!(served >= 20.0, "c1 and c2 served only {served} meanwhile");
}

/// The switch keeps each path's frames in order but does not hold a fast host's frames behind
/// a slow host's: while a host 200 ms away answers a stream of requests, a host 1 ms away
/// still answers in a few milliseconds. (One queue per destination once held every frame for
/// the test behind the slow host's, so that every host looked as slow as the slowest.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_does_not_slow_the_others() {
    let _serial = crate::support::exclusive().await;
    let test = "a_slow_link_does_not_slow_the_others";
    let Some(net) = Net::new(test, &["near", "far"]) else {
        return;
    };
    let near = net.offload("near", &["compute", "--threads", "1"]);
    let far = net.offload("far", &["compute", "--threads", "1"]);
    net.set_link("near", LAN);
    net.set_link(
        "far",
        Link {
            delay: Duration::from_millis(200),
            ..LAN
        },
    );
    let stop = Arc::new(AtomicBool::new(false));
    let streams: Vec<_> = (0..4)
        .map(|_| {
            let (stop, addr) = (stop.clone(), far.addr);
            tokio::spawn(async move {
                let mut conn = Conn::open(addr).await;
                while !stop.load(Ordering::Relaxed) {
                    assert_eq!(conn.get("/health").await.status, 200);
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut conn = Conn::open(near.addr).await;
    let mut took = Vec::new();
    // One every 50 ms for a second: longer than the far host's round trip, so that some go
    // while its answers are on their way.
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(conn.get("/health").await.status, 200);
        took.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for s in streams {
        s.await.expect("stream");
    }
    took.sort();
    let (median, slowest) = (took[took.len() / 2], took[took.len() - 1]);
    eprintln!(
        "netns {test}: the near host's /health took {median:?} at the median, {slowest:?} at \
         most, while the far one answered"
    );
    // Not one waited for the far host's frames (200 ms).
    assert!(slowest < Duration::from_millis(150), "{took:?}");
}

/// A host 50 ms away gets far less work than two 1 ms away. (A CI run once saw [61, 62, 37]:
/// the switch then held the gateway's frames from the fast hosts behind the slow one's, see
/// [`a_slow_link_does_not_slow_the_others`], and the count ended in a tail of few clients.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_compute_host_gets_less_work() {
    let _serial = crate::support::exclusive().await;
    let test = "a_slow_compute_host_gets_less_work";
    let Some(cl) = Cluster::start(test, &[]) else {
        return;
    };
    cl.ready().await;
    cl.net.set_all_links(LAN);
    cl.net.set_link(
        "c3",
        Link {
            delay: Duration::from_millis(50),
            ..LAN
        },
    );
    // Small work, so that a fast host's place is held for milliseconds and the slow one's
    // for its 100 ms round trip.
    let n = count_n_for(Duration::from_millis(1));
    // More clients than the six places, so that every place is always taken: then each
    // host's part is its places over the time each request holds one. (With fewer clients
    // the slow host, idle, would have the most room and get the next request each time its
    // one finishes: least-outstanding does not look at latency.) Counted over a window while
    // all of them run: with a fixed number of requests per client, the last clients still
    // running were fewer than the places, and the slow host, often the emptiest, took a
    // large part of that tail.
    let stop = Arc::new(AtomicBool::new(false));
    let loops = load(cl.gateway.addr, 8, n, &stop);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before: Vec<f64> = per_host(&cl, Cluster::handed_to).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<f64> = per_host(&cl, Cluster::handed_to).await;
    stop.store(true, Ordering::Relaxed);
    let seen = gather(loops).await;
    let share: Vec<f64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    eprintln!(
        "netns {test}: {:?} (status: requests); in 2 s under 8 clients, c1, c2 (1 ms links), \
         c3 (50 ms) took {share:?}",
        seen.statuses
    );
    assert_eq!(seen.wrong, Vec::<String>::new());
    assert_eq!(seen.statuses.keys().collect::<Vec<_>>(), [&200], "{seen:?}");
    // Its 100 ms round trip holds each of its places several times longer than a fast host's
    // request: the fast hosts each take clearly more.
    assert!(
        share[0] >= 2.0 * share[2] && share[1] >= 2.0 * share[2],
        "{share:?}"
    );
    assert!(share[2] >= 1.0, "the slow host still takes some: {share:?}");
}
