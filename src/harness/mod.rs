//! Runs subscribers against a server and judges what they received: the load half of a
//! measurement, generic over the transport, and the `pushbench run` driver around it.

pub mod calibrate;
mod child;
mod load;
mod local;
mod part;
mod run;
mod subscriber;
pub mod worker;

pub use load::{run_job, run_subscribers, LoadJob};
pub use local::{deliver_locally, LocalRun};
pub use part::{DeliveryCounts, LoadPart, MergeError, Merged};
pub use run::{run, RunOptions, RunOutcome};
pub use subscriber::{RecordPlan, SubscriberRecord, TallySink};
