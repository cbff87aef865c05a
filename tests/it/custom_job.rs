//! The queue crate as a user embeds it: `crates/queue/examples/custom_job.rs`, a job type of
//! the user's own, run by the example in-process (its default mode, checked for its exact output)
//! and by the example's worker under a kill storm (`queue_faults`, through [`Checksums`]) and a
//! storm of kills and cancels (`cancel_storm`).

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use offload::queue::{Counts, Job, JobId, JobQueue, JobStatus, NewJob, Queue, QueueOptions};

use crate::embed::example;
use crate::queue_faults::Storm;
use crate::support::Proc;

/// The example's job type, mirrored: the same name and fields, so [`NewJob::of`] stores what
/// the example's own `Checksum` reads.
#[derive(Serialize, Deserialize)]
pub(crate) struct Checksum {
    pub(crate) seed: u64,
    pub(crate) len: u32,
}

impl Job for Checksum {
    const NAME: &'static str = "checksum";
    type Output = u64;
}

/// The example's checksum, mirrored, for every length in `lens` in one pass (each length's
/// checksum extends the one before it by one step): FNV-1a over a xorshift64 stream.
pub(crate) fn checksums(seed: u64, lens: std::ops::Range<u32>) -> Vec<u64> {
    let (mut x, mut hash) = (seed ^ 0x9e37_79b9_7f4a_7c15, 0xcbf2_9ce4_8422_2325_u64);
    let mut out = Vec::with_capacity(lens.len());
    for i in 0..lens.end {
        if i >= lens.start {
            out.push(hash);
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        hash = (hash ^ (x & 0xff)).wrapping_mul(0x0100_0000_01b3);
    }
    out
}

/// What a line of the example's run log (`OFFLOAD_RUN_LOG`) says a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Start,
    /// Ended with its result, not told to stop by `at`.
    Done,
    /// Ended because it was told to stop.
    Stopped,
}

/// One line of the example's run log: `start|done|stopped SEED LEN PID MS`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunRecord {
    pub(crate) mark: Mark,
    /// The job's [`Checksum`].
    pub(crate) seed: u64,
    pub(crate) len: u32,
    /// The worker process.
    pub(crate) pid: u32,
    /// Unix ms.
    pub(crate) at: u64,
}

impl RunRecord {
    fn parse(line: &str) -> RunRecord {
        let bad = || -> ! { panic!("a malformed run log line: {line:?}") };
        let f: Vec<&str> = line.split(' ').collect();
        let [mark, seed, len, pid, at] = f[..] else {
            bad()
        };
        let mark = match mark {
            "start" => Mark::Start,
            "done" => Mark::Done,
            "stopped" => Mark::Stopped,
            _ => bad(),
        };
        RunRecord {
            mark,
            seed: seed.parse().unwrap_or_else(|_| bad()),
            len: len.parse().unwrap_or_else(|_| bad()),
            pid: pid.parse().unwrap_or_else(|_| bad()),
            at: at.parse().unwrap_or_else(|_| bad()),
        }
    }
}

/// The example's run log, read as it grows: whole lines only (a line is one write, but a read
/// may meet one half written).
pub(crate) struct RunLog {
    file: File,
    partial: String,
}

impl RunLog {
    pub(crate) fn open(path: &Path) -> RunLog {
        RunLog {
            file: File::open(path).expect("open the run log"),
            partial: String::new(),
        }
    }

