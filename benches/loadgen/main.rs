//! Load generator (issue 4, part 2): starts the real `varcade` binary with a
//! temporary data directory and an in-process fake game server, drives it
//! over loopback with concurrent HTTP (reqwest, keep-alive), WebSocket,
//! Redis-protocol (`XADD`, scenarios 11-13) and live-feed (Server-Sent
//! Events, scenario 15) clients, and prints throughput and latency per
//! scenario.
//!
//! ```text
//! cargo bench --bench loadgen                      # every scenario
//! cargo bench --bench loadgen -- create join       # by name (or number 1-16)
//! cargo bench --bench loadgen -- quick_join feed around_me   # a unique prefix will do
//! cargo bench --bench loadgen -- --quick           # small counts, smoke run
//! cargo bench --bench loadgen -- --storage postgres             # on PostgreSQL
//! cargo bench --bench loadgen -- --storage postgres --nodes 2   # two nodes, one database
//! ```
//!
//! Options: `--secs N` (measurement window per scenario, default 5),
//! `--conns N` (HTTP connections, default 64), `--window N` (frames in
//! flight on the single-event WebSocket, and `XADD`s in flight on each
//! Redis-protocol connection of scenarios 11 and 12, default 256),
//! `--log LEVEL` (the server's VARCADE_LOG, default `warn`), `--players N`
//! and `--events N` (the stored data set of scenarios 4, 10 and 16, default
//! 1,000,000 each), `--feed-clients N` (live-feed clients of scenario 15,
//! default 1,000).
//! `--storage sled|postgres` (default sled): the backend every scenario's
//! server uses; with postgres each scenario's server(s) get a fresh
//! database (`varcade_bench_<uuid>` on `--pg-url URL`, default
//! `postgres://postgres@127.0.0.1:5432`, created before and dropped
//! after, see [`pg`]). `--nodes N` (default 1, more only with postgres):
//! that many `varcade serve` processes on the one database, the HTTP
//! connections, WebSockets, Redis-protocol connections and feed clients
//! spread over them round-robin; every row says which storage and how
//! many nodes (`sled`, `pg:1`, `pg:2`).
//! For experiments: `--server-workers N` (the server's
//! TOKIO_WORKER_THREADS), `--scrape-ms N` (GET /metrics every N ms during
//! the loads of scenarios 4 and 10, as Prometheus would), `--keep-logs DIR`
//! (copy each server's log there).
//!
//! Scenario 4/10/16's data set is written before the server starts by a child
//! process (this binary with `--populate DIR PLAYERS EVENTS`, see
//! [`populate`]) through the library's storage ports: it opens the
//! directory with `SledStorage::open`, appends the events, builds the board
//! from `game_over` changes under the `wins` rule, moves both consumers'
//! cursors to the last event and closes the storage; its exit releases the
//! sled lock. With postgres the same board (and a log of the same size) is
//! written with bulk SQL instead ([`populate::populate_pg`]; `--populate-pg
//! URL PLAYERS EVENTS` writes it to an existing database, to look at it by
//! hand).
//!
//! Every scenario starts its own server on a fresh data directory (4, 10
//! and 16 share one pre-populated directory; 15 starts two), is bounded by its window and a
//! count, and the server is killed at the end of it. The load generator
//! and the server share the machine's cores; the table reports the CPU the
//! server process used (in cores) next to each figure.
//!
//! This file holds the options, the scenario table and the driver; the
//! other modules:
//!
//! | module | what |
//! |---|---|
//! | [`server`] | starting and stopping the binary (one node or several) |
//! | [`pg`] | the PostgreSQL databases of `--storage postgres` |
//! | [`load`] | the HTTP, WebSocket and RESP (`XADD`) drivers, percentiles |
//! | [`sse`] | the live lobby feed client (raw HTTP/1.1, Server-Sent Events) |
//! | [`meter`] | CPU, memory and `/metrics` readings |
//! | [`workload`] | the deterministic random numbers and event texts |
//! | [`populate`] | the stored data set of scenarios 4, 10 and 16 |
//! | [`scenarios`] | the scenarios, one file per group |
//! | [`report`] | the result rows and the printed table |
//!
//! The fake game server, temporary directories and token minting come from
//! the tests' harness (`tests/common/mod.rs`, module [`common`]).

