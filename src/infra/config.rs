//! Configuration: built-in defaults, the TOML file, environment variables and
//! command-line flags, in that order of precedence (API.md "Start").
//!
//! Everything is validated here, once, so the rest of the service can trust
//! the values: an unknown key, a wrong type or an unknown scoring name is a
//! [`ConfigError`] that names the file and the key.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::domain::season::{PERIODS, Period};

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "data/varcade.toml";

/// A configuration problem, reported as one line before exiting with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config {origin}: key `{key}`: {message}")]
    Invalid {
        origin: String,
        key: String,
        message: String,
    },
    /// A value that came from a flag or an environment variable.
    #[error("{origin}: {message}")]
    Setting { origin: String, message: String },
    /// A secret file that cannot be read.
    #[error("config {origin}: key `{key}`: cannot read {path}: {source}")]
    SecretFile {
        origin: String,
        key: String,
        path: String,
        source: std::io::Error,
    },
}

/// The sample secrets of the README and the built-in defaults: refused on
/// an address other than loopback.
pub const SAMPLE_SECRETS: [&str; 3] = ["change-me", "change-me-too", "exrps-secret"];

/// The whole service configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub bind: String,
    pub data_dir: PathBuf,
    pub jwt_secret: String,
    /// A file holding `jwt_secret` (container secrets); replaces it.
    pub jwt_secret_file: Option<PathBuf>,
    pub admin_key: Option<String>,
    /// A file holding `admin_key`; replaces it.
    pub admin_key_file: Option<PathBuf>,
    pub game_server_timeout_ms: u64,
    /// How long events that every consumer has applied are kept (seconds).
    pub event_retention_secs: u64,
    /// Open connections (HTTP, WebSocket and RESP) beyond which new ones
    /// are closed.
    pub max_connections: usize,
    /// Writes queued for the storage writer beyond which HTTP writes answer
    /// 503 `overloaded` and ingest waits.
    pub max_pending_writes: usize,
    pub lobby: LobbyConfig,
    pub expiry: ExpiryConfig,
    pub resp: RespConfig,
    pub quick_match: QuickMatchConfig,
    pub storage: StorageConfig,
    pub games: Vec<ProductConfig>,
    /// Where the config came from: a file's path, or `defaults`.
    #[serde(skip)]
    pub origin: String,
}

/// Which backend holds the data (API.md "Storage and scale-out").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `sled` (embedded, `data_dir`) or `postgres` (shared, `url`).
    pub kind: String,
    /// The PostgreSQL URL (`postgres://user@host:port/db`).
    pub url: Option<String>,
    /// Connections each node keeps to PostgreSQL.
    pub pool_size: usize,
    /// How long a node holds a consumer's or curation's lease without
    /// renewing it; another node takes over after it.
    pub lease_secs: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: "sled".into(),
            url: None,
            pool_size: 16,
            lease_secs: 5,
        }
    }
}

/// Quick match (API.md "Quick match").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuickMatchConfig {
    /// Largest difference between a player's and a creator's elo score.
    pub max_rating_gap: i64,
}

impl Default for QuickMatchConfig {
    fn default() -> Self {
        QuickMatchConfig {
            max_rating_gap: 200,
        }
    }
}

/// The Redis-protocol ingest listener (off without a `bind`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RespConfig {
    pub bind: Option<String>,
    /// The only stream `XADD` accepts.
    pub stream: String,
    /// IDMP iids remembered per producer.
    pub idmp_max_ids: usize,
}

impl Default for RespConfig {
    fn default() -> Self {
        RespConfig {
            bind: None,
            stream: "game_event_stream".into(),
            idmp_max_ids: 10_000,
        }
    }
}

/// Page sizes of `open_games`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LobbyConfig {
    pub default_page_size: u64,
    pub max_page_size: u64,
}

/// Seconds a game may stay in each state, and how often curation runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExpiryConfig {
    pub created: u64,
    pub creator_joined: u64,
    pub all_players_joined: u64,
    pub in_progress: u64,
    pub ended: u64,
    pub curation_interval_ms: u64,
}

