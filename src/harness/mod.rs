//! Runs subscribers against a server and judges what they received: the load half of a
//! measurement, generic over the transport.

mod load;
mod subscriber;

pub use load::{run_load, run_subscribers, LoadOptions, LoadSummary};
pub use subscriber::{SubscriberRecord, TallySink};
