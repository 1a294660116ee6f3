//! The `varcade` command: parse the command line, set up logging, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the service allocates many small, short-lived buffers per
/// request; measured faster than the system allocator (README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use varcade::infra::config::{Config, Overrides};

/// The environment variables, for `--help`.
const ENV_HELP: &str = "Environment (overrides the config file; flags override it):
  VARCADE_BIND                 HTTP listen address
  VARCADE_DATA_DIR             database directory
  VARCADE_JWT_SECRET           HS256 secret for player tokens
  VARCADE_ADMIN_KEY            key for /admin and GET /events (and `varcade backup`)
  VARCADE_INGEST_KEY_<PRODUCT> a product's ingest key (upper-cased, '-' as '_')
  VARCADE_RESP_BIND            turns on the Redis-protocol listener at this address
  VARCADE_STORAGE_URL          the PostgreSQL URL (with [storage] kind = \"postgres\")
  VARCADE_LOG                  log filter, e.g. info or varcade=debug
Secrets may also come from files: jwt_secret_file, admin_key_file,
games[].ingest_key_file. Off loopback, sample or empty secrets are refused.";

#[derive(Parser)]
#[command(
    name = "varcade",
    version,
    about = "The Varcade Games backend: matchmaker and stats tracker",
    after_help = ENV_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    #[command(after_help = ENV_HELP)]
    Serve {
        /// Config file (default: data/varcade.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Database directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:0.
        #[arg(long)]
        bind: Option<String>,
    },
    /// Copy the original services' data out of their Redis into an empty
    /// data directory (stop them first).
    ImportRedis {
        /// The original's Redis, e.g. redis://127.0.0.1:6379.
        #[arg(long)]
        from: String,
        /// Database of the matchmaker's games.
        #[arg(long, default_value_t = 0)]
        games_db: i64,
        /// Database of the event stream and its indexes.
        #[arg(long, default_value_t = 1)]
        stream_db: i64,
        /// Database of the stats tracker's boards and player stats.
        #[arg(long, default_value_t = 2)]
        stats_db: i64,
        /// Config file (default: data/varcade.toml if it exists).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Database directory to create.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Download a consistent copy of a running service's database
    /// (POST /admin/backup) into FILE, checked before it is kept.
    Backup {
        /// The service, e.g. http://127.0.0.1:5050.
        #[arg(long)]
        url: String,
        /// Where to write the backup.
        #[arg(long)]
        to: PathBuf,
        /// The admin key.
        #[arg(long, env = "VARCADE_ADMIN_KEY", hide_env_values = true)]
        admin_key: String,
    },
    /// Rebuild a data directory (missing or empty) from a backup file.
    Restore {
        /// A file written by `varcade backup` or POST /admin/backup.
        #[arg(long)]
        from: PathBuf,
        /// The data directory to create.
        #[arg(long)]
        data_dir: PathBuf,
    },
    /// Run a stand-in game server for local development.
    FakeGameServer {
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: String,
    },
    /// Print a player token signed with the configured jwt_secret.
    Token {
        #[arg(long)]
        user_id: String,
        #[arg(long)]
        username: String,
        /// Config file to read jwt_secret from.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Validity in seconds.
        #[arg(long, default_value_t = 86400)]
        ttl: u64,
    },
}

fn init_logging() {
    let filter = std::env::var("VARCADE_LOG").unwrap_or_else(|_| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("varcade: {message}");
    ExitCode::from(2)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn main() -> ExitCode {
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Serve {
            config,
            data_dir,
            bind,
        } => {
            let flags = Overrides {
                config,
                data_dir,
                bind,
            };
            let config = match Config::load(&flags, &varcade::app::known_names()) {
                Ok(config) => config,
                Err(e) => return fail(e),
            };
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(e),
            };
            match rt.block_on(varcade::service::serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::ImportRedis {
            from,
            games_db,
            stream_db,
            stats_db,
            config,
            data_dir,
        } => {
            let flags = Overrides {
                config,
                data_dir,
                bind: None,
            };
            let config = match Config::load(&flags, &varcade::app::known_names()) {
                Ok(config) => config,
                Err(e) => return fail(e),
            };
            let source = varcade::import_redis::Source {
                url: from,
                games_db,
                stream_db,
                stats_db,
            };
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(e),
            };
            match rt.block_on(varcade::import_redis::run(&config, &source)) {
                Ok(summary) => {
                    println!("{summary}");
                    println!("imported into {}", config.data_dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("import-redis: {e}")),
            }
        }
        Command::Backup { url, to, admin_key } => {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(e),
            };
            match rt.block_on(varcade::backup_client::download(&url, &admin_key, &to)) {
                Ok(trailer) => {
                    println!(
                        "backup of {url} written to {} ({} records)",
                        to.display(),
                        trailer.records
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(format!("backup: {e}")),
            }
        }
        Command::Restore { from, data_dir } => {
            match varcade::storage::sled::SledStorage::restore(&from, &data_dir) {
                Ok(trailer) => {
                    println!(
                        "restored {} records from {} into {}",
                        trailer.records,
                        from.display(),
                        data_dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
        Command::FakeGameServer { bind } => {
            let rt = match runtime() {
                Ok(rt) => rt,
                Err(e) => return fail(e),
            };
            match rt.block_on(varcade::fake_game_server::serve(&bind)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(format!("fake game server on {bind}: {e}")),
            }
        }
        Command::Token {
            user_id,
            username,
            config,
            ttl,
        } => {
            let flags = Overrides {
                config,
                ..Overrides::default()
            };
            match Config::load(&flags, &varcade::app::known_names()) {
                Ok(config) => {
                    println!(
                        "{}",
                        varcade::infra::jwt::mint_token(
                            &config.jwt_secret,
                            &user_id,
                            &username,
                            ttl
                        )
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}
