//! Replica pools: each side's upstream addresses (`[backends.*] upstreams`), each with its own
//! health and count of requests in flight, and the choice of the replica an attempt goes to.
//!
//! The choice is a pure step over plain data (`pick`, `Attempts::next`): the least loaded
//! replica that is up and that the request has not failed on, ties broken by a draw;
//! once none is left on the request's side, one of the other side, once. The counters it
//! reads are atomics, and a request carries its state in a few words (`Attempts`, one bit per
//! replica), so choosing allocates nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use pingora::upstreams::peer::HttpPeer;

use crate::metrics::{ProxyMetrics, ReplicaSeries};
use crate::routing::Side;

/// Replicas per side, so that a request's failed replicas fit one `u64`.
pub const MAX_REPLICAS: usize = 64;

/// One upstream address of one side. Shared by every generation that lists it, so its health
/// and in-flight count carry over a reload.
pub struct Replica {
    pub side: Side,
    pub address: SocketAddr,
    up: AtomicBool,
    in_flight: AtomicU32,
    series: ReplicaSeries,
}

impl Replica {
    /// Up until the health checks prove otherwise, as a side is.
    fn new(side: Side, address: SocketAddr, metrics: &ProxyMetrics) -> Self {
        let series = metrics.replica_series(side, address);
        series.up.set(1);
        Self {
            side,
            address,
            up: AtomicBool::new(true),
            in_flight: AtomicU32::new(0),
            series,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records a health verdict; returns whether it changed.
    pub fn set_up(&self, up: bool) -> bool {
        let changed = self.up.swap(up, Ordering::Relaxed) != up;
        if changed {
            self.series.up.set(i64::from(up));
        }
        changed
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Responses this replica gave (since it was first listed).
    pub fn answered_count(&self) -> u64 {
        self.series.requests.get()
    }

    pub fn answered(&self) {
        self.series.requests.inc();
    }

    pub fn connect_failed(&self) {
        self.series.connect_errors.inc();
    }

    fn load(&self) -> Load {
        Load {
            up: self.is_up(),
            in_flight: self.in_flight(),
        }
    }
}

/// A request's hold on a replica: it counts in the replica's load until dropped.
pub struct InFlight(Arc<Replica>);

impl InFlight {
    fn take(replica: &Arc<Replica>) -> Self {
        replica.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(replica))
    }

    pub fn replica(&self) -> &Replica {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One replica as a generation uses it: the shared state and the peer built for the
/// generation's timeouts.
pub struct Member {
    pub replica: Arc<Replica>,
    pub peer: HttpPeer,
}

/// One side's replicas in one generation, in the file's order.
pub struct Pool {
    members: Box<[Member]>,
}

impl Pool {
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, index: usize) -> Option<&Member> {
        self.members.get(index)
    }

    /// Whether any replica is up: the side is down only when all are.
    pub fn any_up(&self) -> bool {
        self.members.iter().any(|m| m.replica.is_up())
    }

    pub fn loads(&self) -> impl Iterator<Item = Load> + '_ {
        self.members.iter().map(|m| m.replica.load())
    }

    /// Takes a hold on the replica at `index` for an attempt.
    pub fn hold(&self, index: usize) -> Option<(InFlight, &Member)> {
        let member = self.members.get(index)?;
        Some((InFlight::take(&member.replica), member))
    }

    /// The least loaded replica up, for a request the pool does not carry (a shadow copy);
    /// the first one if none is up.
    pub fn address_for_copy(&self, draw: u64) -> Option<SocketAddr> {
        let index = pick(self.loads(), Tried::default(), draw).unwrap_or(0);
        self.members.get(index).map(|m| m.replica.address)
    }
}

/// Every replica the proxy knows, by side and address: a reload keeps the ones it still
/// lists (their health and in-flight counts) and forgets the others (and their series).
#[derive(Default)]
pub struct Registry {
    known: Mutex<HashMap<(Side, SocketAddr), Arc<Replica>>>,
}

impl Registry {
    /// The pools for a generation listing `upstreams` per side; `peer` builds the peer of one
    /// address for that generation.
    pub fn pools(
        &self,
        upstreams: [&[SocketAddr]; 2],
        metrics: &ProxyMetrics,
        peer: impl Fn(SocketAddr) -> HttpPeer,
    ) -> [Pool; 2] {
        let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|(side, address), _| {
            let listed = upstreams[side.index()].contains(address);
            if !listed {
                metrics.forget_replica(*side, *address);
            }
            listed
        });
        Side::BOTH.map(|side| Pool {
            members: (upstreams[side.index()].iter())
                .map(|&address| Member {
                    replica: Arc::clone(
                        known
                            .entry((side, address))
                            .or_insert_with(|| Arc::new(Replica::new(side, address, metrics))),
                    ),
                    peer: peer(address),
                })
                .collect(),
        })
    }
}

/// What the choice knows of one replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    pub up: bool,
    pub in_flight: u32,
}

