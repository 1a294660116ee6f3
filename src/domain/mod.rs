//! The domain: games and their state machine, events and their validation,
//! scoring and stats rules. Plain types and functions with no I/O and no
//! async, tested where they are defined; every other layer builds on them.

pub mod event;
pub mod game;
pub mod original;
pub mod scoring;
pub mod season;
pub mod stats_rules;

/// One registered implementation: its config name and its constructor.
pub type Registered<T> = (&'static str, fn() -> Box<T>);

/// Implementations chosen by name in the config.
pub struct Registry<T: ?Sized + 'static>(pub &'static [Registered<T>]);

impl<T: ?Sized> Registry<T> {
    /// The registered names (checked when the config is loaded).
    pub fn names(&self) -> Vec<&'static str> {
        self.0.iter().map(|(name, _)| *name).collect()
    }

    /// A new instance of the implementation called `name`.
    pub fn make(&self, name: &str) -> Option<Box<T>> {
        self.0
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, make)| make())
    }
}
