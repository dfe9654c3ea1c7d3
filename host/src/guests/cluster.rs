//! Hot swap in a cluster: an install (or rollback) on any node becomes the
//! cluster's version, and every node rolls it out to the matches it runs.
//!
//! - The node the operator asked installs as a single node does (compile,
//!   check, canary, roll out its own matches); only if that did not abort
//!   does it keep the component in `TL_GUESTS` and name its hash as the
//!   cluster's version (`TL_GUEST` `active`, [`Rollouts::published`]).
//! - Every node follows that key ([`follow`], the current value at start,
//!   then each change): a version it does not run is fetched, installed
//!   and rolled out through the same path (canary, abort on failures), so
//!   each node protects its own matches. A node that joins later, or was
//!   away, catches up from the key.
//! - Each node reports what it runs and how its last rollout went
//!   (`node.<id>`); `GET /admin/guest` shows it beside the desired version
//!   ([`crate::cluster::guests::GuestView`]). A node whose rollout aborted
//!   stays on its version and says so; installing again retries.

use std::sync::Arc;

use futures_util::StreamExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Guests, InstallError, RolloutOutcome, RolloutReport};
use crate::cluster::NodeId;
use crate::cluster::guests::{GuestBook, GuestView, NodeGuest};
use crate::router::Router;

/// A cluster node's guest records.
pub struct Rollouts {
    pub book: GuestBook,
    pub node: NodeId,
    pub guests: Arc<Guests>,
}

impl Rollouts {
    /// After an operator's install or rollback on this node: unless it
    /// aborted, keep the component in the cluster and make it the
    /// cluster's version. `component`: the bytes installed (`None`: read
    /// from this node's store, for a rollback).
    pub async fn published(
        &self,
        result: &Result<RolloutReport, InstallError>,
        component: Option<Vec<u8>>,
    ) -> Result<(), String> {
        let report = match result {
            Ok(r) if r.outcome != RolloutOutcome::Aborted => r,
            _ => return Ok(()),
        };
        let hash = &report.to;
        let component = match component {
            Some(c) => c,
            None => self
                .guests
                .component(hash)
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("version {hash} is not in this node's store"))?,
        };
        self.report(result).await;
        self.book.publish(hash, &component).await.map_err(|e| e.to_string())?;
        tracing::info!(guest_version = %hash, "the cluster's guest version");
        Ok(())
    }

    /// The cluster's view (`None` when it cannot be read now).
    pub async fn view(&self) -> Option<GuestView> {
        match self.book.view().await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "reading the cluster's guests");
                None
            }
        }
    }

    async fn report(&self, result: &Result<RolloutReport, InstallError>) {
        let outcome = match result {
            Ok(r) if r.outcome == RolloutOutcome::Aborted => "aborted".to_owned(),
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("refused: {e}"),
        };
        let report = NodeGuest {
            active: self.guests.listing().active,
            outcome,
            at: super::now_ms(),
        };
        if let Err(e) = self.book.report(&self.node, &report).await {
            tracing::warn!(error = %e, "reporting this node's guest");
        }
    }
}

/// Follow the cluster's version until `stop`: install what this node does
/// not run, and report.
pub fn follow(rollouts: Arc<Rollouts>, router: Arc<Router>, stop: CancellationToken, tasks: &TaskTracker) {
    tasks.spawn(async move {
        let mut backoff = std::time::Duration::from_millis(100);
        loop {
            let desired = match rollouts.book.desired().await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "following the cluster's guest version; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
                    continue;
                }
            };
            let mut desired = std::pin::pin!(desired);
            loop {
                let hash = tokio::select! {
                    _ = stop.cancelled() => return,
                    next = desired.next() => match next { Some(h) => h, None => break },
                };
                if hash == rollouts.guests.listing().active {
                    rollouts
                        .report(&Ok(RolloutReport::unchanged(super::RolloutKind::Install, &hash)))
                        .await;
                    continue;
                }
                tracing::info!(guest_version = %hash, "the cluster runs another guest version: installing it");
                let result = match rollouts.book.component(&hash).await {
                    Ok(bytes) => rollouts.guests.install(&router, bytes).await,
                    Err(e) => Err(InstallError::Internal(e.to_string())),
                };
                rollouts.report(&result).await;
            }
        }
    });
}
