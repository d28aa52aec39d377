//! The SSE core every stream shares: the encoder ([`frame`]), the response body
//! ([`body`]) with its [`StreamKind`] seam, admission and accounting ([`permit`]), and
//! the shutdown signal ([`shutdown`]). A kind of stream (`crate::streams`) only says
//! which payload is due when.

pub mod body;
pub mod frame;
pub mod permit;
pub mod shutdown;

pub use body::{BodyParts, Due, SseBody, StreamKind};
pub use permit::{Admission, StreamPermit, Summary};
pub use shutdown::{Shutdown, ShutdownWatch};
