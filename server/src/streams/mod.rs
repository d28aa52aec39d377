//! The kinds of stream the server serves, each a small [`crate::sse::StreamKind`], and
//! the [`hub`] that the subscribed kinds read.

pub mod channels;
pub mod counter;
pub mod hub;
pub mod shared;
