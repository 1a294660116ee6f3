//! varcade: the Varcade Games backend (matchmaker and stats tracker) as one
//! self-contained service on sled. See README.md and API.md.

pub mod auth;
pub mod config;
pub mod curation;
pub mod error;
pub mod events;
pub mod fake_game_server;
pub mod game;
pub mod gameserver;
pub mod lobby;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod stats;
pub mod store;
