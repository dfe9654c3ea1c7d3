//! The current segment's appender: records go to the device with
//! `O_DIRECT`, from a buffer the writer keeps, instead of being copied
//! into the page cache.
//!
//! Why: every value is written once and read back rarely (a wake, a
//! catch-up, a restart), so the page cache only cost the copy into pages
//! it had to allocate first. On this machine's VM a page the guest has not
//! touched lately is dear to allocate: the copy (`copy_folio_from_iter_atomic`
//! under `pwrite`) took 8.5–12.5% of the server's samples in three profiles
//! of the pipeline at 1,000 matches (0.7% and 2.0% in two earlier ones),
//! and a loop writing 2 GB in 1 MiB `pwrite`s took 13.2 s of CPU into a
//! fresh file against 0.4 s overwriting the same file's cached pages.
//!
//! Direct I/O wants offsets, lengths and buffer addresses in multiples of
//! [`ALIGN`]. The appender keeps the segment's last partial block (`tail`)
//! and writes it again in front of the new records, padded with zeros to a
//! whole block. So a segment's file may end in up to `ALIGN - 1` zeros past
//! its last record: a record of length 0 ends the log at open anyway, and a
//! sealed segment is cut to its records (`ValueLog::sync`).
//!
//! A file system that refuses `O_DIRECT` (at open, or `EINVAL` at the
//! first write) gets buffered writes instead, for that segment.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Offsets, lengths and addresses of direct writes are multiples of this
/// (the largest logical block size of the devices this runs on).
pub const ALIGN: u64 = 4096;

/// A write buffer larger than this is not kept for the next write.
const KEEP_BYTES: usize = 4 << 20;

/// Writes the current segment (writer only).
#[derive(Debug)]
pub struct Appender {
    /// The segment opened with `O_DIRECT`; `None`: written through the
    /// segment's own file, buffered.
    direct: Option<File>,
    /// The segment's bytes from the last block boundary at or before its
    /// end to its end (fewer than `ALIGN`).
    tail: Vec<u8>,
    /// Holds the aligned window written; kept from write to write.
    buf: Vec<u8>,
    /// A direct write took: from then on `EINVAL` is not a refusal.
    wrote_direct: bool,
    /// The next sync fails (tests).
    #[cfg(test)]
    fail_next_sync: bool,
}

fn o_direct() -> i32 {
    rustix::fs::OFlags::DIRECT.bits() as i32
}

fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

impl Appender {
    /// For the segment at `path` (open as `file`) whose records end at
    /// `len`.
    pub fn open(path: &Path, file: &File, len: u64) -> io::Result<Appender> {
        let direct = match OpenOptions::new().write(true).custom_flags(o_direct()).open(path) {
            Ok(f) => Some(f),
            Err(e) if refused(&e) => {
                tracing::info!(path = %path.display(), "value log: no O_DIRECT here, buffered writes");
                None
            }
            Err(e) => return Err(e),
        };
        let base = len - len % ALIGN;
        let mut tail = vec![0; (len - base) as usize];
        file.read_exact_at(&mut tail, base)?;
        Ok(Appender {
            direct,
            tail,
            buf: Vec::new(),
            wrote_direct: false,
            #[cfg(test)]
            fail_next_sync: false,
        })
    }

    /// Whether writes bypass the page cache.
    #[cfg(test)]
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Write `records` at `len`, the segment's end, and make them durable.
    /// On failure nothing changed here: the same call may be made again
    /// (the tail moves only once the records are durable, or a retry would
    /// write a failed write's tail over durable records).
    pub fn append(&mut self, file: &File, len: u64, records: &[u8]) -> io::Result<()> {
        if let Some(direct) = self.direct.take() {
            match self.write_direct(&direct, len, records) {
                // Refused before any direct write took: the file system's
                // answer. Later, `EINVAL` is an error like any other.
                Err(e) if refused(&e) && !self.wrote_direct => {
                    tracing::info!(error = %e, "value log: O_DIRECT refused, buffered writes");
                }
                written => {
                    let synced = written.and_then(|()| self.sync_data(&direct));
                    self.direct = Some(direct);
                    synced?;
                    self.wrote_direct = true;
                    self.advance_tail(len + records.len() as u64, records);
                    return Ok(());
                }
            }
        }
        file.write_all_at(records, len)?;
        file.sync_data()
    }

