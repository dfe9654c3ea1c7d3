//! A journal in memory, for unit tests of the worker: the same ordering and
//! barrier promise as the sled store, no disk, and faults on demand.
//!
//! Writes are applied at once; "durable" means applied. A write for a match
//! named by [`MemoryJournal::fail_writes_of`] is refused and taints that
//! match, so its next barrier resolves `Err` (exactly what the sled writer
//! does when sled refuses a write).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use super::{BetRecord, DeadLetter, History, Journal, JournalError, Kept, MatchMeta, Op, Parked, SnapshotRecord};

#[derive(Debug, Default)]
pub struct MemoryJournal {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    start_no: u64,
    /// (match, seq) → event.
    journal: BTreeMap<(String, u64), Vec<u8>>,
    /// (match, seq) → snapshot: every one is kept (nothing is pruned).
    snapshots: BTreeMap<(String, u64), SnapshotRecord>,
    meta: HashMap<String, MatchMeta>,
    dead: HashMap<String, Vec<Kept<DeadLetter>>>,
    held: HashMap<String, Vec<Kept<Vec<u8>>>>,
    /// The last id given to a parked item.
    next_id: u64,
    bets: BTreeMap<String, BetRecord>,
    /// Matches whose writes are refused.
    failing: Vec<String>,
    /// Matches with a refused write not yet reported to a barrier.
    tainted: Vec<String>,
    /// Writes applied, for tests counting them.
    writes: usize,
    /// Barriers asked for, for tests counting them.
    barriers: usize,
}

impl Inner {
    /// A match's newest snapshot at or before `seq`.
    fn snapshot_at(&self, match_id: &str, seq: u64) -> Option<SnapshotRecord> {
        let range = (match_id.to_owned(), 0)..=(match_id.to_owned(), seq);
        self.snapshots.range(range).next_back().map(|(_, s)| s.clone())
    }

    /// `item` parked under the next id, with its raw message.
    fn keep<T>(&mut self, item: T, raw: Option<bytes::Bytes>) -> Kept<T> {
        self.next_id += 1;
        Kept {
            id: self.next_id,
            item,
            raw: raw.map(|r| r.to_vec()),
        }
    }
}

impl MemoryJournal {
    pub fn new(start_no: u64) -> MemoryJournal {
        MemoryJournal {
            inner: Mutex::new(Inner {
                start_no,
                ..Inner::default()
            }),
        }
    }

    /// Shared, as workers hold it.
    pub fn shared(start_no: u64) -> Arc<MemoryJournal> {
        Arc::new(MemoryJournal::new(start_no))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .expect("memory journal lock is never held across a panic")
    }

    /// From now on refuse every write of `match_id` (`None`: stop refusing).
    pub fn fail_writes_of(&self, match_id: Option<&str>) {
        let mut i = self.lock();
        i.failing.clear();
        i.failing.extend(match_id.map(str::to_owned));
    }

    pub fn meta(&self, match_id: &str) -> Option<MatchMeta> {
        self.lock().meta.get(match_id).cloned()
    }

    pub fn snapshot(&self, match_id: &str) -> Option<SnapshotRecord> {
        self.lock().snapshot_at(match_id, u64::MAX)
    }

    pub fn bet(&self, id: &str) -> Option<BetRecord> {
        self.lock().bets.get(id).cloned()
    }

    /// Seqs journaled for a match, in order.
    pub fn seqs(&self, match_id: &str) -> Vec<u64> {
        self.lock()
            .journal
            .keys()
            .filter(|(m, _)| m == match_id)
            .map(|(_, s)| *s)
            .collect()
    }

    /// What a restarting worker would be handed for `match_id`.
    pub fn recover(&self, match_id: &str) -> Option<super::Recovered> {
        let i = self.lock();
        let meta = i.meta.get(match_id)?.clone();
        let snapshot = i.snapshot_at(match_id, u64::MAX);
        let after = snapshot.as_ref().map_or(0, |s| s.seq);
        let journal = i
            .journal
            .iter()
            .filter(|((m, s), _)| m == match_id && *s > after)
            .map(|((_, s), event)| {
                let entry = super::JournalEntry {
                    event: event.clone(),
                    frame: String::new(),
                };
                (*s, entry)
            })
            .collect();
        let bets = i
            .bets
            .values()
            .filter(|b| b.match_id == match_id && b.decision.is_ok())
            .cloned()
            .collect();
        Some(super::Recovered {
            match_id: Arc::from(match_id),
            meta,
            snapshot,
            journal,
            bets,
        })
    }

