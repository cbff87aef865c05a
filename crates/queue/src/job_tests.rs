//! Typed jobs and their handlers: round trips, errors, the executor.

use serde::{Deserialize, Serialize};

use super::*;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Square {
    x: i64,
}
impl Job for Square {
    const NAME: &'static str = "square";
    type Output = i64;
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Greet(String);
impl Job for Greet {
    const NAME: &'static str = "greet";
    type Output = String;
    const SECS_PER_UNIT: Option<f64> = Some(2e-6);
    fn units(&self) -> u64 {
        self.0.len() as u64
    }
}

fn handlers() -> Handlers {
    Handlers::new()
        .on(|s: Square| Ok(s.x * s.x))
        .on(|g: Greet| {
            if g.0.is_empty() {
                Err(JobError::fatal("nobody to greet"))
            } else {
                Ok(format!("hello, {}", g.0))
            }
        })
}

#[test]
fn each_job_reaches_its_own_handler_and_its_output_reads_back_typed() {
    let h = handlers();
    assert_eq!(h.names(), ["greet", "square"]);
    let sq = NewJob::of(&Square { x: -7 }).unwrap();
    assert_eq!(sq.label.as_deref(), Some("square"));
    assert_eq!(sq.payload, r#"{"job":"square","payload":{"x":-7}}"#);
    assert_eq!(h.run(&sq.payload).unwrap(), "49");
    let greet = NewJob::of(&Greet("ann".into())).unwrap();
    let result = h.run(&greet.payload).unwrap();
    let view = JobView {
        id: crate::JobId::random(),
        status: crate::JobStatus::Done,
        attempts: 1,
        max_attempts: 3,
        stalls: 0,
        max_stalls: 10,
        result: Some(result),
        error: None,
        enqueued_at: 0,
        started_at: Some(1),
        finished_at: Some(2),
        expires_at: None,
        priority: 0,
        label: None,
    };
    assert_eq!(view.output::<Greet>().unwrap().unwrap(), "hello, ann");
    assert!(
        view.output::<Square>().unwrap().is_err(),
        "a string is not an i64"
    );
}

#[test]
fn unknown_names_bad_payloads_and_handler_errors_fail_without_retry() {
    let h = handlers();
    let err = h.run(r#"{"job":"resize","payload":{}}"#).unwrap_err();
    assert!(
        !err.retry && err.message.contains("no handler for job \"resize\""),
        "{err}"
    );
    let err = h
        .run(r#"{"job":"square","payload":{"x":"seven"}}"#)
        .unwrap_err();
    assert!(
        !err.retry && err.message.contains("bad payload for job \"square\""),
        "{err}"
    );
    let err = h.run(r#"{"work":"count","n":5}"#).unwrap_err();
    assert!(
        !err.retry && err.message.contains("not a typed job"),
        "{err}"
    );
    let err = h
        .run(&NewJob::of(&Greet(String::new())).unwrap().payload)
        .unwrap_err();
    assert_eq!(err, JobError::fatal("nobody to greet"));
}

#[tokio::test]
async fn the_executor_runs_jobs_off_the_runtime_threads() {
    let test_thread = std::thread::current().id();
    let h = Handlers::new().on(move |s: Square| {
        assert_ne!(
            std::thread::current().id(),
            test_thread,
            "ran on the runtime's thread"
        );
        Ok(s.x + 1)
    });
    let exec = h.executor();
    let out = exec(NewJob::of(&Square { x: 41 }).unwrap().payload).await;
    assert_eq!(out.unwrap(), "42");
    let out = exec("not json".to_owned()).await;
    assert!(!out.unwrap_err().retry);
}

#[test]
fn each_type_keeps_its_prior_and_each_run_reports_its_units_and_time() {
    /// A prior that is no usable guess.
    #[derive(Serialize, Deserialize)]
    struct Odd;
    impl Job for Odd {
        const NAME: &'static str = "odd";
        type Output = ();
        const SECS_PER_UNIT: Option<f64> = Some(f64::NAN);
    }
    let runs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let also = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = handlers()
        .on(|_: Odd| Ok(()))
        .on_run({
            let runs = runs.clone();
            move |run: &JobRun| runs.lock().unwrap().push(*run)
        })
        .on_run({
            let also = also.clone();
            move |_: &JobRun| {
                also.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
    assert_eq!(h.secs_per_unit("greet"), Some(2e-6));
    assert_eq!(h.secs_per_unit("square"), None, "no prior: the default");
    assert_eq!(h.secs_per_unit("odd"), None, "NaN is no guess");
    assert_eq!(h.secs_per_unit("resize"), None, "no handler");
    assert_eq!(Square { x: 5 }.units(), 1, "the default");
    let greet = NewJob::of(&Greet("ann".into())).unwrap();
    h.run(&greet.payload).unwrap();
    h.run(&NewJob::of(&Square { x: 2 }).unwrap().payload)
        .unwrap();
    // A failed run says nothing of its units: not told.
    h.run(&NewJob::of(&Greet(String::new())).unwrap().payload)
        .unwrap_err();
    let runs = runs.lock().unwrap();
    let told: Vec<_> = runs.iter().map(|r| (r.job, r.units)).collect();
    assert_eq!(told, [("greet", 3), ("square", 1)]);
    assert!(runs.iter().all(|r| r.took > Duration::ZERO), "{runs:?}");
    let also = also.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(also, 2, "a second observer is told too");
}