#[path = "../../tests/common/mod.rs"]
mod common;
mod load;
mod meter;
mod pg;
mod populate;
mod report;
mod scenarios;
mod server;
mod sse;
mod workload;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use report::Row;
use scenarios::Env;

/// The product every scenario uses, and its ingest key.
const PRODUCT: &str = "exrps";
const KEY: &str = "exrps-secret";

type Res<T> = Result<T, String>;

/// Turns any displayable error into this bench's `String` error, saying
/// what was being done.
trait Context<T> {
    fn ctx(self, what: &str) -> Res<T>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Res<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

// ---------------------------------------------------------------- options

/// The scenarios, numbered 1-16 in this order.
const SCENARIOS: [&str; 16] = [
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
    "xadd_pipelined",
    "xadd_16conns",
    "xadd_sync",
    "quick_join",
    "feed_1000",
    "around_me",
];

/// Scenarios that are one run on one stored data set.
const BIG: [&str; 3] = ["top_ten", "startup", "around_me"];

/// The backend the servers use (`--storage`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StorageKind {
    Sled,
    Postgres,
}

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
    /// Live-feed clients of scenario 15.
    feed_clients: usize,
    storage: StorageKind,
    /// Server processes per scenario (more than one only with postgres).
    nodes: usize,
    /// The PostgreSQL server (a URL without a database) the databases of
    /// `--storage postgres` are created on.
    pg_url: String,
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
            feed_clients: 1000,
            storage: StorageKind::Sled,
            nodes: 1,
            pg_url: "postgres://postgres@127.0.0.1:5432".into(),
            selected: Vec::new(),
        };
        let mut it = args.iter();
        let mut secs = None;
        let mut big = (None, None);
        let mut feed_clients = None;
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
                "--feed-clients" => {
                    feed_clients = Some(value("--feed-clients")?.parse().ctx("--feed-clients")?)
                }
                "--storage" => {
                    opts.storage = match value("--storage")?.as_str() {
                        "sled" => StorageKind::Sled,
                        "postgres" | "pg" => StorageKind::Postgres,
                        other => {
                            return Err(format!("--storage {other:?}: sled or postgres"));
                        }
                    }
                }
                "--nodes" => opts.nodes = value("--nodes")?.parse().ctx("--nodes")?,
                "--pg-url" => opts.pg_url = value("--pg-url")?,
                name if name.starts_with("--") => return Err(format!("unknown option {name}")),
                name => {
                    let index = match name.parse::<usize>() {
                        Ok(n) if (1..=SCENARIOS.len()).contains(&n) => n - 1,
                        _ => scenario_index(name)?,
                    };
                    if !opts.selected.contains(&index) {
                        opts.selected.push(index);
                    }
                }
            }
        }
        if opts.nodes == 0 {
            return Err("--nodes must be at least 1".into());
        }
        if opts.nodes > 1 && opts.storage != StorageKind::Postgres {
            return Err("--nodes above 1 needs --storage postgres (sled is one process)".into());
        }
        if opts.quick {
            opts.window = Duration::from_secs(1);
            opts.players = 20_000;
            opts.events = 20_000;
            opts.feed_clients = 100;
        }
        if let Some(secs) = secs {
            opts.window = Duration::from_secs_f64(secs);
        }
        opts.players = big.0.unwrap_or(opts.players);
        opts.events = big.1.unwrap_or(opts.events);
        opts.feed_clients = feed_clients.unwrap_or(opts.feed_clients);
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

    /// The storage and nodes as the rows show them: `sled`, `pg:1`, `pg:2`.
    fn store_label(&self) -> String {
        match self.storage {
            StorageKind::Sled => "sled".into(),
            StorageKind::Postgres => format!("pg:{}", self.nodes),
        }
    }

    /// The storage and nodes in words, for the header.
    fn store_words(&self) -> String {
        match self.storage {
            StorageKind::Sled => "storage sled (one process)".into(),
            StorageKind::Postgres => format!(
                "storage postgres ({} node{} per scenario, one fresh database each, pool_size 16, lease_secs 5)",
                self.nodes,
                if self.nodes == 1 { "" } else { "s" }
            ),
        }
    }
}

