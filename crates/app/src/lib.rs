//! The tally app crate (minimal stand-in; replaced at merge).

pub mod simulate;
pub mod store;
