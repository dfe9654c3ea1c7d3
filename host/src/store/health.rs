//! Whether the store can write, as the writer last found it, for readiness
//! (`/readyz`) and logs: its disk's free space against the reserve, the
//! last failed write or flush, and a flush that does not finish.
//!
//! Why a reserve: sled 0.34 does not survive running out of space (after a
//! write fails with ENOSPC its next flush never returns), so the writer
//! never lets it get there. Before each batch it reads the free space of
//! the data dir's filesystem ([`available`]); below the reserve
//! (`--store-reserve-mib`) it holds writes instead of giving them to sled
//! (`writer` says what it holds and what it refuses), and it resumes by
//! itself once space is back. A write sled refuses anyway is logged at
//! most once a second ([`Throttle`]) and the store is reported failed
//! until a later write succeeds.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A flush running longer than this makes the store not ready.
pub const FLUSH_STUCK: Duration = Duration::from_secs(5);

/// Bytes available to unprivileged writers on `path`'s filesystem.
pub fn available(path: &Path) -> std::io::Result<u64> {
    let s = rustix::fs::statvfs(path)?;
    Ok(s.f_bavail.saturating_mul(s.f_frsize))
}

/// What is wrong with the store, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Free space under the reserve: writes are held.
    Full { available: u64, reserve: u64 },
    /// sled refused a write or a flush.
    Failed(String),
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Full { available, reserve } => write!(
                f,
                "disk full: {} MiB free, under the {} MiB reserve; writes are held",
                available >> 20,
                reserve >> 20
            ),
            Problem::Failed(e) => write!(f, "writes failing: {e}"),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    problem: Option<(Problem, Instant)>,
    flush_started: Option<Instant>,
}

/// The store's health, shared by the writer (which sets it) and readers.
#[derive(Debug)]
pub struct StoreHealth {
    dir: PathBuf,
    reserve: u64,
    state: Mutex<State>,
}

impl StoreHealth {
    pub fn new(dir: &Path, reserve: u64) -> StoreHealth {
        StoreHealth {
            dir: dir.to_owned(),
            reserve,
            state: Mutex::default(),
        }
    }

    /// The reserve, bytes.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Free space now, if it can be read.
    pub fn available(&self) -> Option<u64> {
        available(&self.dir).ok()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Set (or clear) the problem; `true` if that changed what is reported.
    pub fn set(&self, problem: Option<Problem>) -> bool {
        let mut s = self.state();
        let changed = match (&s.problem, &problem) {
            (None, None) => false,
            (Some((a, _)), Some(b)) => std::mem::discriminant(a) != std::mem::discriminant(b),
            _ => true,
        };
        match problem {
            Some(p) => {
                let since = s
                    .problem
                    .as_ref()
                    .filter(|_| !changed)
                    .map_or_else(Instant::now, |(_, t)| *t);
                s.problem = Some((p, since));
            }
            None => s.problem = None,
        }
        changed
    }

    pub fn flush_started(&self) {
        self.state().flush_started = Some(Instant::now());
    }

    pub fn flush_done(&self) {
        self.state().flush_started = None;
    }

    /// `Err(reason)` while the store cannot be trusted to write.
    pub fn check(&self) -> Result<(), String> {
        let s = self.state();
        if let Some((p, since)) = &s.problem {
            return Err(format!("{p} (for {} s)", since.elapsed().as_secs()));
        }
        match s.flush_started {
            Some(t) if t.elapsed() > FLUSH_STUCK => {
                Err(format!("a flush has not finished for {} s", t.elapsed().as_secs()))
            }
            _ => Ok(()),
        }
    }
}

/// At most one log line per `every`, saying how many were held back.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(suppressed since the last line)` if a line may be logged now.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.duration_since(t) < self.every) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_lets_one_line_a_period_through_and_counts_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(t.allow(t0), Some(0));
        for ms in [1, 10, 999] {
            assert_eq!(t.allow(t0 + Duration::from_millis(ms)), None);
        }
        assert_eq!(t.allow(t0 + Duration::from_millis(1000)), Some(3));
        assert_eq!(t.allow(t0 + Duration::from_millis(1001)), None);
    }

    #[test]
    fn health_reports_the_problem_since_it_began_and_clears() {
        let h = StoreHealth::new(Path::new("/"), 1);
        assert_eq!(h.check(), Ok(()));
        assert!(h.set(Some(Problem::Full {
            available: 0,
            reserve: 64 << 20
        })));
        assert!(!h.set(Some(Problem::Full {
            available: 1 << 20,
            reserve: 64 << 20
        })));
        let e = h.check().expect_err("full");
        assert!(e.starts_with("disk full: 1 MiB free, under the 64 MiB reserve"), "{e}");
        assert!(h.set(None));
        assert_eq!(h.check(), Ok(()));
        assert!(h.available().is_some_and(|b| b > 0), "the root filesystem has room");
    }
}
