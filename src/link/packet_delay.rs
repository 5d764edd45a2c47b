//! Delay on the lossy path: every packet the kernel queues to this process (iptables'
//! `NFQUEUE` target, which `scripts/netns-link --delay` puts on the link's namespace, both
//! directions) is held for a fixed time, then let through unchanged, in the order it came.
//!
//! Why not the link emulator's `latency` ([`super::proxy`]): this kernel has no netem, and the
//! proxy delays the bytes it relays, after the kernel has taken them off the lossy path and
//! retransmitted what was lost there without waiting out any distance. Held in the kernel's
//! queue, the packets themselves are late, TCP and UDP alike, on the path where iptables drops
//! them: a lost packet's retransmission waits for the round trip, as across a real distance.

use std::collections::VecDeque;
use std::io;
use std::time::{Duration, Instant};

use super::nfqueue::PacketQueue;

/// The most packets the kernel holds for the delay at once; past it, it drops them (a full
/// router queue). A 25 ms delay fills it only past 2.6 million packets a second.
const MAX_HELD: u32 = 65_536;

/// How close to a packet's time a wake-up may come and still wait out the rest awake: another
/// sleep would overshoot by the timer's own lateness.
const SPIN_AT_MOST: Duration = Duration::from_micros(100);

/// Holds every packet on NFQUEUE number `queue` for `delay`, then lets it through; `bound` is
/// called once the queue is bound (packets sent to it before then are dropped). Runs until the
/// process is stopped (the link's `down` does that).
pub fn run(queue: u16, delay: Duration, bound: impl FnOnce()) -> io::Result<()> {
    // The kernel may let a sleep run past its time to merge wake-ups (timer slack).
    rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1))?;
    let mut packets = PacketQueue::bind(queue, MAX_HELD)?;
    bound();
    // Each packet's id and when it is due. The delay is the same for all, so they fall due in
    // the order they came, which is the order of their ids.
    let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
    let mut timer = Lateness::default();
    loop {
        packets.take_queued(|id| held.push_back((Instant::now() + delay, id)))?;
        release_due(&packets, &mut held)?;
        match held.front().map(|&(due, _)| due) {
            Some(due) if due.saturating_duration_since(Instant::now()) <= SPIN_AT_MOST => {
                // Nearly due: waited out awake, new arrivals taken meanwhile.
                std::hint::spin_loop();
            }
            Some(due) => {
                // Asked to wake as early as the timer has been late, so that it wakes on time.
                let wake = due.checked_sub(timer.late).unwrap_or(due);
                let timed_out =
                    packets.wait(Some(wake.saturating_duration_since(Instant::now())))?;
                if timed_out {
                    timer.observe(Instant::now().saturating_duration_since(wake));
                }
            }
            None => {
                packets.wait(None)?;
            }
        }
    }
}

/// Lets through every held packet whose time has come, with one verdict (all ids up to the
/// last of them).
fn release_due(packets: &PacketQueue, held: &mut VecDeque<(Instant, u32)>) -> io::Result<()> {
    let now = Instant::now();
    let mut last = None;
    while let Some(&(due, id)) = held.front() {
        if due > now {
            break;
        }
        last = Some(id);
        held.pop_front();
    }
    match last {
        Some(last) => packets.accept_through(last),
        None => Ok(()),
    }
}

/// How late the timer wakes this process, smoothed: on a virtual machine a sleep's end can come
/// a quarter of a millisecond after its time, which a 25 ms delay would carry on every packet.
#[derive(Debug, Default)]
struct Lateness {
    late: Duration,
}

impl Lateness {
    /// One wake-up this much after its time: an eighth of the way toward it.
    fn observe(&mut self, overshoot: Duration) {
        self.late = (self.late * 7 + overshoot) / 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timer_s_lateness_is_learnt_and_forgotten() {
        let mut timer = Lateness::default();
        for _ in 0..64 {
            timer.observe(Duration::from_micros(240));
        }
        // Within a microsecond of a steady overshoot after 64 wake-ups.
        assert!(
            timer.late.abs_diff(Duration::from_micros(240)) < Duration::from_micros(1),
            "{:?}",
            timer.late
        );
        for _ in 0..64 {
            timer.observe(Duration::ZERO);
        }
        assert!(timer.late < Duration::from_micros(1), "{:?}", timer.late);
    }
}
