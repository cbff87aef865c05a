//! A job type of your own, stored in a queue and run by a worker in your own process.
//! `custom_job [QUEUE_URL]` enqueues four checksums, runs a worker until they are finished and
//! prints each result (default: a SQLite file in a temp dir); `custom_job worker QUEUE_URL` only
//! runs the worker, until SIGINT or SIGTERM. `OFFLOAD_QUEUE_NAME` and `OFFLOAD_LEASE_SECS` set the
//! queue's name and the lease; `OFFLOAD_RUN_LOG=FILE` has the handler append a line to `FILE` as
//! each run starts and ends (what a test reads to see what the handler did, see [`RunLog`]).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use std::{env, error::Error};

use offload_queue::worker::{self, WorkerConfig};
use offload_queue::{Handlers, Job, JobContext, JobError, JobQueue, NewJob, QueueOptions, open};
use serde::{Deserialize, Serialize};
use tokio::signal::ctrl_c;
use tokio::signal::unix::{SignalKind, signal};

/// Checksum `len` bytes of the pseudo-random stream that `seed` starts.
#[derive(Serialize, Deserialize)]
struct Checksum {
    seed: u64,
    len: u32,
}

impl Job for Checksum {
    const NAME: &'static str = "checksum";
    type Output = u64;
}

/// Bytes between two looks at the stop check: a fraction of a millisecond, so a cancelled job
/// frees its thread at once.
const STOP_CHECK_EVERY: u32 = 1 << 16;

/// FNV-1a over a xorshift64 stream: CPU-bound, and the same answer on every machine. Stops
/// early when told to (the job was cancelled, or its lease lost).
fn checksum(job: &Checksum, cx: &JobContext) -> Result<u64, JobError> {
    // Any seed but the constant gives a non-zero state, as xorshift needs (zero stays zero).
    let (mut x, mut hash) = (job.seed ^ 0x9e37_79b9_7f4a_7c15, 0xcbf2_9ce4_8422_2325_u64);
    for i in 0..job.len {
        if i % STOP_CHECK_EVERY == 0 && cx.stopped() {
            return Err(JobError::retry("stopped"));
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        hash = (hash ^ (x & 0xff)).wrapping_mul(0x0100_0000_01b3);
    }
    Ok(hash)
}

/// The handler's own record of its runs (`OFFLOAD_RUN_LOG`): a line `start SEED LEN PID MS` as a
/// run starts and `done ...` or `stopped ...` as it ends, MS the unix time in milliseconds.
/// `done` is written only for a run that was not told to stop when it ended, its time taken
/// before that last look: a run recorded `done` at MS had not been told to stop by MS. Each
/// line is one `write` to a file opened with `O_APPEND`, so the lines of several processes
/// never mix, and a process killed leaves whole lines behind.
struct RunLog(Option<File>);

impl RunLog {
    fn from_env() -> std::io::Result<RunLog> {
        let Some(path) = env::var_os("OFFLOAD_RUN_LOG") else {
            return Ok(RunLog(None));
        };
        Ok(RunLog(Some(
            OpenOptions::new().append(true).create(true).open(path)?,
        )))
    }

    /// Records one event of `job`'s run at `at` (unix ms).
    fn note(&self, event: &str, job: &Checksum, at: u64) {
        if let Some(mut file) = self.0.as_ref() {
            let line = format!(
                "{event} {} {} {} {at}\n",
                job.seed,
                job.len,
                std::process::id()
            );
            // A handler that panics is retried: a record that cannot be kept shows in the job.
            file.write_all(line.as_bytes()).expect("write the run log");
        }
    }

    /// Runs `job`, recording its start and its end.
    fn run(&self, job: &Checksum, cx: &JobContext) -> Result<u64, JobError> {
        self.note("start", job, now_ms());
        let sum = checksum(job, cx);
        let at = now_ms();
        let sum = sum.and_then(|s| {
            if cx.stopped() {
                Err(JobError::retry("stopped"))
            } else {
                Ok(s)
            }
        });
        self.note(if sum.is_ok() { "done" } else { "stopped" }, job, at);
        sum
    }
}

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = env::args().skip(1).collect();
    let dir = tempfile::tempdir()?;
    let temp = format!("sqlite://{}", dir.path().join("q.db").display());
    let (worker_only, url) = match &args[..] {
        [mode, url] if mode == "worker" => (true, url.clone()),
        [url] => (false, url.clone()),
        [] => (false, temp),
        _ => return Err("usage: custom_job [QUEUE_URL] | custom_job worker QUEUE_URL".into()),
    };
    let mut options = QueueOptions::default();
    options.name = env::var("OFFLOAD_QUEUE_NAME").map_or(Ok(options.name), |n| n.parse())?;
    let queue = open(&url, options).await?;
    let lease = env::var("OFFLOAD_LEASE_SECS").map_or(Ok(30), |s| s.parse())?;
    let config = WorkerConfig::default().with_lease(Duration::from_secs(lease));
    let log = RunLog::from_env()?;
    let run = Handlers::new()
        .on_with(move |job: Checksum, cx: &JobContext| log.run(&job, cx))
        .executor();
    if worker_only {
        println!("custom_job worker: running on {url}");
        let mut term = signal(SignalKind::terminate())?;
        let stop = async move {
            tokio::select! { _ = ctrl_c() => {}, _ = term.recv() => {} }
        };
        worker::run(queue, run, config, stop).await;
        return Ok(());
    }
    let mut ids = Vec::new();
    for seed in 1..=4 {
        let job = NewJob::of(&Checksum { seed, len: 1 << 20 })?;
        ids.push(queue.enqueue(job).await?);
    }
    let all_finished = async {
        for id in &ids {
            while !matches!(queue.get(id).await, Ok(Some(job)) if job.finished_at.is_some()) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    worker::run(queue.clone(), run, config, all_finished).await;
    for (seed, id) in (1..).zip(&ids) {
        let job = queue.get(id).await?.ok_or("a job expired")?;
        let sum = job.output::<Checksum>().ok_or("the job failed")??;
        println!("checksum of seed {seed}: {sum:016x}");
    }
    Ok(())
}
