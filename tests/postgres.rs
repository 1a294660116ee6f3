//! What only the PostgreSQL backend has (API.md "Storage and scale-out",
//! "Limits and overload"), against the real binary on a database of the
//! test's own, whatever `VARCADE_TEST_STORAGE` says: a database lost while
//! running makes writes answer 503 `storage_unavailable` and `/readyz` 503
//! until it is back, the service recovers by itself, and nothing
//! acknowledged is lost; a bad or unreachable `storage.url` at start is one
//! line and exit 2, also from `VARCADE_STORAGE_URL`.

mod common;

use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{FakeGameServer, Options, Server, TempDir, TestDb, assert_error, wait_until};
use serde_json::{Value, json};

/// A directory whose server uses a new database of its own.
fn postgres_dir() -> (TempDir, Arc<TestDb>) {
    let db = Arc::new(TestDb::create());
    let mut dir = TempDir::new();
    dir.1 = Some(db.clone());
    (dir, db)
}

/// Runs SQL on the test's database as the `postgres` user.
fn on_db(db: &TestDb, sql: &str) {
    let out = Command::new("psql")
        .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-d"])
        .arg(format!("{}/postgres", common::postgres_server()))
        .args(["-c", &sql.replace("{db}", &db.name)])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Cuts the service off its database: no new connections, and every
/// existing one terminated.
fn lose(db: &TestDb) {
    on_db(db, "ALTER DATABASE {db} ALLOW_CONNECTIONS false");
    on_db(
        db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{db}' AND pid <> pg_backend_pid()",
    );
}

fn restore(db: &TestDb) {
    on_db(db, "ALTER DATABASE {db} ALLOW_CONNECTIONS true");
}

fn game_over(n: u64) -> Value {
    json!({"product_id": "exrps", "game_id": format!("g{n}"), "type": "game_over",
           "winner_id": format!("w{}", n % 7), "loser_id": format!("l{}", n % 5)})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_database_answers_503_then_recovers_and_loses_nothing_acknowledged() {
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let (dir, db) = postgres_dir();
    let server = Arc::new(Server::start_in(&options, dir).await);

    // One writer ingests game_overs one at a time, noting what was acked.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (server, stop) = (server.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut acked, mut refused, mut n) = (Vec::new(), 0u64, 0u64);
            while !stop.load(Ordering::Relaxed) && n < 100_000 {
                n += 1;
                let (status, body) = server.ingest("exrps-secret", &game_over(n)).await;
                match status {
                    200 => acked.push(n),
                    503 => {
                        assert_eq!(body["error"], "storage_unavailable", "{body}");
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    other => panic!("ingest answered {other}: {body}"),
                }
            }
            (acked, refused)
        })
    };
    wait_until(Duration::from_secs(10), "some acked events", || async {
        server.status().await["last_event_id"].as_u64() > Some(200)
    })
    .await;

    lose(&db);
    wait_until(Duration::from_secs(5), "/readyz 503", || async {
        server.readyz().await == 503
    })
    .await;
    let (status, body) = server.create("exrps", "1").await;
    assert_error(status, &body, 503, "storage_unavailable");
    tokio::time::sleep(Duration::from_millis(500)).await;

    restore(&db);
    wait_until(Duration::from_secs(15), "/readyz 200 again", || async {
        server.readyz().await == 200
    })
    .await;
    let (status, body) = server.create("exrps", "1").await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, refused) = writer.await.unwrap();
    assert!(
        refused > 0,
        "no write was refused while the database was lost"
    );

    // Every acknowledged event is in the log, and the board counts each
    // logged game_over once.
    let logged: Vec<String> = server
        .events()
        .await
        .iter()
        .map(|e| {
            e["event"]["game_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let logged_set: std::collections::HashSet<&str> = logged.iter().map(String::as_str).collect();
    for n in &acked {
        assert!(
            logged_set.contains(format!("g{n}").as_str()),
            "acked g{n} lost"
        );
    }
    let total = logged.len() as i64;
    wait_until(
        Duration::from_secs(30),
        "the board to count every game",
        || async {
            let mut wins = 0;
            for w in 0..7 {
                let (_, stats) = server.get(&format!("/stats/exrps/w{w}")).await;
                wins += stats["wins"].as_i64().unwrap_or(0);
            }
            wins == total
        },
    )
    .await;
    eprintln!(
        "{} acked, {refused} refused while the database was lost, {total} logged",
        acked.len()
    );
}

/// Runs `varcade serve` expecting it to refuse to start.
fn refused(config: &std::path::Path, envs: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_varcade"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(["--bind", "127.0.0.1:0"])
        .env_remove("VARCADE_STORAGE_URL")
        .env("VARCADE_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out: Output = cmd.output().expect("run varcade");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("listening on"));
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[tokio::test]
async fn a_bad_or_unreachable_storage_url_is_one_line_and_exit_2() {
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let dir = TempDir::new();
    let config = |storage: &str| {
        let path = dir.0.join("varcade.toml");
        std::fs::write(&path, options.toml(&dir.0.join("db")) + storage).unwrap();
        path
    };
    let unreachable = config(
        "\n[storage]\nkind = \"postgres\"\nurl = \"postgres://varcade@127.0.0.1:1/arcade\"\n",
    );
    let stderr = refused(&unreachable, &[]);
    assert!(
        stderr.contains("cannot reach PostgreSQL at 127.0.0.1:1/arcade"),
        "{stderr}"
    );
    let bad = config("\n[storage]\nkind = \"postgres\"\nurl = \"mysql://x\"\n");
    assert!(refused(&bad, &[]).contains("storage.url"));
    let missing = config("\n[storage]\nkind = \"postgres\"\n");
    let stderr = refused(&missing, &[]);
    assert!(
        stderr.contains("storage.url") && stderr.contains("VARCADE_STORAGE_URL"),
        "{stderr}"
    );
    let stderr = refused(&missing, &[("VARCADE_STORAGE_URL", "http://db")]);
    assert!(
        stderr.contains("VARCADE_STORAGE_URL"),
        "blamed on the variable: {stderr}"
    );
    let stderr = refused(
        &missing,
        &[(
            "VARCADE_STORAGE_URL",
            "postgres://varcade:secret@127.0.0.1:1/arcade",
        )],
    );
    assert!(stderr.contains("cannot reach PostgreSQL"), "{stderr}");
    assert!(
        !stderr.contains("secret"),
        "the password is never printed: {stderr}"
    );
    let kind = config("\n[storage]\nkind = \"mongo\"\n");
    assert!(refused(&kind, &[]).contains("storage.kind"));

    // import-redis writes sled: it says so instead of writing elsewhere.
    let postgres =
        config("\n[storage]\nkind = \"postgres\"\nurl = \"postgres://x@127.0.0.1:1/y\"\n");
    let out = Command::new(env!("CARGO_BIN_EXE_varcade"))
        .args(["import-redis", "--from", "redis://127.0.0.1:1", "--config"])
        .arg(&postgres)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sled data directory"), "{stderr}");
    assert!(!dir.0.join("db").exists(), "nothing written");
}

#[tokio::test(flavor = "multi_thread")]
async fn varcade_storage_url_points_a_node_at_its_database() {
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let db = TestDb::create();
    let mut dir = TempDir::new();
    dir.1 = None;
    let path = dir.0.join("varcade.toml");
    std::fs::write(
        &path,
        options.toml(&dir.0.join("db")) + "\n[storage]\nkind = \"postgres\"\n",
    )
    .unwrap();
    let (mut child, addr) = common::spawn(
        &[
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ],
        &[("VARCADE_STORAGE_URL", &db.url)],
    );
    let http = reqwest::Client::new();
    let created: Value = http
        .post(format!("http://{addr}/game_lobby/exrps/create_game"))
        .header("Authorization", common::token("5"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let out = Command::new("psql")
        .args(["-qAt", "-d", &db.url, "-c", "SELECT game_id FROM games"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        created["game_id"].as_str().unwrap_or("(none)"),
        "the game is in the database VARCADE_STORAGE_URL named: {created}"
    );
    assert!(!dir.0.join("db").exists(), "no sled directory made");
}
