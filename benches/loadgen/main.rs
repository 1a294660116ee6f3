//! Load generator (issue 4, part 2): starts the real `varcade` binary with a
//! temporary data directory and an in-process fake game server, drives it
//! over loopback with concurrent HTTP (reqwest, keep-alive) and WebSocket
//! clients, and prints throughput and latency per scenario.
//!
//! ```text
//! cargo bench --bench loadgen                      # every scenario
//! cargo bench --bench loadgen -- create join       # by name (or number 1-10)
//! cargo bench --bench loadgen -- --quick           # small counts, smoke run
//! ```
//!
//! Options: `--secs N` (measurement window per scenario, default 5),
//! `--conns N` (HTTP connections, default 64), `--window N` (frames in
//! flight on the single-event WebSocket, default 256), `--log LEVEL` (the
//! server's VARCADE_LOG, default `warn`), `--players N` and `--events N`
//! (the stored data set of scenarios 4 and 10, default 1,000,000 each).
//! For experiments: `--server-workers N` (the server's
//! TOKIO_WORKER_THREADS), `--scrape-ms N` (GET /metrics every N ms during
//! the loads of scenarios 4 and 10, as Prometheus would), `--keep-logs DIR`
//! (copy each server's log there).
//!
//! Scenario 4/10's data set is written before the server starts by a child
//! process (this binary with `--populate DIR PLAYERS EVENTS`) that opens
//! the directory with `varcade::store::Store::open`, writes the scores with
//! `varcade::stats::board::Overlay` in batches of 10,000 and appends the
//! events in 100-event frames; its exit releases the sled lock.
//!
//! Every scenario starts its own server on a fresh data directory (4 and 10
//! share one pre-populated directory), is bounded by its window and a
//! count, and the server is killed at the end of it. The load generator
//! and the server share the machine's cores; the table reports the CPU the
//! server process used (in cores) next to each figure.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::routing::post;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use varcade::stats::board::Overlay;
use varcade::store::Store;

const SECRET: &str = "loadgen-secret";
const ADMIN: &str = "loadgen-admin";
const KEY: &str = "exrps-secret";
const PRODUCT: &str = "exrps";

type Res<T> = Result<T, String>;

trait Context<T> {
    fn ctx(self, what: &str) -> Res<T>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

// ---------------------------------------------------------------- options

const SCENARIOS: [&str; 10] = [
    "create",
    "join",
    "open_games",
    "top_ten",
    "ingest_single",
    "ingest_batch",
    "ack_steady",
    "stats_consumer",
    "matchmaker_consumer",
    "startup",
];

#[derive(Clone, Debug)]
struct Opts {
    quick: bool,
    window: Duration,
    conns: usize,
    ws_window: usize,
    log: String,
    /// TOKIO_WORKER_THREADS for the server (its default: one per core).
    server_workers: Option<usize>,
    /// Scrape /metrics this often during the loads of scenario 4/10.
    scrape_ms: Option<u64>,
    /// Copy each server's log into this directory when it stops.
    keep_logs: Option<PathBuf>,
    players: u64,
    events: u64,
    selected: Vec<usize>,
}

impl Opts {
    fn parse(args: &[String]) -> Res<Opts> {
        let mut opts = Opts {
            quick: false,
            window: Duration::from_secs(5),
            conns: 64,
            ws_window: 256,
            log: "warn".into(),
            server_workers: None,
            scrape_ms: None,
            keep_logs: None,
            players: 1_000_000,
            events: 1_000_000,
            selected: Vec::new(),
        };
        let mut it = args.iter();
        let mut secs = None;
        let mut big = (None, None);
        while let Some(arg) = it.next() {
            let mut value = |name: &str| -> Res<String> {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match arg.as_str() {
                "--bench" | "--nocapture" => {}
                "--quick" => opts.quick = true,
                "--secs" => secs = Some(value("--secs")?.parse::<f64>().ctx("--secs")?),
                "--conns" => opts.conns = value("--conns")?.parse().ctx("--conns")?,
                "--window" => opts.ws_window = value("--window")?.parse().ctx("--window")?,
                "--log" => opts.log = value("--log")?,
                "--keep-logs" => opts.keep_logs = Some(PathBuf::from(value("--keep-logs")?)),
                "--scrape-ms" => {
                    opts.scrape_ms = Some(value("--scrape-ms")?.parse().ctx("--scrape-ms")?)
                }
                "--server-workers" => {
                    opts.server_workers =
                        Some(value("--server-workers")?.parse().ctx("--server-workers")?)
                }
                "--players" => big.0 = Some(value("--players")?.parse().ctx("--players")?),
                "--events" => big.1 = Some(value("--events")?.parse().ctx("--events")?),
                name if name.starts_with("--") => return Err(format!("unknown option {name}")),
                name => {
                    let index = match name.parse::<usize>() {
                        Ok(n) if (1..=SCENARIOS.len()).contains(&n) => n - 1,
                        _ => SCENARIOS.iter().position(|s| *s == name).ok_or_else(|| {
                            format!("unknown scenario {name:?}; one of {SCENARIOS:?} or 1-10")
                        })?,
                    };
                    if !opts.selected.contains(&index) {
                        opts.selected.push(index);
                    }
                }
            }
        }
        if opts.quick {
            opts.window = Duration::from_secs(1);
            opts.players = 20_000;
            opts.events = 20_000;
        }
        if let Some(secs) = secs {
            opts.window = Duration::from_secs_f64(secs);
        }
        opts.players = big.0.unwrap_or(opts.players);
        opts.events = big.1.unwrap_or(opts.events);
        if opts.selected.is_empty() {
            opts.selected = (0..SCENARIOS.len()).collect();
        }
        opts.selected.sort();
        Ok(opts)
    }

    /// `full` normally, `quick` with `--quick`.
    fn count(&self, full: u64, quick: u64) -> u64 {
        if self.quick { quick } else { full }
    }

    fn wants(&self, name: &str) -> bool {
        self.selected.iter().any(|&i| SCENARIOS[i] == name)
    }
}

// ---------------------------------------------------------------- helpers

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "varcade-loadgen-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// (p50, p99) in milliseconds.
fn percentiles(lat_us: &mut [u32]) -> (Option<f64>, Option<f64>) {
    if lat_us.is_empty() {
        return (None, None);
    }
    lat_us.sort_unstable();
    let at = |p: usize| lat_us[(lat_us.len() * p / 100).min(lat_us.len() - 1)] as f64 / 1000.0;
    (Some(at(50)), Some(at(99)))
}

/// CPU seconds (user + system) a process has used, from /proc.
fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are
    // fields 14 and 15 (1-based), in clock ticks of 1/100 s.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    (ticks(11).unwrap_or(0.0) + ticks(12).unwrap_or(0.0)) / 100.0
}

/// VmRSS and VmHWM of a process, in MiB.
fn memory_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// CPU seconds the whole machine has been busy (all cores), from /proc/stat.
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).unwrap_or(&0.0) + ticks.get(4).unwrap_or(&0.0);
    (total - idle) / 100.0
}

