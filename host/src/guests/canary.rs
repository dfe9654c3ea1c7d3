//! The canary: a new version replays real matches in scratch instances
//! before any live match sees it.

use std::sync::Arc;

use crate::sandbox::{GuestVersion, Saved};
use crate::store::Store;

/// Events replayed per canary match at most (the tail after its snapshot).
pub const CANARY_EVENTS_PER_MATCH: usize = 256;

/// The canary proper. For each sampled match, in scratch instances:
/// the old version rebuilds the match's state from the store (snapshot +
/// journal after it) and saves it; the new version takes that state over
/// through `migrate` (exactly what a live switch does) and renders a
/// snapshot; and a fresh instance of the new version applies the match's
/// most recent journal entries. Any trap, rejection or invalid JSON refuses
/// the rollout. Returns (matches, events) replayed.
pub(super) fn canary(
    store: &Store,
    from: &GuestVersion,
    to: &GuestVersion,
    sample: &[Arc<str>],
) -> Result<(usize, usize), String> {
    let mut events = 0;
    let mut matches = 0;

    for id in sample {
        let Some(rec) = store.recover_one(id).map_err(|e| format!("reading match {id}: {e}"))? else {
            continue;
        };
        // The live state, as the old version holds it. A failure here is
        // the old version's (the live worker has its own supervision): the
        // canary then skips the migration step for this match.
        let saved = rec.snapshot.as_ref().map(Saved::from);
        let tail = rec.journal.iter().map(|(_, e)| &e.event[..]);
        let rebuilt = from
            .rebuild(id.clone(), saved, tail)
            .and_then(|mut old| old.save_state());
        if let Ok(state) = rebuilt {
            let mut migrated = to
                .instantiate_with(id.clone(), &state, from.version(), from.state_version())
                .map_err(|f| {
                    format!(
                        "match {id}: taking over its state at seq {}: {f}",
                        rec.journal
                            .last()
                            .map_or(rec.snapshot.as_ref().map_or(0, |s| s.seq), |(seq, _)| *seq)
                    )
                })?;
            migrated
                .snapshot_json()
                .map_err(|f| format!("match {id}: snapshot after migrating: {f}"))?;
        }
        let recent = store
            .recent_events(id, CANARY_EVENTS_PER_MATCH)
            .map_err(|e| format!("reading match {id}: {e}"))?;
        let mut fresh = to
            .instantiate(id.clone())
            .map_err(|f| format!("match {id}: instantiating: {f}"))?;
        for (seq, event) in &recent {
            fresh
                .apply_json(event)
                .map_err(|f| format!("match {id}: event seq {seq}: {f}"))?;
            events += 1;
        }
        matches += 1;
    }
    Ok((matches, events))
}
