//! The storage suite against sled, and what only sled has: migrations and
//! the refusal of a newer layout.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_storage_suite() {
    let storage = SledStorage::temporary().unwrap();
    crate::storage::suite::run(storage.clone()).await;
    storage.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_are_recorded_and_newer_layouts_refused() {
    let dir = std::env::temp_dir().join(format!("varcade-migrate-{}", uuid::Uuid::new_v4()));
    {
        let storage = SledStorage::open(&dir, 16).unwrap();
        assert_eq!(storage.status().layout_version, 2);
        storage.close().await.unwrap();
    }
    {
        let db = ::sled::open(&dir).unwrap();
        let meta = db.open_tree("meta").unwrap();
        assert!(meta.get("migration/0002").unwrap().is_some());
        meta.insert(LAYOUT_KEY, &99u32.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    match SledStorage::open(&dir, 16) {
        Err(OpenError::NewerLayout { found: 99, .. }) => {}
        other => panic!("expected NewerLayout, got {:?}", other.map(|_| ())),
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// Stats are written back: a stop with a checkpoint in progress and more
/// records applied since must still leave every record and the cursor on
/// disk.
#[tokio::test(flavor = "multi_thread")]
async fn close_checkpoints_every_unsaved_stats_record() {
    use std::collections::BTreeMap;

    use crate::app::ports::{StatsBatch, StatsChange};
    use crate::domain::scoring::{Scoring, Wins};

    let dir = std::env::temp_dir().join(format!("varcade-close-{}", uuid::Uuid::new_v4()));
    let mut rules: BTreeMap<String, Box<dyn Scoring>> = BTreeMap::new();
    rules.insert("p".into(), Box::new(Wins));
    let scoring = Arc::new(rules);
    let batch = |from: usize, to: usize, cursor: u64| StatsBatch {
        changes: (from..to)
            .map(|i| StatsChange::GameOver {
                product: "p".into(),
                winner: format!("w{i}"),
                loser: format!("l{i}"),
            })
            .collect(),
        scoring: scoring.clone(),
        cursor,
    };
    {
        let storage = SledStorage::open(&dir, 16).unwrap();
        // Enough players to start a checkpoint that takes many groups...
        storage.apply_stats(batch(0, 40_000, 1)).await.unwrap();
        // ...and more applied while it is in progress.
        storage.apply_stats(batch(40_000, 40_100, 2)).await.unwrap();
        storage.close().await.unwrap();
    }
    let storage = SledStorage::open(&dir, 16).unwrap();
    assert_eq!(storage.cursor(ConsumerName::Stats).await.unwrap(), 2);
    for user in ["w0", "w39999", "w40099", "l40099"] {
        assert!(
            storage.rank("p", user).await.unwrap().is_some(),
            "{user} was saved"
        );
    }
    assert_eq!(storage.window("p", 0, 1).await.unwrap()[0].score, 1);
    storage.close().await.unwrap();
    drop(storage);
    let _ = std::fs::remove_dir_all(dir);
}