/// Measures the CPU a server, the load generator and everything else on
/// the machine use over an interval.
struct CpuMeter {
    pid: String,
    server: f64,
    client: f64,
    machine: f64,
    started: Instant,
}

impl CpuMeter {
    fn start(server: &Server) -> CpuMeter {
        let pid = server.child.id().to_string();
        CpuMeter {
            server: cpu_secs(&pid),
            client: cpu_secs("self"),
            machine: machine_busy_secs(),
            pid,
            started: Instant::now(),
        }
    }

    /// (server, load generator, other processes) in cores since `start`.
    fn read(&self) -> (f64, f64, f64) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let server = (cpu_secs(&self.pid) - self.server) / secs;
        let client = (cpu_secs("self") - self.client) / secs;
        let machine = (machine_busy_secs() - self.machine) / secs;
        (server, client, (machine - server - client).max(0.0))
    }
}

/// CPU and group-commit flushes over an interval.
struct Probe {
    cpu: CpuMeter,
    flushes: f64,
    flush_secs: f64,
}

/// What a [`Probe`] saw.
struct Probed {
    cpu: (f64, f64, f64),
    note: String,
}

const FLUSH_COUNT: &str = "varcade_store_flush_duration_seconds_count";
const FLUSH_SUM: &str = "varcade_store_flush_duration_seconds_sum";

impl Probe {
    async fn start(env: &Env, server: &Server) -> Probe {
        let flushes = metric(&env.http, &server.base, FLUSH_COUNT)
            .await
            .unwrap_or(0.0);
        let flush_secs = metric(&env.http, &server.base, FLUSH_SUM)
            .await
            .unwrap_or(0.0);
        Probe {
            cpu: CpuMeter::start(server),
            flushes,
            flush_secs,
        }
    }

    async fn finish(&self, env: &Env, server: &Server) -> Probed {
        let cpu = self.cpu.read();
        let secs = self.cpu.started.elapsed().as_secs_f64();
        let flushes = metric(&env.http, &server.base, FLUSH_COUNT)
            .await
            .unwrap_or(0.0)
            - self.flushes;
        let flush_secs = metric(&env.http, &server.base, FLUSH_SUM)
            .await
            .unwrap_or(0.0)
            - self.flush_secs;
        let note = if flushes > 0.0 {
            format!(
                "{:.0} flushes/s, mean flush {:.2} ms",
                flushes / secs.max(1e-9),
                1000.0 * flush_secs / flushes
            )
        } else {
            String::new()
        };
        Probed { cpu, note }
    }

    async fn fill(&self, row: &mut Row, env: &Env, server: &Server) {
        self.finish(env, server).await.fill(row);
    }
}

impl Probed {
    fn fill(self, row: &mut Row) {
        row.cpu = Some(self.cpu);
        if !self.note.is_empty() {
            if row.note.is_empty() {
                row.note = self.note;
            } else {
                row.note = format!("{}; {}", self.note, row.note);
            }
        }
    }
}

// ---------------------------------------------------------------- results

struct Row {
    id: usize,
    scenario: String,
    measured: String,
    count: u64,
    secs: f64,
    rate: Option<f64>,
    unit: &'static str,
    p50: Option<f64>,
    p99: Option<f64>,
    target: String,
    met: Option<bool>,
    cpu: Option<(f64, f64, f64)>,
    note: String,
}

impl Row {
    fn new(id: usize, measured: impl Into<String>) -> Row {
        Row {
            id,
            scenario: SCENARIOS[id - 1].to_string(),
            measured: measured.into(),
            count: 0,
            secs: 0.0,
            rate: None,
            unit: "",
            p50: None,
            p99: None,
            target: String::new(),
            met: None,
            cpu: None,
            note: String::new(),
        }
    }

    fn failed(id: usize, error: String) -> Row {
        let mut row = Row::new(id, "FAILED");
        row.note = error;
        row
    }

    fn print(&self) {
        let f =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        println!(
            "{:>2} {:<19} {:<38} {:>9} {:>6.2} {:>11} {:<6} {:>7} {:>7}  {:<22} {:<4} {:>14}  {}",
            self.id,
            self.scenario,
            self.measured,
            self.count,
            self.secs,
            f(self.rate, 0),
            self.unit,
            f(self.p50, 2),
            f(self.p99, 2),
            self.target,
            match self.met {
                Some(true) => "MET",
                Some(false) => "MISS",
                None => "",
            },
            self.cpu
                .map_or("-".into(), |(s, c, o)| format!("{s:.2}/{c:.2}/{o:.2}")),
            self.note
        );
    }

    fn header() {
        println!(
            "{:>2} {:<19} {:<38} {:>9} {:>6} {:>11} {:<6} {:>7} {:>7}  {:<22} {:<4} {:>14}  notes",
            "#",
            "scenario",
            "measured",
            "count",
            "secs",
            "rate",
            "unit",
            "p50 ms",
            "p99 ms",
            "target",
            "",
            "cpu srv/gen/oth"
        );
    }
}

// ---------------------------------------------------------------- fake game server

