//! A hibernated match gives its base back to the store only once the store
//! has it durably, wakes from the stored one, and is resumed from the
//! journal without its ring.

use std::time::Duration;

use super::super::tests::{Harness, MATCH, odds, odds_in};
use super::super::{Catchup, Command, FrameKind, Position};
use crate::journal::memory::MemoryJournal;
use crate::journal::{Journal, MatchMeta, Op, SnapshotRecord};
use crate::sandbox::GuestVersion;

/// Past clean_after (1 s) and hibernate_after (30 s) of the harness.
const ASLEEP: Duration = Duration::from_secs(40);

/// Replace the stored snapshot with one at `seq` whose market 1 is at
/// `odds_now`: a match that wakes from the store shows it.
fn store_other_state(h: &Harness, seq: u64, odds_now: f64) {
    store_state(&h.journal, seq, odds_now);
}

fn store_state(journal: &MemoryJournal, seq: u64, odds_now: f64) {
    let native = GuestVersion::native();
    let mut i = native.instantiate(MATCH.into()).expect("native");
    i.apply(&touchline_guest::encode(&odds(odds_now, None)))
        .expect("applies");
    let record = SnapshotRecord {
        seq,
        epoch: 1,
        state: i.save_state().expect("saves"),
        guest: native.version().to_owned(),
        state_version: native.state_version(),
    };
    journal
        .try_write(Op::Snapshot {
            match_id: MATCH.into(),
            record,
        })
        .expect("written");
}

#[tokio::test(start_paused = true)]
async fn asleep_it_gives_its_base_back_and_wakes_from_the_stored_one() {
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    tokio::time::sleep(ASLEEP).await;
    assert_eq!(h.metrics.hibernated_matches.get(), 1);
    store_other_state(&h, 1, 7.0);
    let snap = h.snapshot().await;
    assert_eq!(
        (snap["seq"].as_u64(), odds_in(&snap)),
        (Some(1), Some(7.0)),
        "woke from the store"
    );
    h.event(odds(2.5, None)).await;
    let snap = h.snapshot().await;
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(2), Some(2.5)));
}

#[tokio::test(start_paused = true)]
async fn a_store_that_refuses_its_writes_leaves_the_base_in_memory() {
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    h.snapshot().await;
    h.journal.fail_writes_of(Some(MATCH));
    tokio::time::sleep(ASLEEP).await;
    assert_eq!(h.metrics.hibernated_matches.get(), 1);
    h.journal.fail_writes_of(None);
    store_other_state(&h, 1, 7.0);
    let snap = h.snapshot().await;
    assert_eq!(odds_in(&snap), Some(2.0), "woke from its own copy");
}

#[tokio::test(start_paused = true)]
async fn a_client_resumes_a_sleeping_match_from_the_journal() {
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    for o in [2.0, 2.5, 3.0] {
        h.event(odds(o, None)).await;
    }
    let epoch = h.snapshot().await["epoch"].as_u64().expect("epoch");
    tokio::time::sleep(ASLEEP).await;
    assert_eq!(h.metrics.hibernated_matches.get(), 1);
    let since = Some(Position { epoch, seq: 1 });
    let Catchup::Missed(frames) = h.ask(|reply| Command::Subscribe { since, reply }).await else {
        panic!("a current epoch resumes");
    };
    let got: Vec<(FrameKind, u64)> = frames.iter().map(|f| (f.kind, f.seq)).collect();
    assert_eq!(
        got,
        [(FrameKind::Resumed, 1), (FrameKind::Update, 2), (FrameKind::Update, 3)]
    );
}

/// A match restored without a journal (a cluster's node restores from
/// JetStream) has no store to read its base back from: asleep, it keeps
/// it, and its next event runs on it.
#[tokio::test(start_paused = true)]
async fn restored_without_a_journal_it_keeps_its_base_asleep() {
    let journal = MemoryJournal::shared(1);
    store_state(&journal, 1, 7.0);
    let meta = MatchMeta {
        epoch: 1,
        clean_seq: Some(1),
        quarantined: None,
        guest: None,
    };
    journal
        .try_write(Op::Meta {
            match_id: MATCH.into(),
            meta,
        })
        .expect("written");
    let recovered = journal.recover(MATCH).expect("a snapshot to restore");
    let h = Harness::start_with(GuestVersion::native(), journal, Some(recovered), |c| c.journal = None);
    tokio::time::sleep(ASLEEP).await;
    assert_eq!(h.metrics.hibernated_matches.get(), 1, "asleep");
    h.event(odds(2.5, None)).await;
    let snap = h.snapshot().await;
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(2), Some(2.5)));
    assert!(snap["quarantined"].is_null(), "{snap}");
}
