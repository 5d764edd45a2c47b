//! Runs subscribers against a server and judges what they received: the load half of a
//! measurement, generic over the transport, and the `pushbench run` driver around it.

pub mod calibrate;
pub mod cpu_limit;
mod knee;
pub mod ledger;
mod load;
mod local;
mod merge;
mod part;
mod rounds;
mod run;
pub mod settings;
mod subscriber;
mod summary;
pub mod two_way;
pub mod worker;

pub use load::{run_job, run_subscribers};
pub use local::{deliver_locally, LocalRun};
pub use merge::{merge, MergeOutcome};
pub use part::{MergeError, Merged};
pub use run::{run, RunOptions, RunOutcome};
pub use subscriber::{RecordPlan, SubscriberRecord, TallySink};
