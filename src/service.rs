//! The composition root: opens the backend, builds the use cases and the
//! front ends (HTTP, and RESP when configured), runs the background tasks, and stops all of it within
//! the contract's 10 seconds of a signal (API.md "Start").

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::app::ports::Storage;
use crate::app::{App, consumer, curation, matchmaker, retention, stats};
use crate::http::limits::{CappedListener, Cutoff};
use crate::http::{HttpState, router};
use crate::infra::config::Config;
use crate::infra::limits::ConnectionCap;
use crate::infra::{metrics, shutdown};
use crate::resp::{self, RespState};
use crate::storage::postgres::{PgOpenError, PgStorage};
use crate::storage::sled::{OpenError, SledStorage};

/// How long HTTP may take to finish in-flight requests after a signal.
const DRAIN: Duration = Duration::from_secs(6);
/// How long joins and creates whose caller left may take after that.
const TASKS: Duration = Duration::from_secs(2);
/// How long the background tasks may take to stop.
const BACKGROUND: Duration = Duration::from_secs(1);

/// Start-up failures (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {dir}: {source}")]
    DataDir { dir: String, source: std::io::Error },
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("{0}")]
    Postgres(#[from] PgOpenError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("start-up: {0}")]
    Task(String),
}

/// Opens the configured backend: PostgreSQL at `storage.url`, or sled in
/// the data directory.
async fn open_storage(config: &Config) -> Result<Arc<dyn Storage>, StartError> {
    if config.storage.kind == "postgres" {
        let url = config.storage.url.clone().unwrap_or_default();
        let storage =
            PgStorage::open(&url, config.storage.pool_size, config.max_pending_writes).await?;
        return Ok(storage);
    }
    let dir = config.data_dir.clone();
    let max_pending = config.max_pending_writes;
    tokio::task::spawn_blocking(move || {
        let data_dir_error = |source| StartError::DataDir {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(data_dir_error)?;
        let probe = dir.join(".varcade-write-test");
        std::fs::write(&probe, b"ok").map_err(data_dir_error)?;
        let _ = std::fs::remove_file(probe);
        let storage: Arc<dyn Storage> = SledStorage::open(&dir, max_pending)?;
        Ok(storage)
    })
    .await
    .map_err(|e| StartError::Task(e.to_string()))?
}

/// Drains the histograms' pending samples even when nobody scrapes.
async fn metrics_upkeep(
    handle: metrics_exporter_prometheus::PrometheusHandle,
    mut shutdown: shutdown::Shutdown,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => handle.run_upkeep(),
            _ = shutdown.recv() => return,
        }
    }
}

/// Runs the service until SIGINT/SIGTERM; everything acknowledged is on
/// disk when it returns.
pub async fn serve(config: Config) -> Result<(), StartError> {
    let signal = shutdown::listen();
    let storage = open_storage(&config).await?;
    metrics::set_products(config.games.iter().map(|g| g.product_id.clone()));
    let prometheus = metrics::install();
    let app = App::new(&config, storage.clone());
    match app.storage.game_counts().await {
        Ok(counts) => {
            for (product, state, n) in counts {
                metrics::games_seed(&product, state.as_str(), n);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot count games for the gauges"),
    }
    let listener = tokio::net::TcpListener::bind(&config.bind)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.bind.clone(),
            source,
        })?;
    let local: SocketAddr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.bind.clone(),
        source,
    })?;

    let resp_listener = match &config.resp.bind {
        Some(addr) => {
            let bind_error = |source| StartError::Bind {
                addr: addr.clone(),
                source,
            };
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(bind_error)?;
            let local = listener.local_addr().map_err(bind_error)?;
            Some((listener, local))
        }
        None => None,
    };

    let (trigger, stopping) = shutdown::channel();
    let mut tasks = vec![
        tokio::spawn(consumer::run(
            app.clone(),
            matchmaker::Matchmaker::new(app.clone()),
            trigger.subscribe(),
        )),
        tokio::spawn(consumer::run(
            app.clone(),
            stats::Stats::new(app.clone()),
            trigger.subscribe(),
        )),
        tokio::spawn(curation::run(app.clone(), trigger.subscribe())),
        tokio::spawn(retention::run(app.clone(), trigger.subscribe())),
    ];
    if let Some(handle) = prometheus.clone() {
        tasks.push(tokio::spawn(metrics_upkeep(handle, trigger.subscribe())));
    }

    let state = HttpState::new(&config, app.clone(), prometheus);
    let cap = ConnectionCap::new(config.max_connections);
    let resp_task = resp_listener.map(|(listener, addr)| {
        println!("varcade redis protocol on {addr}");
        tracing::info!(%addr, "varcade redis protocol on {addr}");
        let state = RespState::new(&config, app.clone());
        tokio::spawn(resp::serve(
            listener,
            cap.clone(),
            state,
            trigger.subscribe(),
        ))
    });
    if config.origin == "defaults" {
        let here = std::env::current_dir().unwrap_or_default();
        tracing::warn!(
            "no config file ({} not found in {}): running on built-in defaults",
            crate::infra::config::DEFAULT_CONFIG_PATH,
            here.display()
        );
    }
    let listener = CappedListener::new(listener, cap.clone());
    println!("varcade listening on {local}");
    match config.storage.kind.as_str() {
        "postgres" => tracing::info!(%local, storage = "postgres", "varcade listening on {local}"),
        _ => {
            tracing::info!(%local, data_dir = %config.data_dir.display(), "varcade listening on {local}")
        }
    }
    let fire = trigger.clone();
    let app_service = router(state).into_make_service_with_connect_info::<Cutoff>();
    let server = axum::serve(listener, app_service).with_graceful_shutdown(async move {
        signal.await;
        fire.fire();
    });
    let mut drained = stopping.clone();
    let front_ends = async {
        let result = server.await;
        if let Some(task) = resp_task {
            let _ = task.await;
        }
        result
    };
    tokio::select! {
        result = front_ends => {
            if let Err(e) = result {
                tracing::error!(error = %e, "server error");
            }
        }
        _ = async { drained.recv().await; tokio::time::sleep(DRAIN).await } => {
            tracing::warn!("requests still in flight after {} s; stopping anyway", DRAIN.as_secs());
        }
    }
    trigger.fire();
    drop(stopping);
    app.finish_tasks(TASKS).await;
    let background = async {
        for task in tasks.drain(..) {
            let _ = task.await;
        }
    };
    if tokio::time::timeout(BACKGROUND, background).await.is_err() {
        tracing::warn!("background tasks did not stop in time");
    }
    if let Err(e) = storage.close().await {
        tracing::error!(error = %e, "final flush failed");
    }
    tracing::info!("stopped");
    Ok(())
}
