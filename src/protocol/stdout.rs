//! Lines to stdout that outlive their reader: a pipe closed under a command (`pushbench
//! transports | head`, a `serve` whose log reader went away) is noticed, never a panic (Rust's
//! `println!` panics on the broken pipe). Once closed, nothing more is written, and a server
//! waiting on [`closed`] stops as it would on SIGTERM.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// Set once a write found stdout closed.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// Wakes whoever waits on [`closed`].
static NOTICED: Notify = Notify::const_new();

/// Writes `text` as is, flushed; `false` once stdout is closed (this write's or an earlier one).
pub fn text(text: &str) -> bool {
    if CLOSED.load(Ordering::Relaxed) {
        return false;
    }
    let mut out = std::io::stdout().lock();
    let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    match written {
        Ok(()) => true,
        Err(error) => {
            // Any failure to write stdout ends what it is for; a closed pipe is the usual.
            tracing::debug!(%error, "stdout closed");
            CLOSED.store(true, Ordering::Relaxed);
            NOTICED.notify_waiters();
            false
        }
    }
}

/// Writes `text` and a line break.
pub fn line(text: &str) -> bool {
    self::text(&format!("{text}\n"))
}

/// Returns once a write has found stdout closed.
pub async fn closed() {
    loop {
        // Registered before the flag is read, so a write between the two still wakes it.
        let noticed = NOTICED.notified();
        tokio::pin!(noticed);
        noticed.as_mut().enable();
        if CLOSED.load(Ordering::Relaxed) {
            return;
        }
        noticed.await;
    }
}
