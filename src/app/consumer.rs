//! The consumer driver: follows the durable end of the log and hands each
//! consumer batches of events, under the consumer's lease.
//!
//! A [`Consumer`] turns a batch into one atomic write of its effects and
//! its cursor through a port, so after a crash it resumes right after the
//! last batch it committed: every event is applied exactly once. A failing
//! batch is retried with exponential backoff and the failure shows in the
//! app's [`super::Health`] (so in `/readyz` and `/admin/status`). Shutdown is
//! seen between batches: a stop never waits for the backlog.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::App;
use super::ports::{ConsumerName, LoggedEvent, StorageError};
use crate::infra::metrics;
use crate::infra::shutdown::Shutdown;

/// Most events per batch (one atomic write).
pub const BATCH: usize = 512;
/// First retry delay after a failed batch; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Something that applies the event log.
#[async_trait]
pub trait Consumer: Send + Sync + 'static {
    /// What a batch of events becomes for the backend.
    type Batch: Send + 'static;
    /// Which consumer this is.
    fn name(&self) -> ConsumerName;
    /// Reads `events` (ascending, right after the cursor) into a batch
    /// that moves the cursor to the last one (CPU only, no I/O).
    fn prepare(&self, events: &[LoggedEvent]) -> Self::Batch;
    /// Applies a prepared batch and moves the cursor, atomically.
    async fn commit(&self, batch: Self::Batch) -> Result<(), StorageError>;
}

/// A batch read and prepared: the id of its last event and the batch.
type Prepared<C> = (u64, <C as Consumer>::Batch);

/// Runs a consumer until shutdown. While the backend applies one batch, the
/// next is read and prepared, so the two overlap.
pub async fn run<C: Consumer>(app: Arc<App>, consumer: C, mut shutdown: Shutdown) {
    let name = consumer.name();
    let mut durable = app.storage.durable();
    let mut backoff = FIRST_BACKOFF;
    let mut cursor = None;
    let mut ahead: Option<Prepared<C>> = None;
    while !shutdown.is_fired() {
        match step(&app, &consumer, &mut cursor, &mut ahead).await {
            Ok(Step::Applied) => {
                backoff = FIRST_BACKOFF;
                app.health.update(name, |h| h.failing = None);
            }
            Ok(Step::CaughtUp) => {
                backoff = FIRST_BACKOFF;
                app.health.update(name, |h| h.failing = None);
                // Wake for new events, and now and then regardless: the
                // lease must be renewed before it runs out.
                tokio::select! {
                    changed = durable.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(app.lease / 3) => {}
                    _ = shutdown.recv() => return,
                }
            }
            Ok(Step::NotHolder) => {
                // Another node runs this consumer; try again before its
                // lease could have run out.
                tokio::select! {
                    _ = tokio::time::sleep(app.lease / 3) => {}
                    _ = shutdown.recv() => return,
                }
            }
            Err(e) => {
                ahead = None;
                // Read the cursor again: another node may have moved it.
                cursor = None;
                metrics::consumer_failure(name.as_str());
                app.health.update(name, |h| {
                    h.failing = Some(e.to_string());
                    h.failures += 1;
                });
                tracing::error!(consumer = name.as_str(), error = %e, retry_ms = backoff.as_millis() as u64, "batch failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.recv() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Reads and prepares the batch after `at`; `None` when there is none.
async fn fetch<C: Consumer>(
    app: &App,
    consumer: &C,
    at: u64,
) -> Result<Option<Prepared<C>>, StorageError> {
    let end = *app.storage.durable().borrow();
    if at >= end {
        return Ok(None);
    }
    let events = app.storage.read(at, BATCH).await?;
    Ok(events
        .last()
        .map(|last| (last.id, consumer.prepare(&events))))
}

/// What one step did.
enum Step {
    Applied,
    /// Nothing to apply.
    CaughtUp,
    /// Another node holds the consumer's lease.
    NotHolder,
}

/// Applies the next batch.
async fn step<C: Consumer>(
    app: &App,
    consumer: &C,
    cursor: &mut Option<u64>,
    ahead: &mut Option<Prepared<C>>,
) -> Result<Step, StorageError> {
    let name = consumer.name();
    if !app
        .storage
        .hold_lease(name.as_str(), &app.node, app.lease)
        .await?
    {
        // Whoever holds it moves the cursor: read it again when it is ours.
        *ahead = None;
        *cursor = None;
        return Ok(Step::NotHolder);
    }
    let at = match *cursor {
        Some(at) => at,
        None => {
            let at = app.storage.cursor(name).await?;
            *cursor = Some(at);
            at
        }
    };
    let next = match ahead.take() {
        Some(prepared) => Some(prepared),
        None => fetch(app, consumer, at).await?,
    };
    let Some((last, batch)) = next else {
        metrics::consumer_position(name.as_str(), at, *app.storage.durable().borrow());
        return Ok(Step::CaughtUp);
    };
    let (committed, following) = tokio::join!(consumer.commit(batch), fetch(app, consumer, last));
    committed?;
    // Only now, after the commit, is `last` the consumer's position.
    metrics::consumer_position(name.as_str(), last, *app.storage.durable().borrow());
    *cursor = Some(last);
    *ahead = following.ok().flatten();
    Ok(Step::Applied)
}
