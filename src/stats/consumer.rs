//! The stats consumer.

use crate::store::Store;
use crate::store::games::decode_cursor;

/// The consumer's name (cursor key, metrics label).
pub const NAME: &str = "stats";

/// The stats consumer's cursor.
pub fn cursor(store: &Store) -> u64 {
    decode_cursor(store.stats.get(b"c").ok().flatten())
}

/// Runs the stats consumer until shutdown.
pub async fn spawn(_app: crate::server::AppState, mut shutdown: crate::shutdown::Shutdown) {
    shutdown.recv().await;
}
