//! The store over its value log: what a crash leaves, removals held until
//! the values are durable, a data dir written before the value log, and
//! sparse segments copied forward.

use crate::journal::{JournalEntry, Op, SnapshotRecord};
use crate::store::tests::{append, open_once_released, open_sized_once_released, overwrite, record, snapshot};
use crate::store::values::Loc;
use crate::store::{Store, enc, key, prefix};

fn seqs(store: &Store, m: &str) -> Vec<u64> {
    store
        .recent_events(m, 10_000)
        .expect("read")
        .into_iter()
        .map(|(s, _)| s)
        .collect()
}

/// sled writes its log on its own as well: a crash can leave it pointing at
/// values the value log never synced. Those entries go at open, with every
/// later one of their match; the rest read, and the match carries on.
#[test]
fn entries_whose_values_a_crash_took_are_dropped_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    for seq in 1..=5 {
        append(&store, "m", seq, 100);
    }
    append(&store, "other", 1, 100);
    store.flush().expect("flush");
    for seq in 6..=8 {
        append(&store, "m", seq, 100);
    }
    snapshot(&store, "m", 8);
    // sled's own flush, without the value log's sync: then the process dies.
    store.db.flush().expect("sled flush");
    assert_eq!(seqs(&store, "m"), (1..=8).collect::<Vec<_>>());
    drop(store);
    let store = open_once_released(dir.path());
    assert_eq!(seqs(&store, "m"), (1..=5).collect::<Vec<_>>());
    assert_eq!(seqs(&store, "other"), vec![1]);
    assert_eq!(store.snapshot("m").expect("read"), None);
    let h = store.history("m", 0, 5).expect("read").expect("kept");
    assert_eq!(
        h.events[4],
        b"event 5 ".iter().copied().chain([b'.'; 92]).collect::<Vec<_>>()
    );
    append(&store, "m", 6, 100);
    store.flush().expect("flush");
    drop(store);
    let store = open_once_released(dir.path());
    assert_eq!(seqs(&store, "m"), (1..=6).collect::<Vec<_>>());
}

/// A snapshot prunes older events, but sled makes those removals durable
/// only in a flush that syncs the snapshot's value first: if sled wrote
/// its log between the two, the events would be gone and the snapshot too.
#[test]
fn a_snapshots_removals_wait_for_the_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    for seq in 1..=600 {
        append(&store, "m", seq, 20);
        if seq % 50 == 0 {
            snapshot(&store, "m", seq);
        }
    }
    store.db.flush().expect("sled flush");
    assert_eq!(seqs(&store, "m").first(), Some(&1), "nothing removed before the flush");
    store.flush().expect("flush");
    // 600 − 256 = 344: the snapshot at 300 and what follows it stay.
    assert_eq!(seqs(&store, "m").first(), Some(&301));
    let kept: Vec<u64> = store
        .snapshots
        .scan_prefix(prefix("m"))
        .keys()
        .map(|k| crate::store::seq_of(&k.expect("key")))
        .collect();
    assert_eq!(kept, vec![300, 350, 400, 450, 500, 550, 600]);
}

/// A data dir written before the value log kept entries and snapshots as
/// sled values: opened now, they move into the log, read the same, and the
/// old trees are gone.
#[test]
fn a_data_dir_from_before_the_value_log_opens_and_reads_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = sled::open(dir.path()).expect("sled");
        let journal = db.open_tree("journal").expect("tree");
        let snapshots = db.open_tree("snapshots_by_seq").expect("tree");
        for seq in 1..=12u64 {
            let entry = JournalEntry {
                event: format!("old {seq}").into_bytes(),
                frame: String::new(),
            };
            journal.insert(key("m", seq), enc(&entry)).expect("insert");
        }
        snapshots.insert(key("m", 4), enc(&record(4))).expect("insert");
        db.flush().expect("flush");
    }
    let store = open_once_released(dir.path());
    for name in ["journal", "snapshots_by_seq"] {
        assert!(
            !store.db.tree_names().iter().any(|n| n.as_ref() == name.as_bytes()),
            "{name}"
        );
    }
    let h = store.history("m", 6, 12).expect("read").expect("kept");
    assert_eq!(h.base, Some(record(4)));
    assert_eq!(h.events.len(), 8);
    assert_eq!(h.events[0], b"old 5");
    drop(store);
    let store = open_once_released(dir.path());
    assert_eq!(seqs(&store, "m"), (1..=12).collect::<Vec<_>>());
    assert_eq!(store.snapshot("m").expect("read"), Some(record(4)));
}

