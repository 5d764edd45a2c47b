//! Runs subscribers against a server and judges what they received: the load half of a
//! measurement, generic over the transport.

mod load;
mod local;
mod subscriber;

pub use load::{run_load, run_subscribers, LoadOptions, LoadSummary};
pub use local::{deliver_locally, LocalRun};
pub use subscriber::{RecordPlan, SubscriberRecord, TallySink};