/// One game (product) the arcade hosts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductConfig {
    pub product_id: String,
    pub game_server_url: String,
    pub game_socket_url: String,
    #[serde(default)]
    pub ingest_key: String,
    /// A file holding `ingest_key`; replaces it.
    #[serde(default)]
    pub ingest_key_file: Option<PathBuf>,
    #[serde(default = "default_leaderboard")]
    pub leaderboard: String,
    #[serde(default = "default_stats")]
    pub stats: String,
    #[serde(default)]
    pub settings: toml::Table,
    /// Leaderboard seasons; without it one season lasts forever.
    #[serde(default)]
    pub season: Option<SeasonConfig>,
}

/// A product's leaderboard seasons (`[games.season]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeasonConfig {
    /// `daily`, `weekly` or `monthly` (UTC).
    pub period: String,
    /// Archived seasons kept, newest first.
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_keep() -> usize {
    12
}

/// Most archived seasons a product may keep.
pub const MAX_KEEP: usize = 1000;

fn default_leaderboard() -> String {
    "wins".into()
}

fn default_stats() -> String {
    "default".into()
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "127.0.0.1:5050".into(),
            data_dir: PathBuf::from("data/db"),
            jwt_secret: "change-me".into(),
            jwt_secret_file: None,
            admin_key: None,
            admin_key_file: None,
            game_server_timeout_ms: 5000,
            event_retention_secs: 7 * 24 * 3600,
            max_connections: 10_000,
            max_pending_writes: 4096,
            lobby: LobbyConfig::default(),
            expiry: ExpiryConfig::default(),
            resp: RespConfig::default(),
            quick_match: QuickMatchConfig::default(),
            storage: StorageConfig::default(),
            origin: "defaults".into(),
            games: vec![ProductConfig {
                product_id: "exrps".into(),
                game_server_url: "http://127.0.0.1:8080".into(),
                game_socket_url: "127.0.0.1:8085".into(),
                ingest_key: "exrps-secret".into(),
                ingest_key_file: None,
                leaderboard: "wins".into(),
                season: None,
                stats: "exrps".into(),
                settings: toml::Table::from_iter([("num_players".into(), toml::Value::Integer(2))]),
            }],
        }
    }
}

impl Default for LobbyConfig {
    fn default() -> Self {
        LobbyConfig {
            default_page_size: 10,
            max_page_size: 25,
        }
    }
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        ExpiryConfig {
            created: 60,
            creator_joined: 60,
            all_players_joined: 600,
            in_progress: 1200,
            ended: 300,
            curation_interval_ms: 1000,
        }
    }
}

/// The names the config may choose from, known to the layers that
/// implement them (config itself depends on none of them).
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Scoring rules (`games[].leaderboard`).
    pub leaderboards: Vec<&'static str>,
    /// Stats handlers (`games[].stats`).
    pub stats: Vec<&'static str>,
}

/// The environment variable that overrides a product's ingest key:
/// `VARCADE_INGEST_KEY_<PRODUCT>`, upper-cased, `-` as `_`.
pub fn ingest_key_env(product_id: &str) -> String {
    format!(
        "VARCADE_INGEST_KEY_{}",
        product_id.to_ascii_uppercase().replace('-', "_")
    )
}

/// Where values that did not come from the config file came from.
#[derive(Debug, Default)]
struct Origins(HashMap<String, String>);

