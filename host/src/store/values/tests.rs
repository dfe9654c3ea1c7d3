//! The value log alone: reads before and after a sync and a reopen, a torn
//! tail cut at open, a corrupt record refused, segments sealed, freed and
//! deleted two flushes later.

use super::*;
use crate::store::tests::overwrite;

fn value(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|b| (b as u32 ^ i) as u8).collect()
}

#[test]
fn a_value_reads_back_pending_synced_and_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = ValueLog::open(dir.path()).expect("open");
    let locs: Vec<Loc> = (0..50).map(|i| log.put(&value(i, 100 + i as usize))).collect();
    for (i, loc) in locs.iter().enumerate() {
        assert_eq!(log.get(*loc).expect("pending"), value(i as u32, 100 + i));
        assert_eq!(Loc::from_bytes(&loc.to_bytes()), Some(*loc));
    }
    log.sync().expect("sync");
    let more = log.put(b"after the sync");
    assert_eq!(log.get(locs[7]).expect("synced"), value(7, 107));
    assert_eq!(log.get(more).expect("pending"), b"after the sync");
    log.sync().expect("sync");
    drop(log);
    let log = ValueLog::open(dir.path()).expect("reopen");
    for (i, loc) in locs.iter().enumerate() {
        assert!(log.holds(*loc));
        assert_eq!(log.get(*loc).expect("reopened"), value(i as u32, 100 + i));
    }
    assert_eq!(log.get(more).expect("reopened"), b"after the sync");
    // What comes next goes after them.
    let next = log.put(b"next");
    assert_eq!(next.off, more.off + 8 + 14);
}

#[test]
fn what_was_never_synced_is_not_held_after_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = ValueLog::open(dir.path()).expect("open");
    let kept = log.put(b"kept");
    log.sync().expect("sync");
    let lost = log.put(b"lost: the process died before the sync");
    drop(log);
    let log = ValueLog::open(dir.path()).expect("reopen");
    assert!(log.holds(kept));
    assert!(!log.holds(lost));
    // Its place is taken by the next value, which reads as itself.
    let next = log.put(b"next");
    assert_eq!(next.off, lost.off);
    log.sync().expect("sync");
    assert_eq!(log.get(next).expect("read"), b"next");
}

#[test]
fn a_torn_record_is_cut_off_at_open_and_a_corrupt_one_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = ValueLog::open(dir.path()).expect("open");
    let a = log.put(&value(1, 300));
    let b = log.put(&value(2, 300));
    log.sync().expect("sync");
    drop(log);
    let path = dir.path().join("00000001.vlog");
    // Half of a third record's header and payload, as a crash would leave.
    let mut torn = 200u32.to_le_bytes().to_vec();
    torn.extend_from_slice(&[0xAB; 40]);
    overwrite(&path, b.end(), &torn);
    // And one byte of b's payload flipped.
    overwrite(&path, b.off + 8 + 10, &[0xFF]);
    let log = ValueLog::open(dir.path()).expect("reopen");
    // The cut stops at the first record that does not check: b.
    assert_eq!(std::fs::metadata(&path).expect("stat").len(), a.end());
    assert!(log.holds(a));
    assert!(!log.holds(b));
    assert_eq!(log.get(a).expect("read"), value(1, 300));
    // A location past the end, or of another length, is refused.
    assert!(matches!(log.get(b), Err(ValueError::Bad { .. })));
    let wrong = Loc { len: 299, ..a };
    assert!(matches!(log.get(wrong), Err(ValueError::Bad { .. })));
}

#[test]
fn a_corrupt_record_in_a_sealed_segment_is_refused_on_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = ValueLog::open(dir.path()).expect("open");
    let a = log.put(&value(1, 300));
    log.sync().expect("sync");
    overwrite(&dir.path().join("00000001.vlog"), a.off + 8 + 3, &[0x00]);
    let err = log.get(a).expect_err("corrupt");
    assert!(err.to_string().contains("CRC"), "{err}");
}

#[test]
fn segments_are_sealed_and_deleted_two_flushes_after_nothing_points_at_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = ValueLog::open_sized(dir.path(), 4096).expect("open");
    let first: Vec<Loc> = (0..8).map(|i| log.put(&value(i, 600))).collect();
    log.sync().expect("sync");
    assert_eq!(log.segment_ids(), vec![1, 2]);
    // Sealed, it is cut to its records (a direct write padded its last
    // block with zeros).
    let sealed = std::fs::metadata(dir.path().join("00000001.vlog")).expect("stat");
    assert_eq!(sealed.len(), first[7].end());
    let second = log.put(&value(9, 600));
    log.sync().expect("sync");
    assert_eq!(second.seg, 2);
    for loc in &first[..7] {
        log.free(*loc);
    }
    log.after_flush();
    log.after_flush();
    assert_eq!(log.segment_ids(), vec![1, 2], "one value still points into 1");
    log.free(first[7]);
    // A reader that found the location just before still reads it until
    // the second flush.
    log.after_flush();
    assert_eq!(log.get(first[7]).expect("still there"), value(7, 600));
    log.after_flush();
    assert_eq!(log.segment_ids(), vec![2]);
    assert!(!dir.path().join("00000001.vlog").exists());
    assert!(matches!(log.get(first[7]), Err(ValueError::Gone(1))));
    assert_eq!(log.get(second).expect("read"), value(9, 600));
    drop(log);
    let log = ValueLog::open_sized(dir.path(), 4096).expect("reopen");
    assert_eq!(log.segment_ids(), vec![2]);
    assert_eq!(log.put(b"x").seg, 2);
}

#[test]
fn a_sparse_segment_is_found_only_when_the_dead_bytes_are_worth_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = ValueLog::open_sized(dir.path(), 4096).expect("open");
    let locs: Vec<Loc> = (0..40)
        .map(|i| {
            let loc = log.put(&value(i, 600));
            log.sync().expect("sync");
            loc
        })
        .collect();
    assert_eq!(log.sparse_segment(), None, "all live");
    // Free all but the first value of each segment.
    for pair in locs.windows(2) {
        if pair[0].seg == pair[1].seg {
            log.free(pair[1]);
        }
    }
    let (total, live) = log.usage();
    assert!(total > 2 * live + 4096, "{total} {live}");
    let sparse = log.sparse_segment().expect("a sparse segment");
    assert_ne!(sparse, *log.segment_ids().last().expect("current"));
}

/// Zeros where a record should be (a crash wrote a later page back before
/// an earlier one) end the log at open, even if a whole record follows.
#[test]
fn a_hole_of_zeros_ends_the_log_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = ValueLog::open(dir.path()).expect("open");
    let a = log.put(&value(1, 100));
    let b = log.put(&value(2, 100));
    let c = log.put(&value(3, 100));
    log.sync().expect("sync");
    drop(log);
    overwrite(&dir.path().join("00000001.vlog"), b.off, &[0; 108]);
    let log = ValueLog::open(dir.path()).expect("reopen");
    assert!(log.holds(a));
    assert!(!log.holds(b));
    assert!(!log.holds(c));
}
