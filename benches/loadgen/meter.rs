//! What the load generator reads besides its own timings: CPU and memory of
//! the server process and of the machine (from `/proc`), and the server's
//! own figures from `GET /metrics` (group-commit flushes, consumer cursors).
//! The load generator and the server share the cores, so every figure in
//! the table is shown with the CPU each side used.

use std::time::{Duration, Instant};

use crate::report::Row;
use crate::server::Server;
use crate::{Context, Res};

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
pub fn memory_mib(pid: u32) -> (f64, f64) {
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

/// Measures the CPU a server (all its nodes), the load generator and
/// everything else on the machine use over an interval.
struct CpuMeter {
    pids: Vec<String>,
    server: f64,
    client: f64,
    machine: f64,
    started: Instant,
}

impl CpuMeter {
    fn start(server: &Server) -> CpuMeter {
        let pids: Vec<String> = server.pids().iter().map(u32::to_string).collect();
        CpuMeter {
            server: pids.iter().map(|p| cpu_secs(p)).sum(),
            client: cpu_secs("self"),
            machine: machine_busy_secs(),
            pids,
            started: Instant::now(),
        }
    }

    /// (server, load generator, other processes) in cores since `start`.
    fn read(&self) -> (f64, f64, f64) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let now: f64 = self.pids.iter().map(|p| cpu_secs(p)).sum();
        let server = (now - self.server) / secs;
        let client = (cpu_secs("self") - self.client) / secs;
        let machine = (machine_busy_secs() - self.machine) / secs;
        (server, client, (machine - server - client).max(0.0))
    }
}

/// CPU and group-commit flushes (or PostgreSQL append transactions) over
/// an interval, summed over the server's nodes.
pub struct Probe {
    cpu: CpuMeter,
    flushes: f64,
    flush_secs: f64,
}

/// What a [`Probe`] saw.
pub struct Probed {
    cpu: (f64, f64, f64),
    note: String,
}

const FLUSH_COUNT: &str = "varcade_store_flush_duration_seconds_count";
const FLUSH_SUM: &str = "varcade_store_flush_duration_seconds_sum";

impl Probe {
    pub async fn start(http: &reqwest::Client, server: &Server) -> Probe {
        let flushes = metric_sum(http, &server.bases, FLUSH_COUNT).await;
        let flush_secs = metric_sum(http, &server.bases, FLUSH_SUM).await;
        Probe {
            cpu: CpuMeter::start(server),
            flushes,
            flush_secs,
        }
    }

    pub async fn finish(&self, http: &reqwest::Client, server: &Server) -> Probed {
        let cpu = self.cpu.read();
        let secs = self.cpu.started.elapsed().as_secs_f64();
        let flushes = metric_sum(http, &server.bases, FLUSH_COUNT).await - self.flushes;
        let flush_secs = metric_sum(http, &server.bases, FLUSH_SUM).await - self.flush_secs;
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

    /// [`Probe::finish`], then [`Probed::fill`].
    pub async fn fill(&self, row: &mut Row, http: &reqwest::Client, server: &Server) {
        self.finish(http, server).await.fill(row);
    }
}

impl Probed {
    /// Puts the CPU into the row and the flushes before its notes.
    pub fn fill(self, row: &mut Row) {
        row.cpu = Some(self.cpu);
        row.prepend_note(self.note);
    }
}

/// Reads a value of `GET /metrics`, e.g. `varcade_consumer_cursor{consumer="stats"}`.
pub async fn metric(http: &reqwest::Client, base: &str, series: &str) -> Res<f64> {
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

/// A series of `GET /metrics` summed over the nodes at `bases` (a node
/// that does not answer counts 0).
pub async fn metric_sum(http: &reqwest::Client, bases: &[String], series: &str) -> f64 {
    let mut sum = 0.0;
    for base in bases {
        sum += metric(http, base, series).await.unwrap_or(0.0);
    }
    sum
}

/// A consumer's cursor as `/metrics` shows it: the furthest any node at
/// `bases` shows (only the node holding the consumer's lease moves it).
pub async fn cursor(http: &reqwest::Client, bases: &[String], consumer: &str) -> Res<u64> {
    let series = format!("varcade_consumer_cursor{{consumer=\"{consumer}\"}}");
    let mut furthest = 0;
    for base in bases {
        furthest = furthest.max(metric(http, base, &series).await? as u64);
    }
    Ok(furthest)
}

/// Polls a consumer's cursor until it reaches `target`; returns when it did
/// (None on timeout, with the last cursor seen).
pub async fn wait_cursor(
    http: &reqwest::Client,
    bases: &[String],
    consumer: &str,
    target: u64,
    timeout: Duration,
) -> Res<(Option<Instant>, u64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let cursor = cursor(http, bases, consumer).await?;
        if cursor >= target {
            return Ok((Some(Instant::now()), cursor));
        }
        if Instant::now() >= deadline {
            return Ok((None, cursor));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
