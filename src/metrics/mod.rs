//! What a run measures, apart from what it runs: latency histograms and their per-thread
//! recording, what injected faults did to latency, what a reconnect storm cost, socket byte and connection counters,
//! process CPU and memory and the kernel's TCP buffer memory from /proc, and a description of
//! the machine.

pub mod faults;
pub mod kernel;
pub mod latency;
pub mod machine;
pub mod process;
pub mod recorder;
pub mod resources;
pub mod sockets;
pub mod storm;
pub mod tcp_info;
