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
async fn the_import_suite() {
    let storage = SledStorage::temporary().unwrap();
    crate::storage::suite::run_import(storage.clone()).await;
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
        // sled lets go of its lock only once its last internal handle is
        // gone, which can be a moment after `close` returns.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let db = loop {
            match ::sled::open(&dir) {
                Ok(db) => break db,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => panic!("reopen: {e}"),
            }
        };
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