/// The replicas of one side a request has failed on: one bit per index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tried(u64);

impl Tried {
    pub fn contains(self, index: usize) -> bool {
        index < MAX_REPLICAS && self.0 & (1 << index) != 0
    }

    pub fn with(self, index: usize) -> Self {
        if index < MAX_REPLICAS {
            Self(self.0 | (1 << index))
        } else {
            self
        }
    }
}

/// The replica with the fewest requests in flight among those up and not in `tried`; among
/// several with that fewest, one chosen evenly by `draw` (a reservoir sample driven by a
/// generator seeded with it), so that a random `draw` spreads idle replicas' traffic evenly.
/// One pass: each load is read once, however the counts move meanwhile. `None` when no
/// replica qualifies.
pub fn pick(loads: impl Iterator<Item = Load>, tried: Tried, draw: u64) -> Option<usize> {
    let mut seed = draw;
    // (fewest in flight, the replica kept, how many had that fewest)
    let mut kept: Option<(u32, usize, u64)> = None;
    for (index, load) in loads.enumerate() {
        if !load.up || tried.contains(index) {
            continue;
        }
        kept = match kept {
            Some((least, _, _)) if load.in_flight > least => kept,
            Some((least, chosen, ties)) if load.in_flight == least => {
                let ties = ties + 1;
                let replace = splitmix64(&mut seed).is_multiple_of(ties);
                Some((least, if replace { index } else { chosen }, ties))
            }
            _ => Some((load.in_flight, index, 1)),
        };
    }
    kept.map(|(_, index, _)| index)
}

/// SplitMix64's step: a few arithmetic operations from one seed to well-spread numbers.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where an attempt goes: a side and the index of one of its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub side: Side,
    pub index: usize,
}

/// A request's attempts so far: the replicas it failed on, per side, and whether it has moved
/// to the other side (which it does once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Attempts {
    tried: [Tried; 2],
    failed_over: bool,
}

impl Attempts {
    /// The replica for the next attempt of a request on `side`: the least loaded one up there
    /// that it has not failed on, else, if it has not moved yet, the least loaded one up on
    /// the other side. `loads` gives a side's replicas' loads, in pool order.
    pub fn next<L: Iterator<Item = Load>>(
        &mut self,
        side: Side,
        loads: impl Fn(Side) -> L,
        draw: u64,
    ) -> Option<Pick> {
        if let Some(index) = pick(loads(side), self.tried[side.index()], draw) {
            return Some(Pick { side, index });
        }
        if self.failed_over {
            return None;
        }
        let other = side.other();
        let index = pick(loads(other), self.tried[other.index()], draw)?;
        self.failed_over = true;
        Some(Pick { side: other, index })
    }

    /// Whether `next` would find a replica, without moving.
    pub fn has_next<L: Iterator<Item = Load>>(
        &self,
        side: Side,
        loads: impl Fn(Side) -> L,
    ) -> bool {
        let mut probe = *self;
        probe.next(side, loads, 0).is_some()
    }

    /// The attempt at `pick` failed before anything reached the client: never pick it again.
    pub fn failed(&mut self, pick: Pick) {
        let tried = &mut self.tried[pick.side.index()];
        *tried = tried.with(pick.index);
    }

