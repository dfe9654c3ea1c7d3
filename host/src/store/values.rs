//! The value log: journal entries and snapshot records appended to segment
//! files beside sled, which keeps only where each one is (a [`Loc`], 16
//! bytes). sled rewrote every byte of its values about five times (10.6 KB
//! written per event of ~2.2 KB in the pipeline at 1,000 matches); here a
//! value is written once, in order, with the group commit.
//!
//! A segment is a file `NNNNNNNN.vlog` of records, each a header (payload
//! length, CRC-32 of the payload; u32 little-endian each) and the payload.
//! Only the newest segment is appended to, with `O_DIRECT` where the file
//! system takes it ([`append`]); past [`SEGMENT_BYTES`] a sync seals it and
//! starts the next.
//!
//! Only the store writer puts, frees and syncs; any thread reads. What was
//! put since the last sync is in memory (`pending`) and read from there.
//!
//! Crash safety (the store upholds the orders, `super::Store::flush`):
//! - `sync` writes and `fdatasync`s the pending records before sled's flush,
//!   so a value whose location sled made durable in a flush is durable.
//!   sled may write its log earlier on its own; a location that points past
//!   what the segment durably holds is found at open ([`ValueLog::holds`])
//!   and dropped with every later one of its match: the log is written in
//!   order, so what is left is a prefix.
//! - At open the newest segment is cut back to its last whole record (a
//!   write torn by a crash).
//! - Space comes back by segment: a value is freed when sled no longer
//!   points at it; a sealed segment nothing points at is deleted two flushes
//!   later (the removals durable, and a reader that found the location just
//!   before still finds the file). Segments mostly freed are copied forward
//!   by the store (`Store::compact`).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use append::{ALIGN, Appender};

mod append;

/// A segment is sealed once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 32 << 20;
/// A written buffer larger than this is not kept for the next sync.
const SPARE_BYTES: usize = 4 << 20;
/// A record's header: payload length and CRC-32, u32 little-endian each.
const HEADER: u64 = 8;

/// Where a value is: segment, offset of its record, payload length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub seg: u32,
    pub off: u64,
    pub len: u32,
}

