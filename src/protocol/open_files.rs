//! How many subscribers one process can hold, and so how many processes a side of a run is
//! spread over: read from the open-file limit, which every socket counts against.

pub use crate::transport::RESERVED_FILES;

/// The open-file hard limit of this process (what the load can raise its soft limit to).
pub fn open_file_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .unwrap_or(u64::MAX)
}

/// The most processes `run` spreads one side of a combination over.
pub const MAX_PROCESSES: usize = 256;

/// Subscribers one process can hold: the rule every server's cap follows.
pub fn subscribers_per_process() -> usize {
    crate::transport::Limits::subscribers_per_process()
}

/// Server processes for `subscribers`: one while they fit, else enough that each holds at most
/// four fifths of what it could, because the kernel spreads connections over processes
/// sharing a port by a hash, not evenly.
pub fn server_processes_for(subscribers: usize) -> usize {
    let per = subscribers_per_process();
    if subscribers <= per {
        1
    } else {
        subscribers.div_ceil((per / 5 * 4).max(1))
    }
}

/// Raises the soft open-file limit to the hard one, so many connections fit.
pub fn raise_open_file_limit() {
    let mut limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    limit.current = limit.maximum;
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, limit);
}
