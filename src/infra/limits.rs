//! `max_connections` (API.md "Limits and overload"): one cap shared by
//! every listener (HTTP, WebSocket and RESP together). Each accepted
//! connection holds a permit until it closes; one beyond the cap is closed
//! at once.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::metrics;

/// The open-connection cap, cloned into each listener.
#[derive(Clone)]
pub struct ConnectionCap(Arc<Semaphore>);

impl ConnectionCap {
    /// A cap of `max` open connections.
    pub fn new(max: usize) -> Self {
        ConnectionCap(Arc::new(Semaphore::new(max)))
    }

    /// A permit for one more connection, or `None` (counted) at the cap.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = self.0.clone().try_acquire_owned().ok();
        if permit.is_none() {
            metrics::connection_refused();
        }
        permit
    }
}