impl Origins {
    fn set(&mut self, key: &str, origin: &str) {
        self.0.insert(key.to_string(), origin.to_string());
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// Overrides from the command line (highest precedence).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub bind: Option<String>,
}

impl Config {
    /// Loads the configuration: defaults, then the file, then `VARCADE_*`
    /// environment variables, then the flags; and validates the result.
    pub fn load(flags: &Overrides, known: &Known) -> Result<Config, ConfigError> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (mut config, origin) = match &flags.config {
            Some(path) => (Config::from_file(path)?, path.display().to_string()),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => (
                Config::from_file(Path::new(DEFAULT_CONFIG_PATH))?,
                DEFAULT_CONFIG_PATH.to_string(),
            ),
            None => (Config::default(), "defaults".to_string()),
        };
        config.read_secret_files(&origin, &env)?;
        let mut origins = Origins::default();
        if let Some(bind) = env("VARCADE_BIND") {
            config.bind = bind;
            origins.set("bind", "environment variable VARCADE_BIND");
        }
        if let Some(dir) = env("VARCADE_DATA_DIR") {
            config.data_dir = dir.into();
        }
        if let Some(secret) = env("VARCADE_JWT_SECRET") {
            config.jwt_secret = secret;
            origins.set("jwt_secret", "environment variable VARCADE_JWT_SECRET");
        }
        if let Some(key) = env("VARCADE_ADMIN_KEY") {
            config.admin_key = Some(key);
            origins.set("admin_key", "environment variable VARCADE_ADMIN_KEY");
        }
        for game in &mut config.games {
            let name = ingest_key_env(&game.product_id);
            if let Some(key) = env(&name) {
                game.ingest_key = key;
                origins.set(
                    &format!("ingest_key:{}", game.product_id),
                    &format!("environment variable {name}"),
                );
            }
        }
        if let Some(bind) = env("VARCADE_RESP_BIND") {
            config.resp.bind = Some(bind);
            origins.set("resp.bind", "environment variable VARCADE_RESP_BIND");
        }
        if let Some(url) = env("VARCADE_STORAGE_URL") {
            config.storage.url = Some(url);
            origins.set("storage.url", "environment variable VARCADE_STORAGE_URL");
        }
        if let Some(bind) = &flags.bind {
            config.bind = bind.clone();
            origins.set("bind", "--bind");
        }
        if let Some(dir) = &flags.data_dir {
            config.data_dir = dir.clone();
        }
        config.validate_from(&origin, &origins, known)?;
        config.origin = origin;
        Ok(config)
    }

    /// Replaces each secret that names a file with the file's content
    /// (one trailing newline dropped), unless its environment variable is
    /// set (which wins anyway, so the file need not exist).
    fn read_secret_files(
        &mut self,
        origin: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let read = |key: String, path: &Path| {
            std::fs::read_to_string(path)
                .map(|s| {
                    s.strip_suffix('\n')
                        .unwrap_or(&s)
                        .trim_end_matches('\r')
                        .to_string()
                })
                .map_err(|source| ConfigError::SecretFile {
                    origin: origin.to_string(),
                    key,
                    path: path.display().to_string(),
                    source,
                })
        };
        if let Some(path) = &self.jwt_secret_file
            && env("VARCADE_JWT_SECRET").is_none()
        {
            self.jwt_secret = read("jwt_secret_file".into(), path)?;
        }
        if let Some(path) = &self.admin_key_file
            && env("VARCADE_ADMIN_KEY").is_none()
        {
            self.admin_key = Some(read("admin_key_file".into(), path)?);
        }
        for (i, game) in self.games.iter_mut().enumerate() {
            if let Some(path) = &game.ingest_key_file
                && env(&ingest_key_env(&game.product_id)).is_none()
            {
                game.ingest_key = read(format!("games[{i}].ingest_key_file"), path)?;
            }
        }
        Ok(())
    }

