//! The balancing plan: tables for single rounds, and a simulated cluster
//! (nodes applying their plans in any order, on fresh or stale views, the
//! lease's compare-and-set deciding races) for convergence.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{Plan, View, plan, share};
use crate::cluster::partition::Partitions;

fn parts(n: u32) -> Partitions {
    Partitions::new(n).expect("valid count")
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}")).collect()
}

/// The plan of `me` with `live` nodes, `partitions` and `owners` given as
/// (node, how many partitions, starting at the lowest free one).
fn check(me: &str, live: &[&str], partitions: u32, owners: &[(&str, u32)], acquire: usize, release: usize) -> Plan {
    let live: BTreeSet<String> = live.iter().map(|s| (*s).to_owned()).collect();
    let mut map = BTreeMap::new();
    let mut next = 0;
    for (node, n) in owners {
        for _ in 0..*n {
            map.insert(next, (*node).to_owned());
            next += 1;
        }
    }
    let view = View {
        me,
        live: &live,
        partitions: parts(partitions),
        owners: &map,
    };
    let p = plan(&view);
    assert_eq!(
        (p.acquire.len(), p.release.len()),
        (acquire, release),
        "{me} with {owners:?}: {p:?}"
    );
    assert!(
        p.acquire.iter().all(|x| !map.contains_key(x)),
        "acquires only free ones"
    );
    assert!(
        p.release.iter().all(|x| map.get(x).map(String::as_str) == Some(me)),
        "releases only its own"
    );
    assert_eq!(plan(&view), p, "deterministic");
    p
}

#[test]
fn single_rounds() {
    // Alone: everything.
    check("a", &["a"], 64, &[], 64, 0);
    // Not yet visible in `live`: still counts itself.
    check("a", &[], 64, &[], 64, 0);
    // Two nodes: at most 32 each.
    check("b", &["a", "b"], 64, &[("a", 64)], 0, 0);
    check("a", &["a", "b"], 64, &[("a", 64)], 0, 32);
    check("b", &["a", "b"], 64, &[("a", 32)], 32, 0);
    // A third joins: share 22; each hands back 10 (the newcomer lacks 22).
    check("a", &["a", "b", "c"], 64, &[("a", 32), ("b", 32)], 0, 10);
    // Nobody lacks anything: keep the excess (a dead node's leases count
    // as owned, not as a receiver).
    check("a", &["a", "b"], 64, &[("a", 40), ("b", 32)], 0, 0);
    check("a", &["a", "b"], 64, &[("a", 40), ("gone", 24)], 0, 8);
    // Uneven: 3 nodes, 10 partitions, share 4.
    check("c", &["a", "b", "c"], 10, &[("a", 4), ("b", 4)], 2, 0);
    check("a", &["a", "b", "c"], 10, &[("a", 6), ("b", 4)], 0, 2);
    // More nodes than partitions.
    check("e", &["a", "b", "c", "d", "e"], 2, &[("a", 1), ("b", 1)], 0, 0);
    check("c", &["a", "b", "c"], 2, &[("a", 1)], 1, 0);
}

#[test]
fn nodes_prefer_different_partitions() {
    let live: BTreeSet<String> = names(4).into_iter().collect();
    let owners = BTreeMap::new();
    let plans: Vec<Vec<u32>> = live
        .iter()
        .map(|me| {
            plan(&View {
                me,
                live: &live,
                partitions: parts(64),
                owners: &owners,
            })
            .acquire
        })
        .collect();
    let distinct: BTreeSet<u32> = plans.iter().flat_map(|p| p.iter().take(4)).copied().collect();
    assert!(distinct.len() >= 12, "first picks mostly differ: {plans:?}");
}

#[test]
fn share_is_the_ceiling() {
    assert_eq!(share(parts(64), 1), 64);
    assert_eq!(share(parts(64), 3), 22);
    assert_eq!(share(parts(64), 64), 1);
    assert_eq!(share(parts(64), 100), 1);
    assert_eq!(share(parts(64), 0), 64);
}

