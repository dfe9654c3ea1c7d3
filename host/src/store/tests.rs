//! Record encodings of the store: byte fields, records written before hot
//! swap, borrowed and owned journal entries encode alike. Also the helpers
//! the store's other tests share (opening again, records, appends).

use super::*;

/// Byte fields written as bytes (`serde_bytes`) are what they were as
/// sequences of `u8`: stores written before read the same.
#[test]
fn byte_fields_keep_their_wire_format() {
    #[derive(Serialize)]
    struct AsSeq<'a> {
        event: &'a [u8],
        frame: &'a str,
    }
    let event: Vec<u8> = (0..=255).chain(0..300u16).map(|b| b as u8).collect();
    let before = enc(&AsSeq {
        event: &event,
        frame: "{}",
    });
    let now = enc(&JournalEntryRef {
        event: &event,
        frame: "{}",
    });
    assert_eq!(before, now);
    let read: JournalEntry = touchline_guest::decode(&before).expect("decodes");
    assert_eq!(read.event, event);
}

#[test]
fn records_from_before_hot_swap_still_decode() {
    #[derive(Serialize)]
    struct OldMeta {
        epoch: u64,
        clean_seq: Option<u64>,
        quarantined: Option<String>,
    }
    #[derive(Serialize)]
    struct OldSnapshot {
        seq: u64,
        epoch: u64,
        state: Vec<u8>,
    }
    let old = OldMeta {
        epoch: 3,
        clean_seq: Some(7),
        quarantined: None,
    };
    let meta = dec_meta(b"m", &enc(&old)).expect("old meta");
    assert_eq!((meta.epoch, meta.clean_seq, meta.guest), (3, Some(7), None));
    let old = OldSnapshot {
        seq: 7,
        epoch: 3,
        state: vec![1, 2],
    };
    let snap = dec_snapshot(b"m", &enc(&old)).expect("old snapshot");
    assert_eq!((snap.seq, snap.state_version, snap.guest.as_str()), (7, 1, ""));
    let new = MatchMeta {
        epoch: 1,
        clean_seq: None,
        quarantined: Some("q".into()),
        guest: Some("abc".into()),
    };
    assert_eq!(dec_meta(b"m", &enc(&new)).expect("new meta"), new);
    let new = SnapshotRecord {
        seq: 9,
        epoch: 2,
        state: vec![3],
        guest: "abc".into(),
        state_version: 2,
    };
    assert_eq!(dec_snapshot(b"m", &enc(&new)).expect("new snapshot"), new);
}

#[test]
fn borrowed_journal_entry_encodes_as_the_owned_one() {
    let owned = JournalEntry {
        event: vec![1, 2, 3],
        frame: "{\"type\":\"update\"}".to_owned(),
    };
    let borrowed = JournalEntryRef {
        event: &owned.event,
        frame: &owned.frame,
    };
    assert_eq!(enc(&borrowed), enc(&owned));
    let back: JournalEntry = touchline_guest::decode(&enc(&borrowed)).expect("decode");
    assert_eq!(back, owned);
}

/// Open the store in `dir` once this process's earlier handle let go.
/// sled gives its file lock back only when its background threads
/// drop their last reference, a moment after the handle itself is
/// dropped (CI once saw `WouldBlock`), so the lock error is waited out
/// with a deadline; any other error fails at once.
pub(crate) fn open_once_released(dir: &std::path::Path) -> Store {
    open_sized_once_released(dir, values::SEGMENT_BYTES)
}

/// [`open_once_released`] with the value log's segments sealed at
/// `segment_bytes`.
pub(crate) fn open_sized_once_released(dir: &std::path::Path, segment_bytes: u64) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open_sized(dir, 0, DEFAULT_CACHE_BYTES, segment_bytes) {
            Ok(store) => return store,
            Err(e @ StoreError::Open { .. })
                if e.to_string().contains("could not acquire lock") || format!("{e:?}").contains("WouldBlock") =>
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the lock was never released: {e:?}"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(e) => panic!("open: {e:?}"),
        }
    }
}

/// Write `bytes` over `path` at `at`: a crash's or a disk's damage.
pub(crate) fn overwrite(path: &std::path::Path, at: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).expect("segment");
    file.write_all_at(bytes, at).expect("write");
}

/// A snapshot record at `seq` whose state is the seq's bytes.
pub(crate) fn record(seq: u64) -> SnapshotRecord {
    SnapshotRecord {
        seq,
        epoch: 1,
        state: seq.to_be_bytes().to_vec(),
        guest: "g".into(),
        state_version: 4,
    }
}

/// Journal `event {seq}` for match `m`, padded with dots to `len` bytes
/// (after a space) when `len` is longer.
pub(crate) fn append(store: &Store, m: &str, seq: u64, len: usize) {
    let mut event = format!("event {seq}").into_bytes();
    if len > event.len() {
        event.push(b' ');
        event.resize(len.max(event.len()), b'.');
    }
    store
        .apply(Op::Append {
            match_id: m.into(),
            seq,
            event: event.into(),
        })
        .expect("append");
}

/// Store [`record`]`(seq)` as match `m`'s snapshot.
pub(crate) fn snapshot(store: &Store, m: &str, seq: u64) {
    store
        .apply(Op::Snapshot {
            match_id: m.into(),
            record: record(seq),
        })
        .expect("snapshot");
}
