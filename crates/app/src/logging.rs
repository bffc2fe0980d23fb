//! Structured logs via tracing: human-readable by default, JSON lines on request.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing to stderr. The level comes from
/// `TALLY_LOG` or `RUST_LOG` (default `info`). Calling it again does nothing.
pub fn init_tracing(json: bool) {
    let filter = EnvFilter::try_from_env("TALLY_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            // A request's id, method and route are its span's fields.
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).try_init()
    };
}
