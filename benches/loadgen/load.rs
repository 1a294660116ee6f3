//! The drivers that generate load: [`drive`] runs an HTTP call on many
//! concurrent connections, [`ws_pipeline`] and [`ws_parallel`] keep ingest
//! frames in flight on WebSockets, [`resp_pipeline`] and [`resp_parallel`]
//! keep `XADD` commands in flight on Redis-protocol connections; all
//! record per-call latency for [`percentiles`]. They know nothing of a
//! scenario: a scenario says what one call is and for how long or how many
//! times to make it.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
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

/// What [`ws_pipeline`] (or [`resp_pipeline`]) measured.
pub struct WsLoad {
    /// Frames (commands) acknowledged.
    pub frames: u64,
    /// Frames (commands) answered with something else than an ack.
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

    /// Adds another connection's figures (not its elapsed time).
    fn absorb(&mut self, other: WsLoad) {
        self.frames += other.frames;
        self.errors += other.errors;
        self.lat_us.extend(other.lat_us);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
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

/// Runs `ws_pipeline` on several connections at once; `frames[c]` is the
/// frame pool of connection `c`, which goes to `addrs[c % len]` (the nodes
/// round-robin).
pub async fn ws_parallel(
    addrs: &[String],
    frames: Vec<Arc<Vec<Utf8Bytes>>>,
    window: usize,
    duration: Duration,
    max_per_conn: u64,
    pace: Option<f64>,
) -> Res<WsLoad> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    if addrs.is_empty() {
        return Err("no WebSocket address".into());
    }
    let tasks: Vec<_> = frames
        .into_iter()
        .enumerate()
        .map(|(c, pool)| {
            tokio::spawn(ws_pipeline(
                addrs[c % addrs.len()].clone(),
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
        all.absorb(task.await.ctx("ws task")??);
    }
    all.elapsed = started.elapsed();
    Ok(all)
}

// ---------------------------------------------------------------- RESP load

/// Commands a RESP sender writes at most in one `write`.
const RESP_BATCH: usize = 256;
/// Bounds on reading one reply outside the measured loop (AUTH).
const RESP_REPLY_LIMIT: Duration = Duration::from_secs(10);

/// One command as a RESP array of bulk strings, as any Redis client
/// writes it.
pub fn resp_command(args: &[&[u8]]) -> Bytes {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    Bytes::from(out)
}

/// One RESP reply, as far as an `XADD` or `AUTH` client cares.
enum Reply {
    /// `+...` or `:...`.
    Simple(String),
    /// `$n` with its data (`$-1`, null, is an empty `Bulk`).
    Bulk(Bytes),
    /// `-...`.
    Error(String),
}

impl std::fmt::Display for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Simple(text) => write!(f, "+{text}"),
            Reply::Bulk(data) => write!(f, "${}", String::from_utf8_lossy(data)),
            Reply::Error(text) => write!(f, "-{text}"),
        }
    }
}

/// The first complete reply in `buf`, consumed; `None` while incomplete.
/// Arrays and anything else are a protocol error (no command this client
/// sends is answered with one).
fn next_reply(buf: &mut BytesMut) -> Res<Option<Reply>> {
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("RESP line over 64 KiB".into());
        }
        return Ok(None);
    };
    let line = String::from_utf8_lossy(&buf[1..end]).into_owned();
    let reply = match buf.first() {
        Some(b'+' | b':') => Reply::Simple(line),
        Some(b'-') => Reply::Error(line),
        Some(b'$') => {
            let len: i64 = line.parse().ctx("bulk length")?;
            if len < 0 {
                buf.advance(end + 2);
                return Ok(Some(Reply::Bulk(Bytes::new())));
            }
            let len = len as usize;
            if buf.len() < end + 2 + len + 2 {
                return Ok(None);
            }
            let data = Bytes::copy_from_slice(&buf[end + 2..end + 2 + len]);
            if &buf[end + 2 + len..end + 4 + len] != b"\r\n" {
                return Err("bulk string not followed by CRLF".into());
            }
            buf.advance(end + 4 + len);
            return Ok(Some(Reply::Bulk(data)));
        }
        _ => {
            return Err(format!(
                "unexpected RESP reply {:?}",
                String::from_utf8_lossy(&buf[..end])
            ));
        }
    };
    buf.advance(end + 2);
    Ok(Some(reply))
}

/// Whether an `XADD` reply's data is an entry id as varcade gives them,
/// `<digits>-0`.
fn is_xadd_id(data: &[u8]) -> bool {
    data.strip_suffix(b"-0")
        .is_some_and(|ms| !ms.is_empty() && ms.iter().all(u8::is_ascii_digit))
}

/// Connects to the RESP listener at `addr` and authenticates with the
/// ingest key (`AUTH <key>` → `+OK`).
async fn resp_connect(addr: &str) -> Res<TcpStream> {
    let mut stream = TcpStream::connect(addr).await.ctx("resp connect")?;
    stream.set_nodelay(true).ctx("nodelay")?;
    stream
        .write_all(&resp_command(&[b"AUTH", KEY.as_bytes()]))
        .await
        .ctx("write AUTH")?;
    let mut buf = BytesMut::with_capacity(256);
    let deadline = Instant::now() + RESP_REPLY_LIMIT;
    loop {
        match next_reply(&mut buf)? {
            Some(Reply::Simple(ok)) if ok == "OK" => return Ok(stream),
            Some(other) => return Err(format!("AUTH answered {other}")),
            None => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read_buf(&mut buf)).await {
            Err(_) => return Err("no answer to AUTH".into()),
            Ok(Ok(0)) => return Err("connection closed after AUTH".into()),
            Ok(Err(e)) => return Err(format!("read AUTH answer: {e}")),
            Ok(Ok(_)) => {}
        }
    }
}

