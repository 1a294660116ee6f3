//! Retention: events every consumer has applied are dropped once they are
//! older than the retention window, so the log does not grow forever.

use std::sync::Arc;
use std::time::Duration;

use super::App;
use super::ports::ConsumerName;
use crate::infra::clock::now_us;
use crate::infra::shutdown::Shutdown;

/// Runs retention until shutdown.
pub async fn run(app: Arc<App>, mut shutdown: Shutdown) {
    let window = app.retention;
    let period = (window / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.recv() => return,
        }
        let mut upto = u64::MAX;
        for consumer in ConsumerName::ALL {
            match app.storage.cursor(consumer).await {
                Ok(cursor) => upto = upto.min(cursor),
                Err(e) => {
                    tracing::warn!(error = %e, "retention cannot read a cursor");
                    upto = 0;
                }
            }
        }
        let before_ms = (now_us() / 1000).saturating_sub(window.as_millis() as u64);
        loop {
            match app.storage.drop_before(upto, before_ms).await {
                Ok(0) => break,
                Ok(n) => tracing::info!(events = n, upto, "retention dropped old events"),
                Err(e) => {
                    tracing::warn!(error = %e, "retention failed");
                    break;
                }
            }
            if shutdown.is_fired() {
                return;
            }
        }
    }
}
