//! Filled in by the app-sessions work (issue 2).
