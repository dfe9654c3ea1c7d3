//! The activity log: every operator action, who did it, from where, when
//! and how it went. Kept in memory (the last [`KEPT`]) for the console and
//! logged through `tracing` (target `touchline::ops`) for the record.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Entries kept for the console.
pub const KEPT: usize = 500;
/// Longest operator name kept, bytes.
pub const MAX_WHO: usize = 64;

#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct Entry {
    /// Unix ms.
    pub at: i64,
    pub who: String,
    pub from: String,
    pub action: &'static str,
    pub target: String,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// Nothing done: the target is unknown or not in a state the action
    /// applies to.
    Refused,
    Failed,
}

#[derive(Debug, Default)]
pub struct Activity(Mutex<VecDeque<Entry>>);

impl Activity {
    pub fn record(&self, entry: Entry) {
        tracing::info!(
            target: "touchline::ops",
            who = entry.who,
            from = entry.from,
            action = entry.action,
            target_id = entry.target,
            outcome = ?entry.outcome,
            detail = entry.detail,
            "operator action"
        );
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(entry);
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<Entry> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().rev().cloned().collect()
    }
}

/// The operator's name as given (`X-Touchline-Operator`, or the admin
/// socket's `operator`): printable ASCII, at most [`MAX_WHO`] bytes;
/// `operator` when absent or unusable.
pub fn who(given: Option<&str>) -> String {
    let name: String = given
        .unwrap_or("")
        .trim()
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(MAX_WHO)
        .collect();
    if name.is_empty() { "operator".to_owned() } else { name }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: usize) -> Entry {
        Entry {
            at: n as i64,
            who: who(Some("alice")),
            from: "127.0.0.1".into(),
            action: "heal",
            target: format!("sr:match:{n}"),
            outcome: Outcome::Ok,
            detail: String::new(),
        }
    }

    #[test]
    fn keeps_the_last_entries_newest_first() {
        let a = Activity::default();
        for n in 0..KEPT + 3 {
            a.record(entry(n));
        }
        let r = a.recent();
        assert_eq!(r.len(), KEPT);
        assert_eq!(r[0].at, (KEPT + 2) as i64);
        assert_eq!(r[KEPT - 1].at, 3);
    }

    #[test]
    fn names_are_printable_and_bounded() {
        assert_eq!(who(None), "operator");
        assert_eq!(who(Some("  ")), "operator");
        assert_eq!(who(Some("bob\u{1b}[31m")), "bob[31m");
        assert_eq!(who(Some(&"x".repeat(100))).len(), MAX_WHO);
    }
}
