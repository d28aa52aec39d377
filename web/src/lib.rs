//! The sse-counter page (built in its own issue).
