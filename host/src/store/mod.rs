//! The only owner of sled: the production [`crate::journal::Journal`].
//!
//! Reads are direct, typed methods on [`Store`]. Every write, the workers'
//! and the guest registry's alike, goes through [`writer::StoreHandle`] to
//! one writer ([`writer::run_writer`], on a thread of its own in the
//! server: [`writer::spawn_writer`]) that applies them in arrival
//! order and makes them durable in group commits. The one exception is the
//! start counter, written by [`Store::open`] before any writer exists.
//!
//! Journal entries and snapshot records, the bulk of what is written, are
//! not in sled but in the value log beside it ([`values`], the `values`
//! directory): sled keeps where each one is ([`locs`]).
//!
//! Layout (one tree each, keys sort by match then number):
//! - `journal_locs` match \0 seq → where its [`JournalEntry`] (the event's
//!   bytes) is in the value log
//! - `snapshot_locs` match \0 seq → where its [`SnapshotRecord`] is (see
//!   `history.rs`)
//! - `matches`   match → [`MatchMeta`] (epoch, clean mark, quarantine)
//! - `dead`      match \0 n → [`DeadLetter`]
//! - `held`      match \0 n → event bytes received while quarantined
//! - `dead_raw`, `held_raw`  the same keys → the feed message as it arrived
//! - `bets`      bet id → [`BetRecord`]
//! - `match_bets` match \0 bet id → () for accepted bets (settlement, recovery)
//! - `guests`    content hash → [`GuestRecord`] (installed guest components)
//! - `producers` product (u32 BE) → [`ProducerRecord`] (last alive while up, last request id)
//! - `reference` name (`markets.xml`, `variants.xml`) → the provider's last answer (UTF-8)
//! - `meta`      "starts" → number of times this data dir was opened;
//!   "guest.active" / "guest.previous" → content hashes

pub mod health;
mod history;
mod locs;
mod parked;
pub mod values;
pub mod writer;

use std::path::Path;
use std::sync::Arc;

use health::StoreHealth;

use serde::{Deserialize, Serialize};

pub use crate::journal::{
    BetRecord, DeadLetter, GuestRecord, JournalEntry, Kept, MatchMeta, Op, ProducerRecord, Recovered, SnapshotRecord,
};
pub use history::JOURNAL_RETENTION;
pub use writer::{StoreHandle, WRITE_QUEUE, WriteQueue, WriterThread, queue, run_writer, spawn_writer};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the database in {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("database: {0}")]
    Sled(#[from] sled::Error),
    #[error("{what} value for {key}: {source}")]
    Value {
        what: &'static str,
        key: String,
        source: values::ValueError,
    },
    #[error("{0}")]
    Values(#[from] values::ValueError),
    #[error("corrupt {what} record for {key}: {source}")]
    Corrupt {
        what: &'static str,
        key: String,
        source: bincode::error::DecodeError,
    },
}

/// [`MatchMeta`] and [`SnapshotRecord`] as written before hot swap, still
/// read so an existing data directory opens.
#[derive(Deserialize)]
struct LegacyMatchMeta {
    epoch: u64,
    clean_seq: Option<u64>,
    quarantined: Option<String>,
}

#[derive(Deserialize)]
struct LegacySnapshotRecord {
    seq: u64,
    epoch: u64,
    #[serde(with = "serde_bytes")]
    state: Vec<u8>,
}

/// Decode the current layout, else the legacy one `L` converted; the error
/// reported is the current layout's.
fn dec_or_legacy<T, L>(what: &'static str, key: &[u8], bytes: &[u8], convert: fn(L) -> T) -> Result<T, StoreError>
where
    T: serde::de::DeserializeOwned,
    L: serde::de::DeserializeOwned,
{
    dec(what, key, bytes).or_else(|e| dec::<L>(what, key, bytes).map(convert).map_err(|_| e))
}

fn dec_meta(key: &[u8], bytes: &[u8]) -> Result<MatchMeta, StoreError> {
    dec_or_legacy("match", key, bytes, |l: LegacyMatchMeta| MatchMeta {
        epoch: l.epoch,
        clean_seq: l.clean_seq,
        quarantined: l.quarantined,
        guest: None,
    })
}

fn dec_snapshot(key: &[u8], bytes: &[u8]) -> Result<SnapshotRecord, StoreError> {
    // The only guest before hot swap saved layout 1.
    dec_or_legacy("snapshot", key, bytes, |l: LegacySnapshotRecord| SnapshotRecord {
        seq: l.seq,
        epoch: l.epoch,
        state: l.state,
        guest: String::new(),
        state_version: 1,
    })
}

/// [`JournalEntry`] borrowing its event: the same encoding, no copy. The
/// frame is always empty now (see [`JournalEntry::frame`]).
#[derive(Serialize)]
struct JournalEntryRef<'a> {
    /// Bytes, not a sequence of `u8`s: the same wire format (a length,
    /// then the bytes) written in one copy, not one call per byte.
    #[serde(with = "serde_bytes")]
    event: &'a [u8],
    frame: &'a str,
}

#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    /// `journal_locs`: where each entry is in `values`.
    journal: sled::Tree,
    /// `snapshot_locs` ([`history`]).
    snapshots: sled::Tree,
    values: Arc<values::ValueLog>,
    /// Removals held until the values are durable ([`locs`]).
    later: locs::Pending,
    matches: sled::Tree,
    dead: sled::Tree,
    held: sled::Tree,
    /// The raw feed messages of dead letters and held events, under the
    /// same keys (kept apart: older records stay readable as they are).
    dead_raw: sled::Tree,
    held_raw: sled::Tree,
    bets: sled::Tree,
    match_bets: sled::Tree,
    guests: sled::Tree,
    producers: sled::Tree,
    reference: sled::Tree,
    meta: sled::Tree,
    /// Which start of this data dir this is (1 for the first).
    start_no: u64,
    /// Whether it can write (the writer keeps it current).
    health: Arc<StoreHealth>,
}

