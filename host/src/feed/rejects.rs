//! The last messages the feed intake dropped, for the operator console.
//!
//! Written only when a message is dropped (framing or parsing), never on
//! the path of a valid one; at most [`KEPT`] entries of at most
//! [`EXCERPT_BYTES`] each, the oldest forgotten first.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Rejected messages remembered.
pub const KEPT: usize = 20;
/// Bytes of each kept as its excerpt.
pub const EXCERPT_BYTES: usize = 512;

/// One dropped message (or run of bytes).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rejected {
    /// Unix ms.
    pub at: i64,
    pub reason: &'static str,
    pub bytes: usize,
    /// Its first bytes, lossy UTF-8 (empty where the framer had already
    /// let them go).
    pub excerpt: String,
}

#[derive(Debug, Default)]
pub struct Rejects(Mutex<VecDeque<Rejected>>);

impl Rejects {
    pub fn record(&self, reason: &'static str, bytes: usize, content: Option<&[u8]>) {
        let excerpt = content.map_or_else(String::new, |c| {
            String::from_utf8_lossy(&c[..c.len().min(EXCERPT_BYTES)]).into_owned()
        });
        let entry = Rejected {
            at: crate::producers::wall_ms(),
            reason,
            bytes,
            excerpt,
        };
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if kept.len() == KEPT {
            kept.pop_front();
        }
        kept.push_back(entry);
    }

    /// Newest first.
    pub fn recent(&self) -> Vec<Rejected> {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        kept.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_ones_newest_first_cut_short() {
        let r = Rejects::default();
        for i in 0..KEPT + 5 {
            let body = format!("<odds_change n=\"{i}\"/>{}", "x".repeat(EXCERPT_BYTES));
            r.record("truncated", body.len(), Some(body.as_bytes()));
        }
        let recent = r.recent();
        assert_eq!(recent.len(), KEPT);
        assert!(
            recent[0]
                .excerpt
                .starts_with(&format!("<odds_change n=\"{}\"", KEPT + 4))
        );
        assert_eq!(recent[0].excerpt.len(), EXCERPT_BYTES);
        assert!(recent[KEPT - 1].excerpt.starts_with("<odds_change n=\"5\""));
        r.record("garbage", 3, None);
        assert_eq!(r.recent()[0].excerpt, "");
    }
}
