//! The live lobby feed client of scenario 15 (API.md "Live lobby feed"): a
//! hand-written HTTP/1.1 `GET` of `open_games/stream` on a raw
//! `TcpStream`, the chunked body decoded and the Server-Sent Events parsed
//! line by line, without a JSON parser (a `listed` event's game id is
//! found by its `"game_id":"` key). One client is one connection, one task
//! and two small buffers, so a thousand of them fit in the load generator
//! beside the HTTP load.
//!
//! A client records when each `listed` event arrived (by a hash of its
//! game id, in microseconds since a shared epoch: every event taken from
//! one `read` shares its instant) and, when the server cuts it off,
//! reconnects as a browser's `EventSource` would: after [`RETRY`], with
//! `Last-Event-ID`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::{Context, Res};

/// How long a cut-off client waits before it reconnects.
pub const RETRY: Duration = Duration::from_secs(1);
/// Bounds on connecting and reading the response head.
const HEAD_LIMIT: Duration = Duration::from_secs(10);
/// The most a response head, a chunk-size line or an event line may hold.
const LINE_LIMIT: usize = 4 * 1024 * 1024;

/// Where the clients connect, and the instant their timestamps count from.
pub struct Target {
    pub addr: String,
    pub path: String,
    pub epoch: Instant,
    /// Clients that have received their first snapshot.
    pub ready: AtomicUsize,
}

/// What one client saw over all its connections.
#[derive(Default)]
pub struct Feed {
    /// (hash of the game id, µs since the epoch) of each `listed` event.
    pub deliveries: Vec<(u64, u32)>,
    pub listed: u64,
    pub unlisted: u64,
    pub snapshots: u64,
    /// Connections that ended (closed or failed) before the client stopped.
    pub disconnects: u64,
    /// Connection attempts that got no `200`.
    pub refused: u64,
    pub bytes: u64,
    pub first_error: Option<String>,
}

/// FNV-1a of a game id: the key deliveries are matched by.
pub fn game_key(id: &[u8]) -> u64 {
    id.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The value of the first `"game_id":"…"` in a JSON text.
pub fn game_id_of(json: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = b"\"game_id\":\"";
    let start = json.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = json[start..].iter().position(|&b| b == b'"')?;
    Some(&json[start..start + len])
}

/// Runs one client until `stop`, reconnecting after each cut-off.
pub async fn client(target: Arc<Target>, stop: CancellationToken) -> Feed {
    let mut feed = Feed::default();
    let mut last_id = None;
    let mut first = true;
    while !stop.is_cancelled() {
        match session(&target, &stop, &mut feed, &mut last_id, &mut first).await {
            Ok(Session::Stopped) => break,
            Ok(Session::Ended(why)) => {
                feed.disconnects += 1;
                feed.first_error.get_or_insert(why);
            }
            Err(e) => {
                feed.refused += 1;
                feed.first_error.get_or_insert(e);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(RETRY) => {}
        }
    }
    feed
}

/// How a connection that got its `200` ended.
enum Session {
    Stopped,
    Ended(String),
}

/// One connection: the request, the head, then events until the stream
/// ends or `stop`. An error is a connection that got no `200`.
async fn session(
    target: &Target,
    stop: &CancellationToken,
    feed: &mut Feed,
    last_id: &mut Option<u64>,
    first: &mut bool,
) -> Res<Session> {
    let (mut stream, mut body) =
        match tokio::time::timeout(HEAD_LIMIT, connect(target, *last_id)).await {
            Ok(result) => result?,
            Err(_) => return Err("no response head within 10 s".into()),
        };
    let mut events = Events::default();
    let mut text = BytesMut::with_capacity(16 * 1024);
    // What came with the head is taken first, as arrived with it.
    let mut at = target.epoch.elapsed().as_micros().min(u32::MAX as u128) as u32;
    loop {
        if let Err(e) = body.decode(&mut text) {
            return Ok(Session::Ended(e));
        }
        if let Err(e) = events.parse(&mut text, at, feed, last_id) {
            return Ok(Session::Ended(e));
        }
        if *first && feed.snapshots > 0 {
            *first = false;
            target.ready.fetch_add(1, Ordering::SeqCst);
        }
        if body.done {
            return Ok(Session::Ended("end of the chunked body".into()));
        }
        body.raw.reserve(16 * 1024);
        let read = tokio::select! {
            _ = stop.cancelled() => return Ok(Session::Stopped),
            read = stream.read_buf(&mut body.raw) => read,
        };
        at = target.epoch.elapsed().as_micros().min(u32::MAX as u128) as u32;
        match read {
            Ok(0) => return Ok(Session::Ended("closed by the server".into())),
            Ok(n) => feed.bytes += n as u64,
            Err(e) => return Ok(Session::Ended(format!("read: {e}"))),
        }
    }
}

/// Connects, sends the `GET` and reads the head; returns the stream and
/// the body decoder holding whatever came after the head.
async fn connect(target: &Target, last_id: Option<u64>) -> Res<(TcpStream, Body)> {
    let mut stream = TcpStream::connect(&target.addr).await.ctx("connect")?;
    stream.set_nodelay(true).ctx("nodelay")?;
    let resume = last_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{resume}\r\n",
        target.path, target.addr
    );
    stream.write_all(request.as_bytes()).await.ctx("write")?;
    let mut raw = BytesMut::with_capacity(16 * 1024);
    let end = loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if raw.len() > LINE_LIMIT {
            return Err("response head too long".into());
        }
        if stream.read_buf(&mut raw).await.ctx("read head")? == 0 {
            return Err("closed before the response head".into());
        }
    };
    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("http/1.1 200") {
        return Err(format!("answered {status:?}"));
    }
    let chunked = head
        .lines()
        .any(|l| l.starts_with("transfer-encoding:") && l.contains("chunked"));
    raw.advance(end + 4);
    Ok((stream, Body::new(raw, chunked)))
}

