//! API.md "Start": a SIGINT/SIGTERM at any moment after start, including
//! right after the `listening on` line, stops the service gracefully
//! (exit 0, database flushed), never kills it by the signal.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Starts `varcade serve` and sends SIGTERM as soon as its `listening on`
/// line is read: a shell started beforehand waits on its stdin and runs
/// its built-in `kill` the moment a line arrives, so no process start
/// sits between the line and the signal. Returns the exit code and how
/// long the signal took to send after the line.
fn term_right_after_listening(config: &std::path::Path) -> (Option<i32>, Duration) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_varcade"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .args(["--bind", "127.0.0.1:0"])
        .env("VARCADE_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start varcade");
    let pid = child.id().to_string();
    let mut killer = Command::new("sh")
        .args(["-c", "read line; kill -TERM \"$1\"", "sh", &pid])
        .stdin(Stdio::piped())
        .spawn()
        .expect("start sh");
    let mut killer_in = killer.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let seen = loop {
        let line = lines
            .next()
            .expect("varcade exited before `listening on`")
            .unwrap();
        if line.contains("listening on") {
            killer_in.write_all(b"go\n").unwrap();
            killer_in.flush().unwrap();
            break Instant::now();
        }
    };
    killer.wait().unwrap();
    let sent = seen.elapsed();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status.code(), sent);
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn sigterm_right_after_listening_exits_cleanly_100_times() {
    let fake_url = "http://127.0.0.1:9";
    let dir = TempDir::new();
    let config = dir.0.join("varcade.toml");
    let options = Options {
        game_server_url: fake_url.into(),
        timeout_ms: 1000,
        expiry: (600, 600, 600, 600, 600),
        curation_interval_ms: 200,
        extra: String::new(),
        resp: true,
    };
    std::fs::write(&config, options.toml(&dir.0.join("db"))).unwrap();
    let mut slowest = Duration::ZERO;
    for run in 0..100 {
        let (code, sent) = term_right_after_listening(&config);
        slowest = slowest.max(sent);
        assert_eq!(
            code,
            Some(0),
            "run {run}: not a clean exit (signal death has no code)"
        );
    }
    assert!(
        slowest < Duration::from_millis(50),
        "the signal lagged the line by {slowest:?}"
    );
}
