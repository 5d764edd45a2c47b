//! One value per recent event, shared by every delivery of it: what a webhook provider would
//! otherwise compute once per endpoint (a signature, a compressed body).

use std::sync::Mutex;

/// A fixed ring of slots indexed by sequence number, each holding the latest value made for
/// one event under one key (a timestamp, say); a slot taken by another event or key is simply
/// made again. Far more slots than deliveries in flight keep that rare.
pub struct PerEvent<K, V> {
    slots: Vec<Mutex<Option<(u64, K, V)>>>,
}

impl<K: PartialEq, V: Clone> PerEvent<K, V> {
    /// Events kept at once.
    pub const SLOTS: usize = 4096;

    /// An empty ring.
    pub fn new() -> Self {
        Self {
            slots: (0..Self::SLOTS).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Event `seq`'s value under `key`: the one kept, or `make`'s, kept for the next caller.
    pub fn get_or_make(&self, seq: u64, key: K, make: impl FnOnce() -> V) -> V {
        let slot = &self.slots[(seq % Self::SLOTS as u64) as usize];
        let mut slot = slot.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((kept_seq, kept_key, value)) = slot.as_ref() {
            if *kept_seq == seq && *kept_key == key {
                return value.clone();
            }
        }
        let value = make();
        *slot = Some((seq, key, value.clone()));
        value
    }
}

impl<K: PartialEq, V: Clone> Default for PerEvent<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made once per event and key; another key, or another event in the same slot, is made
    /// for itself.
    #[test]
    fn values_are_made_once_per_event_and_key() {
        let ring = PerEvent::<i64, String>::new();
        let mut made = 0;
        let mut get = |seq: u64, key: i64| {
            ring.get_or_make(seq, key, || {
                made += 1;
                format!("{seq}@{key}")
            })
        };
        assert_eq!(get(7, 100), "7@100");
        assert_eq!(get(7, 100), "7@100");
        assert_eq!(get(7, 101), "7@101");
        let other = 7 + PerEvent::<i64, String>::SLOTS as u64;
        assert_eq!(get(other, 101), format!("{other}@101"));
        assert_eq!(made, 3);
    }
}
