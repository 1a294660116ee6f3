//! The "Redis-protocol ingest (game servers that XADD)" section of API.md
//! against the real binary: XADD with the `redis` crate, raw RESP and
//! node-redis 3.1.2 (the client the original RPS server uses), pipelining
//! and exactly-once across `kill -9`, IDMP, AUTH and HELLO, the error
//! replies, protocol errors that close only their connection, the other
//! commands, and RESP connections counting towards `max_connections`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{FakeGameServer, Options, Server, listed, wait_until};
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const STREAM: &str = "game_event_stream";
const NOAUTH: &str = "-NOAUTH Authentication required.\r\n";
const WRONGPASS: &str = "-WRONGPASS invalid username-password pair or user is disabled.\r\n";
const USE_STAR: &str = "-ERR varcade assigns entry ids: use *\r\n";
/// How long any single reply may take (the machine is small and the tests
/// run in parallel; an XADD waits for an fsync).
const REPLY_LIMIT: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// Setup
// ---------------------------------------------------------------------------

/// A fake game server and varcade with the RESP listener on.
async fn resp_server_with(extra: &str) -> (FakeGameServer, Options, Server) {
    let fake = FakeGameServer::start().await;
    let options = Options {
        resp: true,
        extra: extra.to_string(),
        ..Options::new(&fake)
    };
    let server = Server::start(&options).await;
    assert!(
        server.resp.is_some(),
        "with [resp] bind set, no `varcade redis protocol on <addr>` line came before `listening on`"
    );
    (fake, options, server)
}

async fn resp_server() -> (FakeGameServer, Options, Server) {
    resp_server_with("").await
}

fn resp_addr(server: &Server) -> String {
    server.resp.clone().expect("the RESP address")
}

// ---------------------------------------------------------------------------
// A raw RESP client
// ---------------------------------------------------------------------------

/// One parsed reply. Simple strings, RESP3 booleans, doubles and big
/// numbers are `Simple`; blob and verbatim strings are `Bulk`; sets and
/// pushes are `Array`.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
    Map(Vec<(Reply, Reply)>),
    Null,
}

impl Reply {
    /// The text of a simple or bulk string.
    fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| from + i)
}

/// Parses one reply at `pos`: `Ok(None)` while incomplete, else the reply
/// and the position after it.
fn parse_at(buf: &[u8], pos: usize) -> Result<Option<(Reply, usize)>, String> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let Some(end) = find_crlf(buf, pos + 1) else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&buf[pos + 1..end]).into_owned();
    let next = end + 2;
    let number = || {
        text.parse::<i64>()
            .map_err(|_| format!("bad number {text:?} after {:?}", kind as char))
    };
    let items = |n: i64, mut at: usize| -> Result<Option<(Vec<Reply>, usize)>, String> {
        let mut out = Vec::new();
        for _ in 0..n {
            match parse_at(buf, at)? {
                Some((reply, after)) => {
                    out.push(reply);
                    at = after;
                }
                None => return Ok(None),
            }
        }
        Ok(Some((out, at)))
    };
    let reply = match kind {
        b'+' | b'#' | b',' | b'(' => (Reply::Simple(text), next),
        b'-' => (Reply::Error(text), next),
        b':' => (Reply::Int(number()?), next),
        b'_' => (Reply::Null, next),
        b'$' | b'=' | b'!' => {
            let n = number()?;
            if n < 0 {
                (Reply::Bulk(None), next)
            } else {
                let n = n as usize;
                if buf.len() < next + n + 2 {
                    return Ok(None);
                }
                if &buf[next + n..next + n + 2] != b"\r\n" {
                    return Err("bulk string not followed by CRLF".into());
                }
                (
                    Reply::Bulk(Some(buf[next..next + n].to_vec())),
                    next + n + 2,
                )
            }
        }
        b'*' | b'~' | b'>' => {
            let n = number()?;
            if n < 0 {
                (Reply::Array(None), next)
            } else {
                match items(n, next)? {
                    Some((list, after)) => (Reply::Array(Some(list)), after),
                    None => return Ok(None),
                }
            }
        }
        b'%' => {
            let n = number()?;
            match items(2 * n, next)? {
                Some((list, after)) => {
                    let mut pairs = Vec::new();
                    let mut it = list.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    (Reply::Map(pairs), after)
                }
                None => return Ok(None),
            }
        }
        other => return Err(format!("not a RESP reply type byte: {:?}", other as char)),
    };
    Ok(Some(reply))
}

/// Encodes a command as a RESP array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn encode_str(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode(&args)
}

fn shorten(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    if bytes.len() > 300 {
        format!("{text}… ({} bytes)", bytes.len())
    } else {
        text
    }
}

