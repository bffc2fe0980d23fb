//! The in-memory store: tally's embedded default.
//!
//! CONTRACT (stub, to be implemented): `MemoryStore::new()` implementing every
//! store port of `tally_domain::ports` with the same observable behaviour as
//! the PostgreSQL store, atomicity included.

#[derive(Debug, Default)]
pub struct MemoryStore {}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }
}
