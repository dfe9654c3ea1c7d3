//! Work that lasts as long as this node holds a partition under one token
//! (a tenure): the appliers (`feed::cluster`) and the bet responders
//! (`bets::cluster`) each run one task per tenure, started when the owned
//! set gains it and cancelled when it loses it.

use std::collections::BTreeMap;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Owned;

/// Until `stop`, call `start(p, token, cancel)` for each tenure the owned
/// set gains, and for each it loses cancel that token and call `left(p)`
/// (first: a partition lost stops before another tenure of it starts).
pub fn each(
    mut owned: watch::Receiver<Owned>,
    stop: CancellationToken,
    tasks: &TaskTracker,
    mut start: impl FnMut(u32, u64, CancellationToken) + Send + 'static,
    mut left: impl FnMut(u32) + Send + 'static,
) {
    tasks.spawn(async move {
        let mut running: BTreeMap<u32, (u64, CancellationToken)> = BTreeMap::new();
        loop {
            let now = owned.borrow_and_update().clone();
            running.retain(|p, (token, cancel)| {
                let keep = now.get(p) == Some(token);
                if !keep {
                    cancel.cancel();
                    left(*p);
                }
                keep
            });
            for (&p, &token) in &now {
                if running.contains_key(&p) {
                    continue;
                }
                let cancel = stop.child_token();
                running.insert(p, (token, cancel.clone()));
                start(p, token, cancel);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                changed = owned.changed() => if changed.is_err() { break },
            }
        }
        for (_, (_, cancel)) in running {
            cancel.cancel();
        }
    });
}
