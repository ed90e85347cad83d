//! Switchboard's background work: versioned job payloads, their handlers, and the apalis queue
//! that carries them.
//!
//! Handlers are written against small traits ("ports", see [`ports`]) that the service crate
//! implements over its store and broker, so this crate knows nothing of SQL or HTTP and its
//! handlers can be exercised on their own. Every handler is idempotent: a job may run twice
//! (a retry after a crash, the recovery sweep re-enqueueing an event) and the second run changes
//! nothing.

pub mod jobs;
pub mod normalize;
pub mod ports;
pub mod queue;

pub use jobs::{DeliverOutbound, NormalizeInbound};
pub use ports::{InboundPort, OutboundPort, PortError, RawEvent, SourceKind};
pub use queue::{Queue, QueueError};
