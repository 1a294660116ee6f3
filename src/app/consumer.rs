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
/// How long a consumer's lease lasts; it is renewed every batch.
const LEASE: Duration = Duration::from_secs(10);

/// Something that applies the event log.
#[async_trait]
pub trait Consumer: Send + 'static {
    /// Which consumer this is.
    fn name(&self) -> ConsumerName;
    /// Applies `events` (ascending, right after the cursor) and moves the
    /// cursor to the last one, atomically.
    async fn apply(&mut self, events: &[LoggedEvent]) -> Result<(), StorageError>;
}

/// Runs a consumer until shutdown.
pub async fn run<C: Consumer>(app: Arc<App>, mut consumer: C, mut shutdown: Shutdown) {
    let name = consumer.name();
    let holder = format!("pid-{}", std::process::id());
    let mut durable = app.storage.durable();
    let mut backoff = FIRST_BACKOFF;
    let mut cursor = None;
    while !shutdown.is_fired() {
        let step = step(&app, &mut consumer, &mut cursor, &holder).await;
        match step {
            Ok(true) => {
                backoff = FIRST_BACKOFF;
                app.health.update(name, |h| h.failing = None);
            }
            Ok(false) => {
                app.health.update(name, |h| h.failing = None);
                tokio::select! {
                    changed = durable.changed() => if changed.is_err() { return },
                    _ = shutdown.recv() => return,
                }
            }
            Err(e) => {
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

/// Applies the next batch; `Ok(false)` when there was nothing to apply.
async fn step<C: Consumer>(
    app: &App,
    consumer: &mut C,
    cursor: &mut Option<u64>,
    holder: &str,
) -> Result<bool, StorageError> {
    let name = consumer.name();
    if !app
        .storage
        .hold_lease(name.as_str(), holder, LEASE)
        .await?
    {
        return Ok(false);
    }
    let at = match *cursor {
        Some(at) => at,
        None => {
            let at = app.storage.cursor(name).await?;
            *cursor = Some(at);
            at
        }
    };
    let end = *app.storage.durable().borrow();
    metrics::consumer_position(name.as_str(), at, end);
    if at >= end {
        return Ok(false);
    }
    let events = app.storage.read(at, BATCH).await?;
    let Some(last) = events.last().map(|e| e.id) else {
        // Retention dropped the events after the cursor: nothing to apply.
        *cursor = Some(end);
        return Ok(true);
    };
    consumer.apply(&events).await?;
    *cursor = Some(last);
    metrics::consumer_position(name.as_str(), last, end);
    Ok(true)
}