/// A scenario's index by its name, or by a prefix that names only one.
fn scenario_index(name: &str) -> Res<usize> {
    if let Some(i) = SCENARIOS.iter().position(|s| *s == name) {
        return Ok(i);
    }
    let matches: Vec<usize> = (0..SCENARIOS.len())
        .filter(|&i| SCENARIOS[i].starts_with(name))
        .collect();
    match matches[..] {
        [i] => Ok(i),
        _ => Err(format!(
            "unknown scenario {name:?}; one of {SCENARIOS:?} (or a prefix naming one) or 1-{}",
            SCENARIOS.len()
        )),
    }
}

// ---------------------------------------------------------------- driver

/// Runs one scenario by name on its own task, so that a panic (the
/// harness's helpers panic on failure) becomes a failed row rather than
/// the end of the run.
async fn scenario(env: &Arc<Env>, name: &'static str) -> Res<Vec<Row>> {
    let env = env.clone();
    let task = tokio::spawn(async move {
        match name {
            "create" => scenarios::lobby::create(&env).await,
            "join" => scenarios::lobby::join(&env).await,
            "open_games" => scenarios::lobby::open_games(&env).await,
            "top_ten" | "startup" | "around_me" => scenarios::board::big(&env).await,
            "ingest_single" => scenarios::ingest::single(&env).await,
            "ingest_batch" => scenarios::ingest::batch(&env).await,
            "ack_steady" => scenarios::ingest::ack_steady(&env).await,
            "stats_consumer" => scenarios::consumers::stats(&env).await,
            "matchmaker_consumer" => scenarios::consumers::matchmaker(&env).await,
            "xadd_pipelined" => scenarios::resp::pipelined(&env).await,
            "xadd_16conns" => scenarios::resp::conns16(&env).await,
            "xadd_sync" => scenarios::resp::sync(&env).await,
            "quick_join" => scenarios::quick::quick_join(&env).await,
            "feed_1000" => scenarios::feed::feed(&env).await,
            _ => Err(format!("unknown scenario {name}")),
        }
    });
    task.await.ctx("scenario task")?
}

async fn run(opts: Opts) -> Vec<Row> {
    let env = match Env::new(opts.clone()).await {
        Ok(env) => Arc::new(env),
        Err(e) => return vec![Row::failed(1, e)],
    };
    let mut rows = Vec::new();
    let mut big_done = false;
    for &index in &opts.selected {
        let id = index + 1;
        let name = SCENARIOS[index];
        // Scenarios 4, 10 and 16 are one run on one data set.
        if BIG.contains(&name) {
            if big_done {
                continue;
            }
            big_done = true;
        }
        eprintln!("== {id} {name}");
        let new = scenario(&env, name)
            .await
            .unwrap_or_else(|e| vec![Row::failed(id, e)]);
        for row in &new {
            row.print();
        }
        rows.extend(new);
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
        return match populate::child_main(Path::new(dir), parse(2), parse(3)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("populate: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.first().map(String::as_str) == Some("--populate-pg") {
        // The PostgreSQL data set on an existing database, by hand.
        let parse = |i: usize| args.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        let Some(url) = args.get(1) else {
            eprintln!("--populate-pg URL PLAYERS EVENTS");
            return ExitCode::from(2);
        };
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        return match rt.block_on(populate::populate_pg_url(url, parse(2), parse(3))) {
            Ok((took, summary)) => {
                println!("populated in {:.1} s: {summary}", took.as_secs_f64());
                ExitCode::SUCCESS
            }
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
    report::set_store(opts.store_label());
    eprintln!(
        "loadgen: {cores} cores, {}, window {:?} per scenario, {} HTTP connections, server log {}{}",
        opts.store_words(),
        opts.window,
        opts.conns,
        opts.log,
        if opts.quick { ", QUICK" } else { "" }
    );
    let started = Instant::now();
    let rows = rt.block_on(run(opts.clone()));
    report::table(&rows, cores, opts.quick, &opts.store_words());
    println!("total {:.0} s", started.elapsed().as_secs_f64());
    rt.shutdown_timeout(Duration::from_secs(5));
    if rows.iter().any(|r| r.measured == "FAILED") {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
