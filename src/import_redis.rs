//! `varcade import-redis` (API.md "Import from the original"): reads the
//! original services' data out of their Redis with the `redis` crate,
//! converts and checks it whole (`app::import`), and only then writes it
//! into an empty data directory, marked as partial until the write is
//! durable.

use std::sync::Arc;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use crate::app::import::{ImportError, Original, Summary, convert};
use crate::app::ports::Storage;
use crate::infra::config::Config;
use crate::storage::sled::{OpenError, SledStorage, check_empty_target};

/// The stream and index keys of the original.
const STREAM: &str = "game_event_stream";
const MATCHMAKER_INDEX: &str = "__game_event_stream_index";
const STATS_INDEX: &str = "_stats_tracker.workers.event_stream_index";
/// Entries read per `XRANGE`, members per `SCAN`.
const PAGE: usize = 1000;

/// Where the original keeps each kind of data.
#[derive(Debug, Clone)]
pub struct Source {
    /// `redis://HOST:PORT` (credentials allowed; a path db is ignored).
    pub url: String,
    pub games_db: i64,
    pub stream_db: i64,
    pub stats_db: i64,
}

/// Why an import stopped.
#[derive(Debug, thiserror::Error)]
pub enum ImportFailed {
    #[error("redis {url}: {message}")]
    Redis { url: String, message: String },
    #[error("{0}; nothing was written")]
    Records(#[from] ImportError),
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("writing the import: {0}")]
    Write(String),
    #[error(
        "import-redis writes a sled data directory, and this config has storage.kind = \"postgres\"; import with a sled config instead"
    )]
    NotSled,
}

/// Runs the import; returns what was copied.
pub async fn run(config: &Config, source: &Source) -> Result<Summary, ImportFailed> {
    if config.storage.kind != "sled" {
        return Err(ImportFailed::NotSled);
    }
    let dir = config.data_dir.clone();
    let target = dir.clone();
    tokio::task::spawn_blocking(move || check_empty_target(&target, "import-redis"))
        .await
        .map_err(|e| ImportFailed::Write(e.to_string()))??;
    let original = read(source).await?;
    let (imported, summary) = convert(original, &config.products())?;
    let storage = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || SledStorage::open_for_import(&dir))
            .await
            .map_err(|e| ImportFailed::Write(e.to_string()))??
    };
    let written = write(&storage, imported).await;
    storage
        .close()
        .await
        .map_err(|e| ImportFailed::Write(e.to_string()))?;
    written?;
    fail::fail_point!("import::before_finish", |_| Err(ImportFailed::Write(
        "injected interruption".into()
    )));
    tokio::task::spawn_blocking(move || SledStorage::finish_import(&dir))
        .await
        .map_err(|e| ImportFailed::Write(e.to_string()))?
        .map_err(|e| ImportFailed::Write(e.to_string()))?;
    Ok(summary)
}

async fn write(
    storage: &Arc<SledStorage>,
    imported: crate::app::ports::Imported,
) -> Result<(), ImportFailed> {
    storage
        .import(imported)
        .await
        .map_err(|e| ImportFailed::Write(e.to_string()))
}

/// Reads everything the import needs from the original's Redis.
async fn read(source: &Source) -> Result<Original, ImportFailed> {
    let failed = |e: redis::RedisError| ImportFailed::Redis {
        url: redact(&source.url),
        message: e.to_string(),
    };
    let client = redis::Client::open(source.url.as_str()).map_err(failed)?;
    let mut original = Original::default();

    let mut games = connect(&client, source.games_db).await.map_err(failed)?;
    for key in scan(&mut games, "__games:*").await.map_err(failed)? {
        let entries: Vec<(String, String)> = games.hgetall(&key).await.map_err(failed)?;
        for (game_id, json) in entries {
            original.games.push((key.clone(), game_id, json));
        }
    }
    for key in scan(&mut games, "__lobby_games:*").await.map_err(failed)? {
        let members: Vec<(String, f64)> =
            games.zrange_withscores(&key, 0, -1).await.map_err(failed)?;
        for (game_id, score) in members {
            original.lobby.push((key.clone(), game_id, score));
        }
    }
    for pattern in ["__pending_games:*", "__active_games:*"] {
        original
            .other_keys
            .extend(scan(&mut games, pattern).await.map_err(failed)?);
    }

    let mut stream = connect(&client, source.stream_db).await.map_err(failed)?;
    original.matchmaker_index = stream.get(MATCHMAKER_INDEX).await.map_err(failed)?;
    original.stats_index = stream.get(STATS_INDEX).await.map_err(failed)?;
    let mut start = "-".to_string();
    loop {
        let page: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut stream)
            .await
            .map_err(failed)?;
        let Some((last, _)) = page.last() else {
            break;
        };
        start = format!("({last}");
        let full = page.len() == PAGE;
        for (id, flat) in page {
            let pairs = flat
                .chunks(2)
                .map(|kv| (kv[0].clone(), kv.get(1).cloned().unwrap_or_default()))
                .collect();
            original.stream.push((id, pairs));
        }
        if !full {
            break;
        }
    }

    let mut stats = connect(&client, source.stats_db).await.map_err(failed)?;
    for key in scan(&mut stats, "_lb:wins:*").await.map_err(failed)? {
        let members: Vec<(String, f64)> =
            stats.zrange_withscores(&key, 0, -1).await.map_err(failed)?;
        for (user, score) in members {
            original.boards.push((key.clone(), user, score));
        }
    }
    for key in scan(&mut stats, "_pstats:*").await.map_err(failed)? {
        let counters: Vec<(String, String)> = stats.hgetall(&key).await.map_err(failed)?;
        for (counter, value) in counters {
            original.stats.push((key.clone(), counter, value));
        }
    }
    Ok(original)
}

/// A connection with database `db` selected.
async fn connect(client: &redis::Client, db: i64) -> redis::RedisResult<MultiplexedConnection> {
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd("SELECT")
        .arg(db)
        .query_async::<()>(&mut connection)
        .await?;
    Ok(connection)
}

/// Every key matching `pattern`, sorted.
async fn scan(
    connection: &mut MultiplexedConnection,
    pattern: &str,
) -> redis::RedisResult<Vec<String>> {
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, page): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(PAGE)
            .query_async(connection)
            .await?;
        keys.extend(page);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
