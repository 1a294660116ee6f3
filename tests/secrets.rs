//! Secure defaults and clear messages (API.md "Start", "Auth"): secrets
//! from the environment or files, sample secrets refused on an address
//! other than loopback (checked before anything is bound, so these tests
//! never listen beyond 127.0.0.1), flag and environment errors blamed on
//! the flag or variable, a second process on a data directory, and token
//! problems in plain words.

mod common;

use std::process::{Command, Output};

use common::*;
use serde_json::json;

fn serve(config: &std::path::Path, args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_varcade"));
    cmd.args(["serve", "--config"])
        .arg(config)
        .args(args)
        .env_remove("VARCADE_BIND")
        .env_remove("VARCADE_JWT_SECRET")
        .env_remove("VARCADE_ADMIN_KEY")
        .env("VARCADE_LOG", "warn");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("serve did not exit within 5 s (it should have refused to start)");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

fn refused(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("listening on"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

fn config_file(options: &Options, dir: &TempDir, extra_top: &str) -> std::path::PathBuf {
    let path = dir.0.join("varcade.toml");
    let text = format!("{extra_top}\n{}", options.toml(&dir.0.join("db")));
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn sample_secrets_are_refused_off_loopback_and_named() {
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let dir = TempDir::new();
    // The harness config has jwt_secret "test-secret", admin key
    // "admin-key", ingest keys "exrps-secret" (a sample) and "chess-secret".
    let config = config_file(&options, &dir, "");
    let off_loopback = ["--bind", "0.0.0.0:0"];

    let stderr = refused(&serve(&config, &off_loopback, &[]));
    assert!(stderr.contains("games[0].ingest_key"), "{stderr}");
    assert!(stderr.contains("not loopback"), "{stderr}");

    let stderr = refused(&serve(
        &config,
        &off_loopback,
        &[
            ("VARCADE_JWT_SECRET", "change-me"),
            ("VARCADE_INGEST_KEY_EXRPS", "x9"),
        ],
    ));
    assert!(stderr.contains("VARCADE_JWT_SECRET"), "{stderr}");
    assert!(
        !stderr.contains("change-me"),
        "a secret is never printed: {stderr}"
    );

    let stderr = refused(&serve(
        &config,
        &off_loopback,
        &[
            ("VARCADE_ADMIN_KEY", "change-me-too"),
            ("VARCADE_INGEST_KEY_EXRPS", "x9"),
        ],
    ));
    assert!(stderr.contains("VARCADE_ADMIN_KEY"), "{stderr}");

    // The Redis-protocol listener counts too.
    let stderr = refused(&serve(&config, &[], &[("VARCADE_RESP_BIND", "0.0.0.0:0")]));
    assert!(stderr.contains("ingest_key"), "{stderr}");
}

#[tokio::test]
async fn secrets_come_from_the_environment_and_from_files() {
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let dir = TempDir::new();
    let jwt_file = dir.0.join("jwt.secret");
    std::fs::write(&jwt_file, "from-a-file\n").unwrap();
    let config = dir.0.join("varcade.toml");
    let text = options.toml(&dir.0.join("db")).replace(
        "jwt_secret = \"test-secret\"",
        &format!("jwt_secret_file = \"{}\"", jwt_file.display()),
    );
    std::fs::write(&config, text).unwrap();
    let (mut child, addr) = spawn(
        &[
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ],
        &[
            ("VARCADE_ADMIN_KEY", "env-admin"),
            ("VARCADE_INGEST_KEY_EXRPS", "env-ingest"),
        ],
    );
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");

    let token = mint_token("from-a-file", "17", "alice", 60);
    let r = http
        .post(format!("{base}/game_lobby/exrps/create_game"))
        .header("authorization", format!("Token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the file's jwt_secret signs players");
    let r = http
        .get(format!("{base}/admin/status"))
        .bearer_auth("env-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "VARCADE_ADMIN_KEY replaces the config's");
    let r = http
        .get(format!("{base}/admin/status"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let event = json!({"product_id": "exrps", "game_id": "g", "type": "tick"});
    for (key, want) in [("env-ingest", 200), ("exrps-secret", 401)] {
        let r = http
            .post(format!("{base}/ingest"))
            .bearer_auth(key)
            .body(event.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "ingest with {key}");
    }
    let _ = child.kill();
    let _ = child.wait();

    std::fs::remove_file(&jwt_file).unwrap();
    let stderr = refused(&serve(&config, &[], &[]));
    assert!(stderr.contains("jwt_secret_file"), "{stderr}");
}

#[tokio::test]
async fn bad_flags_and_variables_are_blamed_on_themselves() {
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let dir = TempDir::new();
    let config = config_file(&options, &dir, "");
    let path = config.display().to_string();

    let stderr = refused(&serve(&config, &["--bind", "127.0.0.1:99999"], &[]));
    assert!(stderr.contains("--bind"), "{stderr}");
    assert!(!stderr.contains(&path), "not the config file: {stderr}");

    let stderr = refused(&serve(&config, &[], &[("VARCADE_BIND", "nowhere")]));
    assert!(stderr.contains("VARCADE_BIND"), "{stderr}");
    assert!(!stderr.contains(&path), "{stderr}");

    let stderr = refused(&serve(&config, &[], &[("VARCADE_RESP_BIND", "x:y")]));
    assert!(stderr.contains("VARCADE_RESP_BIND"), "{stderr}");
}

#[tokio::test]
async fn a_second_process_on_the_data_directory_is_told_why() {
    if common::sled_only("the data directory's lock") {
        return;
    }
    let fake = FakeGameServer::start().await;
    let options = Options::new(&fake);
    let server = Server::start(&options).await;
    let stderr = refused(&serve(&server.config, &["--bind", "127.0.0.1:0"], &[]));
    assert!(
        stderr.contains("in use by another varcade process"),
        "{stderr}"
    );
    assert!(!stderr.contains("Os {"), "no debug output: {stderr}");
    assert_eq!(server.readyz().await, 200, "the first one is unaffected");
}

#[tokio::test]
async fn token_problems_are_told_in_plain_words() {
    let fake = FakeGameServer::start().await;
    let server = Server::start(&Options::new(&fake)).await;
    let expired = {
        use std::time::{SystemTime, UNIX_EPOCH};
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        sign(&json!({"user_id": "1", "username": "a", "exp": now - 3600}))
    };
    let cases = [
        (
            format!("Token {}", mint_token("other", "1", "a", 60)),
            "signature",
        ),
        (format!("Token {expired}"), "expired"),
        ("Token not-a-jwt".to_string(), "not a valid JWT"),
        (format!("Token {}", sign(&json!({"name": "x"}))), "user_id"),
    ];
    for (auth, words) in cases {
        let (status, body) = server
            .post("/game_lobby/exrps/create_game", Some(&auth), "")
            .await;
        assert_error(status, &body, 401, "unauthorized");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(words), "{auth}: {message}");
        for internal in ["InvalidToken", "ExpiredSignature", "JSON error"] {
            assert!(!message.contains(internal), "{message}");
        }
    }
}

/// An HS256 JWT of `claims`, signed with the test secret.
fn sign(claims: &serde_json::Value) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}
