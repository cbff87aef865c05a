//! A kill storm with cancels and keys (issue 28): 1,500 keyed jobs of the queue crate's
//! `custom_job` example, each enqueued twice, run by the example's workers while one of them is
//! SIGKILLed and restarted every half second, and a tenth of them cancelled at random moments.
//! Each job must end once, `done` with its exact result or `cancelled` by the test, and the
//! handler's own record of its runs (the example's `OFFLOAD_RUN_LOG`) must agree with the store.
//! On SQLite, Redis and Postgres, as `queue_faults`.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::{JoinSet, block_in_place};
use tokio::time::sleep;

use offload::queue::worker::WorkerConfig;
use offload::queue::{Cancel, JobId, JobKey, JobQueue, JobStatus, JobView, NewJob, Queue};
use offload_queue::testing::Backend;

use crate::custom_job::{Checksum, Mark, RunLog, RunRecord, checksums, worker};
use crate::support::{Dice, exclusive};

/// Jobs in the storm.
const JOBS: usize = 1500;
/// Jobs the test cancels: a tenth.
const CANCELS: usize = 150;
/// Of those, jobs that would run for half a minute, each cancelled once it runs: only the
/// handler's stop check ends them, so they show that a cancel reaches a run in progress.
const LONG: usize = 10;
/// Bytes per short job: about 5 ms in the example's debug build.
const LEN: u32 = 1 << 19;
/// Bytes per long job: about 30 s there, longer than the storm. Far above every short job's
/// length, so a record's length names its job and its kind.
const LONG_LEN: u32 = 3 << 30;
const SEED: u64 = 28;
/// Short jobs (never cancelled) that carry a deadline, drawn within [`DEADLINE_SPAN`] of their
/// enqueue: a store that drains 1,500 jobs in several seconds lets some of them end `expired`
/// while queued, and some run before their deadline.
const EXPIRING: usize = 100;
/// The latest deadline drawn, from a job's enqueue; the earliest is [`DEADLINE_FROM`].
const DEADLINE_SPAN: Duration = Duration::from_millis(4000);
const DEADLINE_FROM: Duration = Duration::from_millis(300);
/// The workers' lease (the example's `OFFLOAD_LEASE_SECS`): a killed worker's jobs run again
/// within about two seconds. They heartbeat every third of it.
const LEASE: Duration = Duration::from_secs(1);
/// Beyond the heartbeat period, time for a heartbeat's round trip to the store and the
/// wake-ups of a loaded 2-core machine, before a run of a cancelled job must have ended.
const SLACK: Duration = Duration::from_secs(1);
/// The victim is killed this often, as in `queue_faults`' storm.
const KILL_EVERY: Duration = Duration::from_millis(500);
/// The random cancels fall within this time of the storm's start, while most jobs wait.
const CANCEL_SPAN: Duration = Duration::from_millis(2500);
/// A long job is cancelled up to this long after the test sees it start.
const LONG_CANCEL_WITHIN: Duration = Duration::from_millis(200);
/// The repeat of an odd job's enqueue (as if its first answer were lost) comes within this
/// time of the storm's start: most jobs run in it.
const REPEAT_SPAN: Duration = Duration::from_secs(4);
/// Enqueues in flight at once: a busy client.
const ENQUEUES_AT_ONCE: usize = 16;
/// How often the canceller looks at the run log and at what is due.
const TICK: Duration = Duration::from_millis(10);

