//! Hot swap in process: first-event probation, going back, and sleeping
//! matches switched without waking.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_failed_first_event_after_a_switch_goes_back_and_applies_it_there() {
    let mut h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    let new = faulty();
    let outcome = h.switch_on_probation(&new).await;
    assert!(matches!(outcome, SwitchOutcome::Switched { .. }), "{outcome:?}");
    h.event(odds(4.0, PANIC)).await;
    let snap = h.snapshot().await;
    assert_eq!(snap["guest_version"], "native", "back on the old version");
    assert_eq!(
        (snap["seq"].as_u64(), odds_in(&snap)),
        (Some(2), Some(4.0)),
        "applied there"
    );
    let seen = h.observer.seen();
    let tail: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .skip_while(|s| *s != "probation started")
        .collect();
    let new_runs = format!("runs {}", short(new.version()));
    assert_eq!(
        tail,
        [
            "probation started",
            new_runs.as_str(),
            "runs native",
            "probation failed"
        ],
        "{seen:?}"
    );
    let statuses: Vec<String> = h.frames().into_iter().map(|f| f.2).filter(|s| !s.is_empty()).collect();
    assert_eq!(statuses, ["upgraded", "rolled_back"]);
}

#[tokio::test(start_paused = true)]
async fn a_good_first_event_ends_the_probation_on_the_new_version() {
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    let new = faulty();
    h.ask(|reply| Command::Switch {
        version: new.clone(),
        probation: true,
        reply,
    })
    .await;
    h.event(odds(3.0, None)).await;
    let snap = h.snapshot().await;
    assert_eq!(snap["guest_version"], new.version());
    assert_eq!(
        (snap["seq"].as_u64(), odds_in(&snap)),
        (Some(2), Some(3.0)),
        "the state was migrated"
    );
    assert_eq!(h.observer.seen().last().map(String::as_str), Some("probation ended"));
}

#[tokio::test(start_paused = true)]
async fn a_hibernated_match_switches_and_sleeps_again() {
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(h.metrics.hibernated_matches.get(), 1);
    let new = faulty();
    let outcome = h
        .ask(|reply| Command::Switch {
            version: new,
            probation: true,
            reply,
        })
        .await;
    assert!(matches!(outcome, SwitchOutcome::Switched { .. }), "{outcome:?}");
    assert_eq!(h.metrics.hibernated_matches.get(), 1, "asleep again at once");
    // Asleep on probation: the first event still decides.
    h.event(odds(5.0, PANIC)).await;
    let snap = h.snapshot().await;
    assert_eq!(
        (snap["guest_version"].as_str(), odds_in(&snap)),
        (Some("native"), Some(5.0))
    );
}

/// A rollout switches a sleeping match without waking it: the new version
/// migrates its state when it wakes, on probation, and a migration that
/// traps then sends it back to the old version, the event applied there.
#[tokio::test(start_paused = true)]
async fn a_sleeping_match_migrates_when_it_wakes_and_goes_back_if_that_fails() {
    const MIGRATE_TRAP: Option<u32> = Some(999_004); // in the state: the faulty guest's migrate traps
    let mut h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, MIGRATE_TRAP)).await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(h.metrics.hibernated_matches.get(), 1);
    let outcome = h
        .ask(|reply| Command::Switch {
            version: faulty(),
            probation: true,
            reply,
        })
        .await;
    assert!(
        matches!(outcome, SwitchOutcome::Switched { .. }),
        "switched without waking (the migration waits for the wake): {outcome:?}"
    );
    assert_eq!(h.metrics.hibernated_matches.get(), 1, "still asleep");
    h.event(odds(5.0, None)).await;
    let snap = h.snapshot().await;
    assert_eq!(
        (snap["guest_version"].as_str(), snap["seq"].as_u64(), odds_in(&snap)),
        (Some("native"), Some(2), Some(5.0)),
        "back on the old version, the event applied there"
    );
    let statuses: Vec<String> = h.frames().into_iter().map(|f| f.2).filter(|s| !s.is_empty()).collect();
    assert_eq!(statuses, ["upgraded", "rolled_back"]);
}

