//! Runs subscribers against a server and judges what they received: the load half of a
//! measurement, generic over the transport, and the `pushbench run` driver around it.

// Each function here does one step of a pipeline: long ones are split (clippy.toml).
#![warn(clippy::too_many_lines)]

pub mod calibrate;
pub mod cpu_limit;
mod disrupt;
mod dropped;
mod knee;
pub mod ledger;
mod load;
mod local;
mod merge;
mod part;
mod plan;
mod rig;
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