/// Matches gone quiet keep their last events in segment after segment
/// while a busy one fills and frees them: compacting copies the quiet ones'
/// forward, so the log's files stay within twice what is live (plus a
/// few segments), and everything still reads, also after a reopen.
#[test]
fn sparse_segments_are_copied_forward_and_their_files_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    const SEG: u64 = 16 << 10;
    let store = open_sized_once_released(dir.path(), SEG);
    let mut compacted = 0;
    let mut quiet = Vec::new();
    for seq in 1..=3000 {
        append(&store, "busy", seq, 1000);
        if seq % 50 == 0 {
            snapshot(&store, "busy", seq);
        }
        if seq % 16 == 0 {
            let m = format!("quiet-{seq}");
            append(&store, &m, 1, 1000);
            quiet.push(m);
        }
        if seq % 10 == 0 {
            store.flush().expect("flush");
            compacted += usize::from(store.compact().expect("compact").is_some());
        }
    }
    store.flush().expect("flush");
    store.flush().expect("flush");
    assert!(compacted > 0);
    let (total, live) = store.values.usage();
    // The bound compaction keeps (2 × live + a segment), plus what was
    // written since the last compaction and the current segment.
    assert!(total <= 2 * live + 4 * SEG, "{total} bytes on disk for {live} live");
    let files = store.values.segment_ids().len() as u64;
    assert!(files * SEG <= total + 4 * SEG, "{files} segments for {total} bytes");
    // Without compaction every segment would stay: 3,000 events of 1 KB
    // and more were written.
    assert!(total < 1 << 20, "{total}");
    assert!(
        !store.values.segment_ids().contains(&1),
        "the first segment was copied forward"
    );
    let check = |store: &Store| {
        for m in &quiet {
            assert_eq!(seqs(store, m), vec![1], "{m}");
        }
        let h = store.history("busy", 2760, 3000).expect("read").expect("kept");
        assert_eq!(h.base_seq(), 2750);
        assert_eq!(&h.events[0][..10], b"event 2751");
    };
    check(&store);
    drop(store);
    let store = open_sized_once_released(dir.path(), SEG);
    check(&store);
}

/// A snapshot saved again at its seq (a stop, a guest switch) points its
/// key at the new value only at the flush: if sled wrote the new location
/// before the value was synced, a crash would drop the key with the old
/// value still in the log.
#[test]
fn a_snapshot_saved_again_at_its_seq_replaces_the_old_one_only_at_the_flush() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    snapshot(&store, "m", 7);
    store.flush().expect("flush");
    let again = SnapshotRecord {
        guest: "the next version".into(),
        ..record(7)
    };
    store
        .apply(Op::Snapshot {
            match_id: "m".into(),
            record: again.clone(),
        })
        .expect("snapshot");
    // Read at once as the new one...
    assert_eq!(store.snapshot("m").expect("read"), Some(again.clone()));
    // ...but sled still points at the old one: its own flush, then a crash.
    store.db.flush().expect("sled flush");
    drop(store);
    let store = open_once_released(dir.path());
    assert_eq!(store.snapshot("m").expect("read"), Some(record(7)));
    store
        .apply(Op::Snapshot {
            match_id: "m".into(),
            record: again.clone(),
        })
        .expect("snapshot");
    store.flush().expect("flush");
    drop(store);
    let store = open_once_released(dir.path());
    assert_eq!(store.snapshot("m").expect("read"), Some(again));
    let (total, live) = store.values.usage();
    assert!(live > 0 && live < total, "the old value is freed: {live} of {total}");
}

/// A segment whose values cannot all be read is not compacted, the copies
/// made before the failure are freed, and it is not tried again.
#[test]
fn a_compaction_that_fails_leaves_its_segment_and_frees_its_copies() {
    let dir = tempfile::tempdir().expect("tempdir");
    const SEG: u64 = 8 << 10;
    let store = open_sized_once_released(dir.path(), SEG);
    let mut seq = 0;
    let sparse = loop {
        seq += 1;
        append(&store, "busy", seq, 1000);
        if seq % 50 == 0 {
            snapshot(&store, "busy", seq);
        }
        if seq % 4 == 0 {
            append(&store, &format!("quiet-{seq:05}"), 1, 1000);
        }
        store.flush().expect("flush");
        if let Some(sparse) = store.values.sparse_segment() {
            break sparse;
        }
        assert!(seq < 5000, "no segment became sparse");
    };
    // The last of its values a compaction would copy is corrupted.
    let in_it: Vec<Loc> = store
        .journal
        .iter()
        .values()
        .filter_map(|v| Loc::from_bytes(&v.expect("value")))
        .filter(|l| l.seg == sparse)
        .collect();
    assert!(in_it.len() >= 2, "{in_it:?}");
    let last = in_it.last().expect("one");
    let path = dir.path().join("values").join(format!("{sparse:08}.vlog"));
    overwrite(&path, last.off + 8 + 20, &[0xFF; 4]);
    let before = store.values.usage();
    assert!(store.compact().is_err());
    assert_eq!(store.values.usage(), before, "the copies made are freed");
    assert_ne!(store.values.sparse_segment(), Some(sparse));
    assert_eq!(seqs(&store, "quiet-00004"), vec![1]);
}
