//! In a cluster, sessions subscribed to `"*"` see every match of the
//! cluster: this node follows the cluster's directory of matches
//! (`cluster::matches`) and announces each one to the router, whose
//! `"*"` sessions then subscribe (through a relay when another node runs
//! it).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::matches::Directory;
use crate::router::Router;

/// Announce every match the directory names, until `stop`; the watch is
/// opened again (from the whole directory) when it ends.
pub fn follow(directory: Directory, router: Arc<Router>, stop: CancellationToken, tasks: &TaskTracker) {
    tasks.spawn(async move {
        let mut backoff = Duration::from_millis(100);
        loop {
            match directory.watch().await {
                Ok(ids) => {
                    backoff = Duration::from_millis(100);
                    let mut ids = std::pin::pin!(ids);
                    loop {
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            next = ids.next() => match next {
                                Some(id) => router.announce(&id),
                                None => break,
                            },
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "following the cluster's matches; retrying"),
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
}
