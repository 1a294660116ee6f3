//! Online backup and restore (API.md "Operations"): `POST /admin/backup`
//! and `varcade backup` give one consistent moment of the whole database
//! while ingest goes on; `varcade restore` rebuilds a data directory from
//! it; the restored service has every event acknowledged before the backup
//! began, and its consumers go on from their cursors without applying
//! anything twice.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Players of the load: game_over events rotate over these pairs.
const PAIRS: u64 = 20;

/// Runs `varcade` with `args`; returns the exit code and stderr.
fn varcade(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_varcade"));
    cmd.args(args).env("VARCADE_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run varcade");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A client reporting frames of 10 `game_over` events one after another,
/// recording the highest acknowledged id, until `stop`.
async fn report_until(server_ws: Ws, acked: Arc<AtomicU64>, stop: Arc<AtomicBool>, c: u64) {
    let mut ws = server_ws;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) && n < 20_000 {
        let frame: Vec<Value> = (0..10)
            .map(|i| {
                let pair = (c * 7 + n + i) % PAIRS;
                json!({"product_id": "exrps", "game_id": format!("g{c}-{n}"),
                       "type": "game_over", "winner_id": format!("w{pair}"),
                       "loser_id": format!("l{pair}")})
            })
            .collect();
        ws_send(&mut ws, &Value::Array(frame).to_string()).await;
        let ack = ws_recv(&mut ws).await;
        let id = ack["ack"].as_u64().unwrap_or_else(|| panic!("{ack}"));
        acked.fetch_max(id, Ordering::SeqCst);
        n += 1;
    }
}

/// The sum of every score on the exrps board.
async fn board_total(server: &Server) -> i64 {
    let (status, board) = server.get("/leaderboards/exrps?offset=0&count=100").await;
    assert_eq!(status, 200, "{board}");
    board
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["score"].as_i64().unwrap())
        .sum()
}

async fn caught_up(server: &Server) -> bool {
    let status = server.status().await;
    status["consumers"]["stats"]["lag"] == 0 && status["consumers"]["matchmaker"]["lag"] == 0
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_under_ingest_load_restores_every_acknowledged_event_applied_once() {
    if common::sled_only("online backup and restore") {
        return;
    }
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let server = Server::start(&options).await;
    let (status, created) = server.create("exrps", "1").await;
    assert_eq!(status, 200, "{created}");

    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for c in 0..4 {
        let ws = server.ws("exrps-secret").await;
        load.push(tokio::spawn(report_until(
            ws,
            acked.clone(),
            stop.clone(),
            c,
        )));
    }
    wait_until(
        Duration::from_secs(10),
        "some load acknowledged",
        || async { acked.load(Ordering::SeqCst) > 2_000 },
    )
    .await;

    let acked_before = acked.load(Ordering::SeqCst);
    let dir = TempDir::new();
    let file = dir.0.join("varcade.backup");
    let base = server.base.clone();
    let file_arg = file.to_str().unwrap().to_string();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        varcade(
            &["backup", "--url", &base, "--to", &file_arg],
            &[("VARCADE_ADMIN_KEY", ADMIN)],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("records"), "{stdout}");
    let acked_after_backup = acked.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(
        acked.load(Ordering::SeqCst) > acked_before,
        "ingest went on during the backup"
    );
    let original_events = server.events().await;

    let restored_dir = TempDir::new();
    let db = restored_dir.0.join("db");
    let (code, stdout, stderr) = varcade(
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            db.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("restored"), "{stdout}");

    let restored = Server::start_in(&options, restored_dir).await;
    let events = restored.events().await;
    let last = events.last().unwrap()["id"].as_u64().unwrap();
    assert!(
        last >= acked_before,
        "every event acknowledged before the backup began is there ({last} < {acked_before})"
    );
    assert!(
        last <= acked_after_backup.max(acked.load(Ordering::SeqCst)),
        "nothing unacknowledged"
    );
    assert_eq!(
        events[..],
        original_events[..events.len()],
        "the restored log is a prefix of the original, event for event"
    );

    wait_until(
        Duration::from_secs(20),
        "restored consumers caught up",
        || async { caught_up(&restored).await },
    )
    .await;
    let game_overs = events
        .iter()
        .filter(|e| e["event"]["type"] == "game_over")
        .count() as i64;
    assert_eq!(
        board_total(&restored).await,
        game_overs,
        "each game_over of the restored log counted exactly once"
    );
    let stats = restored.get("/stats/exrps/w0").await.1;
    let wins: i64 = events
        .iter()
        .filter(|e| e["event"]["winner_id"] == "w0")
        .count() as i64;
    assert_eq!(stats["wins"], json!(wins), "{stats}");
    let listed = restored.open_games("exrps").await;
    assert!(
        listed.is_empty(),
        "the created game is in the backup, unlisted"
    );
    let (s, b) = restored
        .join("exrps", created["game_id"].as_str().unwrap(), "2")
        .await;
    assert_error(s, &b, 409, "game_not_joinable");
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_refuse_what_they_cannot_do_safely() {
    if common::sled_only("online backup and restore") {
        return;
    }
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let server = Server::start(&options).await;
    let (status, body) = server.post("/admin/backup", None, "").await;
    assert_error(status, &body, 401, "unauthorized");
    let dir = TempDir::new();
    let file = dir.0.join("b.backup");
    let file_arg = file.to_str().unwrap().to_string();
    let base = server.base.clone();
    let (code, _, stderr) = tokio::task::spawn_blocking(move || {
        varcade(
            &["backup", "--url", &base, "--to", &file_arg],
            &[("VARCADE_ADMIN_KEY", "wrong")],
        )
    })
    .await
    .unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!file.exists(), "nothing written on a refusal");

    let (status, bytes) = {
        let r = server
            .http
            .post(server.url("/admin/backup"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap())
    };
    assert_eq!(status, 200);
    std::fs::write(&file, &bytes).unwrap();

    // A non-empty target is refused and left alone.
    let occupied = dir.0.join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("keep.txt"), "mine").unwrap();
    let (code, _, stderr) = varcade(
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            occupied.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("not empty"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(occupied.join("keep.txt")).unwrap(),
        "mine"
    );

    // A truncated or foreign file is refused before anything is created.
    let truncated = dir.0.join("truncated.backup");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let foreign = dir.0.join("foreign.backup");
    std::fs::write(&foreign, b"hello, not a backup").unwrap();
    for (bad, words) in [
        (&truncated, "damaged or incomplete"),
        (&foreign, "not a varcade backup"),
    ] {
        let target = dir.0.join("new");
        let (code, _, stderr) = varcade(
            &[
                "restore",
                "--from",
                bad.to_str().unwrap(),
                "--data-dir",
                target.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains(words), "{stderr}");
        assert!(!target.exists(), "no directory left behind");
    }

    // The good file restores; the service's own data directory has no
    // leftover backup file.
    let target = dir.0.join("good");
    let (code, _, stderr) = varcade(
        &[
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--data-dir",
            target.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let leftovers: Vec<_> = std::fs::read_dir(server.dir.0.join("db"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("backup-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
