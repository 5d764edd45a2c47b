//! What an at-most-once transport dropped (datagrams), judged against what its link loses: on
//! a link that loses nothing, nothing may be dropped; on a lossy one, no more than the link's
//! loss explains. An event lost beyond that was dropped by the sender or receiver itself (a
//! full buffer), which the row must show as a failure, not as the network's doing.

/// How many standard deviations above the binomial mean the drops may reach before they are
/// more than the link's loss explains: five keeps a false failure below one in a million.
const SIGMAS: f64 = 5.0;

/// Why the row fails, if it does: `dropped` of `sent` events, on a link that loses
/// `link_loss` of its packets (a share; `None`: unknown, so not judged).
pub(super) fn judge(dropped: u64, sent: u64, link_loss: Option<f64>) -> Option<String> {
    let loss = link_loss?;
    if dropped == 0 {
        return None;
    }
    if loss <= 0.0 {
        return Some(format!(
            "{dropped} of {sent} events dropped on a link that loses nothing"
        ));
    }
    let n = sent as f64;
    let mean = n * loss;
    let most = mean + SIGMAS * (n * loss * (1.0 - loss)).sqrt() + 1.0;
    (dropped as f64 > most).then(|| {
        format!(
            "{dropped} of {sent} events dropped ({:.2}%), more than the link's {:.2}% loss \
             explains (at most {most:.0})",
            dropped as f64 / n * 100.0,
            loss * 100.0
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing dropped passes anywhere; anything dropped fails on a lossless link; on a lossy
    /// one, what the loss explains passes and far more fails; an unknown link is not judged.
    #[test]
    fn drops_are_judged_against_the_link() {
        assert_eq!(judge(0, 1000, Some(0.0)), None);
        assert!(judge(1, 1000, Some(0.0)).unwrap().contains("loses nothing"));
        // 5% of 10,000: 500 expected, the bound about 610.
        assert_eq!(judge(540, 10_000, Some(0.05)), None);
        assert!(judge(700, 10_000, Some(0.05))
            .unwrap()
            .contains("more than"));
        assert_eq!(judge(9_000, 10_000, None), None);
    }
}