impl Loc {
    /// As sled keeps it: seg, off, len big-endian.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..4].copy_from_slice(&self.seg.to_be_bytes());
        b[4..12].copy_from_slice(&self.off.to_be_bytes());
        b[12..].copy_from_slice(&self.len.to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8]) -> Option<Loc> {
        let b: &[u8; 16] = b.try_into().ok()?;
        Some(Loc {
            seg: u32::from_be_bytes(b[..4].try_into().ok()?),
            off: u64::from_be_bytes(b[4..12].try_into().ok()?),
            len: u32::from_be_bytes(b[12..].try_into().ok()?),
        })
    }

    /// The record's size in its segment.
    fn size(self) -> u64 {
        HEADER + u64::from(self.len)
    }

    fn end(self) -> u64 {
        self.off + self.size()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("value log {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("value at {loc:?}: {why}")]
    Bad { loc: Loc, why: &'static str },
    #[error("value log segment {0} is gone (compacted away meanwhile)")]
    Gone(u32),
    #[error("sled holds {0} bytes where a location (16) should be")]
    NotALocation(usize),
}

#[derive(Debug)]
struct Segment {
    file: Arc<File>,
    /// Where its records end (synced, but for the newest segment while a
    /// sync is under way); the file may go on in zeros a direct write
    /// padded its last block with.
    len: u64,
    /// Bytes of records sled points at.
    live: u64,
}

impl Inner {
    /// Sealed and pointed at by nothing: deleted two flushes from now.
    fn retire(&mut self, id: u32) {
        if !self.retired.contains(&id) && !self.doomed.contains(&id) {
            self.retired.push(id);
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    segments: BTreeMap<u32, Segment>,
    current: u32,
    /// Records put since the last sync, to follow `in_flight` (if any) in
    /// the current segment.
    pending: Vec<u8>,
    /// Records being written by a sync, after the current segment's `len`.
    in_flight: Option<Arc<Vec<u8>>>,
    /// The buffer the last sync wrote, emptied, for the next one: a fresh
    /// buffer grew by reallocation into fresh zeroed pages every commit
    /// (2.5% of the server's samples in the pipeline at 1,000 matches).
    spare: Vec<u8>,
    /// Sealed segments nothing points at: deleted at the second flush from
    /// now (`after_flush`), the first one being made empty in `doomed`.
    retired: Vec<u32>,
    doomed: Vec<u32>,
    /// Segments a compaction failed on: not picked again by this process.
    stuck: Vec<u32>,
    /// Writes the current segment; out of here while a sync writes.
    appender: Option<Appender>,
}

/// The segments of one data dir (see the module header).
#[derive(Debug)]
pub struct ValueLog {
    dir: PathBuf,
    /// [`SEGMENT_BYTES`] but in tests.
    segment_bytes: u64,
    inner: Mutex<Inner>,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ValueError + '_ {
    move |source| ValueError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn crc(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

impl ValueLog {
    /// Open the segments in `dir` (created if missing), the newest cut back
    /// to its last whole record. Nothing counts as live until
    /// [`ValueLog::count`] says so.
    pub fn open(dir: &Path) -> Result<ValueLog, ValueError> {
        ValueLog::open_sized(dir, SEGMENT_BYTES)
    }

    /// [`ValueLog::open`] sealing segments at `segment_bytes`.
    pub fn open_sized(dir: &Path, segment_bytes: u64) -> Result<ValueLog, ValueError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let name = entry.map_err(io_err(dir))?.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".vlog"))
                .and_then(|n| n.parse().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let log = ValueLog {
            dir: dir.to_owned(),
            segment_bytes,
            inner: Mutex::new(Inner::default()),
        };
        let mut inner = Inner::default();
        for &id in &ids {
            let path = log.path(id);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            let mut len = file.metadata().map_err(io_err(&path))?.len();
            if Some(&id) == ids.last() {
                let whole = whole_records(&file, len).map_err(io_err(&path))?;
                if whole < len {
                    // Zeros short of a block are the padding of a direct
                    // write, not damage.
                    if !is_padding(&file, whole, len).map_err(io_err(&path))? {
                        tracing::warn!(segment = id, cut = len - whole, "value log: a torn record cut off");
                    }
                    file.set_len(whole).map_err(io_err(&path))?;
                    file.sync_all().map_err(io_err(&path))?;
                    len = whole;
                }
                inner.appender = Some(Appender::open(&path, &file, len).map_err(io_err(&path))?);
            }
            inner.segments.insert(
                id,
                Segment {
                    file: Arc::new(file),
                    len,
                    live: 0,
                },
            );
        }
        match ids.last() {
            Some(&id) => inner.current = id,
            None => log.start_segment(&mut inner, 1)?,
        }
        *log.lock() = inner;
        Ok(log)
    }

    fn path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("{id:08}.vlog"))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn start_segment(&self, inner: &mut Inner, id: u32) -> Result<(), ValueError> {
        let path = self.path(id);
        // A rotation that failed after creating the file left it empty (the
        // current segment never moved past it): start it afresh.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_err(&path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        inner.appender = Some(Appender::open(&path, &file, 0).map_err(io_err(&path))?);
        inner.segments.insert(
            id,
            Segment {
                file: Arc::new(file),
                len: 0,
                live: 0,
            },
        );
        inner.current = id;
        Ok(())
    }

    /// Whether `loc` is a whole record this log holds (at open: sled may
    /// point past what a crash left).
    pub fn holds(&self, loc: Loc) -> bool {
        let inner = self.lock();
        inner.segments.get(&loc.seg).is_some_and(|s| loc.end() <= s.len)
    }

    /// Count `loc` as pointed at (at open, for each location sled keeps).
    pub fn count(&self, loc: Loc) {
        if let Some(s) = self.lock().segments.get_mut(&loc.seg) {
            s.live += loc.size();
        }
    }

    /// Sealed segments nothing points at go at the next flushes (at open,
    /// once every location was counted).
    pub fn retire_unused(&self) {
        let mut inner = self.lock();
        let current = inner.current;
        let unused: Vec<u32> = inner
            .segments
            .iter()
            .filter(|(id, s)| **id != current && s.live == 0)
            .map(|(id, _)| *id)
            .collect();
        for id in unused {
            inner.retire(id);
        }
    }

    /// Append a value (writer only); durable after the next [`ValueLog::sync`].
    pub fn put(&self, payload: &[u8]) -> Loc {
        self.put_with(|buf| buf.extend_from_slice(payload))
    }

    /// [`ValueLog::put`] of what `write` appends to the buffer it is given
    /// (a value encoded in place, not in a buffer of its own first).
    pub fn put_with(&self, write: impl FnOnce(&mut Vec<u8>)) -> Loc {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let seg = &inner.segments[&inner.current];
        let in_flight = inner.in_flight.as_ref().map_or(0, |b| b.len() as u64);
        let start = inner.pending.len();
        let off = seg.len + in_flight + start as u64;
        inner.pending.extend_from_slice(&[0; HEADER as usize]);
        write(&mut inner.pending);
        let payload = &inner.pending[start + HEADER as usize..];
        let len = u32::try_from(payload.len()).expect("a value under 4 GiB");
        assert!(
            len > 0,
            "a value is never empty (a record of length 0 ends the log at open)"
        );
        let sum = crc(payload);
        inner.pending[start..start + 4].copy_from_slice(&len.to_le_bytes());
        inner.pending[start + 4..start + 8].copy_from_slice(&sum.to_le_bytes());
        let loc = Loc {
            seg: inner.current,
            off,
            len,
        };
        if let Some(s) = inner.segments.get_mut(&loc.seg) {
            s.live += loc.size();
        }
        loc
    }

    /// A value, checked against its CRC.
    pub fn get(&self, loc: Loc) -> Result<Vec<u8>, ValueError> {
        let bad = |why| ValueError::Bad { loc, why };
        let file = {
            let inner = self.lock();
            let seg = inner.segments.get(&loc.seg).ok_or(ValueError::Gone(loc.seg))?;
            if loc.seg == inner.current && loc.off >= seg.len {
                let mut at = loc.off - seg.len;
                for buf in inner
                    .in_flight
                    .iter()
                    .map(|b| b.as_slice())
                    .chain([inner.pending.as_slice()])
                {
                    if at < buf.len() as u64 {
                        let record = usize::try_from(at)
                            .ok()
                            .and_then(|at| buf.get(at..at + loc.size() as usize))
                            .ok_or(bad("past the end of the log"))?;
                        return check(loc, record);
                    }
                    at -= buf.len() as u64;
                }
                return Err(bad("past the end of the log"));
            }
            if loc.end() > seg.len {
                return Err(bad("past the end of its segment"));
            }
            seg.file.clone()
        };
        let mut record = vec![0; loc.size() as usize];
        file.read_exact_at(&mut record, loc.off)
            .map_err(io_err(&self.path(loc.seg)))?;
        check(loc, &record)
    }

    /// sled no longer points at `loc` (writer only).
    pub fn free(&self, loc: Loc) {
        let mut inner = self.lock();
        let current = inner.current;
        if let Some(s) = inner.segments.get_mut(&loc.seg) {
            s.live = s.live.saturating_sub(loc.size());
            if s.live == 0 && loc.seg != current {
                inner.retire(loc.seg);
            }
        }
    }

    /// Write what was put and make it durable; seal the segment if full.
    /// On failure what was put stays pending (written at the same offsets
    /// by the next sync), and nothing is durable.
    pub fn sync(&self) -> Result<(), ValueError> {
        let (file, at, buf, path, mut appender) = {
            let mut inner = self.lock();
            if inner.pending.is_empty() {
                return Ok(());
            }
            let spare = std::mem::take(&mut inner.spare);
            let buf = Arc::new(std::mem::replace(&mut inner.pending, spare));
            inner.in_flight = Some(buf.clone());
            let appender = inner.appender.take().expect("the current segment's appender");
            let seg = &inner.segments[&inner.current];
            (seg.file.clone(), seg.len, buf, self.path(inner.current), appender)
        };
        let written = appender.append(&file, at, &buf);
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.in_flight = None;
        inner.appender = Some(appender);
        let mut buf = Arc::unwrap_or_clone(buf);
        if let Err(e) = written {
            // Put back in front of what came since (nothing: only the writer
            // puts, and it is here).
            buf.append(&mut inner.pending);
            inner.pending = buf;
            return Err(io_err(&path)(e));
        }
        let current = inner.current;
        let seg = inner.segments.get_mut(&current).expect("the current segment");
        seg.len += buf.len() as u64;
        if buf.capacity() <= SPARE_BYTES {
            buf.clear();
            inner.spare = buf;
        }
        if seg.len >= self.segment_bytes {
            // Sealed: cut to its records (a direct write padded it), so
            // its file's length is its end at open. Padding a failure here
            // leaves is counted in the segment's length at open (only the
            // newest segment is scanned), where no location points.
            if let Err(e) = seg.file.set_len(seg.len).and_then(|()| seg.file.sync_data()) {
                tracing::warn!(path = %path.display(), error = %e, "value log: a sealed segment keeps its padding");
            }
            let unused = seg.live == 0;
            // Sealed only once the next one is there: until then this one
            // takes the next values.
            self.start_segment(inner, current + 1)?;
            if unused {
                inner.retire(current);
            }
        }
        Ok(())
    }

    /// sled flushed: delete the segments retired two flushes ago.
    pub fn after_flush(&self) {
        let gone = {
            let mut inner = self.lock();
            let mut gone = std::mem::take(&mut inner.doomed);
            inner.doomed = std::mem::take(&mut inner.retired);
            // Defensive: never the current segment, nor one pointed at again.
            let current = inner.current;
            gone.retain(|id| *id != current && inner.segments.get(id).is_some_and(|s| s.live == 0));
            for id in &gone {
                inner.segments.remove(id);
            }
            gone
        };
        for id in gone {
            let path = self.path(id);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "value log: a freed segment was not deleted");
            }
        }
    }

    /// The sealed segment whose live share is smallest, if the log's dead
    /// bytes exceed its live ones by more than a segment and it is under
    /// half live: what [`super::Store::compact`] copies forward.
    pub fn sparse_segment(&self) -> Option<u32> {
        let inner = self.lock();
        let (total, live) = inner
            .segments
            .values()
            .fold((0, 0), |(t, l), s| (t + s.len, l + s.live));
        if total < 2 * live + self.segment_bytes {
            return None;
        }
        inner
            .segments
            .iter()
            .filter(|(id, s)| **id != inner.current && !inner.stuck.contains(id) && s.live > 0 && s.live * 2 < s.len)
            .min_by_key(|(_, s)| s.live * 1000 / s.len.max(1))
            .map(|(id, _)| *id)
    }

    /// A compaction of `id` failed: do not pick it again.
    pub fn stuck(&self, id: u32) {
        self.lock().stuck.push(id);
    }

    /// Bytes in the segments and bytes pointed at.
    pub fn usage(&self) -> (u64, u64) {
        let inner = self.lock();
        inner
            .segments
            .values()
            .fold((0, 0), |(t, l), s| (t + s.len, l + s.live))
    }

    /// The segments on disk, oldest first.
    #[cfg(test)]
    pub fn segment_ids(&self) -> Vec<u32> {
        self.lock().segments.keys().copied().collect()
    }
}

/// The payload of a record, if its header matches `loc` and its CRC holds.
fn check(loc: Loc, record: &[u8]) -> Result<Vec<u8>, ValueError> {
    let bad = |why| ValueError::Bad { loc, why };
    let (header, payload) = record.split_at(HEADER as usize);
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
    let sum = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if len != loc.len {
        return Err(bad("its length differs from the record's"));
    }
    if crc(payload) != sum {
        return Err(bad("its CRC does not match"));
    }
    Ok(payload.to_vec())
}

/// Whether the bytes of `file` from `from` to `to` are zeros short of a
/// block: what a direct write pads the last block with.
fn is_padding(file: &File, from: u64, to: u64) -> io::Result<bool> {
    if to - from >= ALIGN {
        return Ok(false);
    }
    let mut rest = vec![0; (to - from) as usize];
    file.read_exact_at(&mut rest, from)?;
    Ok(rest.iter().all(|b| *b == 0))
}

/// The length of the longest run of whole, valid records from the start.
fn whole_records(file: &File, len: u64) -> io::Result<u64> {
    let mut at = 0;
    let mut header = [0u8; HEADER as usize];
    let mut payload = Vec::new();
    while at + HEADER <= len {
        file.read_exact_at(&mut header, at)?;
        let n = u64::from(u32::from_le_bytes(header[..4].try_into().expect("4 bytes")));
        let sum = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        // A value is never empty: zeros are a hole a crash left.
        if n == 0 || at + HEADER + n > len {
            break;
        }
        payload.resize(n as usize, 0);
        file.read_exact_at(&mut payload, at + HEADER)?;
        if crc(&payload) != sum {
            break;
        }
        at += HEADER + n;
    }
    Ok(at)
}

#[cfg(test)]
mod tests;
