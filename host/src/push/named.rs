//! The matches a session's client named: which it wants, which of those
//! are not seen yet, and where it asked to resume them. A subscribe is
//! counted against the [`Budget`] before anything of it is taken on.
//!
//! Sans-IO: whether a match is known is the caller's answer (the router's),
//! passed in. Subscriptions themselves (streams, catch-ups) are the
//! session's.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::budget::{Budget, Held, MAX_ID_BYTES, Refusal};
use crate::worker::Position;

#[derive(Debug, Default)]
pub(super) struct Named {
    /// Every match named, known or not (`Budget::max_subscriptions`).
    wanted: HashSet<Arc<str>>,
    /// Of those, the ones not seen yet (`Budget::max_pending`), until the
    /// match's first event announces it.
    unseen: HashSet<Arc<str>>,
    /// Resume points until used: of named matches, and under `"*"` of any
    /// (at most `max_subscriptions` of those).
    since: HashMap<Arc<str>, Position>,
}

impl Named {
    pub fn contains(&self, id: &str) -> bool {
        self.wanted.contains(id)
    }

    pub fn is_empty(&self) -> bool {
        self.wanted.is_empty()
    }

    /// May a subscribe naming `matches` be taken on? Counted before
    /// anything is applied: the ids it names for the first time, and of
    /// those the ones not `known` yet. `"*"` is not counted.
    pub fn admit(&self, matches: &[String], budget: &Budget, known: impl Fn(&str) -> bool) -> Result<(), Refusal> {
        if matches.iter().any(|id| id.len() > MAX_ID_BYTES) {
            return Err(Refusal::IdTooLong);
        }
        let new: HashSet<&str> = matches
            .iter()
            .map(String::as_str)
            .filter(|id| *id != "*" && !self.wanted.contains(*id))
            .collect();
        let adding = Held {
            subscriptions: new.len(),
            pending: new.iter().filter(|id| !known(id)).count(),
        };
        let held = Held {
            subscriptions: self.wanted.len(),
            pending: self.unseen.len(),
        };
        budget.admit(held, adding)
    }

    /// The client named `id` (`known` or not yet), resuming from `since`.
    pub fn name(&mut self, id: Arc<str>, known: bool, since: Option<Position>) {
        if !known {
            self.unseen.insert(id.clone());
        }
        if let Some(p) = since {
            self.since.insert(id.clone(), p);
        }
        self.wanted.insert(id);
    }

    /// `id` is known now.
    pub fn seen(&mut self, id: &str) {
        self.unseen.remove(id);
    }

    /// The resume point given for `id`, taken.
    pub fn take_since(&mut self, id: &str) -> Option<Position> {
        self.since.remove(id)
    }

    /// Give back a resume point not used yet (the match is still awaited);
    /// kept only for a named match.
    pub fn keep_since(&mut self, id: Arc<str>, p: Position) {
        if self.wanted.contains(&id) {
            self.since.insert(id, p);
        }
    }

    /// A resume point for a match a `"*"` subscription covers (named or
    /// not), used when it is subscribed; at most `max` are held (a longer
    /// id is not a match's).
    pub fn resume(&mut self, id: Arc<str>, p: Position, max: usize) {
        if id.len() <= crate::push::budget::MAX_ID_BYTES && (self.since.len() < max || self.since.contains_key(&id)) {
            self.since.insert(id, p);
        }
    }

    /// The client unsubscribed `id`.
    pub fn forget(&mut self, id: &str) {
        self.wanted.remove(id);
        self.unseen.remove(id);
        self.since.remove(id);
    }

    /// The client unsubscribed everything.
    pub fn clear(&mut self) {
        *self = Named::default();
    }

