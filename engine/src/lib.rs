//! The engine: what happens to a record between a department and the sealed store.
//!
//! `ingest` validates a batch, resolves each record to a unified entity, seals its personal
//! fields and writes it; `linkage` and `linking` decide which records are the same person
//! (deterministically by ID number, probabilistically without); `resolve` merges an entity's
//! records into one profile with provenance; `rotation` re-seals under new keys; `problems`
//! keeps what a background task skipped.

pub mod ingest;
pub mod keyed;
pub mod linkage;
pub mod linking;
pub mod problems;
pub mod resolve;
pub mod rotation;
