//! The checks a Node row passes before its load: one answer (for node:bullmq, its job's stored
//! result) against offload's exact result, and for the row at a lower priority the niceness
//! of piscina's threads.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{CHECK_JOB_WAIT, Setup};
use crate::api::{Accepted, HeavyAnswer, Job, JobResult, JobStatus};
use crate::bench::http_get;
use crate::bench::model::{NodeServer, Settings};

impl Setup {
    /// One `/heavy` request before the load: its answer (for the queue, its job's stored
    /// result) must be offload's exact result for the same work.
    pub(super) async fn check(
        &self,
        strategy: NodeServer,
        gateway: SocketAddr,
        s: &Settings,
    ) -> anyhow::Result<u64> {
        let (status, body) = http_get(gateway, &format!("/heavy?{}", s.work_query)).await?;
        let text = || {
            String::from_utf8_lossy(&body)
                .chars()
                .take(300)
                .collect::<String>()
        };
        let result = if strategy == NodeServer::Bullmq {
            if status != 202 {
                bail!("{strategy}: /heavy answered {status}, not 202: {}", text());
            }
            let a: Accepted = serde_json::from_slice(&body)
                .with_context(|| format!("{strategy}: not a 202 answer: {}", text()))?;
            let end = Instant::now() + CHECK_JOB_WAIT;
            loop {
                let (st, b) = http_get(gateway, &a.job.status_url).await?;
                let job: Job = serde_json::from_slice(&b).with_context(|| {
                    format!("{strategy}: {} answered {st}: not a job", a.job.status_url)
                })?;
                match job.status {
                    JobStatus::Done => {
                        let r: JobResult = serde_json::from_value(job.result.unwrap_or_default())
                            .with_context(|| {
                            format!("{strategy}: a done job without a result")
                        })?;
                        break r.result;
                    }
                    JobStatus::Failed => {
                        bail!("{strategy}: the checked job failed: {:?}", job.error)
                    }
                    _ if Instant::now() > end => {
                        bail!("{strategy}: the checked job was not done within {CHECK_JOB_WAIT:?}")
                    }
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        } else {
            if status != 200 {
                bail!("{strategy}: /heavy answered {status}: {}", text());
            }
            let a: HeavyAnswer = serde_json::from_slice(&body)
                .with_context(|| format!("{strategy}: not offload's /heavy answer: {}", text()))?;
            if a.strategy != strategy.answers_as() {
                bail!("{strategy}: the answer says strategy {:?}", a.strategy);
            }
            a.result
        };
        if result != self.expected {
            bail!(
                "{strategy}: result {result} for {}, where offload computes {}",
                s.work,
                self.expected
            );
        }
        Ok(result)
    }
}

/// The threads of process `pid` whose niceness is `nice`, read from `/proc` (0 elsewhere).
pub(super) fn threads_at_nice(pid: u32, nice: i32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // Niceness is field 19 of the line.
            super::super::sample::stat_fields(stat).and_then(|f| f.get(16)?.parse::<i32>().ok())
                == Some(nice)
        })
        .count()
}