/// A kill storm with cancels: 1,500 jobs, each with its own idempotency key and enqueued twice
/// (even jobs by two enqueues at once before the storm, odd ones again at a random moment of
/// it, as after a lost answer); three `custom_job` workers, one SIGKILLed and restarted every
/// half second; 150 jobs cancelled at random moments, 10 of them long jobs cancelled while
/// they run.
///
/// The store must hold 1,500 jobs, every repeat answered with the first enqueue's id (and a
/// last repeat of all of them after the storm, too, storing nothing and reviving no cancelled
/// job). Every job ends exactly once: `done` with its exact result and one attempt, or
/// `cancelled`; the cancelled ones are exactly those the test's cancels answered `Cancelled`
/// for; none failed.
///
/// The handler's own record of its runs ([`RunRecord`]) is held to this:
/// - A job `done` in the store has a run recorded `done`. Any job has at most `1 + stalls`
///   runs recorded `done`: a completed run whose outcome the store does not keep was lost
///   with its worker (a stall), or refused because the job was cancelled, which it is then
///   for good. A key stored as two jobs that both ran would show here (two completed runs,
///   the id the test holds with no stall), as it would in the counts.
/// - A cancelled job has no run recorded (started, done or stopped) later than the *stop
///   window* after its cancel's answer, and each of its runs on a worker not killed within
///   the window has ended within it. One cancelled while queued (held by no worker) has no
///   run started after the answer at all. The window is one heartbeat period (a third of the
///   lease) plus [`SLACK`], because that is all the queue promises: a worker learns of a
///   cancel at its next heartbeat of the job, and only then tells the run to stop. So a run
///   of a few ms going at the cancel, or held ahead and started just after it, may complete
///   and be recorded `done` after the cancel; the store refuses its outcome, as the job's
///   status and missing result show. Past the window a record means the job ran again after
///   its cancel, or a run was never told to stop: a long job not recorded `stopped` in time
///   on a live worker. The handler takes the time of a `done` before its last look at the
///   stop check, so a run recorded `done` at a moment had not been told to stop by then.
///
/// Deadlines: [`EXPIRING`] other short jobs carry one. Each ends `done` (with its result) or
/// `expired`; an expired one has no run recorded later than the stop window after its deadline
/// (the worker stops a run at the deadline on its own clock), and each of its runs on a worker
/// alive through that window has ended within it.
async fn cancel_storm_ends_each_job_once(b: Backend, test: &str) {
    let Some(place) = b.place(test) else { return };
    // The stop window is a time limit: keep other timing-sensitive tests off the two cores.
    let _serial = exclusive().await;
    let seed = std::env::var("OFFLOAD_STORM_SEED").map_or_else(
        |_| getrandom::u64().expect("a random seed"),
        |s| s.parse().expect("OFFLOAD_STORM_SEED: a number"),
    );
    eprintln!("{test}: seed {seed} (OFFLOAD_STORM_SEED={seed} draws the same plan)");
    let mut dice = Dice(seed);
    let plan = Arc::new(Plan::draw(&mut dice));
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("runs.log");
    File::create(&log).expect("create the run log");
    let queue = place
        .open(Default::default())
        .await
        .expect("open the queue");
    let window = WorkerConfig::default().with_lease(LEASE).heartbeat + SLACK;
    let start = || {
        let env = [("OFFLOAD_RUN_LOG", log.as_os_str())];
        block_in_place(|| worker(place.url(), place.name().as_str(), &env))
    };

    // The jobs first, as in `queue_faults`' storm: a backlog of 1,500 on every store, so that
    // the cancels find jobs queued and running however fast a store's enqueues are.
    let began = Instant::now();
    let ids = Arc::new(enqueue_keyed(&queue, &plan).await);
    let enqueue_took = began.elapsed();
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        JOBS,
        "one id per key"
    );
    let stored = queue.counts().await.expect("counts");
    assert_eq!(stored.queued, JOBS as u64, "one job per key: {stored:?}");

    let steady = [start(), start()];
    let mut victim = start();
    // Each worker killed, and the unix ms just before its SIGKILL.
    let mut kills: HashMap<u32, u64> = HashMap::new();
    let mut repeater = Some(tokio::spawn(repeat_odd(
        queue.clone(),
        Arc::clone(&plan),
        Arc::clone(&ids),
        Dice(dice.next()),
    )));
    let mut canceller = Some(tokio::spawn(cancel_at_random(
        queue.clone(),
        Arc::clone(&plan),
        Arc::clone(&ids),
        Dice(dice.next()),
        log.clone(),
    )));
    let (mut repeated, mut cancels) = (false, None);
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        sleep(KILL_EVERY).await;
        kills.insert(victim.pid(), now_ms());
        victim.kill();
        victim = start();
        // A task that panicked fails the test here, with its own message.
        if let Some(task) = repeater.take_if(|t| t.is_finished()) {
            task.await.expect("the repeats");
            repeated = true;
        }
        if let Some(task) = canceller.take_if(|t| t.is_finished()) {
            cancels = Some(task.await.expect("the canceller"));
        }
        let c = queue.counts().await.expect("counts");
        if repeated && cancels.is_some() && c.queued + c.running == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "not all jobs finished after 90 s ({} kills): {c:?}",
            kills.len()
        );
    }
    let cancels = cancels.unwrap();
    // A run of the last job cancelled has until the end of its window to end: the workers stay
    // for it, so that the record is complete.
    let last = cancels.cancelled.values().map(|c| c.at).max().unwrap_or(0);
    let wait = (last + window.as_millis() as u64 + 100).saturating_sub(now_ms());
    sleep(Duration::from_millis(wait)).await;
    for w in steady.into_iter().chain([victim]) {
        kills.insert(w.pid(), now_ms());
        w.kill();
    }

    let counts = queue.counts().await.expect("counts");
    // The same enqueues again, the jobs finished: the same ids, nothing stored again, no
    // cancelled job queued again.
    let again = enqueue_keyed(&queue, &plan).await;
    assert_eq!(
        again, *ids,
        "a repeat after the storm answers the first ids"
    );
    assert_eq!(queue.counts().await.expect("counts"), counts);
    assert_eq!(
        (
            counts.done + counts.cancelled + counts.expired,
            counts.failed
        ),
        (JOBS as u64, 0),
        "every job done, cancelled or expired: {counts:?}"
    );
    assert!(
        counts.expired > 0 && counts.expired <= EXPIRING as u64,
        "some of the {EXPIRING} jobs with a deadline expired, and no other: {counts:?}"
    );
    assert_eq!(
        counts.cancelled as usize,
        cancels.cancelled.len(),
        "the jobs cancelled are the test's: {counts:?}"
    );
    assert_eq!(
        cancels.cancelled.len(),
        CANCELS,
        "cancels that found the job unfinished ({} found it finished): {counts:?}",
        cancels.missed.len()
    );

    let mut views = Vec::with_capacity(JOBS);
    for id in ids.iter() {
        views.push(queue.get(id).await.expect("get").expect("a stored job"));
    }
    let records = RunLog::open(&log).read();
    assert!(
        !records.is_empty(),
        "the workers recorded no runs in {}: is examples/custom_job built from this tree?",
        log.display()
    );
    let seen = Seen::of(&plan, &records, &views, &cancels, &kills, window);
    assert!(
        seen.violations.is_empty(),
        "{test}: {} of {JOBS} jobs break the rules (seed {seed}), the first ones:\n{}",
        seen.violations.len(),
        seen.violations[..seen.violations.len().min(20)].join("\n")
    );
    let stalls: u64 = views.iter().map(|v| u64::from(v.stalls)).sum();
    assert_eq!(
        counts.stalls, stalls,
        "the queue counts every stall the jobs show"
    );
    let was = |s: JobStatus| cancels.cancelled.values().filter(|c| c.was == s).count();
    let (queued, running) = (was(JobStatus::Queued), was(JobStatus::Running));
    eprintln!(
        "{test} on {b:?}: {JOBS} jobs enqueued in {enqueue_took:.1?}, {} kills, {stalls} runs lost \
         and redone, {queued} jobs cancelled queued and {running} running ({} cancels found the \
         job done), {} runs stopped, a `done` at most {} ms and a stop at most {} ms after a \
         cancel's answer; {} of the {EXPIRING} jobs with a deadline expired",
        kills.len(),
        cancels.missed.len(),
        seen.stopped,
        seen.latest_done,
        seen.latest_stop,
        counts.expired,
    );
    // Proof that the kills and the cancels hit jobs in flight (else this test tested nothing).
    assert!(
        stalls > 0,
        "no job was ever re-run after {} kills",
        kills.len()
    );
    assert!(
        queued > 0 && running > 0,
        "{queued} queued, {running} running"
    );
    assert!(seen.stopped > 0, "no run was ever told to stop by a cancel");
}