/// A fast game server: create_game answers a token, the rest 200 `{}`.
async fn fake_game_server() -> Res<String> {
    let tokens = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route(
            "/create_game",
            post(move |_body: axum::body::Bytes| {
                let n = tokens.fetch_add(1, Ordering::Relaxed);
                async move { Json(json!({"gameToken": format!("tok-{n}")})) }
            }),
        )
        .route(
            "/join_game",
            post(|_body: axum::body::Bytes| async { Json(json!({})) }),
        )
        .route(
            "/remove_player",
            post(|_body: axum::body::Bytes| async { Json(json!({})) }),
        )
        .route(
            "/remove_game",
            post(|_body: axum::body::Bytes| async { Json(json!({})) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .ctx("bind the fake game server")?;
    let url = format!("http://{}", listener.local_addr().ctx("local addr")?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(url)
}

// ---------------------------------------------------------------- the server

/// A running `varcade serve`, killed on drop.
struct Server {
    child: Child,
    addr: String,
    base: String,
    /// Process start to the `listening on` line.
    startup: Duration,
    _work: TempDir,
    /// Where to copy the server's log when it stops (`--keep-logs DIR`).
    keep_log: Option<PathBuf>,
}

impl Server {
    /// Starts the binary on `data_dir` (a fresh one when `None`).
    fn start(game_url: &str, data_dir: Option<&Path>, opts: &Opts) -> Res<Server> {
        let work = TempDir::new("server");
        let data = data_dir.map_or_else(|| work.0.join("db"), Path::to_path_buf);
        let config = work.0.join("varcade.toml");
        std::fs::write(
            &config,
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

[[games]]
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
            ),
        )
        .ctx("write the config")?;
        let log_file = std::fs::File::create(work.0.join("server.log")).ctx("log file")?;
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_varcade"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--bind", "127.0.0.1:0"])
            .env_remove("VARCADE_BIND")
            .env_remove("VARCADE_DATA_DIR")
            .env_remove("VARCADE_JWT_SECRET")
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
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && line.contains("listening on") {
                    let addr = line.rsplit(' ').next().unwrap_or_default().to_string();
                    let _ = tx.send((addr, Instant::now()));
                    sent = true;
                }
            }
        });
        let mut server = Server {
            child,
            addr: String::new(),
            base: String::new(),
            startup: Duration::ZERO,
            keep_log: opts
                .keep_logs
                .as_ref()
                .map(|dir| dir.join(format!("varcade-{}.log", uuid::Uuid::new_v4().simple()))),
            _work: work,
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok((addr, at)) => {
                server.startup = at - started;
                server.base = format!("http://{addr}");
                server.addr = addr;
                Ok(server)
            }
            Err(_) => {
                let log =
                    std::fs::read_to_string(server._work.0.join("server.log")).unwrap_or_default();
                Err(format!(
                    "varcade did not print `listening on` within 60 s; log: {}",
                    log.lines().last().unwrap_or_default()
                ))
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait (15 s at most, then SIGKILL).
    fn stop(&mut self) {
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

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(keep) = &self.keep_log {
            let _ = std::fs::copy(self._work.0.join("server.log"), keep);
        }
    }
}

/// What the scenarios share.
struct Env {
    http: reqwest::Client,
    game_url: String,
    opts: Opts,
    /// `Token <jwt>` of creators (c0..) and joiners (j0..), one per connection.
    creators: Vec<String>,
    joiners: Vec<String>,
}

impl Env {
    fn token(user: &str) -> String {
        format!(
            "Token {}",
            varcade::auth::mint_token(SECRET, user, &format!("user-{user}"), 24 * 3600)
        )
    }
}

/// Reads a value of `GET /metrics`, e.g. `varcade_consumer_cursor{consumer="stats"}`.
async fn metric(http: &reqwest::Client, base: &str, series: &str) -> Res<f64> {
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ctx("GET /metrics")?
        .text()
        .await
        .ctx("read /metrics")?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}

fn cursor_series(consumer: &str) -> String {
    format!("varcade_consumer_cursor{{consumer=\"{consumer}\"}}")
}

/// Polls a consumer's cursor until it reaches `target`; returns when it did
/// (None on timeout, with the last cursor seen).
async fn wait_cursor(
    http: &reqwest::Client,
    base: &str,
    consumer: &str,
    target: u64,
    timeout: Duration,
) -> Res<(Option<Instant>, u64)> {
    let deadline = Instant::now() + timeout;
    let series = cursor_series(consumer);
    loop {
        let cursor = metric(http, base, &series).await? as u64;
        if cursor >= target {
            return Ok((Some(Instant::now()), cursor));
        }
        if Instant::now() >= deadline {
            return Ok((None, cursor));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// ---------------------------------------------------------------- HTTP load

struct Load {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    lat_us: Vec<u32>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn note(&self) -> String {
        match &self.first_error {
            Some(e) => format!("{} errors, first: {e}", self.errors),
            None => String::new(),
        }
    }
}

/// Runs `f(connection, i)` on `conns` concurrent tasks until `duration` has
/// passed or `max` calls were made; latency is recorded per successful call.
async fn drive<F, Fut>(conns: usize, duration: Duration, max: u64, f: F) -> Load
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Res<()>> + Send + 'static,
{
    let f = Arc::new(f);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..conns)
        .map(|task| {
            let (f, next) = (f.clone(), next.clone());
            tokio::spawn(async move {
                let (mut lat, mut errors, mut first) = (Vec::new(), 0u64, None);
                while Instant::now() < deadline {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= max {
                        break;
                    }
                    let t = Instant::now();
                    match f(task, i).await {
                        Ok(()) => lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                        Err(e) => {
                            errors += 1;
                            first.get_or_insert(e);
                        }
                    }
                }
                (lat, errors, first)
            })
        })
        .collect();
    let mut load = Load {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        lat_us: Vec::new(),
    };
    for task in tasks {
        match task.await {
            Ok((lat, errors, first)) => {
                load.ok += lat.len() as u64;
                load.lat_us.extend(lat);
                load.errors += errors;
                if load.first_error.is_none() {
                    load.first_error = first;
                }
            }
            Err(e) => {
                load.errors += 1;
                load.first_error.get_or_insert(format!("task: {e}"));
            }
        }
    }
    load.elapsed = started.elapsed();
    load
}

async fn expect_ok(response: reqwest::Result<reqwest::Response>) -> Res<axum::body::Bytes> {
    let response = response.ctx("request")?;
    let status = response.status();
    let body = response.bytes().await.ctx("body")?;
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(body)
}

/// Creates up to `n` games on `conns` connections within `timeout`; returns
/// the load and the ids created.
async fn create_games(
    env: &Arc<Env>,
    server: &Server,
    conns: usize,
    timeout: Duration,
    n: u64,
) -> (Load, Vec<String>) {
    let ids = Arc::new(Mutex::new(Vec::with_capacity(n as usize)));
    let url = format!("{}/game_lobby/{PRODUCT}/create_game", server.base);
    let (env2, ids2) = (env.clone(), ids.clone());
    let load = drive(conns, timeout, n, move |task, _| {
        let request = env2
            .http
            .post(&url)
            .header("authorization", &env2.creators[task])
            .send();
        let ids = ids2.clone();
        async move {
            let body = expect_ok(request.await).await?;
            let game: Value = serde_json::from_slice(&body).ctx("game JSON")?;
            let id = game["game_id"].as_str().ok_or("no game_id")?.to_string();
            ids.lock().unwrap().push(id);
            Ok(())
        }
    })
    .await;
    let ids = std::mem::take(&mut *ids.lock().unwrap());
    (load, ids)
}

/// POSTs `events` to /ingest in frames of `per_frame`; returns the last id.
async fn post_events(env: &Env, server: &Server, events: &[String], per_frame: usize) -> Res<u64> {
    let mut last = 0;
    for chunk in events.chunks(per_frame) {
        let body = format!("[{}]", chunk.join(","));
        let response = env
            .http
            .post(format!("{}/ingest", server.base))
            .bearer_auth(KEY)
            .body(body)
            .send()
            .await;
        let answer: Value = serde_json::from_slice(&expect_ok(response).await?).ctx("ack")?;
        last = answer["last_id"].as_u64().ok_or("no last_id")?;
    }
    Ok(last)
}

fn state_change(game_id: &str, state: &str) -> String {
    json!({"product_id": PRODUCT, "game_id": game_id, "type": "state_change", "new_state": state})
        .to_string()
}

/// Creates `n` games and has them listed (creator_joined applied).
async fn listed_games(
    env: &Arc<Env>,
    server: &Server,
    n: u64,
) -> Res<(Load, Duration, Vec<String>)> {
    let (load, ids) = create_games(env, server, env.opts.conns, Duration::from_secs(120), n).await;
    if ids.len() as u64 != n {
        return Err(format!(
            "created {} of {n} games; {}",
            ids.len(),
            load.note()
        ));
    }
    let started = Instant::now();
    let events: Vec<String> = ids
        .iter()
        .map(|id| state_change(id, "creator_joined"))
        .collect();
    let last = post_events(env, server, &events, 500).await?;
    let (done, cursor) = wait_cursor(
        &env.http,
        &server.base,
        "matchmaker",
        last,
        Duration::from_secs(120),
    )
    .await?;
    if done.is_none() {
        return Err(format!("matchmaker at {cursor} of {last} after 120 s"));
    }
    let page = expect_ok(
        env.http
            .get(format!(
                "{}/game_lobby/{PRODUCT}/open_games?count=25",
                server.base
            ))
            .send()
            .await,
    )
    .await?;
    let listed: Vec<Value> = serde_json::from_slice(&page).ctx("open_games")?;
    if listed.len() != 25.min(n as usize) {
        return Err(format!("the lobby lists {} games", listed.len()));
    }
    Ok((load, started.elapsed(), ids))
}

// ---------------------------------------------------------------- WebSocket load

struct WsLoad {
    frames: u64,
    errors: u64,
    first_error: Option<String>,
    lat_us: Vec<u32>,
    elapsed: Duration,
}

/// One ingest WebSocket: sends `frames` (cycled) with at most `window` frames
/// unacknowledged, optionally paced at `pace` frames/s, until `deadline` or
/// `max` frames; measures each frame's send-to-ack latency.
async fn ws_pipeline(
    addr: String,
    frames: Arc<Vec<Utf8Bytes>>,
    window: usize,
    deadline: Instant,
    max: u64,
    pace: Option<f64>,
) -> Res<WsLoad> {
    let mut request = format!("ws://{addr}/ingest")
        .into_client_request()
        .ctx("ws request")?;
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {KEY}").parse().ctx("header")?,
    );
    let (ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .ctx("ws connect")?;
    let (mut sink, mut stream) = ws.split();
    let permits = Arc::new(tokio::sync::Semaphore::new(window));
    let times = Arc::new(Mutex::new(VecDeque::<Instant>::with_capacity(window)));
    let total = Arc::new(AtomicU64::new(u64::MAX));
    let started = Instant::now();
    let sender = {
        let (permits, times, total) = (permits.clone(), times.clone(), total.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            let mut result = Ok(());
            while i < max && Instant::now() < deadline {
                if let Some(rate) = pace {
                    let at = started + Duration::from_secs_f64(i as f64 / rate);
                    tokio::time::sleep_until(at.into()).await;
                }
                match permits.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                times.lock().unwrap().push_back(Instant::now());
                let frame = frames[(i % frames.len() as u64) as usize].clone();
                if let Err(e) = sink.send(Message::Text(frame)).await {
                    result = Err(format!("ws send: {e}"));
                    break;
                }
                i += 1;
            }
            total.store(i, Ordering::SeqCst);
            (result, sink)
        })
    };
    let mut load = WsLoad {
        frames: 0,
        errors: 0,
        first_error: None,
        lat_us: Vec::new(),
        elapsed: Duration::ZERO,
    };
    let hard_stop = deadline + Duration::from_secs(30);
    while load.frames + load.errors < total.load(Ordering::SeqCst) {
        if Instant::now() > hard_stop {
            load.first_error
                .get_or_insert("acks still missing 30 s after the window".into());
            break;
        }
        let next = match tokio::time::timeout(Duration::from_millis(100), stream.next()).await {
            Err(_) => continue,
            Ok(None) => {
                load.first_error.get_or_insert("connection closed".into());
                break;
            }
            Ok(Some(Err(e))) => {
                load.first_error.get_or_insert(format!("ws: {e}"));
                break;
            }
            Ok(Some(Ok(message))) => message,
        };
        let Message::Text(text) = next else { continue };
        let sent = times.lock().unwrap().pop_front();
        permits.add_permits(1);
        if text.as_str().starts_with("{\"ack\"") {
            load.frames += 1;
            if let Some(sent) = sent {
                load.lat_us
                    .push(sent.elapsed().as_micros().min(u32::MAX as u128) as u32);
            }
        } else {
            load.errors += 1;
            load.first_error.get_or_insert(text.as_str().to_string());
        }
    }
    load.elapsed = started.elapsed();
    permits.close();
    if let Ok((result, mut sink)) = sender.await {
        if let Err(e) = result {
            load.first_error.get_or_insert(e);
        }
        let _ = sink.close().await;
    }
    Ok(load)
}

/// Runs `ws_pipeline` on several connections at once; `frames[c]` is the
/// frame pool of connection `c`.
async fn ws_parallel(
    server: &Server,
    frames: Vec<Arc<Vec<Utf8Bytes>>>,
    window: usize,
    duration: Duration,
    max_per_conn: u64,
    pace: Option<f64>,
) -> Res<WsLoad> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = frames
        .into_iter()
        .map(|pool| {
            tokio::spawn(ws_pipeline(
                server.addr.clone(),
                pool,
                window,
                deadline,
                max_per_conn,
                pace,
            ))
        })
        .collect();
    let mut all = WsLoad {
        frames: 0,
        errors: 0,
        first_error: None,
        lat_us: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let load = task.await.ctx("ws task")??;
        all.frames += load.frames;
        all.errors += load.errors;
        all.lat_us.extend(load.lat_us);
        if all.first_error.is_none() {
            all.first_error = load.first_error;
        }
    }
    all.elapsed = started.elapsed();
    Ok(all)
}

fn gameplay(rng: &mut Rng) -> String {
    format!(
        r#"{{"product_id":"exrps","game_id":"g{}","type":"gameplay","event_name":"select_weapon","event_data":"{}","user_id":"{}"}}"#,
        rng.below(1_000_000),
        rng.below(3),
        rng.below(100_000)
    )
}

fn game_over(rng: &mut Rng, players: u64) -> String {
    let winner = rng.below(players);
    let loser = (winner + 1 + rng.below(players - 1)) % players;
    format!(
        r#"{{"product_id":"exrps","game_id":"g{}","type":"game_over","winner_id":"{winner}","loser_id":"{loser}"}}"#,
        rng.below(1_000_000_000)
    )
}

fn frame_pool(
    seed: u64,
    frames: usize,
    per_frame: usize,
    event: impl Fn(&mut Rng) -> String,
) -> Arc<Vec<Utf8Bytes>> {
    let mut rng = Rng::new(seed);
    Arc::new(
        (0..frames)
            .map(|_| {
                let text = if per_frame == 1 {
                    event(&mut rng)
                } else {
                    let events: Vec<String> = (0..per_frame).map(|_| event(&mut rng)).collect();
                    format!("[{}]", events.join(","))
                };
                Utf8Bytes::from(text)
            })
            .collect(),
    )
}

// ---------------------------------------------------------------- scenarios

fn http_row(id: usize, measured: &str, load: &mut Load, unit: &'static str) -> Row {
    let mut row = Row::new(id, measured);
    row.count = load.ok;
    row.secs = load.elapsed.as_secs_f64();
    row.rate = Some(load.rate());
    row.unit = unit;
    (row.p50, row.p99) = percentiles(&mut load.lat_us);
    row.note = load.note();
    row
}

fn target(row: &mut Row, text: &str, min_rate: Option<f64>, max_p99: Option<f64>) {
    row.target = text.to_string();
    let rate_ok = min_rate.is_none_or(|m| row.rate.unwrap_or(0.0) >= m);
    let p99_ok = max_p99.is_none_or(|m| row.p99.is_some_and(|p| p <= m));
    row.met = Some(rate_ok && p99_ok && !row.note.contains("errors"));
}

async fn s_create(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = Server::start(&env.game_url, None, &env.opts)?;
    let max = env.opts.count(1_000_000, 20_000);
    let cpu = Probe::start(env, &server).await;
    let (mut load, _) = create_games(env, &server, env.opts.conns, env.opts.window, max).await;
    let mut row = http_row(
        1,
        &format!("create_game, {} conns", env.opts.conns),
        &mut load,
        "req/s",
    );
    cpu.fill(&mut row, env, &server).await;
    target(&mut row, ">=8000/s, p99<=20ms", Some(8000.0), Some(20.0));
    Ok(vec![row])
}

async fn s_join(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = Server::start(&env.game_url, None, &env.opts)?;
    let n = env.opts.count(40_000, 2_000);
    let all = Instant::now();
    let cpu = Probe::start(env, &server).await;
    let (mut created, listing, ids) = listed_games(env, &server, n).await?;
    let create_cpu = cpu.finish(env, &server).await;
    let ids = Arc::new(ids);
    let url = format!("{}/game_lobby/{PRODUCT}/join_game/", server.base);
    let env2 = env.clone();
    let ids2 = ids.clone();
    let cpu = Probe::start(env, &server).await;
    let mut load = drive(env.opts.conns, env.opts.window, n, move |task, i| {
        let request = env2
            .http
            .post(format!("{url}{}", ids2[i as usize]))
            .header("authorization", &env2.joiners[task])
            .send();
        async move { expect_ok(request.await).await.map(|_| ()) }
    })
    .await;
    let join_cpu = cpu.finish(env, &server).await;
    let end_to_end = all.elapsed();

    let mut rows = Vec::new();
    let mut row = http_row(
        2,
        &format!("setup: create {n} games, {} conns", env.opts.conns),
        &mut created,
        "req/s",
    );
    create_cpu.fill(&mut row);
    row.note = format!(
        "then ingest creator_joined + wait listed: {:.2} s {}",
        listing.as_secs_f64(),
        row.note
    );
    let create_rate = row.rate.unwrap_or(0.0);
    rows.push(row);

    let mut row = http_row(
        2,
        &format!("join_game, {} conns", env.opts.conns),
        &mut load,
        "req/s",
    );
    join_cpu.fill(&mut row);
    target(&mut row, ">=4000/s, p99<=20ms", Some(4000.0), Some(20.0));
    let join_rate = row.rate.unwrap_or(0.0);
    rows.push(row);

    // A pair is one create and one join, each phase at full concurrency.
    let mut row = Row::new(2, "create+join pairs (1/(1/create+1/join))");
    row.count = load.ok;
    row.rate = Some(1.0 / (1.0 / create_rate.max(1e-9) + 1.0 / join_rate.max(1e-9)));
    row.unit = "pair/s";
    row.secs = end_to_end.as_secs_f64();
    row.note = format!(
        "end to end incl. listing: {:.0} pair/s",
        load.ok.min(n) as f64 / end_to_end.as_secs_f64()
    );
    target(&mut row, ">=4000/s", Some(4000.0), None);
    rows.push(row);
    Ok(rows)
}

async fn s_open_games(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = Server::start(&env.game_url, None, &env.opts)?;
    listed_games(env, &server, 1000).await?;
    let url = format!(
        "{}/game_lobby/{PRODUCT}/open_games?count=25&page=",
        server.base
    );
    let env2 = env.clone();
    let cpu = Probe::start(env, &server).await;
    let mut load = drive(
        env.opts.conns,
        env.opts.window,
        env.opts.count(5_000_000, 50_000),
        move |task, i| {
            let page = Rng::new(task as u64 * 1_000_003 + i).below(40);
            let request = env2.http.get(format!("{url}{page}")).send();
            async move {
                let body = expect_ok(request.await).await?;
                if body.len() < 100 {
                    return Err(format!("short page: {}", String::from_utf8_lossy(&body)));
                }
                Ok(())
            }
        },
    )
    .await;
    let mut row = http_row(3, "open_games 1000 listed, random page", &mut load, "req/s");
    cpu.fill(&mut row, env, &server).await;
    target(&mut row, ">=30000/s", Some(30_000.0), None);
    Ok(vec![row])
}

/// Populates a data directory with `players` scores and `events` stored
/// (already consumed) events, in a child process (this binary with
/// `--populate`), so the sled lock is certainly released when it exits.
fn populate(dir: &Path, players: u64, events: u64) -> Res<(Duration, String)> {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe().ctx("current exe")?)
        .arg("--populate")
        .arg(dir)
        .arg(players.to_string())
        .arg(events.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .ctx("start the populate process")?;
    let deadline = started + Duration::from_secs(600);
    loop {
        if let Some(status) = child.try_wait().ctx("wait")? {
            let mut out = String::new();
            if let Some(mut stdout) = child.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut stdout, &mut out);
            }
            if !status.success() {
                return Err(format!("populate failed ({status}): {out}"));
            }
            return Ok((started.elapsed(), out.trim().to_string()));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("populate took more than 600 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The child side of [`populate`]: Store::open, scores with Overlay in
/// batches of 10,000, events appended in frames of 100 (64 in flight), both
/// consumers' cursors set to the last event. At most 480 s.
fn populate_main(dir: &Path, players: u64, events: u64) -> Res<()> {
    let rt = tokio::runtime::Runtime::new().ctx("runtime")?;
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(480);
        let store = Store::open(dir).ctx("open the store")?;
        let mut rng = Rng::new(3);
        let started = Instant::now();
        let mut done = 0;
        while done < players && Instant::now() < deadline {
            let end = (done + 10_000).min(players);
            let mut overlay = Overlay::new(&store);
            for user in done..end {
                let score = (1000.0 * rng.unit().powi(3)) as i64;
                overlay
                    .set_score(PRODUCT, &user.to_string(), score)
                    .ctx("set_score")?;
            }
            overlay.commit(0).ctx("commit")?;
            done = end;
        }
        let board_secs = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let (mut appended, mut last_id) = (0u64, 0u64);
        let mut pending = VecDeque::new();
        while appended < events && Instant::now() < deadline {
            let n = (events - appended).min(100);
            let frame: Vec<String> = (0..n).map(|_| game_over(&mut rng, players.max(2))).collect();
            pending.push_back(store.submit(frame, None).ctx("submit")?);
            appended += n;
            if pending.len() >= 64 {
                let front = pending.pop_front().ok_or("queue")?;
                last_id = front.await.ctx("append")?.ctx("append")?.last_id;
            }
        }
        for p in pending {
            last_id = p.await.ctx("append")?.ctx("append")?.last_id;
        }
        let log_secs = started.elapsed().as_secs_f64();
        Overlay::new(&store).commit(last_id).ctx("stats cursor")?;
        store
            .games
            .insert(
                varcade::store::games::cursor_key(varcade::events::matchmaker::NAME),
                &last_id.to_be_bytes(),
            )
            .ctx("matchmaker cursor")?;
        store.flush().await.ctx("flush")?;
        println!(
            "{done} players in {board_secs:.1} s, {appended} events in {log_secs:.1} s, {:.0} MiB on disk",
            store.size_on_disk() as f64 / 1048576.0
        );
        Ok(())
    })
}

/// Scenarios 4 and 10: one pre-populated data directory, one server.
async fn s_big(env: &Arc<Env>) -> Res<Vec<Row>> {
    let dir = TempDir::new("big");
    let data = dir.0.join("db");
    eprintln!(
        "populating {} players and {} events ...",
        env.opts.players, env.opts.events
    );
    let (took, summary) = populate(&data, env.opts.players, env.opts.events)?;
    eprintln!("populated in {:.1} s: {summary}", took.as_secs_f64());
    let mut rows = Vec::new();
    let mut server = Server::start(&env.game_url, Some(&data), &env.opts)?;
    let startup = server.startup;
    let (rss_start, _) = memory_mib(server.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_idle, _) = memory_mib(server.pid());

    // Sanity: the board is there.
    let top = expect_ok(
        env.http
            .get(format!("{}/leaderboards/top_ten/{PRODUCT}", server.base))
            .send()
            .await,
    )
    .await?;
    let top: Vec<Value> = serde_json::from_slice(&top).ctx("top_ten")?;
    if top.len() != 10 {
        return Err(format!("top_ten has {} entries", top.len()));
    }

    let url = format!("{}/leaderboards/top_ten/{PRODUCT}", server.base);
    let env2 = env.clone();
    // Optionally scrape /metrics during the loads, as Prometheus would.
    let scraper = env.opts.scrape_ms.map(|ms| {
        let (http, base) = (env.http.clone(), server.base.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                let _ = metric(&http, &base, "none").await;
            }
        })
    });
    let cpu = Probe::start(env, &server).await;
    let mut load = drive(
        env.opts.conns,
        env.opts.window,
        env.opts.count(5_000_000, 50_000),
        move |_, _| {
            let request = env2.http.get(&url).send();
            async move { expect_ok(request.await).await.map(|_| ()) }
        },
    )
    .await;
    let top_cpu = cpu.finish(env, &server).await;
    let (rss_after, hwm_after) = memory_mib(server.pid());
    if env.opts.wants("top_ten") {
        let mut row = http_row(
            4,
            &format!(
                "top_ten, {} players, {} conns",
                env.opts.players, env.opts.conns
            ),
            &mut load,
            "req/s",
        );
        top_cpu.fill(&mut row);
        target(&mut row, ">=30000/s, p99<=5ms", Some(30_000.0), Some(5.0));
        rows.push(row);

        // Not a target: a random player's rank on the same board.
        let players = env.opts.players;
        let base = server.base.clone();
        let env2 = env.clone();
        let cpu = Probe::start(env, &server).await;
        let mut load = drive(
            env.opts.conns,
            env.opts.window,
            env.opts.count(5_000_000, 50_000),
            move |task, i| {
                let user = Rng::new(task as u64 * 7_000_003 + i).below(players);
                let request = env2
                    .http
                    .get(format!("{base}/leaderboards/{PRODUCT}/players/{user}"))
                    .send();
                async move { expect_ok(request.await).await.map(|_| ()) }
            },
        )
        .await;
        let mut row = http_row(4, "rank of a random player (no target)", &mut load, "req/s");
        cpu.fill(&mut row, env, &server).await;
        rows.push(row);
    }
    let (rss_end, hwm_end) = memory_mib(server.pid());
    if let Some(scraper) = scraper {
        scraper.abort();
    }
    server.stop();
    drop(server);

    if env.opts.wants("startup") {
        let mut row = Row::new(
            10,
            format!(
                "listening after start, {}p/{}ev",
                env.opts.players, env.opts.events
            ),
        );
        row.secs = startup.as_secs_f64();
        row.target = "<=3s".into();
        row.met = Some(startup <= Duration::from_secs(3));
        row.note = format!("first start after populating ({summary})");
        rows.push(row);

        // Again after a clean shutdown (SIGTERM).
        let mut again = Server::start(&env.game_url, Some(&data), &env.opts)?;
        let mut row = Row::new(10, "listening after restart (after SIGTERM)");
        row.secs = again.startup.as_secs_f64();
        row.target = "<=3s".into();
        row.met = Some(again.startup <= Duration::from_secs(3));
        rows.push(row);
        again.stop();

        let mut row = Row::new(10, "RSS MiB: at listening / +1s idle");
        row.rate = Some(rss_idle);
        row.unit = "MiB";
        row.note = format!("at the listening line {rss_start:.0} MiB");
        row.target = "<=300MB".into();
        row.met = Some(rss_idle * 1.048_576 <= 300.0);
        rows.push(row);

        let mut row = Row::new(10, "RSS MiB: after the top_ten load");
        row.rate = Some(rss_after);
        row.unit = "MiB";
        row.note = format!("peak so far (VmHWM) {hwm_after:.0} MiB");
        row.target = "<=300MB".into();
        row.met = Some(rss_after * 1.048_576 <= 300.0);
        rows.push(row);

        if env.opts.wants("top_ten") {
            let mut row = Row::new(10, "RSS MiB: after the rank load too");
            row.rate = Some(rss_end);
            row.unit = "MiB";
            row.note = format!("peak (VmHWM) {hwm_end:.0} MiB; no target, for the cache growth");
            rows.push(row);
        }
    }
    Ok(rows)
}

