//! varcade: the Varcade Games backend (matchmaker and stats tracker) as one
//! self-contained service. See README.md ("Layout") for the layers:
//! `domain` ← `app` (use cases, storage ports) ← `storage`, `http`, `resp`;
//! `infra` is used by all; `service` wires them together.

pub mod app;
pub mod backup_client;
pub mod domain;
pub mod fake_game_server;
pub mod http;
pub mod import_redis;
pub mod infra;
pub mod resp;
pub mod service;
pub mod storage;
