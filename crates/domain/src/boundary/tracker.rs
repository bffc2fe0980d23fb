//! Filled in by the boundary work (issue 2).