async fn s_ingest_single(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = Server::start(&env.game_url, None, &env.opts)?;
    let pool = frame_pool(1, 4096, 1, gameplay);
    let cpu = Probe::start(env, &server).await;
    let mut load = ws_parallel(
        &server,
        vec![pool],
        env.opts.ws_window,
        env.opts.window,
        env.opts.count(5_000_000, 20_000),
        None,
    )
    .await?;
    let mut row = Row::new(
        5,
        format!("1-event frames, 1 ws, window {}", env.opts.ws_window),
    );
    row.count = load.frames;
    row.secs = load.elapsed.as_secs_f64();
    row.rate = Some(load.frames as f64 / row.secs);
    row.unit = "frame/s";
    (row.p50, row.p99) = percentiles(&mut load.lat_us);
    cpu.fill(&mut row, env, &server).await;
    add_note(&mut row, ws_note(&load));
    target(&mut row, ">=30000 frames/s", Some(30_000.0), None);
    Ok(vec![row])
}

fn add_note(row: &mut Row, text: String) {
    if text.is_empty() {
        return;
    }
    if !row.note.is_empty() {
        row.note.push_str("; ");
    }
    row.note.push_str(&text);
}

fn ws_note(load: &WsLoad) -> String {
    match &load.first_error {
        Some(e) => format!("{} errors, first: {e}", load.errors.max(1)),
        None => String::new(),
    }
}

