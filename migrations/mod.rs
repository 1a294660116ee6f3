//! Versioned upgrades of the on-disk layout, applied in order at start-up.
//!
//! Each migration has a number, a name and a function over the sled
//! database. The store records the highest applied number in its `meta` tree
//! (`layout_version`) and each applied migration under `migration/<n>`, in
//! the same batch, so a crash mid-upgrade re-runs only unrecorded steps.
//! Every step must therefore be idempotent. To change the layout, add a file
//! `NNNN_name.rs` here and one line to [`MIGRATIONS`].

#[path = "0001_initial.rs"]
mod m0001_initial;
#[path = "0002_indexes_in_memory.rs"]
mod m0002_indexes_in_memory;

/// One numbered upgrade of the layout.
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub apply: fn(&::sled::Db) -> ::sled::Result<()>,
}

/// Every migration, in order. The last version is the layout this build writes.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial",
        apply: m0001_initial::apply,
    },
    Migration {
        version: 2,
        name: "indexes_in_memory",
        apply: m0002_indexes_in_memory::apply,
    },
];
