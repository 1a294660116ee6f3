//! Soak benchmark: does the service's memory and disk level off under a
//! steady ingest load with a short retention window?
//!
//! This bench exists because the load generator's scenarios last seconds,
//! while the questions that matter for a long-running service take minutes:
//! whether retention keeps the log (and sled's files) bounded, whether the
//! caches and views stop growing, and whether the stats consumer keeps up.
//!
//! ```text
//! cargo bench --bench soak                   # 10 minutes
//! cargo bench --bench soak -- --quick        # 60 s
//! cargo bench --bench soak -- --minutes 3    # or --secs N
//! ```
//!
//! It starts the real binary (the tests' harness, `tests/common/mod.rs`)
//! with `event_retention_secs = 10`, a fresh data directory and an
//! in-process fake game server, then drives a steady ingest of 12,000
//! events/s (`--rate N`): every 10 ms each of 4 WebSockets (`--conns N`)
//! sends one frame with its share of the events, pipelined, with at most
//! 1,000 frames unacknowledged per connection. A quarter of the events are
//! `game_over` among 10,000 players, the rest `gameplay`/`select_weapon` by
//! the same players. Sending is paced by the clock: a tick that comes late
//! sends what is due, but a backlog of more than 1 s is dropped (and
//! counted), so the load stays bounded in rate, count and time.
//!
//! Every 30 s (and at start and end; for runs under 3 minutes, every sixth
//! of the run; `--every N` to choose) it samples the server's resident
//! memory (VmRSS in /proc/<pid>/status), the data directory's size (the sum
//! of its files' sizes), the acknowledged event rate since the last sample
//! and the stats consumer's lag (`GET /admin/status`). It prints a markdown
//! table, then whether memory and disk levelled off: the maximum of the
//! last third of the run within 15 % of the maximum of the middle third.
//! The server gets SIGTERM at the end (SIGKILL if it has not exited after
//! 15 s).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{FakeGameServer, Options, Server};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const PRODUCT: &str = "exrps";
const INGEST_KEY: &str = "exrps-secret";
/// Players the events are spread over.
const PLAYERS: u64 = 10_000;
/// The pacing tick.
const TICK: Duration = Duration::from_millis(10);
/// Frames one connection may have unacknowledged before it waits.
const MAX_UNACKED: u64 = 1_000;
/// Within this much of the middle third's maximum, a series has levelled off.
const LEVEL_TOLERANCE: f64 = 0.15;

/// The command line.
struct Opts {
    secs: u64,
    every: Option<u64>,
    rate: u64,
    conns: u64,
}

impl Opts {
    fn parse() -> Result<Opts, String> {
        let mut opts = Opts {
            secs: 600,
            every: None,
            rate: 12_000,
            conns: 4,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut number = |name: &str| -> Result<u64, String> {
                args.next()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("{name} needs a positive number"))
            };
            match arg.as_str() {
                "--bench" => {}
                "--quick" => opts.secs = 60,
                "--secs" => opts.secs = number("--secs")?,
                "--minutes" => opts.secs = 60 * number("--minutes")?,
                "--every" => opts.every = Some(number("--every")?),
                "--rate" => opts.rate = number("--rate")?,
                "--conns" => opts.conns = number("--conns")?,
                other => {
                    return Err(format!(
                        "unknown argument {other:?}; use --secs N, --minutes N, --quick, --every N, --rate N, --conns N"
                    ));
                }
            }
        }
        Ok(opts)
    }

    /// Seconds between samples.
    fn every(&self) -> u64 {
        self.every.unwrap_or(if self.secs < 180 {
            (self.secs / 6).max(1)
        } else {
            30
        })
    }
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One frame of `n` events (a JSON array); `game` numbers the games.
fn frame(rng: &mut Rng, n: u64, conn: u64, game: &mut u64) -> String {
    let mut out = String::with_capacity(n as usize * 150 + 2);
    out.push('[');
    for i in 0..n {
        if i > 0 {
            out.push(',');
        }
        *game += 1;
        let game_id = format!("soak-{conn}-{game}");
        if rng.below(4) == 0 {
            let winner = rng.below(PLAYERS);
            let loser = (winner + 1 + rng.below(PLAYERS - 1)) % PLAYERS;
            out.push_str(&format!(
                r#"{{"product_id":"{PRODUCT}","game_id":"{game_id}","type":"game_over","winner_id":"{winner}","loser_id":"{loser}"}}"#
            ));
        } else {
            out.push_str(&format!(
                r#"{{"product_id":"{PRODUCT}","game_id":"{game_id}","type":"gameplay","event_name":"select_weapon","event_data":"{}","user_id":"{}"}}"#,
                rng.below(3),
                rng.below(PLAYERS)
            ));
        }
    }
    out.push(']');
    out
}