/// A plain TCP connection to the RESP listener.
struct Conn {
    r: OwnedReadHalf,
    w: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(addr: &str) -> Conn {
        let stream = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("connect to {addr} timed out"))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        let (r, w) = stream.into_split();
        Conn {
            r,
            w: Some(w),
            buf: Vec::new(),
        }
    }

    /// A connection that has sent `AUTH <key>` and got `+OK`.
    async fn authed(addr: &str, key: &str) -> Conn {
        let mut conn = Conn::open(addr).await;
        assert_eq!(conn.cmd(&["AUTH", key]).await, "+OK\r\n", "AUTH {key}");
        conn
    }

    async fn write(&mut self, bytes: &[u8]) {
        let w = self.w.as_mut().expect("the write half");
        tokio::time::timeout(REPLY_LIMIT, w.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// Reads one complete reply: the parsed form and its bytes.
    async fn read_reply(&mut self) -> (Reply, Vec<u8>) {
        let deadline = tokio::time::Instant::now() + REPLY_LIMIT;
        loop {
            match parse_at(&self.buf, 0) {
                Ok(Some((reply, used))) => {
                    let raw: Vec<u8> = self.buf.drain(..used).collect();
                    return (reply, raw);
                }
                Ok(None) => {}
                Err(e) => panic!("unparsable reply ({e}): {}", shorten(&self.buf)),
            }
            let mut chunk = vec![0u8; 64 * 1024];
            let n = tokio::time::timeout_at(deadline, self.r.read(&mut chunk))
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no complete reply within {REPLY_LIMIT:?}; have {}",
                        shorten(&self.buf)
                    )
                })
                .unwrap_or_else(|e| {
                    panic!(
                        "read failed ({e}) before a reply; have {}",
                        shorten(&self.buf)
                    )
                });
            assert!(
                n > 0,
                "connection closed before a complete reply; have {:?}",
                shorten(&self.buf)
            );
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next reply as (lossy) text, exactly as on the wire.
    async fn raw_reply(&mut self) -> String {
        let (_, raw) = self.read_reply().await;
        String::from_utf8_lossy(&raw).into_owned()
    }

    /// Sends a command and returns the reply exactly as on the wire.
    async fn cmd(&mut self, args: &[&str]) -> String {
        self.write(&encode_str(args)).await;
        self.raw_reply().await
    }

    /// Sends a command and returns the parsed reply.
    async fn cmd_reply(&mut self, args: &[&str]) -> Reply {
        self.write(&encode_str(args)).await;
        self.read_reply().await.0
    }

    /// `XADD game_event_stream <options…> * <pairs…>`; returns the id of the
    /// `<id>-0` reply.
    async fn xadd_with(&mut self, options: &[&str], pairs: &[(&str, &str)]) -> u64 {
        let args = xadd_args(options, pairs);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.write(&encode_str(&args)).await;
        let (reply, raw) = self.read_reply().await;
        match reply {
            Reply::Bulk(Some(id)) => entry_id(&String::from_utf8_lossy(&id)),
            _ => panic!(
                "XADD {args:?}: expected a bulk `<id>-0`, got {}",
                shorten(&raw)
            ),
        }
    }

    async fn xadd(&mut self, pairs: &[(&str, &str)]) -> u64 {
        self.xadd_with(&[], pairs).await
    }

    /// Asserts that the server closes the connection (EOF, or a reset
    /// because unread bytes were discarded) without sending anything more.
    async fn expect_closed(&mut self, what: &str) {
        assert!(
            self.buf.is_empty(),
            "{what}: unexpected bytes {}",
            shorten(&self.buf)
        );
        let mut chunk = vec![0u8; 64 * 1024];
        match tokio::time::timeout(Duration::from_secs(5), self.r.read(&mut chunk)).await {
            Err(_) => panic!("{what}: the connection is still open 5 s later"),
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => panic!(
                "{what}: expected the connection to be closed, got more bytes: {}",
                shorten(&chunk[..n])
            ),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(Err(e)) => panic!("{what}: read failed with {e} instead of a close"),
        }
    }
}

/// The args of an XADD to the configured stream.
fn xadd_args(options: &[&str], pairs: &[(&str, &str)]) -> Vec<String> {
    let mut args = vec!["XADD".to_string(), STREAM.to_string()];
    args.extend(options.iter().map(|o| o.to_string()));
    args.push("*".into());
    for (k, v) in pairs {
        args.push(k.to_string());
        args.push(v.to_string());
    }
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The log id of an XADD reply `<id>-0`.
fn entry_id(reply: &str) -> u64 {
    let id = reply
        .strip_suffix("-0")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("XADD reply {reply:?} is not `<id>-0`"));
    assert_eq!(format!("{id}-0"), reply, "XADD reply {reply:?}");
    id
}

