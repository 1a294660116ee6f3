//! The storage suite against PostgreSQL, each run in a database of its own
//! (created on the local server, dropped afterwards), and what only this
//! backend has: migrations recorded, a newer layout refused, leases.

use std::sync::Arc;
use std::time::Duration;

use super::*;

/// The server the tests use: `VARCADE_TEST_POSTGRES` or the local one.
fn server_url() -> String {
    std::env::var("VARCADE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// A database created for one test and dropped when this is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn create() -> TestDb {
        let name = format!("varcade_test_{}", uuid::Uuid::new_v4().simple());
        let (client, connection) =
            tokio_postgres::connect(&format!("{}/postgres", server_url()), NoTls)
                .await
                .expect("PostgreSQL on 127.0.0.1:5432 (see the README's Set-up)");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        TestDb {
            url: format!("{}/{name}", server_url()),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let url = format!("{}/postgres", server_url());
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((client, connection)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_storage_suite() {
    let db = TestDb::create().await;
    let storage = PgStorage::open(&db.url, 8, 1024).await.unwrap();
    crate::storage::suite::run(storage.clone()).await;
    storage.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn migrations_are_recorded_and_newer_layouts_refused() {
    let db = TestDb::create().await;
    let storage = PgStorage::open(&db.url, 2, 16).await.unwrap();
    assert_eq!(storage.status().layout_version, LAYOUT_VERSION);
    storage.close().await.unwrap();
    // A second node opening the same database applies nothing again.
    let again = PgStorage::open(&db.url, 2, 16).await.unwrap();
    again.close().await.unwrap();
    let (client, connection) = tokio_postgres::connect(&db.url, NoTls).await.unwrap();
    tokio::spawn(connection);
    let rows = client
        .query("SELECT version, name FROM varcade_migrations", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(1), "initial");
    client
        .execute(
            "INSERT INTO varcade_migrations (version, name) VALUES (99, 'future')",
            &[],
        )
        .await
        .unwrap();
    match PgStorage::open(&db.url, 2, 16).await {
        Err(PgOpenError::NewerLayout { found: 99, .. }) => {}
        other => panic!("expected NewerLayout, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_is_held_by_one_holder_until_it_expires() {
    let db = TestDb::create().await;
    let a = PgStorage::open(&db.url, 2, 16).await.unwrap();
    let b = PgStorage::open(&db.url, 2, 16).await.unwrap();
    let ttl = Duration::from_millis(300);
    assert!(a.hold_lease("stats", "a", ttl).await.unwrap());
    assert!(!b.hold_lease("stats", "b", ttl).await.unwrap());
    assert!(a.hold_lease("stats", "a", ttl).await.unwrap(), "renewed");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(b.hold_lease("stats", "b", ttl).await.unwrap(), "taken over");
    assert!(!a.hold_lease("stats", "a", ttl).await.unwrap());
    let _: Arc<PgStorage> = a;
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_server_or_bad_url_is_a_clear_error() {
    match PgStorage::open("postgres://nobody@127.0.0.1:1/none", 1, 1).await {
        Err(e @ PgOpenError::Unreachable { .. }) => {
            assert!(e.to_string().contains("127.0.0.1:1/none"), "{e}")
        }
        other => panic!("expected Unreachable, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        PgStorage::open("postgres://127.0.0.1:port/x", 1, 1).await,
        Err(PgOpenError::Url(_))
    ));
}