/// What the connections count, shared with the sampler.
#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    acked: AtomicU64,
    /// Events not sent because the schedule was more than 1 s behind.
    dropped: AtomicU64,
    /// Error answers and broken connections.
    errors: AtomicU64,
    /// Frames sent and not yet answered, all connections.
    unacked: AtomicU64,
}

/// One ingest WebSocket: sends its share of the rate every tick until
/// `stop`, then waits (10 s at most) for the outstanding answers.
async fn connection(
    server: Arc<Server>,
    conn: u64,
    rate: f64,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    let ws = server.ws(INGEST_KEY).await;
    let (mut sink, mut stream) = ws.split();
    let unacked = Arc::new(AtomicU64::new(0));
    let reader = {
        let (unacked, counters) = (unacked.clone(), counters.clone());
        tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                let text = match message {
                    Ok(Message::Text(text)) => text,
                    Ok(Message::Close(_)) | Err(_) => break,
                    Ok(_) => continue,
                };
                let answer: serde_json::Value =
                    serde_json::from_str(text.as_str()).unwrap_or_default();
                match answer["count"].as_u64() {
                    Some(count) if answer.get("ack").is_some() => {
                        counters.acked.fetch_add(count, Ordering::Relaxed);
                    }
                    _ => {
                        if counters.errors.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("connection {conn}: {text}");
                        }
                    }
                }
                unacked.fetch_sub(1, Ordering::Relaxed);
                counters.unacked.fetch_sub(1, Ordering::Relaxed);
            }
        })
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (conn + 1));
    let mut game = 0u64;
    let started = Instant::now();
    let mut scheduled = 0u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        if due.saturating_sub(scheduled) > rate as u64 {
            let behind = due - scheduled - rate as u64;
            counters.dropped.fetch_add(behind, Ordering::Relaxed);
            scheduled += behind;
        }
        if due <= scheduled || unacked.load(Ordering::Relaxed) >= MAX_UNACKED {
            continue;
        }
        let n = due - scheduled;
        scheduled = due;
        let text = frame(&mut rng, n, conn, &mut game);
        unacked.fetch_add(1, Ordering::Relaxed);
        counters.unacked.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = sink.send(Message::text(text)).await {
            eprintln!("connection {conn}: send failed: {e}");
            counters.errors.fetch_add(1, Ordering::Relaxed);
            break;
        }
        counters.sent.fetch_add(n, Ordering::Relaxed);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while unacked.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = sink.send(Message::Close(None)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
}

/// The server's resident memory in MiB (VmRSS).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0)
}

/// The sum of the sizes of the files under `dir` (bytes).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// One row of the table.
struct Sample {
    t: f64,
    rss_mib: f64,
    dir_mib: f64,
    /// Acknowledged events/s since the previous sample.
    rate: Option<f64>,
    stats_lag: Option<u64>,
    matchmaker_lag: Option<u64>,
    last_event_id: Option<u64>,
}

impl Sample {
    fn row(&self) -> String {
        let opt = |v: Option<u64>| v.map_or("?".to_string(), |v| v.to_string());
        format!(
            "| {:.0} | {:.1} | {:.1} | {} | {} |",
            self.t,
            self.rss_mib,
            self.dir_mib,
            self.rate.map_or("–".to_string(), |r| format!("{r:.0}")),
            opt(self.stats_lag),
        )
    }
}

async fn sample(server: &Server, started: Instant) -> Sample {
    let db = server.dir.0.join("db");
    let (status, body) = server.admin_get("/admin/status").await;
    let lag = |name: &str| {
        (status == 200)
            .then(|| body["consumers"][name]["lag"].as_u64())
            .flatten()
    };
    Sample {
        t: started.elapsed().as_secs_f64(),
        rss_mib: rss_mib(server.pid()),
        dir_mib: dir_bytes(&db) as f64 / (1 << 20) as f64,
        rate: None,
        stats_lag: lag("stats"),
        matchmaker_lag: lag("matchmaker"),
        last_event_id: body["last_event_id"].as_u64(),
    }
}

