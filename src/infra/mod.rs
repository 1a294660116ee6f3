//! Infrastructure used by every layer and using none of them: the config,
//! the clock, player tokens, the game-server client, the connection cap,
//! metrics and shutdown.

pub mod clock;
pub mod config;
pub mod gameserver;
pub mod jwt;
pub mod limits;
pub mod metrics;
pub mod shutdown;
