//! `auto`'s decision apart from HTTP: the order in which the pool and the queue are tried, and
//! what gives way when one is full. [`Auto::run`](crate::Auto::run) decides with it, and so does
//! offload's own gateway (`offload serve --strategy auto`), each with its own [`Places`]: the
//! gateway's pool splits work into chunks and its queue has a line in front of the store. So the
//! bench measures the decision a service embedding this crate makes.
//!
//! 1. The pool, if the job's predicted finish fits the budget.
//! 2. Else the queue, if it has room now.
//! 3. Else (the queue is full or its store failed) the pool after all, under plain deadline
//!    admission: a late answer beats a refusal.
//! 4. Else the queue's last word: wait for room, or refuse.
//!
//! A job is taken by one place only: each try either takes it or leaves it untouched.

use std::future::Future;
use std::time::Duration;

use offload_pool::Budget;

/// What the pool did with a job offered within a budget.
#[derive(Debug)]
pub enum PoolTry<R> {
    /// It ran: its outcome, and the finish that was predicted for it.
    Ran(R, Duration),
    /// It was predicted to finish after the budget (or the pool's queue was full): not run.
    /// The predicted finish.
    Late(Duration),
}

/// Why the queue did not take a job at once.
#[derive(Debug)]
pub enum StoreRefusal<E> {
    /// No room in the backlog now.
    Full,
    /// The store failed or is out of reach: the error, answered if nothing else takes the job.
    Down(E),
    /// A failure that ends the request at once, whatever else could take the job.
    Failed(E),
}

/// Where a job went.
#[derive(Debug)]
pub enum Decision<R, S> {
    /// It ran in the pool. `over_budget`: past the client's budget, because the queue could not
    /// take it; `predicted`: its predicted finish when it was first offered.
    Ran {
        /// The run's outcome.
        ran: R,
        /// The finish predicted when the job was first offered to the pool.
        predicted: Duration,
        /// It ran past the budget because the queue could not take it.
        over_budget: bool,
    },
    /// It was stored as a job.
    Stored {
        /// The stored job (its id).
        stored: S,
        /// The finish the pool predicted for it, which did not fit the budget.
        predicted: Duration,
    },
}

/// The pool and the queue of one request, as [`decide`] tries them.
pub trait Places {
    /// A finished run in the pool.
    type Ran;
    /// A stored job.
    type Stored;
    /// A failure that ends the request.
    type Error;

    /// Runs the job in the pool if it is predicted to finish within `budget`.
    fn pool_within(
        &self,
        budget: Budget,
    ) -> impl Future<Output = Result<PoolTry<Self::Ran>, Self::Error>> + Send;

    /// Stores the job if there is room now.
    fn store_now(
        &self,
    ) -> impl Future<Output = Result<Self::Stored, StoreRefusal<Self::Error>>> + Send;

    /// Runs the job in the pool if it can finish by its deadline. `Ok(Err(retry_after))`: the
    /// pool would not, and predicts room after that long.
    fn pool_by_deadline(
        &self,
    ) -> impl Future<Output = Result<Result<Self::Ran, Duration>, Self::Error>> + Send;

    /// Nothing took the job: the queue's last word, given why it refused at first (never
    /// [`StoreRefusal::Failed`]) and when the pool predicts room. Wait for room in the backlog,
    /// or refuse.
    fn store_last(
        &self,
        refused: StoreRefusal<Self::Error>,
        pool_retry_after: Duration,
    ) -> impl Future<Output = Result<Self::Stored, Self::Error>> + Send;
}

/// Sends a job where it answers best (see the module's steps).
///
/// # Errors
/// A place's failure that ends the request (a run that failed, a store that is down when the
/// pool cannot take the job either, the queue's refusal).
pub async fn decide<P: Places + Sync>(
    places: &P,
    budget: Budget,
) -> Result<Decision<P::Ran, P::Stored>, P::Error> {
    let predicted = match places.pool_within(budget).await? {
        PoolTry::Ran(ran, predicted) => {
            return Ok(Decision::Ran {
                ran,
                predicted,
                over_budget: false,
            });
        }
        PoolTry::Late(predicted) => predicted,
    };
    let refused = match places.store_now().await {
        Ok(stored) => return Ok(Decision::Stored { stored, predicted }),
        Err(StoreRefusal::Failed(e)) => return Err(e),
        Err(refused) => refused,
    };
    let retry_after = match places.pool_by_deadline().await? {
        Ok(ran) => {
            return Ok(Decision::Ran {
                ran,
                predicted,
                over_budget: true,
            });
        }
        Err(retry_after) => retry_after,
    };
    let stored = places.store_last(refused, retry_after).await?;
    Ok(Decision::Stored { stored, predicted })
}
