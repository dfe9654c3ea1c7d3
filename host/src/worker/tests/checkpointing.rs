//! The in-memory checkpoint (`worker::checkpoint`), on the real
//! fault-injection guest: what a restart replays after it, and when it is
//! taken (idle or one command queued; not under a backlog, the match's or
//! the server's).

use super::*;

#[tokio::test(start_paused = true)]
async fn a_restart_replays_only_what_came_after_the_in_memory_checkpoint_and_reaches_the_same_state() {
    let (trapped, calm) = (
        Harness::start(faulty(), MemoryJournal::shared(1), None),
        Harness::start(faulty(), MemoryJournal::shared(1), None),
    );
    // 40 events: under the 100 that make a snapshot, so all are in the tail.
    for i in 0..40 {
        let o = 1.5 + f64::from(i) / 100.0;
        trapped.event(odds(o, None)).await;
        calm.event(odds(o, None)).await;
    }
    // Queued together (the worker runs only once the test waits), with the
    // snapshot's request behind them: after the 40th one command waits, and
    // the first save is always due, so a checkpoint covers all 40.
    trapped.snapshot().await;
    trapped.event(odds(9.0, PANIC)).await;
    let (a, b) = (trapped.snapshot().await, calm.snapshot().await);
    assert_eq!((a["seq"].as_u64(), odds_in(&a)), (Some(40), Some(1.89)));
    assert_eq!(
        a["state"], b["state"],
        "rebuilt from the checkpoint: the state of the calm twin"
    );
    // Two rebuilds (after the first trap, after the dead letter), each of
    // what came after the checkpoint: nothing. Without it both would
    // replay all 40.
    assert_eq!(replayed(&trapped), (2.0, 0.0));
}

/// The replayed-events histogram's (count, sum) so far.
fn replayed(h: &Harness) -> (f64, f64) {
    use touchline_testkit::metrics::value;
    let text = h.metrics.render();
    (
        value(&text, "touchline_recovery_replayed_events_count"),
        value(&text, "touchline_recovery_replayed_events_sum"),
    )
}

/// A match fed 20 events with a poison event right behind them and
/// `after` events behind the poison, all queued at once (the worker runs
/// only once the test waits). The rebuilds' (count, replayed events) once
/// the poison is dead-lettered, and the match's seq then. The only
/// checkpoint that can be taken is after the 20th (before it, at least
/// two commands wait), and as the match's first save it is always due,
/// whatever the guest's speed. `feed_behind`: the server is behind its
/// feed ([`crate::worker::FeedBehind`]) throughout.
async fn crash_in_a_burst(after: usize, feed_behind: bool) -> ((f64, f64), Option<u64>) {
    let mut h = Harness::start(faulty(), MemoryJournal::shared(1), None);
    h.feed_behind.set(feed_behind);
    for i in 0..20 {
        h.event(odds(2.0 + f64::from(i) / 100.0, None)).await;
    }
    h.event(odds(9.0, PANIC)).await;
    for _ in 0..after {
        h.event(odds(3.0, None)).await;
    }
    assert_eq!(h.next_status().await.0, "dead_letter");
    // Its reply: both rebuilds (after the trap, after the dead letter) and
    // the events behind the poison are done.
    let seq = h.snapshot().await["seq"].as_u64();
    (replayed(&h), seq)
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_is_taken_with_one_command_queued_but_not_under_a_backlog() {
    // Nothing behind the poison: once the 20th event is applied one
    // command waits (the poison). A burst, not a backlog: the checkpoint
    // covers all 20 and neither rebuild replays anything. With
    // checkpoints only in an empty mailbox, both replayed the 20.
    assert_eq!(crash_in_a_burst(0, false).await, ((2.0, 0.0), Some(20)));
    // One more event behind the poison: two commands wait after the 20th,
    // a backlog, so no checkpoint, and each rebuild replays all 20 from
    // the empty model.
    assert_eq!(crash_in_a_burst(1, false).await, ((2.0, 40.0), Some(21)));
}

#[tokio::test(start_paused = true)]
async fn no_checkpoint_is_taken_while_the_server_is_behind_its_feed() {
    // As the burst above that is covered, but the feed reader found more
    // waiting (the server's backlog, not the match's): no checkpoint.
    assert_eq!(crash_in_a_burst(0, true).await, ((2.0, 40.0), Some(20)));
}
