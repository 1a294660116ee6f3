//! One RESP connection: a reader that parses commands and queues their
//! answers in order, and a writer that sends each answer once it is ready,
//! an `XADD`'s only once its entry is durable. So clients may pipeline, as
//! on the ingest WebSocket, and what a connection may have in flight is
//! bounded twice: by bytes and by commands. When either is full, or the
//! storage writer's queue is, the connection is simply not read
//! (backpressure); nothing accepted is dropped.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::RespState;
use super::codec::{self, Reply};
use super::command::Command;
use super::xadd::Xadd;
use crate::app::ingest::{Kinds, count_ingested};
use crate::app::ports::{PendingAppend, StorageError};
use crate::domain::event::{Dedup, MAX_FRAME};
use crate::infra::metrics;
use crate::infra::shutdown::Shutdown;

/// Bytes of events one connection may have queued but not acknowledged.
const MAX_IN_FLIGHT: usize = 16 * MAX_FRAME;
/// Commands one connection may have queued but not answered.
const MAX_COMMANDS_IN_FLIGHT: usize = 4096;
/// Replies are written out once this much is waiting, or nothing more is
/// ready.
const WRITE_BATCH: usize = 64 * 1024;

/// What the writer sends next, in command order.
enum Answer {
    Now(Bytes),
    Durable(PendingAppend, Kinds, OwnedSemaphorePermit),
    /// Sent, then the connection is closed.
    Close(Bytes),
}

/// The connection's negotiated state.
struct Session {
    id: u64,
    /// Products the presented ingest key admits; `None` before `AUTH`.
    admitted: Option<Vec<String>>,
    proto: u8,
    name: Option<Bytes>,
}

fn wrong_pass() -> Reply {
    Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into())
}

/// Serves one connection until the client leaves, a protocol error, or
/// shutdown (after which the answers already owed are still sent).
pub async fn serve(
    state: Arc<RespState>,
    stream: TcpStream,
    id: u64,
    mut shutdown: Shutdown,
    permit: OwnedSemaphorePermit,
) {
    metrics::resp_connections(1.0);
    let (mut read, write) = stream.into_split();
    let (tx, rx) = mpsc::channel::<Answer>(MAX_COMMANDS_IN_FLIGHT);
    let writer = tokio::spawn(write_answers(write, rx));
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut session = Session {
        id,
        admitted: None,
        proto: 2,
        name: None,
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);
    'connection: loop {
        loop {
            let answer = match codec::next_command(&mut buf) {
                Ok(None) => break,
                Ok(Some(args)) if args.is_empty() => continue,
                Ok(Some(args)) => session.handle(&state, &in_flight, args).await,
                Err(e) => {
                    metrics::resp_command("protocol_error", "error");
                    let mut out = BytesMut::new();
                    Reply::Error(format!("ERR {e}")).encode(session.proto, &mut out);
                    Answer::Close(out.freeze())
                }
            };
            let closing = matches!(answer, Answer::Close(_));
            if tx.send(answer).await.is_err() || closing {
                break 'connection;
            }
        }
        buf.reserve(16 * 1024);
        tokio::select! {
            read = read.read_buf(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = shutdown.recv() => break,
        }
    }
    drop(tx);
    let _ = writer.await;
    drop(permit);
    metrics::resp_connections(-1.0);
}