/// One RESP connection: after `AUTH`, sends `commands` (cycled) with at
/// most `window` unanswered, until `deadline` or `max` commands; measures
/// each command's write-to-reply latency. A sender task writes whatever
/// the window allows in one `write` (as a pipelining client does); this
/// task reads the replies, in order. A reply other than `<id>-0` counts as
/// an error; window 1 is strictly one command at a time.
pub async fn resp_pipeline(
    addr: String,
    commands: Arc<Vec<Bytes>>,
    window: usize,
    deadline: Instant,
    max: u64,
) -> Res<WsLoad> {
    let window = window.max(1);
    let (mut read, mut write) = resp_connect(&addr).await?.into_split();
    let permits = Arc::new(tokio::sync::Semaphore::new(window));
    let times = Arc::new(Mutex::new(VecDeque::<Instant>::with_capacity(window)));
    let total = Arc::new(AtomicU64::new(u64::MAX));
    let started = Instant::now();
    let sender = {
        let (permits, times, total) = (permits.clone(), times.clone(), total.clone());
        tokio::spawn(async move {
            let mut out = Vec::with_capacity(64 * 1024);
            let mut i = 0u64;
            let mut result = Ok(());
            while i < max && Instant::now() < deadline {
                match permits.acquire().await {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                // Whatever else the window allows now, in the same write.
                let more = (permits.available_permits() as u64)
                    .min(RESP_BATCH as u64 - 1)
                    .min(max - i - 1) as u32;
                if more > 0 {
                    match permits.try_acquire_many(more) {
                        Ok(permit) => permit.forget(),
                        Err(_) => break,
                    }
                }
                let n = 1 + u64::from(more);
                for k in i..i + n {
                    out.extend_from_slice(&commands[(k % commands.len() as u64) as usize]);
                }
                {
                    let now = Instant::now();
                    let mut times = times.lock().unwrap();
                    times.extend(std::iter::repeat_n(now, n as usize));
                }
                if let Err(e) = write.write_all(&out).await {
                    result = Err(format!("resp write: {e}"));
                    break;
                }
                out.clear();
                i += n;
            }
            total.store(i, Ordering::SeqCst);
            (result, write)
        })
    };
    let mut load = WsLoad::empty();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let hard_stop = deadline + Duration::from_secs(30);
    'replies: loop {
        loop {
            let reply = match next_reply(&mut buf) {
                Ok(Some(reply)) => reply,
                Ok(None) => break,
                Err(e) => {
                    load.first_error.get_or_insert(e);
                    break 'replies;
                }
            };
            let sent = times.lock().unwrap().pop_front();
            permits.add_permits(1);
            match reply {
                Reply::Bulk(id) if is_xadd_id(&id) => {
                    load.frames += 1;
                    if let Some(sent) = sent {
                        load.lat_us.push(micros_since(sent));
                    }
                }
                other => {
                    load.errors += 1;
                    load.first_error.get_or_insert(other.to_string());
                }
            }
        }
        if load.frames + load.errors >= total.load(Ordering::SeqCst) {
            break;
        }
        if Instant::now() > hard_stop {
            load.first_error
                .get_or_insert("replies still missing 30 s after the window".into());
            break;
        }
        buf.reserve(64 * 1024);
        match tokio::time::timeout(Duration::from_millis(100), read.read_buf(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) => {
                load.first_error.get_or_insert("connection closed".into());
                break;
            }
            Ok(Err(e)) => {
                load.first_error.get_or_insert(format!("resp read: {e}"));
                break;
            }
            Ok(Ok(_)) => {}
        }
    }
    load.elapsed = started.elapsed();
    permits.close();
    // The sender is waiting for a permit (now closed) or at most in one
    // write; 5 s bounds a server that stopped reading.
    let abort = sender.abort_handle();
    match tokio::time::timeout(Duration::from_secs(5), sender).await {
        Ok(Ok((result, mut write))) => {
            if let Err(e) = result {
                load.first_error.get_or_insert(e);
            }
            let _ = write.shutdown().await;
        }
        Ok(Err(e)) => {
            load.first_error.get_or_insert(format!("resp sender: {e}"));
        }
        Err(_) => {
            abort.abort();
            load.first_error
                .get_or_insert("resp sender stuck in a write".into());
        }
    }
    Ok(load)
}

/// Runs `resp_pipeline` on several connections at once; `commands[c]` is
/// the command pool of connection `c`, which goes to `addrs[c % len]`
/// (the nodes round-robin).
pub async fn resp_parallel(
    addrs: &[String],
    commands: Vec<Arc<Vec<Bytes>>>,
    window: usize,
    duration: Duration,
    max_per_conn: u64,
) -> Res<WsLoad> {
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    if addrs.is_empty() {
        return Err("no Redis-protocol address".into());
    }
    let tasks: Vec<_> = commands
        .into_iter()
        .enumerate()
        .map(|(c, pool)| {
            tokio::spawn(resp_pipeline(
                addrs[c % addrs.len()].clone(),
                pool,
                window,
                deadline,
                max_per_conn,
            ))
        })
        .collect();
    let mut all = WsLoad::empty();
    for task in tasks {
        all.absorb(task.await.ctx("resp task")??);
    }
    all.elapsed = started.elapsed();
    Ok(all)
}
