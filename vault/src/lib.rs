//! The sealed store: envelope encryption of every personal field under per-department data
//! keys wrapped by the master key, blind indexes, crash-safe storage in redb, and backup; and
//! the [`progress::Progress`] every long offline operation of the library crates reports to.
//!
//! Knows nothing of policies, search or the engine: it stores and seals what it is given.

pub mod backup;
pub mod crypto;
pub mod keys;
pub mod migrate;
pub mod progress;
pub mod row;
pub mod store;
