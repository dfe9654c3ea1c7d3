//! Catching subscribers up: the updates a resuming client missed, from the
//! resume ring and, older, regenerated from the journal, byte for byte the
//! frames first sent; never across a hot swap that would change them.

use std::collections::BTreeMap;

use super::*;

/// Quiet long enough for the match to snapshot at `seq`.
async fn quiet_until_snapshot(h: &Harness, seq: u64) {
    h.snapshot().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    h.snapshot().await;
    assert_eq!(
        h.journal.snapshot(MATCH).map(|s| s.seq),
        Some(seq),
        "a quiet match snapshots"
    );
}

/// The update frames pushed so far, by seq.
fn sent_updates(h: &mut Harness) -> BTreeMap<u64, String> {
    let mut sent = BTreeMap::new();
    while let Some(f) = h.updates.try_recv() {
        if f.kind == FrameKind::Update {
            sent.insert(f.seq, f.bytes.as_str().to_owned());
        }
    }
    sent
}

/// Resuming at `(epoch, from)` gives `resumed`, then every update up to
/// `seq`, each the frame first sent.
async fn assert_resumes_with_the_frames_sent(
    h: &Harness,
    epoch: u64,
    from: u64,
    seq: u64,
    sent: &BTreeMap<u64, String>,
) {
    let since = Some(Position { epoch, seq: from });
    let Catchup::Missed(frames) = h.ask(|reply| Command::Subscribe { since, reply }).await else {
        panic!("a current epoch resumes from {from}");
    };
    assert_eq!(frames[0].kind, FrameKind::Resumed);
    let seqs: Vec<u64> = frames[1..].iter().map(|f| f.seq).collect();
    assert_eq!(seqs, (from + 1..=seq).collect::<Vec<_>>(), "since {from}");
    for f in &frames[1..] {
        assert_eq!(
            Some(f.bytes.as_str()),
            sent.get(&f.seq).map(String::as_str),
            "seq {}",
            f.seq
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_resuming_subscriber_gets_resumed_then_exactly_what_it_missed() {
    let mut h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    // Events 1..=10, quiet long enough for a snapshot at 10, then more than
    // the ring holds: the oldest missed frames are older than the ring.
    let total = RESUME_RING as u64 + 20;
    for i in 0..total {
        h.event(odds(2.0 + i as f64 / 100.0, None)).await;
        if i == 9 {
            h.snapshot().await;
            tokio::time::sleep(Duration::from_secs(2)).await;
            h.snapshot().await;
            assert_eq!(
                h.journal.snapshot(MATCH).map(|s| s.seq),
                Some(10),
                "a quiet match snapshots"
            );
        }
    }
    let snap = h.snapshot().await;
    let (epoch, seq) = (
        snap["epoch"].as_u64().expect("epoch"),
        snap["seq"].as_u64().expect("seq"),
    );
    assert_eq!(seq, total);
    let sent = sent_updates(&mut h);
    // From before the snapshot (rebuilt from the start), from after it
    // (rebuilt from it), from inside the ring: older frames are regenerated
    // by the guest, recent ones come from the ring, and every one is the
    // frame first sent, byte for byte.
    for from in [2, 12, seq - 3] {
        assert_resumes_with_the_frames_sent(&h, epoch, from, seq, &sent).await;
    }
    // Another epoch cannot resume: a snapshot.
    let since = Some(Position {
        epoch: epoch + 1,
        seq: 2,
    });
    let catchup = h.ask(|reply| Command::Subscribe { since, reply }).await;
    assert!(matches!(catchup, Catchup::Snapshot(_)));
}

/// The v2 guest counts the events it applied since it took a match over:
/// rebuilding updates from before a switch with it would count the events
/// between that snapshot and the switch too. Such a rebuild does not reach
/// the match's state, so the client gets a snapshot; from after the switch
/// the updates are rebuilt, byte for byte.
#[tokio::test(start_paused = true)]
async fn updates_from_before_a_switch_are_not_rebuilt_by_the_new_version() {
    let mut h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    for i in 0..14 {
        h.event(odds(2.0 + i as f64 / 100.0, None)).await;
        if i == 9 {
            quiet_until_snapshot(&h, 10).await;
        }
    }
    let platform = Platform::new(Limits {
        max_instances: 8,
        memory_bytes: 16 << 20,
        call_deadline: Duration::from_millis(50),
    })
    .expect("platform");
    let v2 = platform
        .load(&std::fs::read(env!("TOUCHLINE_V2_GUEST")).expect("the v2 guest (make guest)"))
        .expect("loads");
    let outcome = h
        .ask(|reply| Command::Switch {
            version: v2,
            probation: false,
            reply,
        })
        .await;
    assert!(matches!(outcome, SwitchOutcome::Switched { .. }), "{outcome:?}");
    let total = 14 + RESUME_RING as u64 + 10;
    for i in 14..total {
        h.event(odds(2.0 + i as f64 / 100.0, None)).await;
    }
    let snap = h.snapshot().await;
    let epoch = snap["epoch"].as_u64().expect("epoch");
    assert_eq!(snap["seq"].as_u64(), Some(total));
    let sent = sent_updates(&mut h);
    let since = Some(Position { epoch, seq: 12 });
    let catchup = h.ask(|reply| Command::Subscribe { since, reply }).await;
    assert!(
        matches!(catchup, Catchup::Snapshot(_)),
        "from before the switch: {catchup:?}"
    );
    assert_resumes_with_the_frames_sent(&h, epoch, 16, total, &sent).await;
}

const NAP: Duration = Duration::from_millis(100);

/// A match napping after six updates (the harness's settings as `tweak`
/// changes them, napping after [`NAP`]): it, its epoch and seq, and the
/// update frames it sent.
async fn napping_after_six_updates(
    tweak: impl FnOnce(&mut WorkerConfig),
) -> (Harness, u64, u64, BTreeMap<u64, String>) {
    let mut h = Harness::start_with(GuestVersion::native(), MemoryJournal::shared(1), None, |c| {
        c.nap_after = Some(NAP);
        tweak(c);
    });
    for i in 0..6 {
        h.event(odds(2.0 + f64::from(i) / 10.0, Some(7))).await;
    }
    let snap = h.snapshot().await;
    let (epoch, seq) = (
        snap["epoch"].as_u64().expect("epoch"),
        snap["seq"].as_u64().expect("seq"),
    );
    let sent = sent_updates(&mut h);
    tokio::time::sleep(NAP * 2).await;
    assert_eq!(h.metrics.napping_matches.get(), 1);
    (h, epoch, seq, sent)
}

#[tokio::test(start_paused = true)]
async fn a_client_resuming_from_a_napping_match_gets_the_frames_first_sent_rebuilt_from_the_journal() {
    let (mut h, epoch, seq, sent) = napping_after_six_updates(|_| {}).await;
    let card = h.ask(|reply| Command::Inspect { detail: false, reply }).await.card;
    let base = h
        .journal
        .stored_snapshot(MATCH)
        .expect("read")
        .expect("the nap's")
        .state
        .len();
    assert_eq!(card.memory_bytes, base, "no resume ring kept while it naps");
    assert_resumes_with_the_frames_sent(&h, epoch, 2, seq, &sent).await;
    // Woken by the resume, it applies the next event into a new ring, and
    // a resume reaches across the rebuilt frames and the ring.
    h.event(odds(3.0, Some(7))).await;
    assert_eq!(h.snapshot().await["seq"].as_u64(), Some(seq + 1), "applied");
    let sent = sent_updates(&mut h).into_iter().chain(sent).collect();
    assert_resumes_with_the_frames_sent(&h, epoch, 1, seq + 1, &sent).await;
    // Napping again, it drops the rebuilt frames with its ring.
    tokio::time::sleep(NAP * 2).await;
    assert_eq!(h.metrics.napping_matches.get(), 1);
    let card = h.ask(|reply| Command::Inspect { detail: false, reply }).await.card;
    let base = h.journal.stored_snapshot(MATCH).expect("read").expect("the nap's");
    assert_eq!((base.seq, card.memory_bytes), (seq + 1, base.state.len()));
}

#[tokio::test(start_paused = true)]
async fn a_napping_match_with_no_journal_keeps_its_ring_for_resuming_clients() {
    let (h, epoch, seq, sent) = napping_after_six_updates(|c| c.journal = None).await;
    // Nothing could rebuild them: the ring is where they are.
    assert_resumes_with_the_frames_sent(&h, epoch, 2, seq, &sent).await;
}