/// Whether a series levelled off: (middle third's max, last third's max, ok).
fn levelled(
    samples: &[Sample],
    total: f64,
    value: impl Fn(&Sample) -> f64,
) -> Option<(f64, f64, bool)> {
    let max = |from: f64, to: f64| {
        samples
            .iter()
            .filter(|s| s.t >= from && s.t <= to)
            .map(&value)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    let middle = max(total / 3.0, 2.0 * total / 3.0)?;
    let last = max(2.0 * total / 3.0 + 1e-9, f64::INFINITY)?;
    Some((middle, last, last <= middle * (1.0 + LEVEL_TOLERANCE)))
}

fn verdict(name: &str, samples: &[Sample], total: f64, value: impl Fn(&Sample) -> f64) -> bool {
    match levelled(samples, total, value) {
        Some((middle, last, ok)) => {
            println!(
                "- {name}: {} (max {middle:.1} MiB in the middle third, {last:.1} MiB in the last third, {:+.1} %)",
                if ok {
                    "levelled off"
                } else {
                    "did NOT level off"
                },
                (last / middle - 1.0) * 100.0
            );
            ok
        }
        None => {
            println!("- {name}: too few samples to tell");
            false
        }
    }
}

async fn run(opts: Opts) -> Result<(), String> {
    let fake = FakeGameServer::start_unrecorded()
        .await
        .map_err(|e| format!("fake game server: {e}"))?;
    let mut options = Options::new(&fake);
    options.extra = "event_retention_secs = 10".into();
    let server = Arc::new(Server::start(&options).await);
    let pid = server.pid();
    let every = opts.every();
    println!(
        "soak: {} s at {} events/s over {} WebSockets (1/4 game_over among {PLAYERS} players), retention 10 s, a sample every {every} s; server pid {pid}, data in {}",
        opts.secs,
        opts.rate,
        opts.conns,
        server.dir.0.join("db").display()
    );
    println!();
    println!("| t (s) | RSS (MiB) | data dir (MiB) | events/s | stats lag |");
    println!("|---:|---:|---:|---:|---:|");

    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut samples = vec![sample(&server, started).await];
    println!("{}", samples[0].row());
    let per_conn = opts.rate as f64 / opts.conns as f64;
    let conns: Vec<_> = (0..opts.conns)
        .map(|c| {
            tokio::spawn(connection(
                server.clone(),
                c,
                per_conn,
                stop.clone(),
                counters.clone(),
            ))
        })
        .collect();

    let end = started + Duration::from_secs(opts.secs);
    let mut last = (0u64, Instant::now());
    let mut next = started + Duration::from_secs(every);
    loop {
        let at = next.min(end);
        tokio::time::sleep_until(at.into()).await;
        let acked = counters.acked.load(Ordering::Relaxed);
        let now = Instant::now();
        let mut s = sample(&server, started).await;
        s.rate = Some((acked - last.0) as f64 / now.duration_since(last.1).as_secs_f64());
        last = (acked, now);
        println!("{}", s.row());
        samples.push(s);
        if at >= end {
            break;
        }
        next += Duration::from_secs(every);
    }
    stop.store(true, Ordering::Relaxed);
    for c in conns {
        let _ = c.await;
    }
    let total = opts.secs as f64;
    let sent = counters.sent.load(Ordering::Relaxed);
    let acked = counters.acked.load(Ordering::Relaxed);
    println!();
    println!(
        "sent {sent} events ({:.0}/s), acknowledged {acked}, dropped by pacing {}, error answers {}, unanswered frames {}",
        sent as f64 / total,
        counters.dropped.load(Ordering::Relaxed),
        counters.errors.load(Ordering::Relaxed),
        counters.unacked.load(Ordering::Relaxed),
    );
    if let Some(s) = samples.last() {
        println!(
            "at the end: last event id {}, matchmaker lag {}, stats lag {}",
            s.last_event_id.map_or("?".into(), |v| v.to_string()),
            s.matchmaker_lag.map_or("?".into(), |v| v.to_string()),
            s.stats_lag.map_or("?".into(), |v| v.to_string()),
        );
    }
    let rss_ok = verdict("RSS", &samples, total, |s| s.rss_mib);
    let dir_ok = verdict("data dir", &samples, total, |s| s.dir_mib);
    println!(
        "levelled off: {}",
        if rss_ok && dir_ok {
            "both"
        } else if rss_ok {
            "RSS only"
        } else if dir_ok {
            "data dir only"
        } else {
            "neither"
        }
    );

    let stopping = Instant::now();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let mut server = Arc::into_inner(server).ok_or("the server is still shared")?;
    let code = loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            break status
                .code()
                .map_or("a signal".to_string(), |c| c.to_string());
        }
        if stopping.elapsed() > Duration::from_secs(15) {
            let _ = server.child.kill();
            let _ = server.child.wait();
            break "none: killed after 15 s".to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "server stopped by SIGTERM in {:.2} s, exit code {code}",
        stopping.elapsed().as_secs_f64()
    );
    drop(server);
    Ok(())
}

fn main() {
    let opts = match Opts::parse() {
        Ok(opts) => opts,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(run(opts)) {
        eprintln!("soak: {e}");
        std::process::exit(1);
    }
}