/// The unix time in ms, as the example's run log has it.
fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH);
    since.expect("a clock after 1970").as_millis() as u64
}

/// The storm's jobs: which are long, and which carry a deadline (how long after enqueue).
struct Plan {
    long: Vec<bool>,
    deadline: Vec<Option<Duration>>,
}

impl Plan {
    /// [`LONG`] jobs drawn at random to be long.
    fn draw(dice: &mut Dice) -> Plan {
        let mut long = vec![false; JOBS];
        while long.iter().filter(|l| **l).count() < LONG {
            long[dice.below(JOBS)] = true;
        }
        let mut deadline = vec![None; JOBS];
        while deadline.iter().filter(|d| d.is_some()).count() < EXPIRING {
            let i = dice.below(JOBS);
            if !long[i] {
                deadline[i] = Some(DEADLINE_FROM + dice.within(DEADLINE_SPAN - DEADLINE_FROM));
            }
        }
        Plan { long, deadline }
    }

    /// Job `i`: its own length (so its own result), long or short.
    fn job(&self, i: usize) -> Checksum {
        let base = if self.long[i] { LONG_LEN } else { LEN };
        Checksum {
            seed: SEED,
            len: base + i as u32,
        }
    }

    /// Job `i` as the test enqueues it, under its own key.
    fn new_job(&self, i: usize) -> NewJob {
        let key = JobKey::new(format!("cancel-storm-{i}")).expect("a valid key");
        let job = NewJob::of(&self.job(i)).expect("a job").key(key);
        match self.deadline[i] {
            Some(d) => job.expires_in(d),
            None => job,
        }
    }