    #[cfg(test)]
    fn held(&self) -> (usize, usize, usize) {
        (self.wanted.len(), self.unseen.len(), self.since.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUDGET: Budget = Budget {
        max_message_bytes: 64 * 1024,
        pings_per_sec: 4,
        ping_burst: 16,
        read_bytes_per_sec: 64 * 1024,
        read_burst_bytes: 256 * 1024,
        max_subscriptions: 4,
        max_pending: 2,
    };

    /// Run `script` (`;`-separated steps) with `k*` ids known: `sub a b`
    /// (admit, then name each), `sub a@3` (with a resume point at seq 3),
    /// `seen a`, `take a`, `unsub a`, `unsub *`. Each step's outcome is
    /// `ok`, the refusal's kind, or for `take` the seq or `-`; then the
    /// counts held (named, pending, resume points).
    fn check(script: &str, expected: &str) {
        let mut named = Named::default();
        let known = |id: &str| id.starts_with('k');
        let mut out = Vec::new();
        for step in script.split(';').map(str::trim) {
            let mut words = step.split_whitespace();
            let op = words.next().expect("a step");
            let args: Vec<&str> = words.collect();
            let outcome = match op {
                "sub" => {
                    let ids: Vec<String> = args
                        .iter()
                        .map(|a| a.split('@').next().unwrap_or_default().to_owned())
                        .collect();
                    match named.admit(&ids, &BUDGET, known) {
                        Err(r) => r.kind().to_owned(),
                        Ok(()) => {
                            for a in &args {
                                let (id, since) = match a.split_once('@') {
                                    Some((id, seq)) => (
                                        id,
                                        Some(Position {
                                            epoch: 1,
                                            seq: seq.parse().expect("seq"),
                                        }),
                                    ),
                                    None => (*a, None),
                                };
                                if id != "*" {
                                    named.name(Arc::from(id), known(id), since);
                                }
                            }
                            "ok".to_owned()
                        }
                    }
                }
                "seen" => {
                    named.seen(args[0]);
                    "ok".to_owned()
                }
                "take" => named.take_since(args[0]).map_or("-".to_owned(), |p| p.seq.to_string()),
                "unsub" if args[0] == "*" => {
                    named.clear();
                    "ok".to_owned()
                }
                "unsub" => {
                    named.forget(args[0]);
                    "ok".to_owned()
                }
                other => panic!("unknown step {other}"),
            };
            let (w, u, s) = named.held();
            out.push(format!("{outcome} {w}/{u}/{s}"));
        }
        assert_eq!(out.join("; "), expected, "script {script:?}");
    }

    #[test]
    fn named_and_pending_matches_are_counted_and_refused_whole() {
        check("sub k1 u1 u2; sub u3", "ok 3/2/0; subscription_limit 3/2/0");
        check("sub k1 k2 k3 k4; sub k5", "ok 4/0/0; subscription_limit 4/0/0");
        // Naming a match again, or twice in one request, counts once.
        check("sub u1 u1 k1; sub u1 k1 u2", "ok 2/1/0; ok 3/2/0");
        // `*` is bounded elsewhere.
        check("sub * k1 u1 u2", "ok 3/2/0");
        // Refused whole: nothing of it was named.
        check("sub k1 u1 u2 u3; sub k1", "subscription_limit 0/0/0; ok 1/0/0");
        check(&format!("sub k1 {}", "x".repeat(129)), "id_too_long 0/0/0");
    }

    #[test]
    fn room_comes_back_when_a_match_is_seen_or_unsubscribed() {
        check("sub u1 u2; seen u1; sub u3", "ok 2/2/0; ok 2/1/0; ok 3/2/0");
        check("sub u1 u2; unsub u1; sub u3", "ok 2/2/0; ok 1/1/0; ok 2/2/0");
        check("sub u1 k1; unsub *; sub u2 u3 k2 k3", "ok 2/1/0; ok 0/0/0; ok 4/2/0");
    }

    #[test]
    fn resume_points_live_as_long_as_their_match_is_named() {
        check("sub u1@3 k1@5; take k1; take k1", "ok 2/1/2; 5 2/1/1; - 2/1/1");
        check("sub u1@3; unsub u1; take u1", "ok 1/1/1; ok 0/0/0; - 0/0/0");
        let mut named = Named::default();
        named.keep_since(Arc::from("never-named"), Position { epoch: 1, seq: 1 });
        assert_eq!(named.held(), (0, 0, 0), "only named matches keep a resume point");
    }
}
