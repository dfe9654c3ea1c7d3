//! A `touchline serve --cluster` node's view of the cluster, as its
//! `GET /api/nodes` tells: which node holds which partitions, and waiting
//! until that has settled (every partition held, every named node holding
//! some, unchanged for a second). Shared by the cluster tests and the
//! bench's cluster scenario.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{Error, Result};

/// Node id → the partitions it holds.
pub type Holdings = BTreeMap<String, BTreeSet<u32>>;

/// How long the holdings must stay the same to count as settled (the
/// node reuses its answer for up to a second).
const STABLE: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(50);
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Who holds what, as the node at `http` sees it; `None` while a
/// partition is free or the route does not answer.
pub fn holdings(http: SocketAddr) -> Option<Holdings> {
    let (code, body) = crate::http::get(http, "/api/nodes", HTTP_TIMEOUT).ok()?;
    let v: Value = serde_json::from_str(&body).ok().filter(|_| code == 200)?;
    if v["free"].as_array().is_none_or(|f| !f.is_empty()) {
        return None;
    }
    let held = v["nodes"]
        .as_array()?
        .iter()
        .map(|n| {
            let parts = n["partitions"].as_array().into_iter().flatten();
            let parts = parts.filter_map(Value::as_u64).map(|p| p as u32).collect();
            (n["id"].as_str().unwrap_or_default().to_owned(), parts)
        })
        .collect();
    Some(held)
}

/// Wait until every node in `ids` holds partitions and every partition is
/// held, unchanged for a second (balancing is over), or `within` passes.
pub fn settled(http: SocketAddr, ids: &[&str], within: Duration) -> Result<Holdings> {
    let start = Instant::now();
    let mut last: Option<(Holdings, Instant)> = None;
    loop {
        let now = holdings(http).filter(|h| ids.iter().all(|id| h.get(*id).is_some_and(|p| !p.is_empty())));
        match (&now, &last) {
            (Some(h), Some((l, since))) if h == l && since.elapsed() > STABLE => return Ok(h.clone()),
            (Some(h), Some((l, _))) if h == l => {}
            (Some(h), _) => last = Some((h.clone(), Instant::now())),
            (None, _) => last = None,
        }
        if start.elapsed() > within {
            return Err(Error::Timeout(format!(
                "the partitions to settle among {ids:?} (now {now:?})"
            )));
        }
        std::thread::sleep(POLL);
    }
}
