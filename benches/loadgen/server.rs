//! Starting and stopping the `varcade` binary for a scenario.
//!
//! The tests' harness starts it too (`common::spawn`), but with its log
//! discarded and a panic when it does not come up; a load run needs a
//! little more, so this is a small wrapper of its own: the server's log in
//! a file (kept with `--keep-logs`, quoted when the server does not start),
//! the load generator's config (one product, long expiries, an optional
//! pre-populated data directory), `VARCADE_LOG` and `TOKIO_WORKER_THREADS`
//! from the options, the time from process start to the `listening on`
//! line (scenario 10), an error instead of a panic, and a clean stop
//! (SIGTERM) between the two starts of scenario 10. The temporary
//! directory and the secrets are the harness's. The XADD scenarios
//! (11-13) start it with the Redis-protocol listener on too
//! ([`Server::start_resp`]): its address is read from the
//! `varcade redis protocol on` line, printed before `listening on`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ADMIN, SECRET, TempDir};
use crate::{Context, KEY, Opts, PRODUCT, Res};

/// How long a server may take to print `listening on`.
const START_LIMIT: Duration = Duration::from_secs(60);

/// A running `varcade serve`, killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
    /// `http://<addr>`.
    pub base: String,
    /// The Redis-protocol listener's address, when it was asked for.
    pub resp: Option<String>,
    /// Process start to the `listening on` line.
    pub startup: Duration,
    work: TempDir,
    /// Where to copy the server's log when it stops (`--keep-logs DIR`).
    keep_log: Option<PathBuf>,
}

/// The config: the one product every scenario uses, expiries long enough
/// that curation never removes a game during a run; with `resp`, the
/// Redis-protocol listener on an ephemeral port.
fn config(data: &Path, game_url: &str, resp: bool) -> String {
    let resp = if resp {
        "[resp]\nbind = \"127.0.0.1:0\"\n\n"
    } else {
        ""
    };
    format!(
        r#"data_dir = "{data}"
jwt_secret = "{SECRET}"
admin_key = "{ADMIN}"
game_server_timeout_ms = 5000

[lobby]
default_page_size = 10
max_page_size = 25

[expiry]
created = 3600
creator_joined = 3600
all_players_joined = 3600
in_progress = 3600
ended = 3600
curation_interval_ms = 1000

{resp}[[games]]
product_id = "{PRODUCT}"
game_server_url = "{game_url}"
game_socket_url = "127.0.0.1:8085"
ingest_key = "{KEY}"
leaderboard = "wins"
stats = "exrps"
[games.settings]
num_players = 2
"#,
        data = data.display()
    )
}

impl Server {
    /// Starts the binary on `data_dir` (a fresh one when `None`) against the
    /// game server at `game_url`.
    pub fn start(game_url: &str, data_dir: Option<&Path>, opts: &Opts) -> Res<Server> {
        Server::launch(game_url, data_dir, opts, false)
    }

    /// [`Server::start`] on a fresh data directory with the Redis-protocol
    /// listener on (its address in [`Server::resp`]).
    pub fn start_resp(game_url: &str, opts: &Opts) -> Res<Server> {
        Server::launch(game_url, None, opts, true)
    }

    fn launch(game_url: &str, data_dir: Option<&Path>, opts: &Opts, resp: bool) -> Res<Server> {
        let work = TempDir::new();
        let data = data_dir.map_or_else(|| work.0.join("db"), Path::to_path_buf);
        let config_file = work.0.join("varcade.toml");
        std::fs::write(&config_file, config(&data, game_url, resp)).ctx("write the config")?;
        let log_file = std::fs::File::create(work.0.join("server.log")).ctx("log file")?;
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_varcade"))
            .args(["serve", "--config"])
            .arg(&config_file)
            .args(["--bind", "127.0.0.1:0"])
            .env_remove("VARCADE_BIND")
            .env_remove("VARCADE_DATA_DIR")
            .env_remove("VARCADE_JWT_SECRET")
            .env_remove("VARCADE_RESP_BIND")
            .env("VARCADE_LOG", &opts.log)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .envs(
                opts.server_workers
                    .map(|n| ("TOKIO_WORKER_THREADS", n.to_string())),
            )
            .spawn()
            .ctx("start varcade")?;
        let listening = listening_line(&mut child)?;
        let mut server = Server {
            child,
            addr: String::new(),
            base: String::new(),
            resp: None,
            startup: Duration::ZERO,
            keep_log: opts
                .keep_logs
                .as_ref()
                .map(|dir| dir.join(format!("varcade-{}.log", uuid::Uuid::new_v4().simple()))),
            work,
        };
        match listening.recv_timeout(START_LIMIT) {
            Ok((addr, resp_addr, at)) => {
                server.startup = at - started;
                server.base = format!("http://{addr}");
                server.addr = addr;
                if resp && resp_addr.is_none() {
                    return Err("varcade printed no `redis protocol on` line".into());
                }
                server.resp = resp_addr;
                Ok(server)
            }
            Err(_) => {
                let log = std::fs::read_to_string(server.log()).unwrap_or_default();
                Err(format!(
                    "varcade did not print `listening on` within {} s; log: {}",
                    START_LIMIT.as_secs(),
                    log.lines().last().unwrap_or_default()
                ))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> PathBuf {
        self.work.0.join("server.log")
    }

    /// SIGTERM and wait (15 s at most, then SIGKILL).
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What [`listening_line`] read: the HTTP address, the Redis-protocol
/// address if that line came first, and when `listening on` came.
type Listening = (String, Option<String>, Instant);

/// Reads the child's stdout on a thread; the address of its `listening on`
/// line (and of the `redis protocol on` line before it, if any) and when it
/// came arrive on the returned channel. The thread keeps draining stdout
/// afterwards so the server never writes to a closed pipe.
fn listening_line(child: &mut Child) -> Res<std::sync::mpsc::Receiver<Listening>> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let last_word = |line: &str| line.rsplit(' ').next().unwrap_or_default().to_string();
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let mut resp = None;
        for line in lines.by_ref() {
            if line.contains("redis protocol on") {
                resp = Some(last_word(&line));
            } else if line.contains("listening on") {
                let _ = tx.send((last_word(&line), resp, Instant::now()));
                break;
            }
        }
        lines.for_each(drop);
    });
    Ok(rx)
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(keep) = &self.keep_log {
            let _ = std::fs::copy(self.log(), keep);
        }
    }
}
