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

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tokio::time::Instant;

use super::lease::Lease;

/// Partition → (token, local deadline) of every lease held.
#[derive(Debug, Default)]
pub struct Fence(Mutex<HashMap<u32, (u64, Instant)>>);

impl Fence {
    /// Whether this node holds `partition` under `token` until later than
    /// now.
    pub fn holds(&self, partition: u32, token: u64) -> bool {
        self.token(partition) == Some(token)
    }

    /// The token under which this node holds `partition` now, if it does.
    pub fn token(&self, partition: u32) -> Option<u64> {
        let now = Instant::now();
        let held = self.0.lock().expect("fence lock");
        held.get(&partition)
            .filter(|(_, deadline)| now < *deadline)
            .map(|(t, _)| *t)
    }

    /// What the lease task holds now (called whenever it changes).
    pub(super) fn set(&self, held: &BTreeMap<u32, Lease>) {
        let next = held.iter().map(|(p, l)| (*p, (l.token, l.deadline))).collect();
        *self.0.lock().expect("fence lock") = next;
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
}