    /// The job that a recorded run is of.
    fn index(&self, run: &RunRecord) -> usize {
        let base = if run.len >= LONG_LEN { LONG_LEN } else { LEN };
        let i = run.len.checked_sub(base).map(|i| i as usize);
        match i {
            Some(i) if i < JOBS && self.job(i).len == run.len && run.seed == SEED => i,
            _ => panic!("{run:?} is of no job of the storm"),
        }
    }
}

/// Enqueues every job under its key, [`ENQUEUES_AT_ONCE`] enqueues at a time, an even job
/// twice at once; returns the ids in order.
///
/// # Panics
/// If an enqueue fails, or the two enqueues of a job answer different ids.
async fn enqueue_keyed(queue: &Queue, plan: &Arc<Plan>) -> Vec<JobId> {
    let gate = Arc::new(Semaphore::new(ENQUEUES_AT_ONCE));
    let mut sends = JoinSet::new();
    for i in 0..JOBS {
        let (queue, plan, gate) = (queue.clone(), Arc::clone(plan), Arc::clone(&gate));
        sends.spawn(async move {
            let _turn = gate.acquire_many(2).await.expect("never closed");
            let job = plan.new_job(i);
            if i % 2 == 1 {
                return (i, queue.enqueue(job).await.expect("enqueue"));
            }
            let (a, b) = tokio::join!(queue.enqueue(job.clone()), queue.enqueue(job));
            let (a, b) = (a.expect("enqueue"), b.expect("enqueue"));
            assert_eq!(a, b, "job {i}: two enqueues at once under its key, two ids");
            (i, a)
        });
    }
    let mut ids = vec![None; JOBS];
    while let Some(sent) = sends.join_next().await {
        let (i, id) = sent.expect("an enqueue task");
        ids[i] = Some(id);
    }
    ids.into_iter().map(Option::unwrap).collect()
}

/// Enqueues every odd job again at a moment drawn within [`REPEAT_SPAN`], as a client whose
/// first answer was lost retries: before, during or after the job's run, or its cancel.
///
/// # Panics
/// If an enqueue fails, or a repeat answers another id than `ids` has.
async fn repeat_odd(queue: Queue, plan: Arc<Plan>, ids: Arc<Vec<JobId>>, mut dice: Dice) {
    let gate = Arc::new(Semaphore::new(ENQUEUES_AT_ONCE));
    let mut sends = JoinSet::new();
    for i in (1..JOBS).step_by(2) {
        let (queue, plan, ids, gate) = (
            queue.clone(),
            Arc::clone(&plan),
            Arc::clone(&ids),
            Arc::clone(&gate),
        );
        let at = dice.within(REPEAT_SPAN);
        sends.spawn(async move {
            sleep(at).await;
            let _turn = gate.acquire().await.expect("never closed");
            let id = queue.enqueue(plan.new_job(i)).await.expect("enqueue");
            assert_eq!(id, ids[i], "job {i}: a repeat under its key got another id");
        });
    }
    while let Some(sent) = sends.join_next().await {
        sent.expect("a repeat task");
    }
}