/// A rollout puts an idle live match (clean) to sleep rather than migrate
/// it at once: the new version takes its state at its next command, on
/// probation. A busy (dirty) one switches at once.
#[tokio::test(start_paused = true)]
async fn an_idle_live_match_is_switched_asleep_and_a_busy_one_at_once() {
    let idle = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    idle.event(odds(2.0, None)).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // clean, not yet asleep
    assert_eq!(idle.metrics.hibernated_matches.get(), 0);
    let new = faulty();
    let switch = |reply| Command::Switch {
        version: new.clone(),
        probation: true,
        reply,
    };
    let outcome = idle.ask(switch).await;
    assert!(matches!(outcome, SwitchOutcome::Switched { .. }), "{outcome:?}");
    assert_eq!(
        idle.metrics.hibernated_matches.get(),
        1,
        "asleep: the new version migrates at its next command"
    );
    idle.event(odds(3.0, None)).await;
    let snap = idle.snapshot().await;
    assert_eq!(snap["guest_version"], new.version());
    assert_eq!(
        (snap["seq"].as_u64(), odds_in(&snap)),
        (Some(2), Some(3.0)),
        "the state was migrated"
    );
    assert_eq!(idle.observer.seen().last().map(String::as_str), Some("probation ended"));

    let busy = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    busy.event(odds(2.0, None)).await; // dirty until clean_after
    let outcome = busy.ask(switch).await;
    assert!(matches!(outcome, SwitchOutcome::Switched { .. }), "{outcome:?}");
    assert_eq!(busy.metrics.hibernated_matches.get(), 0, "switched awake");
    assert_eq!(busy.snapshot().await["guest_version"], new.version());
}

/// A rollback reaching a match switched asleep that has not woken since
/// gives it its old version back without an instance: the base is that
/// version's own state, and the next event runs there. Both switches read
/// the base back from the store and give it back at once: the store has
/// it, so no barrier is asked (with one each, the store writer confirmed
/// what it had long made durable, and every switched match's task ran
/// again to hear it).
#[tokio::test(start_paused = true)]
async fn a_sleeping_match_switched_back_before_it_woke_stays_asleep_on_its_old_version() {
    let old = faulty();
    let h = Harness::start(old.clone(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(h.metrics.hibernated_matches.get(), 1);
    let kept = || async {
        h.ask(|reply| Command::Inspect { detail: false, reply })
            .await
            .card
            .memory_bytes
    };
    assert_eq!(kept().await, 0, "asleep, its base given back");
    let barriers = h.journal.barriers();
    let there = h.switch_on_probation(&GuestVersion::native()).await;
    assert!(matches!(there, SwitchOutcome::Switched { .. }), "{there:?}");
    assert_eq!(h.journal.meta(MATCH).expect("meta").guest.as_deref(), Some("native"));
    assert_eq!(kept().await, 0, "switched asleep: the base read back went again");
    let writes = h.journal.writes();
    let back = h.switch_back(&old).await;
    assert!(matches!(back, SwitchOutcome::Switched { .. }), "{back:?}");
    assert_eq!(h.metrics.hibernated_matches.get(), 1, "still asleep");
    assert_eq!(kept().await, 0, "switched back asleep: the same");
    assert_eq!(h.journal.barriers(), barriers, "no barrier for a base the store gave");
    assert_eq!(
        h.journal.writes() - writes,
        1,
        "the match record only: no state handed over, no snapshot"
    );
    assert_eq!(
        h.journal.meta(MATCH).expect("meta").guest.as_deref(),
        Some(old.version())
    );
    let seen = h.observer.seen();
    assert_eq!(
        seen[seen.len() - 2..],
        ["probation ended".to_owned(), format!("runs {}", &old.version()[..12])]
    );
    h.event(odds(3.0, None)).await;
    let snap = h.snapshot().await;
    assert_eq!(
        (snap["guest_version"].as_str(), snap["seq"].as_u64(), odds_in(&snap)),
        (Some(old.version()), Some(2), Some(3.0))
    );
}

/// A match switched awake that falls asleep before its first event sleeps
/// on the migrated state, not on its old version's: switched back, it
/// hands that state over as any switch does.
#[tokio::test(start_paused = true)]
async fn a_match_switched_awake_and_asleep_since_is_switched_back_the_usual_way() {
    let old = faulty();
    let h = Harness::start(old.clone(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await; // dirty: switches awake
    let there = h.switch_on_probation(&GuestVersion::native()).await;
    assert!(matches!(there, SwitchOutcome::Switched { .. }), "{there:?}");
    assert_eq!(h.metrics.hibernated_matches.get(), 0, "switched awake");
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(h.metrics.hibernated_matches.get(), 1, "asleep on probation");
    let writes = h.journal.writes();
    let back = h.switch_back(&old).await;
    assert!(matches!(back, SwitchOutcome::Switched { .. }), "{back:?}");
    assert!(
        h.journal.writes() - writes > 1,
        "the state handed over and snapshotted, not just the record"
    );
    h.event(odds(3.0, None)).await;
    let snap = h.snapshot().await;
    assert_eq!(
        (snap["guest_version"].as_str(), snap["seq"].as_u64(), odds_in(&snap)),
        (Some(old.version()), Some(2), Some(3.0))
    );
}