/// The event object XADD fields become: every value a string.
fn event(pairs: &[(&str, &str)]) -> Value {
    let mut map = serde_json::Map::new();
    for (k, v) in pairs {
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    Value::Object(map)
}

// ---------------------------------------------------------------------------
// Reading back
// ---------------------------------------------------------------------------

/// The whole event log as (id, event).
async fn log(server: &Server) -> Vec<(u64, Value)> {
    server
        .events()
        .await
        .into_iter()
        .map(|e| {
            let id = e["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("event without an integer id: {e}"));
            assert!(e["ts_ms"].is_u64(), "event without ts_ms: {e}");
            (id, e["event"].clone())
        })
        .collect()
}

async fn get_ok(server: &Server, path: &str) -> Value {
    let (status, body) = server.get(path).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn stats(server: &Server, user: &str) -> Value {
    get_ok(server, &format!("/stats/exrps/{user}")).await
}

/// Waits until `GET path` answers 200 with exactly `want`.
async fn wait_for_body(server: &Server, path: &str, want: &Value) {
    let limit = Duration::from_secs(20);
    let deadline = std::time::Instant::now() + limit;
    loop {
        let (status, body) = server.get(path).await;
        if status == 200 && body == *want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "GET {path} not {want} within {limit:?}; last answer {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn is_listed(server: &Server, game: &str) -> bool {
    listed(server, "exrps", game).await.is_some()
}

async fn healthz_ok(server: &Server, what: &str) {
    let (status, body) = server.get("/healthz").await;
    assert_eq!(status, 200, "{what}: GET /healthz: {body}");
}

async fn create_game(server: &Server, user: &str) -> String {
    let (status, game) = server.create("exrps", user).await;
    assert_eq!(status, 200, "create_game: {game}");
    game["game_id"].as_str().unwrap().to_string()
}

// ---------------------------------------------------------------------------
// 1. The redis crate, every event kind, the consumers apply them
// ---------------------------------------------------------------------------

async fn redis_connection(addr: &str, key: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://:{key}@{addr}/1")).unwrap();
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(10)))
        .set_response_timeout(Some(REPLY_LIMIT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap_or_else(|e| panic!("the redis crate could not connect to {addr}: {e}"))
}

/// XADD through the `redis` crate's typed command.
async fn crate_xadd(con: &mut redis::aio::MultiplexedConnection, pairs: &[(&str, &str)]) -> u64 {
    let reply: String = con
        .xadd(STREAM, "*", pairs)
        .await
        .unwrap_or_else(|e| panic!("XADD {pairs:?}: {e}"));
    entry_id(&reply)
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_crate_xadds_every_event_kind_and_the_consumers_apply_them() {
    let (_fake, _options, server) = resp_server().await;
    let addr = resp_addr(&server);
    let mut con = redis_connection(&addr, "exrps-secret").await;
    let server = &server;
    let mut sent: Vec<(u64, Value)> = Vec::new();

    // A game created over HTTP is listed once the game server reports
    // creator_joined by XADD.
    let g = create_game(server, "alice").await;
    let g = g.as_str();
    let pairs = [
        ("product_id", "exrps"),
        ("game_id", g),
        ("type", "state_change"),
        ("new_state", "creator_joined"),
    ];
    sent.push((crate_xadd(&mut con, &pairs).await, event(&pairs)));
    wait_until(
        Duration::from_secs(10),
        "the game is listed",
        || async move { is_listed(server, g).await },
    )
    .await;
    let listing = listed(server, "exrps", g).await.unwrap();
    assert_eq!(listing["players"], json!(["alice"]), "{listing}");
    assert_eq!(listing["creator_id"], "alice", "{listing}");

    // Gameplay: a weapon each, `"null"` a botch; set_ready with an empty
    // event_data; two select_weapon in one redis pipeline.
    let pick = |user: &'static str, data: &'static str| {
        [
            ("product_id", "exrps"),
            ("game_id", g),
            ("type", "gameplay"),
            ("event_name", "select_weapon"),
            ("event_data", data),
            ("user_id", user),
        ]
    };
    for (user, data) in [
        ("alice", "0"),
        ("alice", "1"),
        ("alice", "2"),
        ("alice", "null"),
    ] {
        let pairs = pick(user, data);
        sent.push((crate_xadd(&mut con, &pairs).await, event(&pairs)));
    }
    let ready = [
        ("product_id", "exrps"),
        ("game_id", g),
        ("type", "gameplay"),
        ("event_name", "set_ready"),
        ("event_data", ""),
        ("user_id", "alice"),
    ];
    sent.push((crate_xadd(&mut con, &ready).await, event(&ready)));
    let (first, second): (String, String) = redis::pipe()
        .xadd(STREAM, "*", &pick("bob", "2"))
        .xadd(STREAM, "*", &pick("bob", "0"))
        .query_async(&mut con)
        .await
        .expect("two pipelined XADDs");
    sent.push((entry_id(&first), event(&pick("bob", "2"))));
    sent.push((entry_id(&second), event(&pick("bob", "0"))));

    // A type the matchmaker does not know, extra fields, no user_id.
    let progression = [
        ("product_id", "exrps"),
        ("game_id", g),
        ("type", "progression"),
        ("progress_event", "round_finished"),
        ("p1_id", "alice"),
        ("p2_id", "bob"),
        ("round_winner_id", "alice"),
    ];
    sent.push((
        crate_xadd(&mut con, &progression).await,
        event(&progression),
    ));
    let over = [
        ("product_id", "exrps"),
        ("game_id", g),
        ("type", "game_over"),
        ("winner_id", "alice"),
        ("loser_id", "bob"),
    ];
    sent.push((crate_xadd(&mut con, &over).await, event(&over)));

    // A second game: full after a join, listed again after the joiner's
    // player_disconnect, gone after game_removed.
    let g2 = create_game(server, "carol").await;
    let g2 = g2.as_str();
    let joined = [
        ("product_id", "exrps"),
        ("game_id", g2),
        ("type", "state_change"),
        ("new_state", "creator_joined"),
    ];
    sent.push((crate_xadd(&mut con, &joined).await, event(&joined)));
    wait_until(Duration::from_secs(10), "game 2 is listed", || async move {
        is_listed(server, g2).await
    })
    .await;
    let (status, body) = server.join("exrps", g2, "dave").await;
    assert_eq!(status, 200, "join: {body}");
    wait_until(
        Duration::from_secs(10),
        "full game 2 leaves the lobby",
        || async move { !is_listed(server, g2).await },
    )
    .await;
    let disconnect = [
        ("product_id", "exrps"),
        ("game_id", g2),
        ("type", "player_disconnect"),
        ("player_id", "dave"),
    ];
    sent.push((crate_xadd(&mut con, &disconnect).await, event(&disconnect)));
    wait_until(
        Duration::from_secs(10),
        "game 2 is listed again without dave",
        || async move {
            listed(server, "exrps", g2)
                .await
                .is_some_and(|l| l["players"] == json!(["carol"]))
        },
    )
    .await;
    let removed = [
        ("product_id", "exrps"),
        ("game_id", g2),
        ("type", "game_removed"),
    ];
    sent.push((crate_xadd(&mut con, &removed).await, event(&removed)));
    wait_until(
        Duration::from_secs(10),
        "game 2 is deleted",
        || async move { server.join("exrps", g2, "erin").await.0 == 404 },
    )
    .await;
    let (status, body) = server.join("exrps", g2, "erin").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("game_not_found")),
        "{body}"
    );
    assert!(!is_listed(server, g2).await);
    assert!(is_listed(server, g).await, "game 1 is still listed");

    // Replies are increasing; the log holds exactly what was sent, string
    // values as sent, under the replied ids.
    let ids: Vec<u64> = sent.iter().map(|(id, _)| *id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "XADD ids not increasing: {ids:?}"
    );
    assert_eq!(log(server).await, sent);

    // The stats tracker applied them.
    wait_for_body(
        server,
        "/leaderboards/top_ten/exrps",
        &json!([{"user_id": "alice", "score": 1}, {"user_id": "bob", "score": 0}]),
    )
    .await;
    wait_for_body(
        server,
        "/stats/exrps/alice",
        &json!({"games": 1, "wins": 1, "losses": 0, "rock_selection_count": 1,
                "paper_selection_count": 1, "scissors_selection_count": 1,
                "botch_selection_count": 1}),
    )
    .await;
    wait_for_body(
        server,
        "/stats/exrps/bob",
        &json!({"games": 1, "wins": 0, "losses": 1, "rock_selection_count": 1,
                "scissors_selection_count": 1}),
    )
    .await;
}

// ---------------------------------------------------------------------------
// 2. 1,000 pipelined XADDs, kill -9 right after the last reply
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_pipelined_xadds_are_durable_and_applied_once_across_kill_9() {
    let (_fake, options, server) = resp_server().await;
    let addr = resp_addr(&server);
    let mut conn = Conn::authed(&addr, "exrps-secret").await;

    const N: usize = 1000;
    let mut bytes = Vec::new();
    let mut events = Vec::new();
    for i in 0..N {
        let game = format!("pipelined-{i}");
        let winner = format!("w{}", i % 10);
        let loser = format!("l{}", i % 10);
        let pairs = [
            ("product_id", "exrps"),
            ("game_id", game.as_str()),
            ("type", "game_over"),
            ("winner_id", winner.as_str()),
            ("loser_id", loser.as_str()),
        ];
        let args = xadd_args(&[], &pairs);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bytes.extend(encode_str(&args));
        events.push(event(&pairs));
    }
    // All 1,000 in one write, then the replies, in order.
    conn.write(&bytes).await;
    let mut ids = Vec::new();
    for i in 0..N {
        let (reply, raw) = conn.read_reply().await;
        match reply {
            Reply::Bulk(Some(id)) => ids.push(entry_id(&String::from_utf8_lossy(&id))),
            _ => panic!("reply {i} to a pipelined XADD: {}", shorten(&raw)),
        }
    }
    // kill -9 right after the last reply.
    let server = server.crash_and_restart(&options).await;
    assert!(server.resp.is_some(), "no RESP listener after the restart");

    let want: Vec<u64> = (1..=N as u64).collect();
    assert_eq!(
        ids, want,
        "pipelined XADD replies are not the consecutive ids 1..=1000 in order"
    );
    let expected: Vec<(u64, Value)> = ids.iter().copied().zip(events).collect();
    let got = log(&server).await;
    assert_eq!(
        got.len(),
        N,
        "after kill -9 the log holds {} events, 1,000 were acknowledged",
        got.len()
    );
    assert_eq!(got, expected, "the log after kill -9");

    // Applied exactly once: each of w0..w9 won 100, each of l0..l9 lost 100.
    let top: Vec<Value> = (0..10)
        .map(|i| json!({"user_id": format!("w{i}"), "score": 100}))
        .collect();
    wait_for_body(&server, "/leaderboards/top_ten/exrps", &Value::Array(top)).await;
    wait_for_body(
        &server,
        "/stats/exrps/l9",
        &json!({"games": 100, "wins": 0, "losses": 100}),
    )
    .await;
    let board = get_ok(&server, "/leaderboards/exrps?offset=0&count=100").await;
    let board = board.as_array().unwrap();
    assert_eq!(board.len(), 20, "{board:?}");
    let total: i64 = board.iter().map(|e| e["score"].as_i64().unwrap()).sum();
    assert_eq!(total, N as i64, "board total: {board:?}");
    for i in 0..10 {
        assert_eq!(
            stats(&server, &format!("w{i}")).await,
            json!({"games": 100, "wins": 100, "losses": 0}),
            "w{i}"
        );
        assert_eq!(
            stats(&server, &format!("l{i}")).await,
            json!({"games": 100, "wins": 0, "losses": 100}),
            "l{i}"
        );
    }
}

// ---------------------------------------------------------------------------
// 3. IDMP
// ---------------------------------------------------------------------------

fn tick(n: &str) -> [(&'static str, &str); 4] {
    [
        ("product_id", "exrps"),
        ("game_id", "idmp-game"),
        ("type", "tick"),
        ("n", n),
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn idmp_appends_once_per_producer_and_iid_across_restarts() {
    let (_fake, options, server) = resp_server().await;
    let mut conn = Conn::authed(&resp_addr(&server), "exrps-secret").await;
    let mut expected: Vec<(u64, Value)> = Vec::new();

    let first = conn.xadd_with(&["IDMP", "p1", "iid-1"], &tick("1")).await;
    expected.push((first, event(&tick("1"))));
    // A repeat, whatever its fields, answers the first id and appends nothing.
    let again = conn.xadd_with(&["IDMP", "p1", "iid-1"], &tick("2")).await;
    assert_eq!(again, first, "repeated IDMP p1 iid-1");
    assert_eq!(log(&server).await, expected);

    // Remembered durably.
    drop(conn);
    let server = server.crash_and_restart(&options).await;
    let mut conn = Conn::authed(&resp_addr(&server), "exrps-secret").await;
    let after = conn.xadd_with(&["IDMP", "p1", "iid-1"], &tick("3")).await;
    assert_eq!(after, first, "IDMP p1 iid-1 after kill -9");
    assert_eq!(log(&server).await, expected);

    // Another iid, and the same iid under another producer, append.
    let two = conn.xadd_with(&["IDMP", "p1", "iid-2"], &tick("4")).await;
    assert!(two > first, "{two} after {first}");
    expected.push((two, event(&tick("4"))));
    let other = conn.xadd_with(&["IDMP", "p2", "iid-1"], &tick("5")).await;
    assert!(other > two, "{other} after {two}");
    expected.push((other, event(&tick("5"))));

    // The options in other orders, NOMKSTREAM, MAXLEN/MINID with or without
    // `=`/`~`, LIMIT: accepted (and ignored).
    let three = conn
        .xadd_with(&["MAXLEN", "~", "1000", "IDMP", "p1", "iid-3"], &tick("6"))
        .await;
    expected.push((three, event(&tick("6"))));
    let repeat = conn
        .xadd_with(
            &[
                "NOMKSTREAM",
                "MAXLEN",
                "~",
                "10",
                "LIMIT",
                "100",
                "IDMP",
                "p1",
                "iid-3",
            ],
            &tick("7"),
        )
        .await;
    assert_eq!(repeat, three, "IDMP p1 iid-3 with the options reordered");
    let repeat = conn
        .xadd_with(&["IDMP", "p1", "iid-3", "NOMKSTREAM"], &tick("8"))
        .await;
    assert_eq!(repeat, three, "IDMP p1 iid-3 before NOMKSTREAM");
    for (n, options) in [
        ("9", &["NOMKSTREAM"][..]),
        ("10", &["MAXLEN", "1000"][..]),
        ("11", &["MAXLEN", "=", "5"][..]),
        ("12", &["MINID", "~", "0", "LIMIT", "10"][..]),
        (
            "13",
            &["NOMKSTREAM", "MINID", "=", "0", "IDMP", "p3", "x"][..],
        ),
    ] {
        let id = conn.xadd_with(options, &tick(n)).await;
        expected.push((id, event(&tick(n))));
    }
    let ids: Vec<u64> = expected.iter().map(|(id, _)| *id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing: {ids:?}"
    );
    assert_eq!(log(&server).await, expected);
}

// ---------------------------------------------------------------------------
// 4. Errors
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn auth_and_xadd_errors_append_nothing_and_keep_the_connection() {
    let (_fake, _options, server) = resp_server().await;
    let addr = resp_addr(&server);
    let mut conn = Conn::open(&addr).await;
    let ok = [
        ("product_id", "exrps"),
        ("game_id", "g-err"),
        ("type", "game_over"),
        ("winner_id", "a"),
        ("loser_id", "b"),
    ];
    let xadd = |pairs: &[(&str, &str)]| xadd_args(&[], pairs);

    // Before AUTH.
    let valid = xadd(&ok);
    assert_eq!(conn.cmd(&strs(&valid)).await, NOAUTH);
    assert_eq!(conn.cmd(&["AUTH", "wrong"]).await, WRONGPASS);
    assert_eq!(conn.cmd(&["AUTH", "default", "wrong"]).await, WRONGPASS);
    assert_eq!(
        conn.cmd(&strs(&valid)).await,
        NOAUTH,
        "a wrong AUTH must not authenticate"
    );
    // The two-argument form; the user is ignored.
    assert_eq!(
        conn.cmd(&["AUTH", "someone", "exrps-secret"]).await,
        "+OK\r\n"
    );

    // A product the key does not admit.
    let chess = [
        ("product_id", "chess"),
        ("game_id", "g-err"),
        ("type", "game_removed"),
    ];
    let reply = conn.cmd(&strs(&xadd(&chess))).await;
    assert!(
        reply.starts_with("-ERR forbidden:"),
        "chess event with the exrps key: {reply:?}"
    );

    // Invalid events.
    let no_loser = [
        ("product_id", "exrps"),
        ("game_id", "g-err"),
        ("type", "game_over"),
        ("winner_id", "a"),
    ];
    let unknown_product = [
        ("product_id", "nope"),
        ("game_id", "g"),
        ("type", "game_removed"),
    ];
    let no_product = [("game_id", "g"), ("type", "game_removed")];
    let no_type = [("product_id", "exrps"), ("game_id", "g")];
    let no_new_state = [
        ("product_id", "exrps"),
        ("game_id", "g"),
        ("type", "state_change"),
    ];
    let no_player = [
        ("product_id", "exrps"),
        ("game_id", "g"),
        ("type", "player_disconnect"),
    ];
    let no_event_name = [
        ("product_id", "exrps"),
        ("game_id", "g"),
        ("type", "gameplay"),
    ];
    for (what, pairs) in [
        ("game_over without loser_id", &no_loser[..]),
        ("unknown product", &unknown_product[..]),
        ("no product_id", &no_product[..]),
        ("no type", &no_type[..]),
        ("state_change without new_state", &no_new_state[..]),
        ("player_disconnect without player_id", &no_player[..]),
        ("gameplay without event_name", &no_event_name[..]),
    ] {
        let reply = conn.cmd(&strs(&xadd(pairs))).await;
        assert!(reply.starts_with("-ERR bad_request:"), "{what}: {reply:?}");
    }

    // An explicit entry id.
    let mut explicit = vec!["XADD", STREAM, "1-1"];
    for (k, v) in ok {
        explicit.extend([k, v]);
    }
    assert_eq!(conn.cmd(&explicit).await, USE_STAR, "XADD with id 1-1");
    explicit[2] = "5";
    assert_eq!(conn.cmd(&explicit).await, USE_STAR, "XADD with id 5");

    // Another stream, an odd number of field/value arguments, no fields.
    let mut other_stream = strs(&valid);
    other_stream[1] = "another_stream";
    let reply = conn.cmd(&other_stream).await;
    assert!(
        reply.starts_with("-ERR"),
        "XADD to another stream: {reply:?}"
    );
    let mut odd = strs(&valid);
    odd.push("dangling");
    let reply = conn.cmd(&odd).await;
    assert!(
        reply.starts_with("-ERR"),
        "odd field/value count: {reply:?}"
    );
    let reply = conn.cmd(&["XADD", STREAM, "*"]).await;
    assert!(reply.starts_with("-ERR"), "XADD without fields: {reply:?}");

    // An unknown command; the connection stays open.
    assert_eq!(
        conn.cmd(&["FOO", "bar"]).await,
        "-ERR unknown command 'FOO'\r\n"
    );
    assert_eq!(conn.cmd(&["PING"]).await, "+PONG\r\n");
    assert_eq!(log(&server).await, vec![], "errors appended something");

    // Still usable for a valid XADD; the chess key admits chess.
    let id = conn.xadd(&ok).await;
    let mut chess_conn = Conn::authed(&addr, "chess-secret").await;
    let chess_id = chess_conn.xadd(&chess).await;
    assert!(chess_id > id);
    assert_eq!(
        log(&server).await,
        vec![(id, event(&ok)), (chess_id, event(&chess))]
    );
}

/// Sends `payload` (from a separate task, so a server that stops reading
/// cannot block the test) and expects `-ERR Protocol error…` then a close.
async fn expect_protocol_error(addr: &str, payload: Vec<u8>, what: &str) {
    let mut conn = Conn::authed(addr, "exrps-secret").await;
    let mut w = conn.w.take().unwrap();
    let writer = tokio::spawn(async move {
        let _ = w.write_all(&payload).await;
        w
    });
    let (reply, raw) = conn.read_reply().await;
    assert!(
        matches!(&reply, Reply::Error(e) if e.starts_with("ERR Protocol error")),
        "{what}: expected `-ERR Protocol error…`, got {}",
        shorten(&raw)
    );
    conn.expect_closed(what).await;
    writer.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_errors_close_only_that_connection() {
    let (_fake, _options, server) = resp_server().await;
    let addr = resp_addr(&server);
    let mut bystander = Conn::authed(&addr, "exrps-secret").await;

    let mut big_bulk = b"*2\r\n$4\r\nECHO\r\n$2097152\r\n".to_vec();
    big_bulk.extend(std::iter::repeat_n(b'a', 2 * 1024 * 1024));
    big_bulk.extend_from_slice(b"\r\n");

    let mut many_args = b"*100000\r\n$4\r\nXADD\r\n".to_vec();
    for _ in 1..100_000 {
        many_args.extend_from_slice(b"$1\r\na\r\n");
    }

    // 1,025 arguments: an otherwise valid XADD (3 + 511 pairs).
    let mut pairs: Vec<(String, String)> = vec![
        ("product_id".into(), "exrps".into()),
        ("game_id".into(), "wide".into()),
        ("type".into(), "wide".into()),
    ];
    for i in 0..508 {
        pairs.push((format!("f{i}"), "v".into()));
    }
    let pair_refs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let args = xadd_args(&[], &pair_refs);
    assert_eq!(args.len(), 1025);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let too_wide = encode_str(&args);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "an integer where a bulk string belongs",
            b"*2\r\n$3\r\nfoo\r\n:xx\r\n".to_vec(),
        ),
        ("a non-numeric array length", b"*abc\r\n".to_vec()),
        ("a non-numeric bulk length", b"*1\r\n$xyz\r\n".to_vec()),
        ("a 2 MiB bulk string", big_bulk),
        ("100,000 arguments", many_args),
        ("1,025 arguments", too_wide),
    ];
    for (what, payload) in cases {
        expect_protocol_error(&addr, payload, what).await;
        assert_eq!(bystander.cmd(&["PING"]).await, "+PONG\r\n", "after {what}");
        healthz_ok(&server, what).await;
    }
    assert_eq!(
        log(&server).await,
        vec![],
        "a protocol error appended something"
    );

    // The limits themselves are allowed: 1 MiB exactly, 1,024 arguments.
    let exact = vec![b'z'; 1024 * 1024];
    bystander.write(&encode(&[b"ECHO", &exact])).await;
    let (reply, raw) = bystander.read_reply().await;
    assert!(
        reply == Reply::Bulk(Some(exact.clone())),
        "ECHO of exactly 1 MiB: {}",
        shorten(&raw)
    );
    let id = bystander
        .xadd_with(&["NOMKSTREAM"], &pair_refs[..pair_refs.len() - 1])
        .await;
    assert_eq!(
        xadd_args(&["NOMKSTREAM"], &pair_refs[..pair_refs.len() - 1]).len(),
        1024
    );
    let logged = log(&server).await;
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0], (id, event(&pair_refs[..pair_refs.len() - 1])));
}

// ---------------------------------------------------------------------------
// 5. The other commands
// ---------------------------------------------------------------------------

fn map_get<'a>(map: &'a [(Reply, Reply)], key: &str) -> Option<&'a Reply> {
    map.iter()
        .find(|(k, _)| k.text().as_deref() == Some(key))
        .map(|(_, v)| v)
}

/// Checks a HELLO server map (RESP3 map or RESP2 flat array).
fn check_hello(reply: &Reply, proto: i64) {
    let pairs: Vec<(Reply, Reply)> = match reply {
        Reply::Map(pairs) => pairs.clone(),
        Reply::Array(Some(flat)) => {
            assert_eq!(flat.len() % 2, 0, "{reply:?}");
            flat.chunks(2)
                .map(|c| (c[0].clone(), c[1].clone()))
                .collect()
        }
        other => panic!("HELLO: not a map: {other:?}"),
    };
    assert_eq!(pairs.len(), 7, "HELLO {proto}: {reply:?}");
    let text = |key| map_get(&pairs, key).and_then(Reply::text);
    assert_eq!(text("server").as_deref(), Some("varcade"), "{reply:?}");
    assert!(text("version").is_some_and(|v| !v.is_empty()), "{reply:?}");
    assert_eq!(
        map_get(&pairs, "proto"),
        Some(&Reply::Int(proto)),
        "{reply:?}"
    );
    assert!(
        matches!(map_get(&pairs, "id"), Some(Reply::Int(_))),
        "{reply:?}"
    );
    assert_eq!(text("mode").as_deref(), Some("standalone"), "{reply:?}");
    assert_eq!(text("role").as_deref(), Some("master"), "{reply:?}");
    assert_eq!(
        map_get(&pairs, "modules"),
        Some(&Reply::Array(Some(vec![]))),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ping_echo_select_info_client_command_hello_quit() {
    let (_fake, _options, server) = resp_server().await;
    let addr = resp_addr(&server);
    let mut conn = Conn::authed(&addr, "exrps-secret").await;

    assert_eq!(conn.cmd(&["PING"]).await, "+PONG\r\n");
    assert_eq!(conn.cmd(&["PING", "hi"]).await, "$2\r\nhi\r\n");
    assert_eq!(
        conn.cmd(&["ECHO", "hello there"]).await,
        "$11\r\nhello there\r\n"
    );
    assert_eq!(conn.cmd(&["SELECT", "5"]).await, "+OK\r\n");
    assert_eq!(conn.cmd(&["SELECT", "0"]).await, "+OK\r\n");
    assert_eq!(conn.cmd(&["SELECT", "15"]).await, "+OK\r\n");
    for args in [&["INFO"][..], &["INFO", "server"][..]] {
        let info = conn.cmd_reply(args).await;
        let Reply::Bulk(Some(text)) = &info else {
            panic!("{args:?}: not a bulk string: {info:?}");
        };
        let text = String::from_utf8_lossy(text);
        for needle in ["# Server", "redis_version:7.0.0", "loading:0"] {
            assert!(text.contains(needle), "{args:?} lacks {needle:?}: {text}");
        }
    }
    assert_eq!(conn.cmd(&["CLIENT", "SETNAME", "x"]).await, "+OK\r\n");
    assert_eq!(conn.cmd(&["CLIENT", "GETNAME"]).await, "$1\r\nx\r\n");
    assert_eq!(
        conn.cmd(&["CLIENT", "SETINFO", "LIB-NAME", "node-redis"])
            .await,
        "+OK\r\n"
    );
    assert_eq!(
        conn.cmd(&["CLIENT", "SETINFO", "LIB-VER", "3.1.2"]).await,
        "+OK\r\n"
    );
    let id = conn.cmd_reply(&["CLIENT", "ID"]).await;
    assert!(matches!(id, Reply::Int(_)), "CLIENT ID: {id:?}");
    assert_eq!(conn.cmd(&["COMMAND"]).await, "*0\r\n");
    assert_eq!(conn.cmd(&["COMMAND", "DOCS"]).await, "*0\r\n");
    let hello = conn.cmd_reply(&["HELLO"]).await;
    check_hello(&hello, 2);

    // Lower case works too.
    assert_eq!(conn.cmd(&["ping"]).await, "+PONG\r\n");
    assert_eq!(conn.cmd(&["echo", "e"]).await, "$1\r\ne\r\n");
    assert_eq!(conn.cmd(&["client", "getname"]).await, "$1\r\nx\r\n");
    let mut lower = Conn::open(&addr).await;
    assert_eq!(lower.cmd(&["auth", "exrps-secret"]).await, "+OK\r\n");
    let pairs = [
        ("product_id", "exrps"),
        ("game_id", "lc"),
        ("type", "game_removed"),
    ];
    let mut args = vec!["xadd", STREAM, "*"];
    for (k, v) in pairs {
        args.extend([k, v]);
    }
    let reply = lower.cmd_reply(&args).await;
    let lower_id = entry_id(&reply.text().unwrap_or_else(|| panic!("xadd: {reply:?}")));

    // Pipelined commands of all kinds are answered in order.
    let mut batch = Vec::new();
    batch.extend(encode_str(&["PING"]));
    let args = xadd_args(&[], &pairs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    batch.extend(encode_str(&args));
    batch.extend(encode_str(&["ECHO", "between"]));
    batch.extend(encode_str(&["XADD", STREAM, "9-9", "a", "b"]));
    batch.extend(encode_str(&["NOPE"]));
    batch.extend(encode_str(&["PING", "last"]));
    conn.write(&batch).await;
    assert_eq!(conn.raw_reply().await, "+PONG\r\n");
    let piped = conn.read_reply().await.0;
    let piped_id = entry_id(&piped.text().unwrap_or_else(|| panic!("XADD: {piped:?}")));
    assert_eq!(conn.raw_reply().await, "$7\r\nbetween\r\n");
    assert_eq!(conn.raw_reply().await, USE_STAR);
    assert_eq!(conn.raw_reply().await, "-ERR unknown command 'NOPE'\r\n");
    assert_eq!(conn.raw_reply().await, "$4\r\nlast\r\n");
    assert_eq!(
        log(&server).await,
        vec![(lower_id, event(&pairs)), (piped_id, event(&pairs))]
    );

    // HELLO 3: a RESP3 map of seven entries; the connection keeps working.
    conn.write(&encode_str(&["HELLO", "3"])).await;
    let (hello, raw) = conn.read_reply().await;
    assert!(raw.starts_with(b"%7\r\n"), "HELLO 3: {}", shorten(&raw));
    check_hello(&hello, 3);
    assert_eq!(conn.cmd(&["PING"]).await, "+PONG\r\n");
    let id3 = conn.xadd(&pairs).await;
    assert!(id3 > piped_id);
    let id = conn.cmd_reply(&["CLIENT", "ID"]).await;
    assert!(matches!(id, Reply::Int(_)), "CLIENT ID in RESP3: {id:?}");

    // HELLO 2 AUTH authenticates a fresh connection and answers RESP2.
    let mut fresh = Conn::open(&addr).await;
    fresh
        .write(&encode_str(&[
            "HELLO",
            "2",
            "AUTH",
            "default",
            "exrps-secret",
        ]))
        .await;
    let (hello, raw) = fresh.read_reply().await;
    assert!(
        raw.starts_with(b"*14\r\n"),
        "HELLO 2 AUTH: {}",
        shorten(&raw)
    );
    check_hello(&hello, 2);
    let fresh_id = fresh.xadd(&pairs).await;
    assert!(fresh_id > id3);

    // HELLO 3 AUTH … SETNAME.
    let mut named = Conn::open(&addr).await;
    let hello = named
        .cmd_reply(&[
            "HELLO",
            "3",
            "AUTH",
            "u",
            "exrps-secret",
            "SETNAME",
            "rps-1",
        ])
        .await;
    check_hello(&hello, 3);
    assert_eq!(named.cmd(&["CLIENT", "GETNAME"]).await, "$5\r\nrps-1\r\n");
    let named_id = named.xadd(&pairs).await;
    assert!(named_id > fresh_id);

    // HELLO with a wrong key does not authenticate.
    let mut wrong = Conn::open(&addr).await;
    let reply = wrong.cmd(&["HELLO", "2", "AUTH", "default", "nope"]).await;
    assert!(reply.starts_with('-'), "HELLO with a wrong key: {reply:?}");
    let args = xadd_args(&[], &pairs);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(wrong.cmd(&args).await, NOAUTH);

    // QUIT: +OK, then closed.
    assert_eq!(conn.cmd(&["QUIT"]).await, "+OK\r\n");
    conn.expect_closed("after QUIT").await;
    assert_eq!(lower.cmd(&["quit"]).await, "+OK\r\n");
    lower.expect_closed("after quit").await;
    assert_eq!(log(&server).await.len(), 5);
}

// ---------------------------------------------------------------------------
// max_connections counts RESP connections too
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn resp_connections_count_towards_max_connections() {
    let (_fake, _options, server) = resp_server_with("max_connections = 4").await;
    let addr = resp_addr(&server);
    let mut held = Vec::new();
    for i in 0..4 {
        let mut conn = Conn::authed(&addr, "exrps-secret").await;
        assert_eq!(conn.cmd(&["PING"]).await, "+PONG\r\n", "connection {i}");
        held.push(conn);
    }
    // A fifth RESP connection is closed at once.
    let mut fifth = Conn::open(&addr).await;
    fifth
        .expect_closed("a RESP connection beyond max_connections")
        .await;
    // So is an HTTP one: the limit is shared.
    let refused = server.http.get(server.url("/healthz")).send().await;
    assert!(
        refused.is_err(),
        "an HTTP request beyond max_connections got {:?}",
        refused.map(|r| r.status())
    );

    // Closing RESP connections makes room again.
    held.truncate(2);
    let mut admitted = None;
    for _ in 0..100 {
        let mut conn = Conn::open(&addr).await;
        conn.write(&encode_str(&["AUTH", "exrps-secret"])).await;
        let mut chunk = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(5), conn.r.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => {
                assert_eq!(&chunk[..n], b"+OK\r\n");
                admitted = Some(conn);
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(
        admitted.is_some(),
        "no room after two RESP connections closed"
    );
    // Three RESP connections: one HTTP connection fits.
    wait_until(
        Duration::from_secs(10),
        "GET /healthz fits again",
        || async {
            matches!(
                server.http.get(server.url("/healthz")).send().await,
                Ok(r) if r.status() == 200
            )
        },
    )
    .await;
    for conn in held.iter_mut() {
        assert_eq!(conn.cmd(&["PING"]).await, "+PONG\r\n");
    }
}

// ---------------------------------------------------------------------------
// 6. node-redis 3.1.2, as the original RPS server uses it
// ---------------------------------------------------------------------------

fn installed_version(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("node_modules/redis/package.json")).ok()?;
    let json: Value = serde_json::from_str(&text).ok()?;
    json["version"].as_str().map(str::to_string)
}

/// node-redis 3.1.2 under the target's tmp dir, installed from the npm
/// registry unless it is there already.
async fn node_redis() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node-redis-3.1.2");
    if installed_version(&dir).as_deref() == Some("3.1.2") {
        return dir;
    }
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/package.json"),
        dir.join("package.json"),
    )
    .unwrap();
    let install = tokio::process::Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--save-exact",
            "--prefix",
        ])
        .arg(&dir)
        .arg("redis@3.1.2")
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(Duration::from_secs(180), install).await {
        Err(_) => panic!(
            "`npm install redis@3.1.2` into {} took over 180 s",
            dir.display()
        ),
        Ok(Err(e)) => panic!("could not run npm (is Node.js installed?): {e}"),
        Ok(Ok(output)) => output,
    };
    assert!(
        output.status.success(),
        "`npm install --no-audit --no-fund --save-exact --prefix {} redis@3.1.2` failed ({}):\n{}\n{}",
        dir.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        installed_version(&dir).as_deref(),
        Some("3.1.2"),
        "npm install left no node_modules/redis 3.1.2 in {}",
        dir.display()
    );
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn node_redis_3_reports_events_as_the_original_rps_server() {
    let modules = node_redis().await;
    let (_fake, _options, server) = resp_server().await;
    let server = &server;
    let addr = resp_addr(server);
    let g = create_game(server, "101").await;
    let g = g.as_str();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/xadd.js");
    let url = format!("redis://:exrps-secret@{addr}/1");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .args([url.as_str(), g, "101", "bob"])
        .env("NODE_PATH", modules.join("node_modules"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("node tests/node/xadd.js ran over 60 s")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "node tests/node/xadd.js failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
        output.status
    );
    let printed: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("xadd.js printed no JSON ({e}): {stdout}\n{stderr}"));
    let ids: Vec<u64> = printed["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids: {printed}"))
        .iter()
        .map(|id| {
            entry_id(
                id.as_str()
                    .unwrap_or_else(|| panic!("id {id} is not a string")),
            )
        })
        .collect();

    // What xadd.js sends, in order, as node-redis puts it on the wire.
    let base = [("product_id", "exrps"), ("game_id", g)];
    let with = |rest: &[(&'static str, &'static str)]| {
        let mut pairs: Vec<(&str, &str)> = base.to_vec();
        pairs.extend_from_slice(rest);
        event(&pairs)
    };
    let gameplay = |user: &'static str, name: &'static str, data: &'static str| {
        with(&[
            ("type", "gameplay"),
            ("event_name", name),
            ("event_data", data),
            ("user_id", user),
        ])
    };
    let expected = vec![
        with(&[("type", "state_change"), ("new_state", "creator_joined")]),
        gameplay("101", "select_fighter", "3"),
        gameplay("bob", "select_fighter", "1"),
        gameplay("101", "set_ready", ""),
        gameplay("bob", "set_ready", ""),
        gameplay("101", "select_weapon", "0"),
        gameplay("bob", "select_weapon", "2"),
        with(&[
            ("type", "gameplay"),
            ("round_winner_id", "101"),
            ("round_loser_id", "bob"),
            ("event_name", "progression"),
            ("progress_event", "round_finished"),
            ("p1_id", "101"),
            ("p2_id", "bob"),
        ]),
        with(&[
            ("type", "game_over"),
            ("winner_id", "101"),
            ("loser_id", "bob"),
        ]),
    ];
    assert_eq!(ids.len(), expected.len(), "{printed}");
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not increasing in the order sent: {ids:?}"
    );
    let expected: Vec<(u64, Value)> = ids.iter().copied().zip(expected).collect();
    assert_eq!(log(server).await, expected);

    wait_until(
        Duration::from_secs(10),
        "the game is listed",
        || async move { is_listed(server, g).await },
    )
    .await;
    wait_for_body(
        server,
        "/leaderboards/top_ten/exrps",
        &json!([{"user_id": "101", "score": 1}, {"user_id": "bob", "score": 0}]),
    )
    .await;
    wait_for_body(
        server,
        "/stats/exrps/101",
        &json!({"games": 1, "wins": 1, "losses": 0, "rock_selection_count": 1}),
    )
    .await;
    assert_eq!(
        stats(server, "bob").await,
        json!({"games": 1, "wins": 0, "losses": 1, "scissors_selection_count": 1})
    );
}