    /// Move the tail to `end`, `records` being the last bytes up to it
    /// (in place: one commit after another, no allocation).
    fn advance_tail(&mut self, end: u64, records: &[u8]) {
        let keep = (end % ALIGN) as usize;
        match keep.checked_sub(records.len()) {
            Some(from_old) => {
                self.tail.drain(..self.tail.len() - from_old);
            }
            None => self.tail.clear(),
        }
        self.tail
            .extend_from_slice(&records[records.len().saturating_sub(keep)..]);
    }

    fn sync_data(&mut self, direct: &File) -> io::Result<()> {
        #[cfg(test)]
        if std::mem::take(&mut self.fail_next_sync) {
            return Err(io::Error::other("a sync failure the test asked for"));
        }
        direct.sync_data()
    }

    fn write_direct(&mut self, direct: &File, len: u64, records: &[u8]) -> io::Result<()> {
        let base = len
            .checked_sub(self.tail.len() as u64)
            .filter(|b| b % ALIGN == 0)
            .ok_or_else(|| io::Error::other("value log: the appender's tail is out of step with the segment's end"))?;
        let used = self.tail.len() + records.len();
        let size = used.next_multiple_of(ALIGN as usize);
        let mut buf = std::mem::take(&mut self.buf);
        if buf.len() < size + ALIGN as usize {
            buf = vec![0; size + ALIGN as usize];
        }
        let start = buf.as_ptr().align_offset(ALIGN as usize);
        let out = &mut buf[start..start + size];
        out[..self.tail.len()].copy_from_slice(&self.tail);
        out[self.tail.len()..used].copy_from_slice(records);
        out[used..].fill(0);
        let written = direct.write_all_at(out, base);
        if buf.len() <= KEEP_BYTES {
            self.buf = buf;
        }
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new, empty segment file in a directory of its own.
    fn segment() -> (tempfile::TempDir, std::path::PathBuf, File) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("00000001.vlog");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        (dir, path, file)
    }

    /// Appends of every size, across block boundaries and through the
    /// rewritten tail, leave exactly the records in the file, then zeros
    /// short of a block; the data dir's file system takes `O_DIRECT`.
    #[test]
    fn appends_leave_the_records_and_padding_short_of_a_block() {
        let (_dir, path, file) = segment();
        let mut appender = Appender::open(&path, &file, 0).expect("appender");
        assert!(appender.is_direct(), "tests run on a file system with O_DIRECT");
        let mut want = Vec::new();
        for n in [1usize, 7, 4095, 4096, 4097, 1, 12_000, 3, 8192, 100] {
            let records: Vec<u8> = (0..n).map(|i| (i * 31 + n) as u8 | 1).collect();
            appender.append(&file, want.len() as u64, &records).expect("append");
            want.extend_from_slice(&records);
            let mut got = std::fs::read(&path).expect("read");
            assert_eq!(got.len() as u64 % ALIGN, 0, "a direct write ends at a block");
            assert!(got.len() - want.len() < ALIGN as usize);
            assert!(got[want.len()..].iter().all(|b| *b == 0), "padded with zeros");
            got.truncate(want.len());
            assert!(got == want, "the records, in order, after {} bytes", want.len());
        }
        // A reopened segment goes on from its tail.
        drop(appender);
        let mut appender = Appender::open(&path, &file, want.len() as u64).expect("reopen");
        appender.append(&file, want.len() as u64, b"after").expect("append");
        want.extend_from_slice(b"after");
        let got = std::fs::read(&path).expect("read");
        assert!(got[..want.len()] == want[..]);
    }

    /// A sync that fails leaves the tail where the durable records end: the
    /// retry writes the same block again, and what was durable stays.
    #[test]
    fn a_retry_after_a_failed_sync_keeps_what_was_durable() {
        let (_dir, path, file) = segment();
        let mut appender = Appender::open(&path, &file, 0).expect("appender");
        let durable = vec![7u8; 100];
        appender.append(&file, 0, &durable).expect("append");
        // A write crossing a block, whose sync fails.
        let failed: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8 | 1).collect();
        appender.fail_next_sync = true;
        appender.append(&file, 100, &failed).expect_err("the sync fails");
        // The writer retries with what came since behind it.
        let mut retry = failed.clone();
        retry.extend_from_slice(b"since");
        appender.append(&file, 100, &retry).expect("retry");
        let got = std::fs::read(&path).expect("read");
        assert!(got[..100] == durable[..], "the durable records are as they were");
        assert!(got[100..100 + retry.len()] == retry[..]);
    }
}