fn key(match_id: &str, n: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(match_id.len() + 9);
    k.extend_from_slice(match_id.as_bytes());
    k.push(0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn prefix(match_id: &str) -> Vec<u8> {
    let mut k = match_id.as_bytes().to_vec();
    k.push(0);
    k
}

fn seq_of(k: &[u8]) -> u64 {
    k.len()
        .checked_sub(8)
        .and_then(|at| <[u8; 8]>::try_from(&k[at..]).ok())
        .map_or(0, u64::from_be_bytes)
}

fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    touchline_guest::encode(v)
}

fn dec<T: serde::de::DeserializeOwned>(what: &'static str, key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    touchline_guest::decode(bytes).map_err(|source| StoreError::Corrupt {
        what,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

/// sled's own default is 1 GiB, which a process tracking many matches
/// fills with their journal entries and snapshots.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

impl Store {
    /// Open (or create) the database and count this start; no reserve.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_reserving(dir, 0, DEFAULT_CACHE_BYTES)
    }

    /// Open, keeping `reserve` bytes of the disk free (under it the writer
    /// holds writes, [`health`]) and caching at most `cache` bytes.
    pub fn open_reserving(dir: &Path, reserve: u64, cache: u64) -> Result<Store, StoreError> {
        Store::open_sized(dir, reserve, cache, values::SEGMENT_BYTES)
    }

    /// [`Store::open_reserving`] sealing the value log's segments at
    /// `segment_bytes` (tests).
    fn open_sized(dir: &Path, reserve: u64, cache: u64, segment_bytes: u64) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache)
            .open()
            .map_err(|source| StoreError::Open {
                path: dir.display().to_string(),
                source,
            })?;
        let meta = db.open_tree("meta")?;
        let starts = meta
            .get("starts")?
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map_or(0, u64::from_be_bytes)
            + 1;
        meta.insert("starts", &starts.to_be_bytes())?;
        let values = Arc::new(values::ValueLog::open_sized(&dir.join("values"), segment_bytes)?);
        let journal = db.open_tree("journal_locs")?;
        let snapshots = db.open_tree("snapshot_locs")?;
        let dropped = Store::check_locs(&journal, &values)? + Store::check_locs(&snapshots, &values)?;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "value log: entries sled kept whose values a crash took, dropped"
            );
            // Durably, before anything is put where their values were.
            db.flush()?;
        }
        let moved = Store::migrate_snapshots(&db)?;
        if moved > 0 {
            tracing::info!(moved, "snapshots moved to the by-seq layout");
        }
        let moved = Store::migrate_values(&db, &values, [("journal", &journal), ("snapshots_by_seq", &snapshots)])?;
        if moved > 0 {
            tracing::info!(moved, "journal entries and snapshots moved to the value log");
        }
        values.retire_unused();
        db.flush()?;
        Ok(Store {
            journal,
            snapshots,
            values,
            later: locs::Pending::default(),
            matches: db.open_tree("matches")?,
            dead: db.open_tree("dead")?,
            held: db.open_tree("held")?,
            dead_raw: db.open_tree("dead_raw")?,
            held_raw: db.open_tree("held_raw")?,
            bets: db.open_tree("bets")?,
            match_bets: db.open_tree("match_bets")?,
            guests: db.open_tree("guests")?,
            producers: db.open_tree("producers")?,
            reference: db.open_tree("reference")?,
            meta,
            db,
            start_no: starts,
            health: Arc::new(StoreHealth::new(dir, reserve)),
        })
    }

    /// Whether the store can write now.
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// Which start of this data dir this is; used as the epoch of streams
    /// whose continuity cannot be proven, so an epoch is never reused.
    pub fn start_no(&self) -> u64 {
        self.start_no
    }

    /// Every match with a record, with what recovery needs.
    pub fn recover_all(&self) -> Result<Vec<Recovered>, StoreError> {
        let mut out = Vec::new();
        for item in self.matches.iter() {
            let (k, v) = item?;
            let meta = dec_meta(&k, &v)?;
            out.push(self.recovered(&String::from_utf8_lossy(&k), meta)?);
        }
        Ok(out)
    }

    /// What recovery needs for one match, if it has a record.
    pub fn recover_one(&self, match_id: &str) -> Result<Option<Recovered>, StoreError> {
        match self.matches.get(match_id.as_bytes())? {
            Some(v) => Ok(Some(self.recovered(match_id, dec_meta(match_id.as_bytes(), &v)?)?)),
            None => Ok(None),
        }
    }

    fn recovered(&self, match_id: &str, meta: MatchMeta) -> Result<Recovered, StoreError> {
        let snapshot = self.snapshot(match_id)?;
        let after = snapshot.as_ref().map_or(0, |s| s.seq);
        let mut journal = Vec::new();
        for item in self.journal.range(key(match_id, after + 1)..prefix_end(match_id)) {
            let (jk, jv) = item?;
            let entry = self.value(locs::Locs::Journal, &jk, &jv)?;
            journal.push((seq_of(&jk), dec::<JournalEntry>("journal", &jk, &entry)?));
        }
        Ok(Recovered {
            match_id: Arc::from(match_id),
            meta,
            snapshot,
            journal,
            bets: self.accepted_bets(match_id)?,
        })
    }

    /// The last `n` journaled events of a match, oldest first.
    pub fn recent_events(&self, match_id: &str, n: usize) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::with_capacity(n);
        for item in self.journal.scan_prefix(prefix(match_id)).rev().take(n) {
            let (k, v) = item?;
            let entry = self.value(locs::Locs::Journal, &k, &v)?;
            out.push((seq_of(&k), dec::<JournalEntry>("journal", &k, &entry)?.event));
        }
        out.reverse();
        Ok(out)
    }

    /// One installed guest component.
    pub fn guest(&self, hash: &str) -> Result<Option<GuestRecord>, StoreError> {
        match self.guests.get(hash.as_bytes())? {
            Some(v) => Ok(Some(dec("guest", hash.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// Installed guest components, by content hash.
    pub fn guests(&self) -> Result<Vec<(String, GuestRecord)>, StoreError> {
        self.guests
            .iter()
            .map(|r| {
                let (k, v) = r?;
                Ok((String::from_utf8_lossy(&k).into_owned(), dec("guest", &k, &v)?))
            })
            .collect()
    }

    /// The reference data an earlier run kept: (name, text), fixtures
    /// aside (one per match: read one at a time, [`Store::reference_text`]).
    pub fn reference(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.reference
            .iter()
            .filter(|r| {
                r.as_ref()
                    .map_or(true, |(k, _)| !k.starts_with(crate::journal::FIXTURE_PREFIX.as_bytes()))
            })
            .map(|r| {
                let (k, v) = r?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                ))
            })
            .collect()
    }

    /// One reference-data text kept under `key`.
    pub fn reference_text(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .reference
            .get(key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// What earlier runs kept about each producer.
    pub fn producers(&self) -> Result<Vec<ProducerRecord>, StoreError> {
        self.producers
            .iter()
            .map(|r| {
                let (k, v) = r?;
                dec("producer", &k, &v)
            })
            .collect()
    }

    /// The active and previous guest versions (content hashes), if any
    /// was ever installed.
    pub fn active_guest(&self) -> Result<(Option<String>, Option<String>), StoreError> {
        let get = |k: &str| -> Result<Option<String>, StoreError> {
            Ok(self.meta.get(k)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
        };
        Ok((get("guest.active")?, get("guest.previous")?))
    }

    /// Accepted bets on a match.
    pub fn accepted_bets(&self, match_id: &str) -> Result<Vec<BetRecord>, StoreError> {
        let p = prefix(match_id);
        let mut out = Vec::new();
        for k in self.match_bets.scan_prefix(&p).keys() {
            let k = k?;
            let id = String::from_utf8_lossy(&k[p.len()..]).into_owned();
            if let Some(b) = self.bet(&id)? {
                out.push(b);
            }
        }
        Ok(out)
    }

    pub fn bet(&self, id: &str) -> Result<Option<BetRecord>, StoreError> {
        match self.bets.get(id.as_bytes())? {
            Some(v) => Ok(Some(dec("bet", id.as_bytes(), &v)?)),
            None => Ok(None),
        }
    }

    /// Apply one write (not yet durable). Barriers are the writer's.
    fn apply(&self, op: Op) -> Result<(), StoreError> {
        match op {
            Op::Append { match_id, seq, event } => {
                let entry = JournalEntryRef {
                    event: &event,
                    frame: "",
                };
                self.put_value(locs::Locs::Journal, key(&match_id, seq), &entry)?;
            }
            Op::Snapshot { match_id, record } => self.put_snapshot(&match_id, &record)?,
            Op::Meta { match_id, meta } => {
                self.matches.insert(match_id.as_bytes(), enc(&meta))?;
            }
            Op::DeadLetter { match_id, letter, raw } => {
                let k = key(&match_id, self.db.generate_id()?);
                if let Some(raw) = raw {
                    self.dead_raw.insert(&k, raw.as_ref())?;
                }
                self.dead.insert(k, enc(&letter))?;
            }
            Op::Hold { match_id, event, raw } => {
                let k = key(&match_id, self.db.generate_id()?);
                if let Some(raw) = raw {
                    self.held_raw.insert(&k, raw.as_ref())?;
                }
                self.held.insert(k, event)?;
            }
            Op::RemoveDeadLetter { match_id, id } => {
                let k = key(&match_id, id);
                self.dead.remove(&k)?;
                self.dead_raw.remove(&k)?;
            }
            Op::ClearParked { match_id } => {
                for tree in [&self.dead, &self.held, &self.dead_raw, &self.held_raw] {
                    for k in tree.scan_prefix(prefix(&match_id)).keys() {
                        tree.remove(k?)?;
                    }
                }
            }
            Op::Bet(record) => {
                self.bets.insert(record.request.id.as_bytes(), enc(&*record))?;
                if record.decision.is_ok() {
                    let mut k = prefix(&record.match_id);
                    k.extend_from_slice(record.request.id.as_bytes());
                    self.match_bets.insert(k, &[])?;
                }
            }
            Op::PutGuest { hash, record } => {
                self.guests.insert(hash.as_bytes(), enc(&record))?;
            }
            Op::RemoveGuest { hash } => {
                self.guests.remove(hash.as_bytes())?;
            }
            Op::ActiveGuest { active, previous } => {
                let mut batch = sled::Batch::default();
                batch.insert("guest.active", active.as_bytes());
                match previous {
                    Some(p) => batch.insert("guest.previous", p.as_bytes()),
                    None => batch.remove("guest.previous"),
                }
                self.meta.apply_batch(batch)?;
            }
            Op::Reference { key, text } => {
                self.reference.insert(key.as_bytes(), text.as_bytes())?;
            }
            Op::Producer(record) => {
                self.producers.insert(record.product.to_be_bytes(), enc(&record))?;
            }
            Op::Barrier { .. } => {}
        }
        Ok(())
    }

    /// Make everything written so far durable, blocking the calling thread
    /// until it is (the store writer's own thread).
    /// The value log first: sled may then point at its values, and remove
    /// what they replace ([`locs`]).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.values.sync()?;
        self.apply_later()?;
        self.db.flush()?;
        self.values.after_flush();
        Ok(())
    }
}

/// Upper bound of a match's keys.
fn prefix_end(match_id: &str) -> Vec<u8> {
    let mut k = match_id.as_bytes().to_vec();
    k.push(1);
    k
}

#[cfg(test)]
mod tests;