/// A cancel that answered `Cancelled`.
#[derive(Debug, Clone, Copy)]
struct Cancelled {
    /// The unix ms just after its answer.
    at: u64,
    /// Where the job was.
    was: JobStatus,
}

/// What the test's cancels got.
#[derive(Debug, Default)]
struct Cancels {
    /// The jobs they cancelled.
    cancelled: HashMap<usize, Cancelled>,
    /// Jobs a cancel found finished (another job was picked then), and their status.
    missed: HashMap<usize, JobStatus>,
}

impl Cancels {
    /// Cancels job `i`: true if it answered `Cancelled`.
    async fn cancel(&mut self, queue: &Queue, i: usize, id: &JobId) -> bool {
        let answer = queue.cancel(id).await.expect("cancel");
        let at = now_ms();
        match answer {
            Cancel::Cancelled { was } => {
                self.cancelled.insert(i, Cancelled { at, was });
                true
            }
            Cancel::Finished(status) => {
                self.missed.insert(i, status);
                false
            }
            Cancel::NotFound => panic!("job {i} ({id}) is not found"),
        }
    }
}

/// Cancels [`CANCELS`] jobs: the short ones at moments drawn within [`CANCEL_SPAN`] of its
/// start, each a job picked at random among those not yet picked (one found finished, another
/// then); each long one up to [`LONG_CANCEL_WITHIN`] after its first start shows in the run log
/// at `log`.
async fn cancel_at_random(
    queue: Queue,
    plan: Arc<Plan>,
    ids: Arc<Vec<JobId>>,
    mut dice: Dice,
    log: PathBuf,
) -> Cancels {
    let start = Instant::now();
    let mut moments: Vec<Instant> = (0..CANCELS - LONG)
        .map(|_| start + dice.within(CANCEL_SPAN))
        .collect();
    moments.sort_unstable_by(|a, b| b.cmp(a)); // the next one last
    let mut candidates: Vec<usize> = (0..JOBS)
        .filter(|i| !plan.long[*i] && plan.deadline[*i].is_none())
        .collect();
    // Long jobs seen started, and when each is to be cancelled.
    let mut long_due: Vec<(Instant, usize)> = Vec::new();
    let mut long_seen = HashSet::new();
    let mut tail = RunLog::open(&log);
    let mut out = Cancels::default();
    while !moments.is_empty() || long_seen.len() < LONG || !long_due.is_empty() {
        for r in tail.read() {
            let i = plan.index(&r);
            if r.mark == Mark::Start && plan.long[i] && long_seen.insert(i) {
                let at = Instant::now() + dice.within(LONG_CANCEL_WITHIN);
                long_due.push((at, i));
            }
        }
        let now = Instant::now();
        while moments.last().is_some_and(|m| *m <= now) && !candidates.is_empty() {
            let i = candidates.swap_remove(dice.below(candidates.len()));
            if out.cancel(&queue, i, &ids[i]).await {
                moments.pop();
            }
        }
        if candidates.is_empty() {
            moments.clear(); // every job finished or cancelled: the final count tells
        }
        for (_, i) in long_due.extract_if(.., |(at, _)| *at <= now) {
            out.cancel(&queue, i, &ids[i]).await;
        }
        sleep(TICK).await;
    }
    out
}

/// The run log held against the store and the test's cancels.
struct Seen {
    /// What breaks the rules ([`cancel_storm_ends_each_job_once`]), a line per job.
    violations: Vec<String>,
    /// Runs of cancelled jobs recorded `stopped`.
    stopped: usize,
    /// The latest `done` of a cancelled job, in ms after its cancel's answer (or 0).
    latest_done: u64,
    /// The latest `stopped` of a cancelled job, in ms after its cancel's answer (or 0).
    latest_stop: u64,
}

