//! Leaderboard scoring rules.

/// The registered scoring names.
pub const NAMES: &[&str] = &["wins", "elo"];
