//! Starting and stopping the `varcade` binary for a scenario.
//!
//! The tests' harness starts it too (`common::spawn`), but with its log
//! discarded and a panic when it does not come up; a load run needs a
//! little more, so this is a small wrapper of its own: the server's log in
//! a file (kept with `--keep-logs`, quoted when the server does not start),
//! the load generator's config (one product, long expiries, an optional
//! pre-populated data directory or database), `VARCADE_LOG` and
//! `TOKIO_WORKER_THREADS` from the options, the time from process start to
//! the `listening on` line (scenario 10), an error instead of a panic, and
//! a clean stop (SIGTERM) between the two starts of scenario 10. The
//! temporary directory and the secrets are the harness's. The XADD
//! scenarios (11-13) start it with the Redis-protocol listener on too
//! ([`Server::start_resp`]): its address is read from the `varcade redis
//! protocol on` line, printed before `listening on`.
//!
//! With `--storage postgres` a [`Server`] is `--nodes` processes (each with
//! its own temporary directory and config) on one database: a fresh one
//! ([`Database`], created here and dropped after the processes are
//! killed) or a pre-populated one the scenario holds ([`Store::Postgres`]).
//! [`Server::base`] and [`Server::addr`] are the first node's; the
//! scenarios spread their connections over the nodes round-robin
//! ([`Server::base_for`], [`Server::addrs`]).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{ADMIN, SECRET, TempDir};
use crate::pg::Database;
use crate::{Context, KEY, Opts, PRODUCT, Res, StorageKind};

/// How long a server may take to print `listening on`.
const START_LIMIT: Duration = Duration::from_secs(60);
/// The `[storage]` pool size and lease of the PostgreSQL configs.
const POOL_SIZE: usize = 16;
const LEASE_SECS: u64 = 5;