/// A simulated cluster: `owners` is the bucket, each node applies its plan
/// in `order`; a release succeeds if the node still holds the partition, an
/// acquire if the partition is free (the compare-and-set). With `stale`,
/// nodes see each other's holdings as read at the start of the round.
struct Sim {
    live: BTreeSet<String>,
    partitions: Partitions,
    owners: BTreeMap<u32, String>,
}

impl Sim {
    /// One round; returns whether anything changed.
    fn round(&mut self, order: &[usize], stale: bool) -> bool {
        let nodes: Vec<String> = self.live.iter().cloned().collect();
        let snapshot = self.owners.clone();
        let mut changed = false;
        for &i in order {
            let me = &nodes[i % nodes.len()];
            let before = self.count(me);
            // A node always knows what it holds itself; others' holdings
            // may be as old as the round.
            let read: BTreeMap<u32, String> = if stale {
                let theirs = snapshot.iter().filter(|(_, n)| *n != me);
                let mine = self.owners.iter().filter(|(_, n)| *n == me);
                theirs.chain(mine).map(|(p, n)| (*p, n.clone())).collect()
            } else {
                self.owners.clone()
            };
            let p = plan(&View {
                me,
                live: &self.live,
                partitions: self.partitions,
                owners: &read,
            });
            for r in p.release {
                if self.owners.get(&r) == Some(me) {
                    self.owners.remove(&r);
                    changed = true;
                }
            }
            for a in p.acquire {
                if let std::collections::btree_map::Entry::Vacant(free) = self.owners.entry(a) {
                    free.insert(me.clone());
                    changed = true;
                }
            }
            let cap = share(self.partitions, self.live.len());
            let after = self.count(me);
            assert!(
                after <= cap.max(before),
                "{me} grew past its share: {before} → {after} > {cap}"
            );
        }
        changed
    }

    fn count(&self, node: &str) -> u32 {
        self.owners.values().filter(|n| n.as_str() == node).count() as u32
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// From any start (partitions held by live nodes, by a dead node whose
    /// leases expire after a round, or free), with nodes acting in any
    /// order on fresh or stale views, the assignment settles within a few
    /// rounds: every partition owned by a live node, none above its share.
    #[test]
    fn converges(
        nodes in 1usize..6,
        count in 1u32..130,
        start in proptest::collection::vec(0usize..8, 130),
        orders in proptest::collection::vec(proptest::collection::vec(0usize..6, 1..12), 12),
        stale in any::<bool>(),
    ) {
        let live: BTreeSet<String> = names(nodes).into_iter().collect();
        let partitions = parts(count);
        // 0..nodes: a live node; nodes: the dead one; above: free.
        let owners: BTreeMap<u32, String> = partitions
            .all()
            .filter_map(|p| {
                let o = start[p as usize];
                let owner = if o == nodes { "dead".to_owned() } else { format!("n{o}") };
                (o <= nodes).then_some((p, owner))
            })
            .collect();
        let mut sim = Sim { live, partitions, owners };
        let mut quiet = 0;
        for (round, order) in orders.iter().enumerate() {
            if round == 1 {
                sim.owners.retain(|_, n| n != "dead");
            }
            // Every node acts at least once per round, some more often.
            let mut order = order.clone();
            order.extend(0..nodes);
            if sim.round(&order, stale) || round < 2 {
                quiet = 0;
            } else {
                quiet += 1;
            }
        }
        let cap = share(partitions, nodes);
        prop_assert!(quiet >= 1, "still changing after {} rounds", orders.len());
        prop_assert_eq!(sim.owners.len() as u32, count, "every partition owned");
        for n in &sim.live {
            prop_assert!(sim.count(n) <= cap, "{} holds {} > {}", n, sim.count(n), cap);
        }
    }
}