    /// Parses a TOML file; unknown keys and wrong types are errors.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses TOML text; the error is one line.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str::<Config>(text).map_err(|e| {
            let message = e.message().replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let start = span.start.min(text.len());
                    let line = text[..start].matches('\n').count() + 1;
                    let source = text.lines().nth(line - 1).unwrap_or_default().trim();
                    format!("line {line} `{source}`: {message}")
                }
                None => message,
            }
        })
    }

    /// Checks values a type cannot express.
    pub fn validate(&self, origin: &str, known: &Known) -> Result<(), ConfigError> {
        self.validate_from(origin, &Origins::default(), known)
    }

    /// [`Config::validate`], blaming a value that came from a flag or the
    /// environment on that flag or variable.
    fn validate_from(
        &self,
        origin: &str,
        origins: &Origins,
        known: &Known,
    ) -> Result<(), ConfigError> {
        let invalid = |key: String, message: String| match origins.get(&key) {
            Some(setting) => ConfigError::Setting {
                origin: setting.to_string(),
                message,
            },
            None => ConfigError::Invalid {
                origin: origin.to_string(),
                key,
                message,
            },
        };
        let bind = self.bind.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "bind".into(),
                format!("{:?} is not an address: {e}", self.bind),
            )
        })?;
        let resp_bind = match &self.resp.bind {
            Some(b) => Some(b.parse::<SocketAddr>().map_err(|e| {
                invalid("resp.bind".into(), format!("{b:?} is not an address: {e}"))
            })?),
            None => None,
        };
        if self.quick_match.max_rating_gap < 0 {
            return Err(invalid(
                "quick_match.max_rating_gap".into(),
                "must not be negative".into(),
            ));
        }
        match self.storage.kind.as_str() {
            "sled" => {}
            "postgres" => {
                match &self.storage.url {
                    Some(url)
                        if url.starts_with("postgres://") || url.starts_with("postgresql://") => {}
                    Some(_) => {
                        return Err(invalid(
                            "storage.url".into(),
                            "must be a postgres:// or postgresql:// URL".into(),
                        ));
                    }
                    None => {
                        return Err(invalid(
                            "storage.url".into(),
                            "is required with storage.kind = \"postgres\" (or set VARCADE_STORAGE_URL)"
                                .into(),
                        ));
                    }
                }
                if !(1..=1000).contains(&self.storage.pool_size) {
                    return Err(invalid(
                        "storage.pool_size".into(),
                        "must be from 1 to 1000".into(),
                    ));
                }
                if !(1..=3600).contains(&self.storage.lease_secs) {
                    return Err(invalid(
                        "storage.lease_secs".into(),
                        "must be from 1 to 3600".into(),
                    ));
                }
            }
            other => {
                return Err(invalid(
                    "storage.kind".into(),
                    format!("unknown storage kind {other:?} (known: sled, postgres)"),
                ));
            }
        }
        if self.resp.stream.is_empty() {
            return Err(invalid("resp.stream".into(), "must not be empty".into()));
        }
        if self.resp.idmp_max_ids == 0 {
            return Err(invalid(
                "resp.idmp_max_ids".into(),
                "must be at least 1".into(),
            ));
        }
        if self.jwt_secret.is_empty() {
            return Err(invalid("jwt_secret".into(), "must not be empty".into()));
        }
        if self.lobby.max_page_size == 0 || self.lobby.default_page_size == 0 {
            return Err(invalid(
                "lobby".into(),
                "page sizes must be at least 1".into(),
            ));
        }
        if self.expiry.curation_interval_ms == 0 {
            return Err(invalid(
                "expiry.curation_interval_ms".into(),
                "must be at least 1".into(),
            ));
        }
        if self.max_connections == 0 {
            return Err(invalid(
                "max_connections".into(),
                "must be at least 1".into(),
            ));
        }
        if self.max_pending_writes == 0 {
            return Err(invalid(
                "max_pending_writes".into(),
                "must be at least 1".into(),
            ));
        }
        if self.game_server_timeout_ms == 0 {
            return Err(invalid(
                "game_server_timeout_ms".into(),
                "must be at least 1".into(),
            ));
        }
        let public = [Some(bind), resp_bind]
            .into_iter()
            .flatten()
            .find(|a| !a.ip().is_loopback());
        if let Some(public) = public {
            let weak = |value: &str| value.is_empty() || SAMPLE_SECRETS.contains(&value);
            let refuse = |key: String, what: &str| {
                let origin = origins.get(&key).unwrap_or(origin).to_string();
                let shown = key.split(':').next().unwrap_or(&key).to_string();
                ConfigError::Invalid {
                    origin,
                    key: shown,
                    message: format!(
                        "{what} while listening on {public}, which is not loopback; set a secret of your own (see README, Configuration)"
                    ),
                }
            };
            if weak(&self.jwt_secret) {
                return Err(refuse("jwt_secret".into(), "empty or a sample value"));
            }
            if self.admin_key.as_deref().is_some_and(weak) {
                return Err(refuse("admin_key".into(), "empty or a sample value"));
            }
            for (i, game) in self.games.iter().enumerate() {
                if weak(&game.ingest_key) {
                    let key = match origins.get(&format!("ingest_key:{}", game.product_id)) {
                        Some(_) => format!("ingest_key:{}", game.product_id),
                        None => format!("games[{i}].ingest_key"),
                    };
                    return Err(refuse(key, "empty or a sample value"));
                }
            }
        }
        let mut seen = BTreeSet::new();
        for (i, game) in self.games.iter().enumerate() {
            let key = |k: &str| format!("games[{i}].{k}");
            if game.product_id.is_empty() || !seen.insert(game.product_id.as_str()) {
                return Err(invalid(
                    key("product_id"),
                    "must be non-empty and unique".into(),
                ));
            }
            if !(game.game_server_url.starts_with("http://")
                || game.game_server_url.starts_with("https://"))
            {
                return Err(invalid(
                    key("game_server_url"),
                    "must be an http(s) URL".into(),
                ));
            }
            if game.ingest_key.is_empty() {
                return Err(invalid(key("ingest_key"), "must not be empty".into()));
            }
            if !known.leaderboards.contains(&game.leaderboard.as_str()) {
                return Err(invalid(
                    key("leaderboard"),
                    format!(
                        "unknown leaderboard {:?} (known: {})",
                        game.leaderboard,
                        known.leaderboards.join(", ")
                    ),
                ));
            }
            if !known.stats.contains(&game.stats.as_str()) {
                return Err(invalid(
                    key("stats"),
                    format!(
                        "unknown stats {:?} (known: {})",
                        game.stats,
                        known.stats.join(", ")
                    ),
                ));
            }
            if let Some(season) = &game.season {
                if Period::parse(&season.period).is_none() {
                    return Err(invalid(
                        key("season.period"),
                        format!(
                            "unknown period {:?} (known: {})",
                            season.period,
                            PERIODS.join(", ")
                        ),
                    ));
                }
                if season.keep > MAX_KEEP {
                    return Err(invalid(
                        key("season.keep"),
                        format!("must be from 0 to {MAX_KEEP}"),
                    ));
                }
            }
            if let Some(n) = game.settings.get("num_players") {
                match n.as_integer() {
                    Some(n) if (1..=1000).contains(&n) => {}
                    _ => {
                        return Err(invalid(
                            key("settings.num_players"),
                            "must be an integer from 1 to 1000".into(),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// The configured products by id.
    pub fn products(&self) -> HashMap<String, ProductConfig> {
        self.games
            .iter()
            .map(|g| (g.product_id.clone(), g.clone()))
            .collect()
    }
}

impl ProductConfig {
    /// The free-form settings as JSON, copied onto every game.
    pub fn settings_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.settings).unwrap_or_else(|_| serde_json::json!({}))
    }

    /// Seats per game (`settings.num_players`, default 2).
    pub fn num_players(&self) -> u32 {
        self.settings
            .get("num_players")
            .and_then(toml::Value::as_integer)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(2)
    }

    /// The season period and `keep`, when the product has seasons (the
    /// period was checked by [`Config::validate`]).
    pub fn seasons(&self) -> Option<(Period, usize)> {
        let season = self.season.as_ref()?;
        Some((Period::parse(&season.period)?, season.keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Known {
        Known {
            leaderboards: vec!["wins", "elo"],
            stats: vec!["default", "exrps"],
        }
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate("defaults", &known()).unwrap();
    }

    #[test]
    fn unknown_key_at_any_level_is_an_error() {
        assert!(
            Config::from_toml("bnd = \"x\"")
                .unwrap_err()
                .contains("bnd")
        );
        let nested = "[lobby]\ndefault_page_sizes = 3\n";
        let err = Config::from_toml(nested).unwrap_err();
        assert!(err.contains("default_page_sizes"), "{err}");
        assert!(err.starts_with("line 2"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let err = Config::from_toml("game_server_timeout_ms = \"soon\"").unwrap_err();
        assert!(err.contains("line 1 `game_server_timeout_ms"), "{err}");
    }

    #[test]
    fn unknown_scoring_is_named() {
        let mut config = Config::default();
        config.games[0].leaderboard = "chess".into();
        let err = config.validate("f.toml", &known()).unwrap_err().to_string();
        assert!(err.contains("games[0].leaderboard"), "{err}");
    }

    #[test]
    fn sample_secrets_are_refused_only_off_loopback() {
        let mut config = Config::default();
        config.validate("f.toml", &known()).unwrap();
        config.bind = "0.0.0.0:5050".into();
        let err = config.validate("f.toml", &known()).unwrap_err().to_string();
        assert!(
            err.contains("`jwt_secret`") && err.contains("not loopback"),
            "{err}"
        );
        config.jwt_secret = "a-real-secret".into();
        let err = config.validate("f.toml", &known()).unwrap_err().to_string();
        assert!(err.contains("games[0].ingest_key"), "{err}");
        config.games[0].ingest_key = "another".into();
        config.admin_key = Some("change-me-too".into());
        let err = config.validate("f.toml", &known()).unwrap_err().to_string();
        assert!(err.contains("admin_key"), "{err}");
        config.admin_key = None;
        config.validate("f.toml", &known()).unwrap();
        assert_eq!(
            ingest_key_env("rock-paper"),
            "VARCADE_INGEST_KEY_ROCK_PAPER"
        );
    }

    #[test]
    fn resp_section() {
        let config = Config::from_toml("[resp]\nbind = \"127.0.0.1:6380\"\n").unwrap();
        assert_eq!(config.resp.bind.as_deref(), Some("127.0.0.1:6380"));
        assert_eq!(config.resp.stream, "game_event_stream");
        assert_eq!(config.resp.idmp_max_ids, 10_000);
        assert!(Config::default().resp.bind.is_none(), "off by default");
        let err = Config::from_toml("[resp]\nport = 1\n").unwrap_err();
        assert!(err.contains("port"), "{err}");
        let mut config = Config::default();
        config.resp.bind = Some("nowhere".into());
        let err = config.validate("f.toml", &known()).unwrap_err().to_string();
        assert!(err.contains("resp.bind"), "{err}");
    }

    #[test]
    fn season_section() {
        let game = "[[games]]\nproduct_id = \"p\"\ngame_server_url = \"http://h\"\n\
                    game_socket_url = \"h:1\"\ningest_key = \"k\"\n[games.season]\n";
        let config = Config::from_toml(&format!("{game}period = \"weekly\"\n")).unwrap();
        config.validate("f.toml", &known()).unwrap();
        assert_eq!(config.games[0].seasons(), Some((Period::Weekly, 12)));
        let config = Config::from_toml(&format!("{game}period = \"hourly\"\n")).unwrap();
        let err = config.validate("f.toml", &known()).unwrap_err().to_string();
        assert!(
            err.contains("games[0].season.period") && err.contains("hourly"),
            "{err}"
        );
        let config =
            Config::from_toml(&format!("{game}period = \"daily\"\nkeep = 5000\n")).unwrap();
        let err = config.validate("f.toml", &known()).unwrap_err().to_string();
        assert!(err.contains("games[0].season.keep"), "{err}");
        let err = Config::from_toml(&format!("{game}period = \"daily\"\nkept = 1\n")).unwrap_err();
        assert!(err.contains("kept"), "{err}");
        let err = Config::from_toml(&format!("{game}period = \"daily\"\nkeep = -1\n")).unwrap_err();
        assert!(err.contains("keep"), "{err}");
        let err = Config::from_toml(&format!("{game}keep = 3\n")).unwrap_err();
        assert!(err.contains("period"), "{err}");
    }

    #[test]
    fn num_players_defaults_to_two() {
        let mut product = Config::default().games.remove(0);
        assert_eq!(product.num_players(), 2);
        product
            .settings
            .insert("num_players".into(), toml::Value::Integer(4));
        assert_eq!(product.num_players(), 4);
        product.settings.clear();
        assert_eq!(product.num_players(), 2);
    }
}