async fn s_ingest_batch(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = Server::start(&env.game_url, None, &env.opts)?;
    let pools = (0..4)
        .map(|c| frame_pool(10 + c, 64, 100, gameplay))
        .collect();
    let cpu = Probe::start(env, &server).await;
    let mut load = ws_parallel(
        &server,
        pools,
        8,
        env.opts.window,
        env.opts.count(1_000_000, 500),
        None,
    )
    .await?;
    let mut row = Row::new(6, "100-event frames, 4 ws, window 8 each");
    row.count = load.frames * 100;
    row.secs = load.elapsed.as_secs_f64();
    row.rate = Some(row.count as f64 / row.secs);
    row.unit = "ev/s";
    (row.p50, row.p99) = percentiles(&mut load.lat_us);
    cpu.fill(&mut row, env, &server).await;
    add_note(
        &mut row,
        format!("{} frames, latency is per 100-event frame", load.frames),
    );
    add_note(&mut row, ws_note(&load));
    target(&mut row, ">=300000 ev/s", Some(300_000.0), None);
    Ok(vec![row])
}

async fn s_ack_steady(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = Server::start(&env.game_url, None, &env.opts)?;
    let pool = frame_pool(2, 4096, 1, gameplay);
    let cpu = Probe::start(env, &server).await;
    let mut load = ws_parallel(
        &server,
        vec![pool],
        100_000,
        env.opts.window,
        env.opts.count(1_000_000, 10_000),
        Some(10_000.0),
    )
    .await?;
    let mut row = Row::new(7, "ack latency, 1-event frames paced 10k/s");
    row.count = load.frames;
    row.secs = load.elapsed.as_secs_f64();
    row.rate = Some(load.frames as f64 / row.secs);
    row.unit = "ev/s";
    (row.p50, row.p99) = percentiles(&mut load.lat_us);
    cpu.fill(&mut row, env, &server).await;
    add_note(&mut row, ws_note(&load));
    target(&mut row, "p99<=5ms at 10k ev/s", Some(9_000.0), Some(5.0));
    Ok(vec![row])
}