    /// The records written since the last read.
    pub(crate) fn read(&mut self) -> Vec<RunRecord> {
        self.file
            .read_to_string(&mut self.partial)
            .expect("read the run log");
        let Some(end) = self.partial.rfind('\n') else {
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let whole = std::mem::replace(&mut self.partial, rest);
        whole.lines().map(RunRecord::parse).collect()
    }
}

/// The example run with no arguments: four checksums of 2^20 bytes, each printed, exit 0.
#[test]
fn the_custom_job_example_runs_its_jobs_in_process_and_prints_each_output() {
    const LEN: u32 = 1 << 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let out = Command::new(example("custom_job"))
        .current_dir(dir.path())
        .env_remove("OFFLOAD_QUEUE_NAME")
        .env_remove("OFFLOAD_LEASE_SECS")
        .env_remove("OFFLOAD_RUN_LOG")
        .stderr(Stdio::inherit())
        .output()
        .expect("run the custom_job example");
    assert!(
        out.status.success(),
        "custom_job exited with {}",
        out.status
    );
    let expected = [
        (1, 0x9e9d_f0e1_1e11_061b),
        (2, 0x5545_c05e_5722_abde),
        (3, 0xfd10_8de2_f2b0_78b4),
        (4, 0x97ad_183d_5f59_5af9),
    ];
    let want: String = expected
        .iter()
        .map(|(seed, sum)| format!("checksum of seed {seed}: {sum:016x}\n"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    // The mirror computes what the example printed, so the storm's checks check the example.
    for (seed, sum) in expected {
        assert_eq!(checksums(seed, LEN..LEN + 1), [sum], "seed {seed}");
    }
    // The default queue is a file in a temp dir of its own: nothing left in the working dir.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// Starts `custom_job worker` on queue `name` at `url`, with a lease of a second and the
/// environment `env` besides.
pub(crate) fn worker(url: &str, name: &str, env: &[(&str, &std::ffi::OsStr)]) -> Proc {
    let mut cmd = Command::new(example("custom_job"));
    cmd.env("OFFLOAD_QUEUE_NAME", name)
        .env("OFFLOAD_LEASE_SECS", "1")
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stderr(Stdio::inherit());
    Proc::start_program_worker(cmd, &["worker", url])
}

/// A kill storm of the example's job type: checksums of one seed and a length per job (so
/// every job has its own output and one pass computes them all), enqueued from the test with
/// the library and run by `custom_job worker` processes.
pub(crate) struct Checksums {
    queue: Queue,
    url: String,
    name: String,
}

/// Bytes per job: about 10 ms in the example's debug build, as the built-in storm's jobs.
const STORM_LEN: u32 = 1 << 20;
const STORM_SEED: u64 = 19;

impl Checksums {
    /// Opens the storm's queue (`url`, queue `name`) from the test.
    pub(crate) async fn open(url: &str, name: &str) -> Checksums {
        let options = QueueOptions {
            name: name.parse().expect("a valid queue name"),
            ..QueueOptions::default()
        };
        let queue = offload::queue::open(url, options)
            .await
            .expect("open the queue");
        Checksums {
            queue,
            url: url.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl Storm for Checksums {
    async fn enqueue(&self, jobs: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(jobs);
        for i in 0..jobs as u32 {
            let job = NewJob::of(&Checksum {
                seed: STORM_SEED,
                len: STORM_LEN + i,
            })
            .unwrap();
            ids.push(self.queue.enqueue(job).await.expect("enqueue").to_string());
        }
        ids
    }

    /// The example's worker, with the storm's short lease. It runs one job per core, its
    /// default (it takes no concurrency): the storm's three workers run six at once here, as
    /// the built-in storm's do (1 + 1 + 4), and the victim holds several jobs all the same.
    fn worker(&self, _concurrency: usize) -> Proc {
        worker(&self.url, &self.name, &[])
    }

    async fn counts(&self) -> Counts {
        self.queue.counts().await.expect("counts")
    }

    async fn check(&self, ids: &[String]) -> Vec<(u32, u32)> {
        let want = checksums(STORM_SEED, STORM_LEN..STORM_LEN + ids.len() as u32);
        let mut runs = Vec::with_capacity(ids.len());
        for (id, want) in ids.iter().zip(want) {
            let id = JobId::parse(id).expect("a job id");
            let j = self
                .queue
                .get(&id)
                .await
                .expect("get")
                .expect("a stored job");
            assert_eq!(j.status, JobStatus::Done, "{j:?}");
            let got = j.output::<Checksum>().expect("a result").expect("a u64");
            assert_eq!(got, want, "{j:?}");
            assert_eq!(j.error, None, "a done job keeps no error: {j:?}");
            runs.push((j.attempts, j.stalls));
        }
        runs
    }
}