// ---------------------------------------------------------------------------
// Configuration: off by default, VARCADE_RESP_BIND, resp.stream,
// resp.idmp_max_ids
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn off_by_default_on_by_env_with_a_configurable_stream_and_idmp_window() {
    let fake = FakeGameServer::start().await;
    let plain = Server::start(&Options::new(&fake)).await;
    assert_eq!(plain.resp, None, "a RESP listener without [resp] bind");
    drop(plain);

    let by_env = Server::start_with_env(
        &Options::new(&fake),
        &[("VARCADE_RESP_BIND", "127.0.0.1:0")],
    )
    .await;
    let addr = by_env
        .resp
        .clone()
        .expect("VARCADE_RESP_BIND=127.0.0.1:0 printed no `varcade redis protocol on` line");
    let mut conn = Conn::authed(&addr, "exrps-secret").await;
    assert_eq!(conn.cmd(&["PING"]).await, "+PONG\r\n");
    drop(conn);
    drop(by_env);

    // The [resp] table written by hand: another stream name, a window of 3.
    let options = Options {
        extra: "[resp]\nbind = \"127.0.0.1:0\"\nstream = \"events\"\nidmp_max_ids = 3\n".into(),
        ..Options::new(&fake)
    };
    let mut server = Server::start(&options).await;
    let mut conn = Conn::authed(&resp_addr(&server), "exrps-secret").await;
    let to = |stream: &str, options: &[&str], pairs: &[(&str, &str)]| {
        let mut args = xadd_args(options, pairs);
        args[1] = stream.to_string();
        args
    };
    let reply = conn.cmd(&strs(&to(STREAM, &[], &tick("0")))).await;
    assert!(
        reply.starts_with("-ERR"),
        "XADD to game_event_stream when resp.stream = \"events\": {reply:?}"
    );
    let idmp =
        |producer: &str, iid: &str, n: &str| to("events", &["IDMP", producer, iid], &tick(n));
    let mut expected = Vec::new();
    let mut first = Vec::new();
    for i in 1..=5 {
        let (iid, n) = (format!("i{i}"), i.to_string());
        let reply = conn.cmd_reply(&strs(&idmp("p1", &iid, &n))).await;
        let id = entry_id(&reply.text().unwrap_or_else(|| panic!("XADD: {reply:?}")));
        expected.push((id, event(&tick(&n))));
        first.push(id);
    }
    // Another producer's iids do not push p1's out.
    for j in 1..=4 {
        let n = format!("j{j}");
        let reply = conn.cmd_reply(&strs(&idmp("p2", &n, &n))).await;
        let id = entry_id(&reply.text().unwrap_or_else(|| panic!("XADD: {reply:?}")));
        expected.push((id, event(&tick(&n))));
    }
    // p1's last three iids are remembered, before and after kill -9.
    for round in ["before", "after"] {
        for (i, id) in first.iter().enumerate().skip(2) {
            let iid = format!("i{}", i + 1);
            let reply = conn.cmd_reply(&strs(&idmp("p1", &iid, "again"))).await;
            let again = entry_id(&reply.text().unwrap_or_else(|| panic!("XADD: {reply:?}")));
            assert_eq!(
                again, *id,
                "IDMP p1 {iid}, one of p1's last 3, {round} kill -9"
            );
        }
        assert_eq!(log(&server).await, expected, "{round} kill -9");
        if round == "before" {
            drop(conn);
            server = server.crash_and_restart(&options).await;
            conn = Conn::authed(&resp_addr(&server), "exrps-secret").await;
        }
    }
}