/// Where a server's data is.
#[derive(Clone, Copy)]
pub enum Store<'a> {
    /// A fresh store of the configured kind: a new data directory per node
    /// (sled), or a new database the [`Server`] owns (postgres).
    Fresh,
    /// A pre-populated sled data directory.
    Sled(&'a Path),
    /// A pre-populated database (the scenario keeps it).
    Postgres(&'a Database),
}

/// One `varcade serve` process, killed on drop.
struct Process {
    child: Child,
    addr: String,
    resp: Option<String>,
    startup: Duration,
    work: TempDir,
    /// Where to copy the server's log when it stops (`--keep-logs DIR`).
    keep_log: Option<PathBuf>,
}

/// The running `varcade serve` process(es) of a scenario: one, or
/// `--nodes` on one PostgreSQL database. Killed on drop, then the
/// database it owns (if any) is dropped.
pub struct Server {
    procs: Vec<Process>,
    /// The first node's address, and `http://<addr>`.
    pub addr: String,
    pub base: String,
    /// Every node's `http://<addr>`, in start order.
    pub bases: Vec<String>,
    /// Process start to the `listening on` line (the slowest node's).
    pub startup: Duration,
    /// The fresh database this server owns, if any; declared after
    /// `procs`, so it is dropped after they are killed.
    _db: Option<Database>,
}

/// The `[storage]` section of a PostgreSQL config.
fn storage_toml(url: &str) -> String {
    format!(
        "[storage]\nkind = \"postgres\"\nurl = \"{url}\"\npool_size = {POOL_SIZE}\nlease_secs = {LEASE_SECS}\n\n"
    )
}

/// The config: the one product every scenario uses, expiries long enough
/// that curation never removes a game during a run; with `resp`, the
/// Redis-protocol listener on an ephemeral port; with `pg_url`, the
/// PostgreSQL storage at that URL.
fn config(data: &Path, game_url: &str, resp: bool, pg_url: Option<&str>) -> String {
    let resp = if resp {
        "[resp]\nbind = \"127.0.0.1:0\"\n\n"
    } else {
        ""
    };
    let storage = pg_url.map(storage_toml).unwrap_or_default();
    format!(
        r#"data_dir = "{data}"
jwt_secret = "{SECRET}"
admin_key = "{ADMIN}"
game_server_timeout_ms = 5000

{storage}[lobby]
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
    /// Starts the binary (`--nodes` of it with postgres) on `store`
    /// against the game server at `game_url`.
    pub fn start(game_url: &str, store: Store, opts: &Opts) -> Res<Server> {
        Server::launch(game_url, store, opts, false)
    }

    /// [`Server::start`] on a fresh store with the Redis-protocol listener
    /// on (every node's address in [`Server::resps`]).
    pub fn start_resp(game_url: &str, opts: &Opts) -> Res<Server> {
        Server::launch(game_url, Store::Fresh, opts, true)
    }

    fn launch(game_url: &str, store: Store, opts: &Opts, resp: bool) -> Res<Server> {
        let (db, url, data) = match (store, opts.storage) {
            (Store::Sled(dir), _) => (None, None, Some(dir)),
            (Store::Postgres(db), _) => (None, Some(db.url.clone()), None),
            (Store::Fresh, StorageKind::Sled) => (None, None, None),
            (Store::Fresh, StorageKind::Postgres) => {
                let db = Database::create(&opts.pg_url)?;
                let url = db.url.clone();
                (Some(db), Some(url), None)
            }
        };
        let nodes = if url.is_some() { opts.nodes.max(1) } else { 1 };
        // Start every node, then wait for each to listen.
        let mut procs = Vec::with_capacity(nodes);
        let mut waits = Vec::with_capacity(nodes);
        for _ in 0..nodes {
            let (proc, listening) = Process::spawn(game_url, data, url.as_deref(), opts, resp)?;
            procs.push(proc);
            waits.push(listening);
        }
        let mut server = Server {
            procs,
            addr: String::new(),
            base: String::new(),
            bases: Vec::new(),
            startup: Duration::ZERO,
            _db: db,
        };
        for (proc, listening) in server.procs.iter_mut().zip(waits) {
            proc.wait_listening(listening, resp)?;
        }
        server.addr = server.procs[0].addr.clone();
        server.base = format!("http://{}", server.addr);
        server.bases = server
            .procs
            .iter()
            .map(|p| format!("http://{}", p.addr))
            .collect();
        server.startup = server
            .procs
            .iter()
            .map(|p| p.startup)
            .max()
            .unwrap_or_default();
        Ok(server)
    }

    /// The base URL connection (or client) `i` uses: the nodes round-robin.
    pub fn base_for(&self, i: usize) -> &str {
        &self.bases[i % self.bases.len()]
    }

    /// Every node's address, in start order.
    pub fn addrs(&self) -> Vec<String> {
        self.procs.iter().map(|p| p.addr.clone()).collect()
    }

    /// Every node's Redis-protocol address (when started with it).
    pub fn resps(&self) -> Vec<String> {
        self.procs.iter().filter_map(|p| p.resp.clone()).collect()
    }

    /// The first node's process id.
    pub fn pid(&self) -> u32 {
        self.procs[0].child.id()
    }

    /// Every node's process id.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }

    /// Waits until a change made through one node is visible through every
    /// node (API.md: within a second); nothing to wait for with one node.
    pub async fn settle(&self) {
        if self.procs.len() > 1 {
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }
    }

    /// SIGTERM every node and wait (15 s at most, then SIGKILL).
    pub fn stop(&mut self) {
        for proc in &self.procs {
            let _ = Command::new("kill")
                .args(["-TERM", &proc.child.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for proc in &mut self.procs {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = proc.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = proc.child.kill();
            let _ = proc.child.wait();
        }
    }
}

impl Process {
    /// Starts one `varcade serve`; the `listening on` line arrives on the
    /// returned channel.
    fn spawn(
        game_url: &str,
        data_dir: Option<&Path>,
        pg_url: Option<&str>,
        opts: &Opts,
        resp: bool,
    ) -> Res<(Process, std::sync::mpsc::Receiver<Listening>)> {
        let work = TempDir::new();
        let data = data_dir.map_or_else(|| work.0.join("db"), Path::to_path_buf);
        let config_file = work.0.join("varcade.toml");
        std::fs::write(&config_file, config(&data, game_url, resp, pg_url))
            .ctx("write the config")?;
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
            .env_remove("VARCADE_STORAGE_URL")
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
        let listening = listening_line(&mut child, started)?;
        let proc = Process {
            child,
            addr: String::new(),
            resp: None,
            startup: Duration::ZERO,
            keep_log: opts
                .keep_logs
                .as_ref()
                .map(|dir| dir.join(format!("varcade-{}.log", uuid::Uuid::new_v4().simple()))),
            work,
        };
        Ok((proc, listening))
    }

    fn wait_listening(
        &mut self,
        listening: std::sync::mpsc::Receiver<Listening>,
        resp: bool,
    ) -> Res<()> {
        match listening.recv_timeout(START_LIMIT) {
            Ok((addr, resp_addr, startup)) => {
                self.startup = startup;
                self.addr = addr;
                if resp && resp_addr.is_none() {
                    return Err("varcade printed no `redis protocol on` line".into());
                }
                self.resp = resp_addr;
                Ok(())
            }
            Err(_) => {
                let log = std::fs::read_to_string(self.log()).unwrap_or_default();
                Err(format!(
                    "varcade did not print `listening on` within {} s; log: {}",
                    START_LIMIT.as_secs(),
                    log.lines().last().unwrap_or_default()
                ))
            }
        }
    }

    fn log(&self) -> PathBuf {
        self.work.0.join("server.log")
    }
}

/// What [`listening_line`] read: the HTTP address, the Redis-protocol
/// address if that line came first, and how long after `started` the
/// `listening on` line came.
type Listening = (String, Option<String>, Duration);

/// Reads the child's stdout on a thread; the address of its `listening on`
/// line (and of the `redis protocol on` line before it, if any) and when it
/// came arrive on the returned channel. The thread keeps draining stdout
/// afterwards so the server never writes to a closed pipe.
fn listening_line(
    child: &mut Child,
    started: Instant,
) -> Res<std::sync::mpsc::Receiver<Listening>> {
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
                let _ = tx.send((last_word(&line), resp, started.elapsed()));
                break;
            }
        }
        lines.for_each(drop);
    });
    Ok(rx)
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(keep) = &self.keep_log {
            let _ = std::fs::copy(self.log(), keep);
        }
    }
}
