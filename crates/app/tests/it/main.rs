//! End-to-end tests of the `tally` binary: each module starts real `tally`
//! processes (`CARGO_BIN_EXE_tally`) and talks to them over loopback. One
//! test binary, so the helpers in `common` are compiled and linked once.

mod cli_errors;
mod coder_clients;
mod common;
mod db_blackhole;
mod db_outage;
mod e2e_memory;
mod e2e_postgres;
mod hostile;
mod insights;
mod memory_cap;
mod ops;
mod replicas;
mod simulate_cli;
mod simulate_serve;
mod tls;
