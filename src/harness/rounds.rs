//! Randomized interleaved rounds: `--repeat K` runs every combination once in each of K
//! rounds, each round in a fresh order drawn from a recorded seed. A neighbour's burst then
//! lands on a different combination in each round instead of on every repeat of one (Abedi and
//! Brecht, ICPE 2017: back-to-back repeats are how identical systems come to "differ" by 38%
//! on cloud VMs), and each round has its own floor row to pair ratios with.

use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::SeedableRng as _;

/// The seed of a scenario's round order, from its stream seed: the same scenario runs its
/// rounds in the same order.
pub fn order_seed(stream_seed: u64) -> u64 {
    stream_seed ^ 0x726f_756e_6473_2121 // "rounds!!"
}

/// Every one of `combinations` once in each of `rounds` rounds: `(round, index)` in the order
/// they run, each round shuffled by a generator seeded from `seed` and the round. One round
/// keeps the plan's order.
pub fn interleave(combinations: usize, rounds: u32, seed: u64) -> Vec<(u32, usize)> {
    let mut order = Vec::with_capacity(combinations * rounds as usize);
    for round in 0..rounds.max(1) {
        let mut indices: Vec<usize> = (0..combinations).collect();
        if rounds > 1 {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(u64::from(round)));
            indices.shuffle(&mut rng);
        }
        order.extend(indices.into_iter().map(|i| (round, i)));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every combination runs once per round, the rounds in turn; the same seed repeats the
    /// order, another seed draws another, and the rounds differ from each other.
    #[test]
    fn every_combination_once_per_round_in_a_seeded_order() {
        let order = interleave(6, 4, 42);
        assert_eq!(order.len(), 24);
        for round in 0..4 {
            let mut seen: Vec<usize> = order
                .iter()
                .filter(|(r, _)| *r == round)
                .map(|&(_, i)| i)
                .collect();
            assert_eq!(seen.len(), 6);
            seen.sort_unstable();
            assert_eq!(seen, (0..6).collect::<Vec<_>>());
        }
        assert!(
            order.windows(2).all(|w| w[0].0 <= w[1].0),
            "rounds run in turn"
        );
        assert_eq!(interleave(6, 4, 42), order);
        assert_ne!(interleave(6, 4, 43), order);
        let of_round = |r: u32| -> Vec<usize> {
            order
                .iter()
                .filter(|(x, _)| *x == r)
                .map(|&(_, i)| i)
                .collect()
        };
        assert!((1..4).any(|r| of_round(r) != of_round(0)));
        // One round keeps the plan's order.
        assert_eq!(interleave(3, 1, 42), [(0, 0), (0, 1), (0, 2)]);
    }
}
