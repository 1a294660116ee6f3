//! The Redis-protocol ingest front end (API.md "Redis-protocol ingest"):
//! game servers that report events with `XADD` to a Redis stream, as the
//! original RPS server does through node-redis, keep their code and point
//! their Redis URL here. Events go through the same validation and append
//! path as `/ingest` (the app's ingest use case); only the wire differs.
//!
//! The parsing and encoding of RESP is the `redis-protocol` crate's
//! ([`codec`]); the commands are in [`command`] and [`xadd`], one
//! connection's life in [`connection`].

pub mod codec;
pub mod command;
pub mod connection;
pub mod xadd;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::app::keys::IngestKeys;
use crate::infra::config::Config;
use crate::infra::limits::ConnectionCap;
use crate::infra::shutdown::Shutdown;

/// What every connection shares.
pub struct RespState {
    pub app: Arc<App>,
    pub keys: IngestKeys,
    /// The stream `XADD` accepts.
    pub stream: String,
    /// IDMP iids remembered per producer.
    pub idmp_keep: usize,
}

impl RespState {
    /// The listener's state over `app`, with the config's keys and stream.
    pub fn new(config: &Config, app: Arc<App>) -> Arc<RespState> {
        Arc::new(RespState {
            app,
            keys: IngestKeys::new(&config.games),
            stream: config.resp.stream.clone(),
            idmp_keep: config.resp.idmp_max_ids,
        })
    }
}

/// Accepts connections under `cap` until shutdown, then waits for the
/// open ones to send the answers they owe (the caller bounds the wait).
pub async fn serve(
    listener: TcpListener,
    cap: ConnectionCap,
    state: Arc<RespState>,
    shutdown: Shutdown,
) {
    let connections = TaskTracker::new();
    let mut next_id = 1u64;
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.recv() => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "RESP accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(permit) = cap.try_admit() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        connections.spawn(connection::serve(
            state.clone(),
            stream,
            next_id,
            shutdown.clone(),
            permit,
        ));
        next_id += 1;
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}