async fn s_stats_consumer(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = Server::start(&env.game_url, None, &env.opts)?;
    let n = env.opts.count(300_000, 20_000);
    let per_conn = n / 100 / 4;
    let pools = (0..4)
        .map(|c| frame_pool(20 + c, per_conn as usize, 100, |r| game_over(r, 100_000)))
        .collect();
    let cpu = Probe::start(env, &server).await;
    let started = Instant::now();
    let load = ws_parallel(&server, pools, 8, Duration::from_secs(120), per_conn, None).await?;
    let ingested = started.elapsed();
    let total = load.frames * 100;
    if load.first_error.is_some() || total != per_conn * 4 * 100 {
        return Err(format!("ingested {total} events: {}", ws_note(&load)));
    }
    let at_ingested = metric(&env.http, &server.base, &cursor_series("stats")).await? as u64;
    let tail_start = Instant::now();
    let (done, cursor) = wait_cursor(
        &env.http,
        &server.base,
        "stats",
        total,
        Duration::from_secs(if env.opts.quick { 30 } else { 180 }),
    )
    .await?;
    let mut row = Row::new(8, "stats consumer: game_over, 100k players");
    row.count = cursor;
    row.unit = "ev/s";
    cpu.fill(&mut row, env, &server).await;
    let end = done.unwrap_or_else(Instant::now);
    row.secs = (end - started).as_secs_f64();
    row.rate = Some(cursor as f64 / row.secs);
    let tail = (end - tail_start).as_secs_f64();
    add_note(
        &mut row,
        format!(
            "ingest took {:.2} s (consumer at {at_ingested} then); after ingest {:.0} ev/s{}",
            ingested.as_secs_f64(),
            (cursor - at_ingested) as f64 / tail.max(1e-9),
            if done.is_none() {
                "; DID NOT CATCH UP"
            } else {
                ""
            }
        ),
    );
    target(&mut row, ">=25000 game_over/s", Some(25_000.0), None);
    Ok(vec![row])
}

