//! Publish claims across the fleet, ordered so that two publishers of one name racing on two
//! pods end with exactly one accepted, with no database and no leader.
//!
//! The rule (Ricart-Agrawala's, with Lamport clocks): a pod that wants to accept a publish
//! records a pending claim stamped with its clock, then asks every peer what it holds for the
//! name. Every question carries the asker's stamp and moves the answerer's clock past it, so a
//! pod that answered "nothing" before it claimed itself stamps its own claim later. Then:
//! - a peer that publishes the name (accepted) always wins;
//! - between two pending claims the smaller (stamp, pod) wins;
//! - a peer that does not answer in time is taken as holding nothing (availability first:
//!   a partitioned pod keeps serving; the docs say so).
//!
//! Pure and synchronous: the cluster module does the asking.

use std::cmp::Ordering;
use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::hub::StreamKey;

/// A claim's place in the fleet-wide order: Lamport stamp, then pod instance id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Stamp {
    pub clock: u64,
    pub instance: u64,
}

/// What a pod answers when asked about a name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Holding {
    /// Neither published nor claimed here.
    Nothing,
    /// A publisher is being accepted here (checks in flight).
    Pending { stamp: Stamp },
    /// A publisher publishes it here.
    Published,
}

/// Whether a pending claim may go ahead given what the peers answered.
pub fn wins(mine: Stamp, answers: &[Holding]) -> bool {
    answers.iter().all(|h| match h {
        Holding::Nothing => true,
        Holding::Published => false,
        Holding::Pending { stamp } => mine.cmp(stamp) == Ordering::Less,
    })
}

/// One pod's Lamport clock and pending claims.
#[derive(Debug)]
pub struct Claims {
    instance: u64,
    clock: u64,
    pending: HashMap<StreamKey, Stamp>,
}

impl Claims {
    pub fn new(instance: u64) -> Claims {
        Claims {
            instance,
            clock: 0,
            pending: HashMap::new(),
        }
    }

    /// Records a pending claim for `key`; `None` when one is already pending here (a second
    /// local publisher racing the first is refused like a duplicate).
    pub fn begin(&mut self, key: &StreamKey) -> Option<Stamp> {
        if self.pending.contains_key(key) {
            return None;
        }
        self.clock += 1;
        let stamp = Stamp {
            clock: self.clock,
            instance: self.instance,
        };
        self.pending.insert(key.clone(), stamp);
        Some(stamp)
    }

    /// Ends a pending claim (accepted or not).
    pub fn finish(&mut self, key: &StreamKey, stamp: Stamp) {
        if self.pending.get(key) == Some(&stamp) {
            self.pending.remove(key);
        }
    }

    /// Answers a peer's question about `key`, asked with the peer's `stamp`; `published` says
    /// whether a publisher publishes it here now.
    pub fn answer(&mut self, key: &StreamKey, stamp: Stamp, published: bool) -> Holding {
        self.clock = self.clock.max(stamp.clock) + 1;
        if published {
            return Holding::Published;
        }
        match self.pending.get(key) {
            Some(mine) => Holding::Pending { stamp: *mine },
            None => Holding::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StreamKey {
        StreamKey::new("live", "cam").unwrap()
    }

    #[test]
    fn published_always_wins_and_nothing_never_blocks() {
        let mine = Stamp { clock: 1, instance: 1 };
        assert!(wins(mine, &[Holding::Nothing, Holding::Nothing]));
        assert!(!wins(mine, &[Holding::Nothing, Holding::Published]));
        assert!(wins(mine, &[]), "no peers: a single pod");
    }

    #[test]
    fn of_two_pending_claims_exactly_one_wins() {
        let a = Stamp { clock: 3, instance: 7 };
        let b = Stamp { clock: 3, instance: 9 };
        assert!(wins(a, &[Holding::Pending { stamp: b }]));
        assert!(!wins(b, &[Holding::Pending { stamp: a }]));
    }

    /// B asks A before A claims: A answers nothing, but its clock moves past B's stamp, so
    /// A's own claim comes later and loses to B's, which A then sees pending (or published).
    #[test]
    fn a_pod_that_answered_first_claims_later() {
        let mut a = Claims::new(1);
        let mut b = Claims::new(2);
        // Give A a head start in local clock to show the stamp, not the wall clock, decides.
        for _ in 0..5 {
            let s = a.begin(&key()).unwrap();
            a.finish(&key(), s);
        }
        let sb = b.begin(&key()).unwrap();
        assert_eq!(a.answer(&key(), sb, false), Holding::Nothing, "A holds nothing yet");
        let sa = a.begin(&key()).unwrap();
        let b_holds = b.answer(&key(), sa, false);
        assert_eq!(b_holds, Holding::Pending { stamp: sb });
        assert!(!wins(sa, &[b_holds]), "A yields to B");
        assert!(wins(sb, &[Holding::Nothing]), "B saw nothing and goes ahead");
    }

    #[test]
    fn a_second_local_claim_is_refused_until_the_first_finishes() {
        let mut c = Claims::new(1);
        let s = c.begin(&key()).unwrap();
        assert!(c.begin(&key()).is_none());
        c.finish(&key(), s);
        assert!(c.begin(&key()).is_some());
    }
}
