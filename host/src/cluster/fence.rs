//! The local side of fencing: whether this node may act for a partition
//! *now*. The lease task ([`super::leases`]) keeps here, for each lease it
//! holds, the fencing token and the local deadline; every act on a
//! partition's behalf (applying an event, publishing a frame, answering a
//! snapshot) asks [`Fence::holds`] first, which compares the deadline with
//! the monotonic clock at that moment.
//!
//! The owned set (a `watch`) changes only when the lease task runs; a
//! process that was paused (SIGSTOP, a VM freeze) past its deadlines
//! resumes with every thread at once, and a worker may run before the
//! lease task has noticed. The clock has moved on during the pause
//! (`CLOCK_MONOTONIC` counts it), so the fence refuses from the first
//! instruction after it: nothing is published for a partition this node
//! may have lost.
//!
//! What the process handed to its NATS client *before* the pause still
//! leaves after it; the stream refuses that by the partition's barrier
//! ([`super::barrier`]), whose sequence this node's tenure raised is kept
//! here beside its token.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tokio::time::Instant;

use super::lease::Lease;

/// Partition → (token, local deadline) of every lease held, and the
/// barriers raised.
#[derive(Debug, Default)]
pub struct Fence {
    held: Mutex<HashMap<u32, (u64, Instant)>>,
    /// Partition → (token, barrier sequence) raised by this node's tenure.
    barriers: Mutex<HashMap<u32, (u64, u64)>>,
}

impl Fence {
    /// Whether this node holds `partition` under `token` until later than
    /// now.
    pub fn holds(&self, partition: u32, token: u64) -> bool {
        self.token(partition) == Some(token)
    }

    /// The token under which this node holds `partition` now, if it does.
    pub fn token(&self, partition: u32) -> Option<u64> {
        let now = Instant::now();
        let held = self.held.lock().expect("fence lock");
        held.get(&partition)
            .filter(|(_, deadline)| now < *deadline)
            .map(|(t, _)| *t)
    }

    /// What the lease task holds now (called whenever it changes).
    pub(super) fn set(&self, held: &BTreeMap<u32, Lease>) {
        let next = held.iter().map(|(p, l)| (*p, (l.token, l.deadline))).collect();
        *self.held.lock().expect("fence lock") = next;
    }

    /// Partition `partition`'s barrier raised under `token` at `sequence`.
    pub fn raised(&self, partition: u32, token: u64, sequence: u64) {
        self.barriers
            .lock()
            .expect("barriers lock")
            .insert(partition, (token, sequence));
    }

    /// The barrier sequence a frame of `partition` published under `token`
    /// expects, once that tenure has raised it.
    pub fn barrier(&self, partition: u32, token: u64) -> Option<u64> {
        let barriers = self.barriers.lock().expect("barriers lock");
        barriers.get(&partition).filter(|(t, _)| *t == token).map(|(_, s)| *s)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lease(partition: u32, token: u64, deadline: Instant) -> Lease {
        Lease {
            partition,
            token,
            revision: token,
            sent: deadline,
            deadline,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_holds_until_its_deadline_and_only_under_its_token() {
        let fence = Fence::default();
        let deadline = Instant::now() + Duration::from_secs(1);
        fence.set(&BTreeMap::from([(3, lease(3, 77, deadline))]));
        assert!(fence.holds(3, 77));
        assert!(!fence.holds(3, 76), "another tenure's token");
        assert!(!fence.holds(4, 77), "another partition");
        // The process "paused" past the deadline: refused at once, before
        // the lease task has run.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!fence.holds(3, 77));
        assert_eq!(fence.token(3), None);
    }

    #[test]
    fn a_barrier_is_the_raising_tenures_only() {
        let fence = Fence::default();
        assert_eq!(fence.barrier(3, 77), None, "not raised yet");
        fence.raised(3, 77, 12);
        assert_eq!(fence.barrier(3, 77), Some(12));
        assert_eq!(fence.barrier(3, 76), None, "another tenure's token");
        assert_eq!(fence.barrier(4, 77), None, "another partition");
        fence.raised(3, 90, 15);
        assert_eq!(fence.barrier(3, 77), None, "replaced by the next tenure");
        assert_eq!(fence.barrier(3, 90), Some(15));
    }
}