async fn s_matchmaker_consumer(env: &Arc<Env>) -> Res<Vec<Row>> {
    let server = Server::start(&env.game_url, None, &env.opts)?;
    let games = env.opts.count(25_000, 1_000);
    let (load, ids) = create_games(
        env,
        &server,
        env.opts.conns,
        Duration::from_secs(120),
        games,
    )
    .await;
    if ids.len() as u64 != games {
        return Err(format!("created {} of {games}: {}", ids.len(), load.note()));
    }
    // Connection c walks its games through the states, 100 events a frame,
    // one state after the other, so each game's events stay in order.
    let states = [
        "creator_joined",
        "all_players_joined",
        "in_progress",
        "ended",
    ];
    let pools: Vec<Arc<Vec<Utf8Bytes>>> = (0..4)
        .map(|c| {
            let mine: Vec<&String> = ids.iter().skip(c).step_by(4).collect();
            let mut frames = Vec::new();
            for state in states {
                for chunk in mine.chunks(100) {
                    let events: Vec<String> =
                        chunk.iter().map(|id| state_change(id, state)).collect();
                    frames.push(Utf8Bytes::from(format!("[{}]", events.join(","))));
                }
            }
            Arc::new(frames)
        })
        .collect();
    let frames: u64 = pools.iter().map(|p| p.len() as u64).sum();
    let max = pools.iter().map(|p| p.len() as u64).max().unwrap_or(0);
    // Each connection sends exactly its own frames once.
    let start_cursor = metric(&env.http, &server.base, &cursor_series("matchmaker")).await? as u64;
    let cpu = Probe::start(env, &server).await;
    let started = Instant::now();
    let mut sent = 0;
    let mut tasks = Vec::new();
    for pool in pools {
        let len = pool.len() as u64;
        sent += len;
        tasks.push(tokio::spawn(ws_pipeline(
            server.addr.clone(),
            pool,
            8,
            started + Duration::from_secs(120),
            len.min(max),
            None,
        )));
    }
    let mut acked = 0;
    for task in tasks {
        let load = task.await.ctx("ws task")??;
        if let Some(e) = load.first_error {
            return Err(e);
        }
        acked += load.frames;
    }
    if acked != frames || sent != frames {
        return Err(format!("{acked} of {frames} frames acknowledged"));
    }
    let ingested = started.elapsed();
    let last = start_cursor + games * 4;
    let at_ingested = metric(&env.http, &server.base, &cursor_series("matchmaker")).await? as u64;
    let tail_start = Instant::now();
    let (done, cursor) = wait_cursor(
        &env.http,
        &server.base,
        "matchmaker",
        last,
        Duration::from_secs(if env.opts.quick { 30 } else { 180 }),
    )
    .await?;
    let end = done.unwrap_or_else(Instant::now);
    let mut row = Row::new(9, format!("matchmaker: state_change, {games} games"));
    row.count = cursor - start_cursor;
    row.unit = "ev/s";
    cpu.fill(&mut row, env, &server).await;
    row.secs = (end - started).as_secs_f64();
    row.rate = Some(row.count as f64 / row.secs);
    let tail = (end - tail_start).as_secs_f64();
    add_note(
        &mut row,
        format!(
            "ingest took {:.2} s (consumer at {} then); after ingest {:.0} ev/s{}",
            ingested.as_secs_f64(),
            at_ingested - start_cursor,
            (cursor - at_ingested) as f64 / tail.max(1e-9),
            if done.is_none() {
                "; DID NOT CATCH UP"
            } else {
                ""
            }
        ),
    );
    target(&mut row, ">=20000 state_change/s", Some(20_000.0), None);

    // Every game ended.
    let page = expect_ok(
        env.http
            .get(format!(
                "{}/game_lobby/{PRODUCT}/open_games?count=25",
                server.base
            ))
            .send()
            .await,
    )
    .await?;
    if page.as_ref() != b"[]" {
        row.note.push_str("; lobby not empty afterwards!");
    }
    Ok(vec![row])
}