/// Sends answers in order, batching what is ready into one write.
async fn write_answers(mut write: OwnedWriteHalf, mut rx: mpsc::Receiver<Answer>) {
    let mut out = BytesMut::with_capacity(WRITE_BATCH);
    while let Some(answer) = rx.recv().await {
        let closing = match answer {
            Answer::Now(bytes) => {
                out.extend_from_slice(&bytes);
                false
            }
            Answer::Durable(pending, kinds, permit) => {
                let result = pending.wait().await;
                drop(permit);
                let reply = match result {
                    Ok(appended) => {
                        count_ingested(&appended, &kinds);
                        metrics::resp_command("xadd", "ok");
                        Reply::text(format!("{}-0", appended.first_id))
                    }
                    Err(e) => {
                        metrics::resp_command("xadd", "error");
                        storage_error(&e)
                    }
                };
                reply.encode(2, &mut out);
                false
            }
            Answer::Close(bytes) => {
                out.extend_from_slice(&bytes);
                true
            }
        };
        if closing || rx.is_empty() || out.len() >= WRITE_BATCH {
            if write.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if closing {
            break;
        }
    }
    let _ = write.shutdown().await;
}

/// A storage failure as an error reply.
fn storage_error(e: &StorageError) -> Reply {
    let code = match e {
        StorageError::Overloaded => "overloaded",
        StorageError::Unavailable(_) => "storage_unavailable",
        StorageError::Failed(_) => "internal",
    };
    Reply::Error(format!("ERR {code}: {e}"))
}

impl Session {
    /// Runs one command; the answer is queued in order.
    async fn handle(
        &mut self,
        state: &RespState,
        in_flight: &Arc<Semaphore>,
        args: Vec<Bytes>,
    ) -> Answer {
        let parsed = Command::parse(args);
        let reply = match parsed.command {
            Err(reply) => reply,
            Ok(Command::Xadd(xadd)) => return self.xadd(state, in_flight, *xadd).await,
            Ok(Command::Quit) => {
                metrics::resp_command("quit", "ok");
                return Answer::Close(self.encode(Reply::ok()));
            }
            Ok(command) => self.run(state, command),
        };
        let outcome = if matches!(reply, Reply::Error(_)) {
            "error"
        } else {
            "ok"
        };
        metrics::resp_command(parsed.label, outcome);
        Answer::Now(self.encode(reply))
    }

    fn encode(&self, reply: Reply) -> Bytes {
        let mut out = BytesMut::new();
        reply.encode(self.proto, &mut out);
        out.freeze()
    }

    /// Every command but `XADD` and `QUIT`.
    fn run(&mut self, state: &RespState, command: Command) -> Reply {
        match command {
            Command::Auth { password } => match state.keys.admit(&password) {
                Some(products) => {
                    self.admitted = Some(products);
                    Reply::ok()
                }
                None => wrong_pass(),
            },
            Command::Hello {
                proto,
                password,
                name,
            } => {
                if let Some(password) = password {
                    match state.keys.admit(&password) {
                        Some(products) => self.admitted = Some(products),
                        None => return wrong_pass(),
                    }
                }
                if let Some(proto) = proto {
                    self.proto = proto;
                }
                if name.is_some() {
                    self.name = name;
                }
                let text = |s: &str| Reply::text(s);
                Reply::Map(vec![
                    (text("server"), text("varcade")),
                    (text("version"), text(env!("CARGO_PKG_VERSION"))),
                    (text("proto"), Reply::Int(i64::from(self.proto))),
                    (text("id"), Reply::Int(self.id as i64)),
                    (text("mode"), text("standalone")),
                    (text("role"), text("master")),
                    (text("modules"), Reply::Array(Vec::new())),
                ])
            }
            Command::Ping(None) => Reply::Simple("PONG"),
            Command::Ping(Some(message)) | Command::Echo(message) => Reply::Bulk(message.to_vec()),
            Command::Select | Command::ClientSetInfo => Reply::ok(),
            Command::Info => Reply::text(format!(
                "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\n\
                 varcade_version:{}\r\nloading:0\r\n",
                env!("CARGO_PKG_VERSION")
            )),
            Command::ClientSetName(name) => {
                self.name = (!name.is_empty()).then_some(name);
                Reply::ok()
            }
            Command::ClientGetName => match &self.name {
                Some(name) => Reply::Bulk(name.to_vec()),
                None => Reply::Null,
            },
            Command::ClientId => Reply::Int(self.id as i64),
            Command::CommandDocs => Reply::Array(Vec::new()),
            Command::Quit | Command::Xadd(_) => Reply::Error("ERR internal".into()),
        }
    }

    /// Validates an `XADD` as `/ingest` would and queues its append.
    async fn xadd(&self, state: &RespState, in_flight: &Arc<Semaphore>, xadd: Xadd) -> Answer {
        let refuse = |message: String| {
            metrics::resp_command("xadd", "error");
            Answer::Now(self.encode(Reply::Error(message)))
        };
        let Some(admitted) = &self.admitted else {
            return refuse("NOAUTH Authentication required.".into());
        };
        if xadd.stream.as_ref() != state.stream.as_bytes() {
            return refuse(format!(
                "ERR bad_request: events go to the stream '{}', not '{}'",
                state.stream,
                String::from_utf8_lossy(&xadd.stream).escape_default()
            ));
        }
        if xadd.event.len() > MAX_FRAME {
            return refuse("ERR bad_request: an event larger than 1 MiB".into());
        }
        let mut frame = match state.app.validate_frame(&xadd.event, admitted) {
            Ok(frame) => frame,
            Err(e) => return refuse(format!("ERR {}: {}", e.code(), e.message)),
        };
        frame.dedup = xadd.idmp.map(|(producer, iid)| Dedup::Idmp {
            producer,
            iid,
            keep: state.idmp_keep,
        });
        let bytes = u32::try_from(xadd.event.len().clamp(1, MAX_FRAME)).unwrap_or(u32::MAX);
        let Ok(permit) = in_flight.clone().acquire_many_owned(bytes).await else {
            return refuse("ERR internal: the connection is closing".into());
        };
        match state.app.submit_frame(frame).await {
            Ok((pending, kinds)) => Answer::Durable(pending, kinds, permit),
            Err(e) => {
                let message = match e {
                    crate::app::AppError::Storage(e) => storage_error(&e),
                    other => Reply::Error(format!("ERR internal: {other}")),
                };
                metrics::resp_command("xadd", "error");
                Answer::Now(self.encode(message))
            }
        }
    }
}