/// A response body as it arrives, chunked or not.
struct Body {
    raw: BytesMut,
    chunked: bool,
    /// Data bytes left in the current chunk.
    left: usize,
    /// The CRLF after a chunk's data is due.
    crlf: bool,
    /// The last (empty) chunk came.
    done: bool,
}

impl Body {
    fn new(raw: BytesMut, chunked: bool) -> Body {
        Body {
            raw,
            chunked,
            left: 0,
            crlf: false,
            done: false,
        }
    }

    /// Moves every complete piece of body data from `raw` to `out`.
    fn decode(&mut self, out: &mut BytesMut) -> Res<()> {
        if !self.chunked {
            out.extend_from_slice(&self.raw.split());
            return Ok(());
        }
        while !self.done {
            if self.left > 0 {
                let n = self.left.min(self.raw.len());
                if n == 0 {
                    return Ok(());
                }
                out.extend_from_slice(&self.raw[..n]);
                self.raw.advance(n);
                self.left -= n;
                self.crlf = self.left == 0;
            } else if self.crlf {
                if self.raw.len() < 2 {
                    return Ok(());
                }
                if &self.raw[..2] != b"\r\n" {
                    return Err("chunk not followed by CRLF".into());
                }
                self.raw.advance(2);
                self.crlf = false;
            } else {
                let Some(end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                    if self.raw.len() > 1024 {
                        return Err("chunk size line too long".into());
                    }
                    return Ok(());
                };
                let line = String::from_utf8_lossy(&self.raw[..end]);
                let hex = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(hex, 16).ctx("chunk size")?;
                self.raw.advance(end + 2);
                if size == 0 {
                    self.done = true;
                } else {
                    self.left = size;
                }
            }
        }
        Ok(())
    }
}

/// The kind of the event being read.
#[derive(Clone, Copy, Default, PartialEq)]
enum Kind {
    #[default]
    None,
    Snapshot,
    Listed,
    Unlisted,
    Other,
}

/// The Server-Sent Events parser's state between reads.
#[derive(Default)]
struct Events {
    kind: Kind,
    id: Option<u64>,
    /// The key of the game in this event's data.
    game: Option<u64>,
    /// Bytes of the decoded text already searched for a line end.
    scanned: usize,
}

impl Events {
    /// Takes every complete line out of `text`; an event ends at an empty
    /// line, and is recorded in `feed` as arrived at `at`.
    fn parse(
        &mut self,
        text: &mut BytesMut,
        at: u32,
        feed: &mut Feed,
        last_id: &mut Option<u64>,
    ) -> Res<()> {
        loop {
            let Some(pos) = text[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = text.len();
                if text.len() > LINE_LIMIT {
                    return Err("event line too long".into());
                }
                return Ok(());
            };
            let end = self.scanned + pos;
            let line = text[..end].strip_suffix(b"\r").unwrap_or(&text[..end]);
            self.line(line, at, feed, last_id);
            text.advance(end + 1);
            self.scanned = 0;
        }
    }

    fn line(&mut self, line: &[u8], at: u32, feed: &mut Feed, last_id: &mut Option<u64>) {
        if line.is_empty() {
            match self.kind {
                Kind::Snapshot => feed.snapshots += 1,
                Kind::Listed => {
                    feed.listed += 1;
                    if let Some(game) = self.game {
                        feed.deliveries.push((game, at));
                    }
                }
                Kind::Unlisted => feed.unlisted += 1,
                Kind::None | Kind::Other => {}
            }
            if self.id.is_some() {
                *last_id = self.id;
            }
            (self.kind, self.id, self.game) = (Kind::None, None, None);
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => return, // a comment (`: keep-alive`)
            Some(i) => (
                &line[..i],
                line[i + 1..].strip_prefix(b" ").unwrap_or(&line[i + 1..]),
            ),
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.kind = match value {
                    b"snapshot" => Kind::Snapshot,
                    b"listed" => Kind::Listed,
                    b"unlisted" => Kind::Unlisted,
                    _ => Kind::Other,
                }
            }
            b"id" => self.id = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok()),
            // Only a live event's data is searched (not a snapshot's).
            b"data"
                if matches!(self.kind, Kind::Listed | Kind::None) && value.len() < 64 * 1024 =>
            {
                self.game = game_id_of(value).map(game_key);
            }
            _ => {}
        }
    }
}
