//! Storage backends. Each implements the ports of [`crate::app::ports`];
//! [`suite`] is the one test suite every backend runs (as garage does).

pub mod lobby;
pub mod sled;

#[cfg(test)]
pub(crate) mod suite;
