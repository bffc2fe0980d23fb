//! The store conformance suite (issue 3): written once, run against every adapter.
