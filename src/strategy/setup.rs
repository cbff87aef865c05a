//! What `offload serve` hands a strategy to build itself from: the validated flags, and the
//! job store, opened only for a strategy that stores jobs. Each strategy takes what it needs
//! ([`Strategy::build`]), so `serve` names none of them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::{
    Auto, Blocking, Inline, Name, PoolStrategy, QueueStrategy, Remote, RemoteConfig, Spawn, Split,
    Strategy,
};
use crate::pool::{Pool, PoolConfig};
use crate::work::Limits;

/// The serve flags, validated, and what was opened from them.
#[derive(Debug)]
pub struct Setup {
    /// Threads (and chunks) per request, for `spawn`.
    pub split: usize,
    /// The pool's threads, queue cap and priority (`pool`, `auto`).
    pub pool: PoolConfig,
    /// How the pool splits a request's work.
    pub pool_split: Split,
    /// The request limits, which the pool's and the queue's predictions are calibrated for.
    pub limits: Limits,
    /// The machine's cores, against which the pool's priors are scaled.
    pub cores: usize,
    /// Hard cap on requests waiting (the pool's, the gateway's in `remote`, for room in a
    /// full backlog).
    pub max_queue: usize,
    /// The job store, when the strategy stores jobs ([`Name::stores_jobs`]).
    pub store: Option<crate::queue::Queue>,
    /// The longest a job may be predicted to wait in the backlog (`--queue-max-wait`).
    pub queue_max_wait: Option<Duration>,
    /// `auto`'s wait budget when the client gives none (`--auto-wait`).
    pub auto_wait: Duration,
    /// Where `remote` sends the work, and how.
    pub remote: RemoteConfig,
}

impl Setup {
    /// A pool on fresh threads, its cost model primed from a calibration made here.
    ///
    /// # Errors
    /// The pool's threads could not be started.
    pub(super) fn pool(&self) -> anyhow::Result<PoolStrategy> {
        let pool = Pool::new(self.pool.clone()).context("starting the pool threads")?;
        super::calibrate_priors(&pool, &self.limits, self.cores);
        Ok(PoolStrategy::new(Arc::new(pool), self.pool_split))
    }

    /// The queue in front of the job store; its backlog in seconds predicts stored work from
    /// a calibration made here.
    ///
    /// # Errors
    /// No store was opened (the strategy does not say it stores jobs).
    pub(super) fn queue(&self) -> anyhow::Result<QueueStrategy> {
        let store = self
            .store
            .clone()
            .context("a strategy that stores jobs needs a job store")?;
        let predict = crate::queue::builtin::calibrated(self.limits);
        Ok(QueueStrategy::new(store, self.max_queue, predict).max_wait(self.queue_max_wait))
    }
}

impl Strategy {
    /// The strategy `name`, built from `setup`: each takes what it needs.
    ///
    /// # Errors
    /// Its pool's threads could not start, its job store is missing, or `remote` was given
    /// no compute service.
    pub fn build(name: Name, setup: Setup) -> anyhow::Result<Strategy> {
        Ok(match name {
            Name::Inline => Strategy::Inline(Inline),
            Name::Spawn => Strategy::Spawn(Spawn { split: setup.split }),
            Name::Blocking => Strategy::Blocking(Blocking),
            Name::Pool => Strategy::Pool(setup.pool()?),
            Name::Remote => {
                Strategy::Remote(Remote::start(setup.remote).map_err(anyhow::Error::msg)?)
            }
            Name::Queue => Strategy::Queue(setup.queue()?),
            Name::Auto => Strategy::Auto(Auto::new(setup.pool()?, setup.queue()?, setup.auto_wait)),
        })
    }
}
