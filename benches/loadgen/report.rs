//! The results: one [`Row`] per figure, filled by the scenarios, printed as
//! it is measured and again as the final table. Kept apart so that every
//! scenario reports in the same columns and the table's layout lives in
//! one place.

use std::sync::OnceLock;

use crate::SCENARIOS;
use crate::load::{Load, WsLoad, percentiles};

/// The storage and nodes every row of this run is on (`sled`, `pg:1`,
/// `pg:2`), printed in each row's `store` column.
static STORE: OnceLock<String> = OnceLock::new();

/// Sets the `store` column for this run (once, before any row prints).
pub fn set_store(label: String) {
    let _ = STORE.set(label);
}

fn store() -> &'static str {
    STORE.get().map_or("", String::as_str)
}

/// One line of the table.
pub struct Row {
    pub id: usize,
    pub scenario: String,
    pub measured: String,
    pub count: u64,
    pub secs: f64,
    pub rate: Option<f64>,
    pub unit: &'static str,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub target: String,
    pub met: Option<bool>,
    /// Cores used by (the server, the load generator, other processes).
    pub cpu: Option<(f64, f64, f64)>,
    pub note: String,
}

impl Row {
    pub fn new(id: usize, measured: impl Into<String>) -> Row {
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

    /// The row of a scenario that could not run.
    pub fn failed(id: usize, error: String) -> Row {
        let mut row = Row::new(id, "FAILED");
        row.note = error;
        row
    }

    /// Successful HTTP calls per second and their latency.
    pub fn http(id: usize, measured: &str, load: &mut Load, unit: &'static str) -> Row {
        let mut row = Row::new(id, measured);
        row.count = load.ok;
        row.secs = load.elapsed.as_secs_f64();
        row.rate = Some(load.rate());
        row.unit = unit;
        (row.p50, row.p99) = percentiles(&mut load.lat_us);
        row.note = load.note();
        row
    }

    /// Acknowledged WebSocket frames, counted as `per_frame` each, per
    /// second, and the frames' send-to-ack latency.
    pub fn ws(
        id: usize,
        measured: impl Into<String>,
        load: &mut WsLoad,
        per_frame: u64,
        unit: &'static str,
    ) -> Row {
        let mut row = Row::new(id, measured);
        row.count = load.frames * per_frame;
        row.secs = load.elapsed.as_secs_f64();
        row.rate = Some(row.count as f64 / row.secs);
        row.unit = unit;
        (row.p50, row.p99) = percentiles(&mut load.lat_us);
        row
    }

    /// A figure compared with a limit (`measured <= limit` meets it).
    pub fn limit(
        id: usize,
        measured: impl Into<String>,
        value: f64,
        target: &str,
        limit: f64,
    ) -> Row {
        let mut row = Row::new(id, measured);
        row.target = target.to_string();
        row.met = Some(value <= limit);
        row
    }

    /// Sets the target and whether it was met: the rate at least
    /// `min_rate`, p99 at most `max_p99`, and no errors.
    pub fn target(&mut self, text: &str, min_rate: Option<f64>, max_p99: Option<f64>) {
        self.target = text.to_string();
        let rate_ok = min_rate.is_none_or(|m| self.rate.unwrap_or(0.0) >= m);
        let p99_ok = max_p99.is_none_or(|m| self.p99.is_some_and(|p| p <= m));
        self.met = Some(rate_ok && p99_ok && !self.note.contains("errors"));
    }

    /// Appends `text` to the notes (`; `-separated).
    pub fn add_note(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if !self.note.is_empty() {
            self.note.push_str("; ");
        }
        self.note.push_str(text);
    }

    /// Puts `text` before the notes (`; `-separated).
    pub fn prepend_note(&mut self, text: String) {
        if text.is_empty() {
            return;
        }
        if self.note.is_empty() {
            self.note = text;
        } else {
            self.note = format!("{text}; {}", self.note);
        }
    }

    pub fn print(&self) {
        let f =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        println!(
            "{:>2} {:<5} {:<19} {:<38} {:>9} {:>6.2} {:>11} {:<6} {:>7} {:>7}  {:<22} {:<4} {:>14}  {}",
            self.id,
            store(),
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
            "{:>2} {:<5} {:<19} {:<38} {:>9} {:>6} {:>11} {:<6} {:>7} {:>7}  {:<22} {:<4} {:>14}  notes",
            "#",
            "store",
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

/// The final table: a title line, the header and every row.
pub fn table(rows: &[Row], cores: usize, quick: bool, store: &str) {
    println!();
    println!(
        "varcade loadgen results, {store} ({cores} cores; load generator, server(s) and PostgreSQL share them; \
         cpu srv/gen/oth = cores used by the server (all nodes) / the load generator incl. the fake game server / other processes, PostgreSQL among them){}",
        if quick { " [QUICK]" } else { "" }
    );
    Row::header();
    for row in rows {
        row.print();
    }
}