    pub fn writes(&self) -> usize {
        self.lock().writes
    }

    pub fn barriers(&self) -> usize {
        self.lock().barriers
    }

    fn apply(&self, op: Op) -> Result<(), JournalError> {
        let mut i = self.lock();
        if let Op::Barrier { scope, ack, .. } = op {
            i.barriers += 1;
            let tainted = match scope {
                Some(m) => {
                    let before = i.tainted.len();
                    i.tainted.retain(|t| **t != *m);
                    before != i.tainted.len()
                }
                None => !std::mem::take(&mut i.tainted).is_empty(),
            };
            let _ = ack.send(if tainted {
                Err(JournalError::WriteFailed("injected failure".into()))
            } else {
                Ok(())
            });
            return Ok(());
        }
        if let Some(m) = op.scope().filter(|m| i.failing.iter().any(|f| f == m)) {
            let m = m.to_owned();
            if !i.tainted.contains(&m) {
                i.tainted.push(m);
            }
            return Ok(());
        }
        i.writes += 1;
        match op {
            Op::Append { match_id, seq, event } => {
                i.journal.insert((match_id.to_string(), seq), event.to_vec());
            }
            Op::Snapshot { match_id, record } => {
                i.snapshots.insert((match_id.to_string(), record.seq), record);
            }
            Op::Meta { match_id, meta } => {
                i.meta.insert(match_id.to_string(), meta);
            }
            Op::DeadLetter { match_id, letter, raw } => {
                let item = i.keep(letter, raw);
                i.dead.entry(match_id.to_string()).or_default().push(item);
            }
            Op::Hold { match_id, event, raw } => {
                let item = i.keep(event, raw);
                i.held.entry(match_id.to_string()).or_default().push(item);
            }
            Op::ClearParked { match_id } => {
                i.dead.remove(&*match_id);
                i.held.remove(&*match_id);
            }
            Op::RemoveDeadLetter { match_id, id } => {
                if let Some(d) = i.dead.get_mut(&*match_id) {
                    d.retain(|k| k.id != id);
                }
            }
            Op::Bet(record) => {
                i.bets.insert(record.request.id.clone(), *record);
            }
            Op::PutGuest { .. }
            | Op::RemoveGuest { .. }
            | Op::ActiveGuest { .. }
            | Op::Producer(_)
            | Op::Reference { .. }
            | Op::Barrier { .. } => {}
        }
        Ok(())
    }
}

impl Journal for MemoryJournal {
    fn start_no(&self) -> u64 {
        self.lock().start_no
    }

    fn write(&self, op: Op) -> BoxFuture<'_, Result<(), JournalError>> {
        let r = self.apply(op);
        Box::pin(async move { r })
    }

    fn try_write(&self, op: Op) -> Result<(), JournalError> {
        self.apply(op)
    }

    fn history(&self, match_id: &str, at_or_before: u64, to: u64) -> Result<Option<History>, JournalError> {
        let i = self.lock();
        let base = i.snapshot_at(match_id, at_or_before);
        let from = base.as_ref().map_or(0, |b| b.seq) + 1;
        let events: Vec<Vec<u8>> = (from..=to)
            .map_while(|s| i.journal.get(&(match_id.to_owned(), s)).cloned())
            .collect();
        Ok((from + events.len() as u64 == to + 1).then_some(History { base, events }))
    }

    fn stored_snapshot(&self, match_id: &str) -> Result<Option<SnapshotRecord>, JournalError> {
        Ok(self.lock().snapshot_at(match_id, u64::MAX))
    }

    fn parked(&self, match_id: &str) -> Result<Parked, JournalError> {
        let i = self.lock();
        Ok(Parked {
            dead_letters: i.dead.get(match_id).cloned().unwrap_or_default(),
            held: i.held.get(match_id).cloned().unwrap_or_default(),
        })
    }
}