    /// Whether the request moved to the other side than its route's.
    pub fn failed_over(&self) -> bool {
        self.failed_over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Load = Load {
        up: true,
        in_flight: 0,
    };
    const DOWN: Load = Load {
        up: false,
        in_flight: 0,
    };

    fn busy(in_flight: u32) -> Load {
        Load {
            up: true,
            in_flight,
        }
    }

    /// `pick` over `loads` for many draws lands in `expected` only (empty: `None`), and on
    /// each of them.
    fn check(loads: &[Load], tried: Tried, expected: &[usize]) {
        let mut landed = std::collections::BTreeSet::new();
        for draw in 0..64 {
            match pick(loads.iter().copied(), tried, draw) {
                Some(index) => landed.insert(index),
                None => landed.insert(usize::MAX),
            };
        }
        let expected: std::collections::BTreeSet<usize> = if expected.is_empty() {
            [usize::MAX].into()
        } else {
            expected.iter().copied().collect()
        };
        assert_eq!(landed, expected, "{loads:?} tried {tried:?}");
    }

    #[test]
    fn the_least_loaded_replica_up_and_not_tried_is_picked() {
        let none = Tried::default();
        for (loads, tried, expected) in [
            (vec![], none, vec![]),
            (vec![DOWN, DOWN], none, vec![]),
            (vec![IDLE], none, vec![0]),
            (vec![busy(3), busy(1), busy(2)], none, vec![1]),
            (vec![busy(3), busy(1), busy(2)], none.with(1), vec![2]),
            (vec![DOWN, busy(9)], none, vec![1]),
            (vec![busy(5), busy(5), busy(9)], none, vec![0, 1]),
            (vec![busy(9), busy(5), DOWN, busy(5)], none, vec![1, 3]),
            (vec![busy(9), busy(5), DOWN, busy(5)], none.with(3), vec![1]),
            (vec![IDLE, IDLE], none.with(0).with(1), vec![]),
            (vec![IDLE, DOWN], none.with(0), vec![]),
        ] {
            check(&loads, tried, &expected);
        }
    }

    #[test]
    fn idle_replicas_share_the_draws_evenly() {
        let loads = [IDLE, DOWN, IDLE, IDLE];
        let mut chosen = [0; 4];
        for _ in 0..3_000 {
            let index = pick(loads.iter().copied(), Tried::default(), rand::random()).unwrap();
            chosen[index] += 1;
        }
        // 1,000 each expected; a fair draw strays past ±200 with odds below one in 10^9.
        assert_eq!(chosen[1], 0);
        for index in [0, 2, 3] {
            assert!((800..=1_200).contains(&chosen[index]), "{chosen:?}");
        }
    }

    #[test]
    fn the_tried_set_holds_one_bit_per_replica() {
        let tried = Tried::default().with(0).with(63).with(64);
        assert!(tried.contains(0) && tried.contains(63));
        assert!(!tried.contains(1) && !tried.contains(64));
    }

    /// Loads for a side: legacy's, then new's.
    fn sides(legacy: Vec<Load>, new: Vec<Load>) -> impl Fn(Side) -> std::vec::IntoIter<Load> {
        move |side| match side {
            Side::Legacy => legacy.clone().into_iter(),
            Side::New => new.clone().into_iter(),
        }
    }

    #[test]
    fn failed_attempts_go_to_the_sides_other_replicas_then_once_to_the_other_side() {
        let loads = sides(vec![IDLE, IDLE], vec![IDLE]);
        let mut attempts = Attempts::default();
        let first = attempts.next(Side::Legacy, &loads, 0).unwrap();
        assert_eq!(
            first,
            Pick {
                side: Side::Legacy,
                index: 0
            }
        );
        attempts.failed(first);
        let second = attempts.next(Side::Legacy, &loads, 0).unwrap();
        assert_eq!(
            second,
            Pick {
                side: Side::Legacy,
                index: 1
            }
        );
        assert!(!attempts.failed_over());
        attempts.failed(second);
        assert!(attempts.has_next(Side::Legacy, &loads));
        assert!(!attempts.failed_over(), "has_next does not move");
        let third = attempts.next(Side::Legacy, &loads, 0).unwrap();
        assert_eq!(
            third,
            Pick {
                side: Side::New,
                index: 0
            }
        );
        assert!(attempts.failed_over());
        attempts.failed(third);
        assert!(!attempts.has_next(Side::New, &loads));
        assert_eq!(attempts.next(Side::New, &loads, 0), None);
    }

    #[test]
    fn a_side_fails_over_only_when_none_of_its_replicas_is_up_and_untried() {
        for (legacy, new, expected) in [
            (
                vec![DOWN, IDLE],
                vec![IDLE],
                Some(Pick {
                    side: Side::Legacy,
                    index: 1,
                }),
            ),
            (
                vec![DOWN, DOWN],
                vec![DOWN, IDLE],
                Some(Pick {
                    side: Side::New,
                    index: 1,
                }),
            ),
            (vec![DOWN, DOWN], vec![DOWN, DOWN], None),
            (
                vec![],
                vec![IDLE],
                Some(Pick {
                    side: Side::New,
                    index: 0,
                }),
            ),
        ] {
            let mut attempts = Attempts::default();
            let picked = attempts.next(Side::Legacy, sides(legacy, new), 0);
            assert_eq!(picked, expected);
            assert_eq!(
                attempts.failed_over(),
                picked.is_some_and(|p| p.side == Side::New)
            );
        }
    }

    #[test]
    fn after_moving_a_request_never_comes_back() {
        // Legacy was all down when the request moved; it came back since.
        let mut attempts = Attempts::default();
        let moved = attempts.next(Side::Legacy, sides(vec![DOWN], vec![IDLE]), 0);
        assert_eq!(
            moved,
            Some(Pick {
                side: Side::New,
                index: 0
            })
        );
        attempts.failed(Pick {
            side: Side::New,
            index: 0,
        });
        assert_eq!(
            attempts.next(Side::New, sides(vec![IDLE], vec![IDLE]), 0),
            None
        );
    }
}
