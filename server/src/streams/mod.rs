//! The kinds of stream the server serves, each a small [`crate::sse::StreamKind`].

pub mod counter;
pub mod shared;
