//! Metrics: every series the service exports, named in one place, and the
//! Prometheus recorder behind `GET /metrics`.
//!
//! Label values come only from closed sets (API.md "Limits and overload"):
//! route templates, configured products, the contract's event types plus
//! `other`, states, outcomes. A value from outside a set becomes `other`,
//! so no client can grow the number of series.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Installs the global recorder; `None` if one is already installed.
pub fn install() -> Option<PrometheusHandle> {
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
        .ok()?
        .install_recorder()
        .ok()
}

static PRODUCTS: OnceLock<HashSet<String>> = OnceLock::new();

/// Records the configured products, the only product label values.
pub fn set_products(products: impl IntoIterator<Item = String>) {
    let _ = PRODUCTS.set(products.into_iter().collect());
}

/// A product as a label value: configured, else `other`.
fn product_label(product: &str) -> String {
    match PRODUCTS.get() {
        Some(known) if known.contains(product) => product.to_string(),
        _ => "other".to_string(),
    }
}

/// An HTTP method as a label value.
fn method_label(method: &str) -> &'static str {
    const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"];
    METHODS
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

/// One HTTP request answered; `route` is a route template (or `unmatched`).
pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    let labels = [
        ("method", method_label(method).to_string()),
        ("route", route.to_string()),
        ("status", status.to_string()),
    ];
    counter!("varcade_http_requests_total", &labels).increment(1);
    histogram!("varcade_http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
}

/// Events appended, by product and type (a type label from a closed set).
pub fn events_ingested(product: &str, kind: &'static str, n: u64) {
    counter!("varcade_events_ingested_total", "product" => product_label(product), "type" => kind)
        .increment(n);
}

/// An ingest frame rejected, by reason (the error code).
pub fn frame_rejected(reason: &'static str) {
    counter!("varcade_ingest_frames_rejected_total", "reason" => reason).increment(1);
}

/// Receipt to durable ack of one frame.
pub fn ack_latency(elapsed: Duration) {
    histogram!("varcade_ingest_ack_latency_seconds").record(elapsed.as_secs_f64());
}

/// One group-commit flush.
pub fn flush_latency(elapsed: Duration) {
    histogram!("varcade_store_flush_duration_seconds").record(elapsed.as_secs_f64());
}

/// A consumer's position and how far behind the log it is.
pub fn consumer_position(consumer: &'static str, cursor: u64, durable: u64) {
    gauge!("varcade_consumer_cursor", "consumer" => consumer).set(cursor as f64);
    gauge!("varcade_consumer_lag_events", "consumer" => consumer)
        .set(durable.saturating_sub(cursor) as f64);
}

/// Events a consumer applied, ignored (not applicable) or could not read.
pub fn consumer_events(consumer: &'static str, outcome: &'static str, n: u64) {
    if n > 0 {
        counter!("varcade_consumer_events_total", "consumer" => consumer, "outcome" => outcome)
            .increment(n);
    }
}

/// Moves one game between (product, state) gauges; `None` is "absent".
pub fn game_moved(product: &str, from: Option<&'static str>, to: Option<&'static str>) {
    if from == to {
        return;
    }
    if let Some(state) = from {
        gauge!("varcade_games", "product" => product_label(product), "state" => state)
            .decrement(1.0);
    }
    if let Some(state) = to {
        gauge!("varcade_games", "product" => product_label(product), "state" => state)
            .increment(1.0);
    }
}

/// Sets a (product, state) games gauge (at start, from the store).
pub fn games_seed(product: &str, state: &'static str, n: u64) {
    gauge!("varcade_games", "product" => product_label(product), "state" => state).set(n as f64);
}

/// Curation purged or reset a game.
pub fn curated(product: &str, action: &'static str) {
    let name = match action {
        "reset" => "varcade_games_reset_total",
        _ => "varcade_games_purged_total",
    };
    counter!(name, "product" => product_label(product)).increment(1);
}

/// A call to a game server, by endpoint and outcome.
pub fn game_server_call(endpoint: &'static str, outcome: &'static str, elapsed: Duration) {
    counter!("varcade_game_server_calls_total", "endpoint" => endpoint, "outcome" => outcome)
        .increment(1);
    histogram!("varcade_game_server_call_duration_seconds", "endpoint" => endpoint)
        .record(elapsed.as_secs_f64());
}

/// A consumer batch failed (it is retried with backoff).
pub fn consumer_failure(consumer: &'static str) {
    counter!("varcade_consumer_failures_total", "consumer" => consumer).increment(1);
}

/// An HTTP write refused because the storage writer's queue was full.
pub fn overloaded() {
    counter!("varcade_overloaded_total").increment(1);
}

/// A connection closed at once because `max_connections` were open.
pub fn connection_refused() {
    counter!("varcade_connections_refused_total").increment(1);
}

/// The database's size on disk.
pub fn store_size(bytes: u64) {
    gauge!("varcade_store_size_bytes").set(bytes as f64);
}

/// A Redis-protocol command, by name from the listener's closed set
/// (`other` for any it does not know) and outcome (`ok` or `error`).
pub fn resp_command(command: &'static str, outcome: &'static str) {
    counter!("varcade_resp_commands_total", "command" => command, "outcome" => outcome)
        .increment(1);
}

/// Open Redis-protocol connections, as one opens (`+1`) or closes (`-1`).
pub fn resp_connections(delta: f64) {
    gauge!("varcade_resp_connections").increment(delta);
}

/// How long writes waited while a backup was written.
pub fn backup_pause(elapsed: Duration) {
    histogram!("varcade_backup_pause_seconds").record(elapsed.as_secs_f64());
}

/// A live lobby feed client cut off for not keeping up.
pub fn feed_client_cut_off() {
    counter!("varcade_feed_clients_cut_off_total").increment(1);
}
