//! The benchmark harness (see its issue).
