//! Filled in by the telemetry work (issue 2).
