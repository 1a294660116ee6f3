//! The consumer driver: follows the durable end of the log and hands each
//! consumer batches of events.
//!
//! A [`Consumer`] applies a batch and advances its cursor in one sled
//! transaction, so after a crash it resumes right after the last batch it
//! committed: every event is applied exactly once. Batches run on the
//! blocking pool, never on the runtime's threads.

use std::sync::Arc;
use std::time::Duration;

use super::log::{self, LoggedEvent};
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};

/// Most events per batch (one transaction).
pub const BATCH: usize = 512;

/// Something that applies the event log.
pub trait Consumer: Send + 'static {
    /// The name in logs and metrics.
    fn name(&self) -> &'static str;
    /// The id of the last event applied (0 for none).
    fn cursor(&self) -> Result<u64, StoreError>;
    /// Applies `events` (ascending, starting right after the cursor) and
    /// moves the cursor to the last one, atomically.
    fn apply(&mut self, events: &[LoggedEvent]) -> Result<(), StoreError>;
}

/// Runs a consumer until shutdown.
pub async fn run<C: Consumer>(store: Arc<Store>, mut consumer: C, mut shutdown: Shutdown) {
    let name = consumer.name();
    let mut durable = store.watch_durable();
    let mut cursor = match consumer.cursor() {
        Ok(cursor) => cursor,
        Err(e) => {
            tracing::error!(consumer = name, error = %e, "cannot read the cursor; consumer stopped");
            return;
        }
    };
    loop {
        let end = *durable.borrow_and_update();
        crate::metrics::consumer_position(name, cursor, end);
        if cursor >= end {
            tokio::select! {
                changed = durable.changed() => if changed.is_err() { return },
                _ = shutdown.recv() => return,
            }
            continue;
        }
        let store2 = store.clone();
        let step = tokio::task::spawn_blocking(move || {
            let result = apply_next(&store2, &mut consumer, cursor, end);
            (consumer, result)
        })
        .await;
        match step {
            Ok((back, Ok(last))) => {
                consumer = back;
                cursor = last;
            }
            Ok((back, Err(e))) => {
                consumer = back;
                tracing::error!(consumer = name, error = %e, "batch failed; retrying in 1 s");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.recv() => return,
                }
            }
            Err(e) => {
                tracing::error!(consumer = name, error = %e, "consumer task panicked; stopped");
                return;
            }
        }
    }
}

/// Applies the next batch after `cursor` (up to `end`); returns the new cursor.
fn apply_next<C: Consumer>(
    store: &Store,
    consumer: &mut C,
    cursor: u64,
    end: u64,
) -> Result<u64, StoreError> {
    let mut events = log::read(&store.log, cursor, BATCH)?;
    events.retain(|e| e.id <= end);
    match events.last().map(|e| e.id) {
        Some(last) => {
            consumer.apply(&events)?;
            Ok(last)
        }
        // Retention dropped the events after the cursor: nothing to apply.
        None => Ok(end),
    }
}
