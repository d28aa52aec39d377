//! The SSE core every stream shares: the encoder ([`frame`]), the response body
//! ([`body`]) with its [`StreamKind`] seam, the timer that wakes streams together
//! ([`grid`]), the wake-up of each runtime's registered waiters ([`signal`]), admission
//! and accounting ([`permit`]), and the shutdown signal ([`shutdown`]). A kind of stream (`crate::streams`) only says
//! which payload is due when.

pub mod body;
pub mod frame;
pub mod grid;
pub mod permit;
pub mod shutdown;
pub mod signal;

pub use body::{BodyParts, Due, SseBody, StreamKind};
pub use permit::{Admission, StreamPermit, Summary};
pub use shutdown::{Shutdown, ShutdownWatch};
pub use signal::{Key, Signal, Waiter};
