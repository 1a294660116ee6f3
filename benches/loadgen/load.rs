//! The drivers that generate load: [`drive`] runs an HTTP call on many
//! concurrent connections, [`ws_pipeline`] and [`ws_parallel`] keep ingest
//! frames in flight on WebSockets; both record per-call latency for
//! [`percentiles`]. They know nothing of a scenario: a scenario says what
//! one call is and for how long or how many times to make it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::{Context, KEY, Res};

/// (p50, p99) in milliseconds.
pub fn percentiles(lat_us: &mut [u32]) -> (Option<f64>, Option<f64>) {
    if lat_us.is_empty() {
        return (None, None);
    }
    lat_us.sort_unstable();
    let at = |p: usize| lat_us[(lat_us.len() * p / 100).min(lat_us.len() - 1)] as f64 / 1000.0;
    (Some(at(50)), Some(at(99)))
}

/// Microseconds since `t`, saturated to `u32`.
fn micros_since(t: Instant) -> u32 {
    t.elapsed().as_micros().min(u32::MAX as u128) as u32
}

// ---------------------------------------------------------------- HTTP load

/// What [`drive`] measured.
pub struct Load {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub lat_us: Vec<u32>,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn note(&self) -> String {
        match &self.first_error {
            Some(e) => format!("{} errors, first: {e}", self.errors),
            None => String::new(),
        }
    }
}

/// Runs `f(connection, i)` on `conns` concurrent tasks until `duration` has
/// passed or `max` calls were made; latency is recorded per successful call.
pub async fn drive<F, Fut>(conns: usize, duration: Duration, max: u64, f: F) -> Load
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
                        Ok(()) => lat.push(micros_since(t)),
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

/// The body of a 200 answer; any other status is an error with its body.
pub async fn expect_ok(response: reqwest::Result<reqwest::Response>) -> Res<axum::body::Bytes> {
    let response = response.ctx("request")?;
    let status = response.status();
    let body = response.bytes().await.ctx("body")?;
    if status != 200 {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    Ok(body)
}

// ---------------------------------------------------------------- WebSocket load

/// What [`ws_pipeline`] measured.
pub struct WsLoad {
    /// Frames acknowledged.
    pub frames: u64,
    /// Frames answered with something else than an ack.
    pub errors: u64,
    pub first_error: Option<String>,
    pub lat_us: Vec<u32>,
    pub elapsed: Duration,
}

impl WsLoad {
    fn empty() -> WsLoad {
        WsLoad {
            frames: 0,
            errors: 0,
            first_error: None,
            lat_us: Vec::new(),
            elapsed: Duration::ZERO,
        }
    }

    pub fn note(&self) -> String {
        match &self.first_error {
            Some(e) => format!("{} errors, first: {e}", self.errors.max(1)),
            None => String::new(),
        }
    }
}

/// One ingest WebSocket: sends `frames` (cycled) with at most `window` frames
/// unacknowledged, optionally paced at `pace` frames/s, until `deadline` or
/// `max` frames; measures each frame's send-to-ack latency.
pub async fn ws_pipeline(
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
    let mut load = WsLoad::empty();
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
                load.lat_us.push(micros_since(sent));
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

/// Runs `ws_pipeline` on several connections to `addr` at once; `frames[c]`
/// is the frame pool of connection `c`.
pub async fn ws_parallel(
    addr: &str,
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
                addr.to_string(),
                pool,
                window,
                deadline,
                max_per_conn,
                pace,
            ))
        })
        .collect();
    let mut all = WsLoad::empty();
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