impl Seen {
    fn of(
        plan: &Plan,
        records: &[RunRecord],
        views: &[JobView],
        cancels: &Cancels,
        kills: &HashMap<u32, u64>,
        window: Duration,
    ) -> Seen {
        let mut runs: Vec<Vec<RunRecord>> = vec![Vec::new(); JOBS];
        for r in records {
            runs[plan.index(r)].push(*r);
        }
        let sums = checksums(SEED, LEN..LEN + JOBS as u32);
        let mut seen = Seen {
            violations: Vec::new(),
            stopped: 0,
            latest_done: 0,
            latest_stop: 0,
        };
        for (i, (v, runs)) in views.iter().zip(&runs).enumerate() {
            let count = |m: Mark| runs.iter().filter(|r| r.mark == m).count();
            let done = count(Mark::Done);
            let mut wrong = |what: String| {
                seen.violations
                    .push(format!("job {i} ({}): {what}; {v:?}; runs {runs:?}", v.id))
            };
            if done > 1 + v.stalls as usize {
                wrong(format!("{done} runs completed, {} stalls", v.stalls));
            }
            match (v.status, cancels.cancelled.get(&i)) {
                (JobStatus::Done, None) => {
                    let sum = v.output::<Checksum>().map(|o| o.expect("a u64"));
                    if sum != Some(sums[i]) || v.error.is_some() || v.attempts != 1 {
                        wrong(format!("not done once with its result {:#x}", sums[i]));
                    }
                    if done == 0 {
                        wrong("done, but no run of it completed".to_owned());
                    }
                }
                (JobStatus::Cancelled, Some(c)) => {
                    if v.result.is_some() {
                        wrong("cancelled with a result".to_owned());
                    }
                    let limit = c.at + window.as_millis() as u64;
                    // Cancelled while queued, it was held by no worker: none starts it after.
                    let starts_by = if c.was == JobStatus::Queued {
                        c.at
                    } else {
                        limit
                    };
                    let late = |r: &&RunRecord| {
                        r.at > limit || (r.mark == Mark::Start && r.at > starts_by)
                    };
                    for r in runs.iter().filter(late) {
                        wrong(format!(
                            "{:?} on worker {} {} ms after its cancel's answer",
                            r.mark,
                            r.pid,
                            r.at - c.at
                        ));
                    }
                    // A worker alive through the window has ended every run it started.
                    for pid in unended(runs, kills, limit) {
                        wrong(format!("a run on worker {pid} never ended"));
                    }
                    for r in runs.iter().filter(|r| r.at >= c.at) {
                        let after = r.at - c.at;
                        match r.mark {
                            Mark::Done => seen.latest_done = seen.latest_done.max(after),
                            Mark::Stopped => seen.latest_stop = seen.latest_stop.max(after),
                            Mark::Start => {}
                        }
                    }
                    seen.stopped += count(Mark::Stopped);
                }
                (JobStatus::Expired, None) if plan.deadline[i].is_some() => {
                    if v.result.is_some() {
                        wrong("expired with a result".to_owned());
                    }
                    let limit = v.expires_at.unwrap_or(0) + window.as_millis() as u64;
                    for r in runs.iter().filter(|r| r.at > limit) {
                        wrong(format!(
                            "{:?} on worker {} {} ms after its deadline",
                            r.mark,
                            r.pid,
                            r.at - v.expires_at.unwrap_or(0)
                        ));
                    }
                    for pid in unended(runs, kills, limit) {
                        wrong(format!("a run on worker {pid} never ended"));
                    }
                }
                (status, cancel) => wrong(format!("ended {status:?}, cancel {cancel:?}")),
            }
        }
        seen
    }
}

/// The workers alive until `limit` (unix ms) on which a run of `runs` started and never ended
/// (neither `done` nor `stopped`).
fn unended(runs: &[RunRecord], kills: &HashMap<u32, u64>, limit: u64) -> Vec<u32> {
    let pids: HashSet<u32> = runs.iter().map(|r| r.pid).collect();
    pids.into_iter()
        .filter(|pid| {
            let on = |m: Mark| runs.iter().filter(|r| r.pid == *pid && r.mark == m).count();
            let alive = kills.get(pid).is_none_or(|k| *k > limit);
            alive && on(Mark::Start) != on(Mark::Done) + on(Mark::Stopped)
        })
        .collect()
}

offload_queue::store_tests!(
    sqlite = Backend::Sqlite, redis = Backend::Redis, postgres = Backend::Postgres;
    cancel_storm_ends_each_job_once,
);
