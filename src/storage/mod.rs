//! Storage backends. Each implements the ports of [`crate::app::ports`];
//! [`suite`] is the one test suite every backend runs (as garage does).

pub mod lobby;
pub mod postgres;
pub mod sled;

#[cfg(test)]
pub(crate) mod suite;

/// The time an append is stamped with, Unix milliseconds. Tests built with
/// the `failpoints` feature set it with the fail point
/// `writer::append_ts_ms` (`return(<ms>)`), to put events on either side
/// of a season boundary.
pub(crate) fn append_ms() -> u64 {
    fail::fail_point!("writer::append_ts_ms", |ms| ms
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(crate::infra::clock::now_us() / 1000));
    crate::infra::clock::now_us() / 1000
}