// ---------------------------------------------------------------- main

async fn run(opts: Opts) -> Vec<Row> {
    let game_url = match fake_game_server().await {
        Ok(url) => url,
        Err(e) => return vec![Row::failed(1, e)],
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client");
    let env = Arc::new(Env {
        http,
        game_url,
        creators: (0..opts.conns)
            .map(|i| Env::token(&format!("c{i}")))
            .collect(),
        joiners: (0..opts.conns)
            .map(|i| Env::token(&format!("j{i}")))
            .collect(),
        opts: opts.clone(),
    });
    let mut rows = Vec::new();
    let mut big_done = false;
    for &index in &opts.selected {
        let id = index + 1;
        let name = SCENARIOS[index];
        if matches!(name, "top_ten" | "startup") && big_done {
            continue;
        }
        eprintln!("== {id} {name}");
        let result = match name {
            "create" => s_create(&env).await,
            "join" => s_join(&env).await,
            "open_games" => s_open_games(&env).await,
            "top_ten" | "startup" => {
                big_done = true;
                s_big(&env).await
            }
            "ingest_single" => s_ingest_single(&env).await,
            "ingest_batch" => s_ingest_batch(&env).await,
            "ack_steady" => s_ack_steady(&env).await,
            "stats_consumer" => s_stats_consumer(&env).await,
            "matchmaker_consumer" => s_matchmaker_consumer(&env).await,
            _ => Err(format!("unknown scenario {name}")),
        };
        match result {
            Ok(new) => {
                for row in &new {
                    row.print();
                }
                rows.extend(new);
            }
            Err(e) => {
                let row = Row::failed(id, e);
                row.print();
                rows.push(row);
            }
        }
    }
    rows
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--populate") {
        let parse = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let Some(dir) = args.get(1) else {
            eprintln!("--populate DIR PLAYERS EVENTS");
            return ExitCode::from(2);
        };
        return match populate_main(Path::new(dir), parse(2), parse(3)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("populate: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let opts = match Opts::parse(&args) {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "loadgen: {cores} cores, window {:?} per scenario, {} HTTP connections, server log {}{}",
        opts.window,
        opts.conns,
        opts.log,
        if opts.quick { ", QUICK" } else { "" }
    );
    let started = Instant::now();
    let rows = rt.block_on(run(opts.clone()));
    println!();
    println!(
        "varcade loadgen results ({cores} cores; load generator and server share them; \
         cpu srv/gen/oth = cores used by the server / the load generator incl. the fake game server / other processes){}",
        if opts.quick { " [QUICK]" } else { "" }
    );
    Row::header();
    for row in &rows {
        row.print();
    }
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    rt.shutdown_timeout(Duration::from_secs(5));
    if rows.iter().any(|r| r.measured == "FAILED") {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
