//! Player stats handlers.

/// The registered handler names.
pub const NAMES: &[&str] = &["default", "exrps"];
