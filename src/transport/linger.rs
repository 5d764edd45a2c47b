//! Subscribers that keep their connection once they hold the whole stream, until every
//! subscriber of the run does: the teardown falls after the measured span, not inside it.
//!
//! Without it each subscriber closes the moment it has the last event, and its close (a
//! WebSocket close handshake, a FIN, a confirming request) costs the server's CPU while other
//! subscribers still wait for that same event: at 100,000 subscribers on one server CPU the
//! goodbyes of the early receivers pushed the last receivers' latency from about 2 s to 6 s.
//! Real subscribers do not all leave the instant a stream ends, so neither do these.
//!
//! The load counts who holds ([`Linger::hold`]) and who has ended ([`Linger::ended`]); once
//! they are every subscriber, it releases them, or `run` does once every load worker is there.
//! A hold is bounded ([`Linger::new`]'s `longest`), so a subscriber never waits past its own
//! timeout for one that will not finish.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Where the load's subscribers wait for each other at the end of the stream.
#[derive(Debug)]
pub struct Linger {
    /// Subscribers holding their connection now.
    holding: AtomicUsize,
    /// Subscribers whose subscription has ended (after a hold or without one).
    ended: AtomicUsize,
    released: watch::Sender<bool>,
    longest: Duration,
}

impl Linger {
    /// A linger whose holds last at most `longest` each.
    pub fn new(longest: Duration) -> Self {
        Self {
            holding: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            released: watch::Sender::new(false),
            longest,
        }
    }

    /// Holds the caller (a subscriber with the whole stream, its connection open) until the
    /// release, or for `longest` at most.
    pub fn hold(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        // Boxed: the wait (a timer and a watch) lives only at the end, but inline it would
        // size every subscriber's future, idle or not, for the whole subscription.
        Box::pin(async move {
            let mut released = self.released.subscribe();
            self.holding.fetch_add(1, Ordering::Relaxed);
            let _ = tokio::time::timeout(self.longest, released.wait_for(|free| *free)).await;
            self.holding.fetch_sub(1, Ordering::Relaxed);
        })
    }

    /// A subscription has ended (the load calls it once per subscriber).
    pub fn ended(&self) {
        self.ended.fetch_add(1, Ordering::Relaxed);
    }

    /// Subscribers holding or ended: every one, once none is still receiving. A subscriber
    /// counts as holding until it has left its hold, and as ended only after, so none is
    /// counted twice or missed in between.
    pub fn arrived(&self) -> usize {
        // Ended first: one leaving its hold between the two reads is then seen in neither
        // rather than both, and the count only ever undercounts for a moment.
        let ended = self.ended.load(Ordering::Relaxed);
        ended + self.holding.load(Ordering::Relaxed)
    }

    /// Lets every holder go, and any that arrive later pass at once.
    pub fn release(&self) {
        self.released.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Holders wait for the release and are counted while they wait; an ended subscription is
    /// counted once; after the release, a hold passes at once.
    #[tokio::test]
    async fn holders_wait_for_the_release() {
        let linger = Arc::new(Linger::new(Duration::from_secs(60)));
        let holders: Vec<_> = (0..3)
            .map(|_| {
                let linger = Arc::clone(&linger);
                tokio::spawn(async move {
                    linger.hold().await;
                    linger.ended();
                })
            })
            .collect();
        linger.ended();
        while linger.arrived() < 4 {
            tokio::task::yield_now().await;
        }
        assert!(holders.iter().all(|h| !h.is_finished()));
        linger.release();
        for holder in holders {
            holder.await.unwrap();
        }
        assert_eq!(linger.arrived(), 4);
        tokio::time::timeout(Duration::from_secs(5), linger.hold())
            .await
            .expect("a hold after the release passes at once");
    }

    /// A hold never outlasts its bound, released or not.
    #[tokio::test]
    async fn a_hold_is_bounded() {
        let linger = Linger::new(Duration::from_millis(200));
        let held = tokio::time::timeout(Duration::from_secs(30), linger.hold()).await;
        assert!(held.is_ok(), "the hold ended by its bound");
        assert_eq!(linger.arrived(), 0, "no longer holding");
    }
}
