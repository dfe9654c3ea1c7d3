//! The operator console's view of a worker and its actions on it: cards
//! answered without waking a sleeping match, quarantine by hand, hibernate
//! and wake on an operator's word, one dead letter replayed (with the raw
//! feed message kept beside it).

use super::*;

impl Harness {
    pub(super) async fn card(&self) -> Card {
        self.ask(|reply| Command::Inspect { detail: false, reply }).await.card
    }

    pub(super) async fn operate(&self, action: Action) -> Result<String, Refusal> {
        self.ask(|reply| Command::Operate { action, reply }).await
    }

    async fn event_from(&self, event: MatchEvent, raw: &str) {
        self.mailbox
            .send(Command::Event {
                event,
                routed: std::time::Instant::now(),
                raw: Some(bytes::Bytes::from(raw.to_owned())),
                position: None,
            })
            .await
            .expect("worker alive");
    }
}

#[tokio::test(start_paused = true)]
async fn a_card_is_answered_without_waking_a_sleeping_match() {
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    let card = h.card().await;
    assert_eq!((card.state, card.seq, card.epoch), ("live", 1, 1));
    assert_eq!(card.restarts, 0);
    assert!(card.last_error.is_none());
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(h.metrics.hibernated_matches.get(), 1);
    let card = h.card().await;
    assert_eq!((card.state, card.seq), ("hibernated", 1));
    assert_eq!(
        h.metrics.hibernated_matches.get(),
        1,
        "still asleep after the inspection"
    );
    assert!(
        h.metrics.render().contains("touchline_wake_seconds_count 0"),
        "never woken"
    );
}

#[tokio::test(start_paused = true)]
async fn hibernate_and_wake_on_an_operators_word() {
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    // Dirty (just pushed): marked clean first, then asleep.
    assert_eq!(h.operate(Action::Hibernate).await, Ok("hibernated at seq 1".into()));
    assert_eq!(h.metrics.hibernated_matches.get(), 1);
    assert_eq!(h.journal.meta(MATCH).expect("meta").clean_seq, Some(1));
    assert!(matches!(h.operate(Action::Hibernate).await, Err(Refusal::Conflict(_))));
    assert_eq!(h.operate(Action::Wake).await, Ok("awake: live at seq 1".into()));
    assert_eq!(h.metrics.hibernated_matches.get(), 0);
    assert!(matches!(h.operate(Action::Wake).await, Err(Refusal::Conflict(_))));
    h.event(odds(2.5, None)).await;
    let snap = h.snapshot().await;
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(2), Some(2.5)));
}

#[tokio::test(start_paused = true)]
async fn quarantined_by_hand_it_holds_events_with_their_raw_message_until_healed() {
    let mut h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    assert_eq!(
        h.operate(Action::Quarantine("odd prices".into())).await,
        Ok("quarantined at seq 1".into())
    );
    let card = h.card().await;
    assert_eq!(card.state, "quarantined");
    assert_eq!(
        card.quarantine_reason.as_deref(),
        Some("quarantined by an operator: odd prices")
    );
    assert!(matches!(
        h.operate(Action::Quarantine(String::new())).await,
        Err(Refusal::Conflict(_))
    ));
    assert!(
        matches!(h.operate(Action::Replay(1)).await, Err(Refusal::Conflict(m)) if m.contains("heal")),
        "no single replay while quarantined"
    );
    h.event_from(odds(2.5, None), "<odds_change raw=\"as sent\"/>").await;
    h.snapshot().await;
    let parked = h.journal.parked(MATCH).expect("parked");
    assert_eq!(parked.held.len(), 1);
    assert_eq!(
        parked.held[0].raw.as_deref(),
        Some(&b"<odds_change raw=\"as sent\"/>"[..])
    );
    assert_eq!(
        h.journal.meta(MATCH).expect("meta").quarantined.as_deref(),
        card.quarantine_reason.as_deref()
    );

    let report = h.ask(|reply| Command::Heal { reply }).await;
    assert!(report.contains("1 held events; seq 2; healthy"), "{report}");
    let statuses: Vec<String> = h.frames().into_iter().map(|f| f.2).filter(|s| !s.is_empty()).collect();
    assert_eq!(statuses, ["quarantined", "healed"]);
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_replayed_applies_or_is_dead_lettered_anew() {
    let h = Harness::start(faulty(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    let poison = "<odds_change poison=\"yes\"/>";
    h.event_from(odds(9.0, PANIC), poison).await;
    let card = h.card().await;
    assert_eq!((card.state, card.seq, card.restarts), ("live", 1, 2));
    assert!(card.last_error.expect("a last error").reason.contains("trap"));
    assert_eq!(card.failures_in_window, 2);
    let parked = h.journal.parked(MATCH).expect("parked");
    let first = &parked.dead_letters[0];
    assert_eq!(first.raw.as_deref(), Some(poison.as_bytes()));

    // Still poison: dead-lettered again under a new id, raw kept; never
    // quarantined (the intensity would have: 2 more failures > 2).
    let report = h.operate(Action::Replay(first.id)).await.expect("replayed");
    assert!(report.contains("failed again"), "{report}");
    let parked = h.journal.parked(MATCH).expect("parked");
    assert_eq!(parked.dead_letters.len(), 1);
    assert_ne!(parked.dead_letters[0].id, first.id);
    assert_eq!(parked.dead_letters[0].raw.as_deref(), Some(poison.as_bytes()));
    assert_eq!(h.card().await.state, "live");
    assert!(matches!(
        h.operate(Action::Replay(first.id)).await,
        Err(Refusal::NotFound(_))
    ));

    // A dead letter that applies now (as after a fixed guest): the next seq.
    let letter = crate::journal::DeadLetter {
        event: touchline_guest::encode(&odds(2.2, None)),
        reason: "transient".into(),
        after_seq: 1,
    };
    let op = crate::journal::Op::DeadLetter {
        match_id: Arc::from(MATCH),
        letter,
        raw: None,
    };
    h.journal.write(op).await.expect("written");
    let id = h.journal.parked(MATCH).expect("parked").dead_letters[1].id;
    assert_eq!(
        h.operate(Action::Replay(id)).await,
        Ok(format!("dead letter {id} applied as seq 2"))
    );
    let snap = h.snapshot().await;
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(2), Some(2.2)));
    assert_eq!(h.journal.parked(MATCH).expect("parked").dead_letters.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn being_watched_does_not_keep_a_match_awake() {
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    // A console asking every second, for longer than hibernate_after.
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.card().await;
    }
    assert_eq!(h.card().await.state, "hibernated");
    assert_eq!(h.metrics.hibernated_matches.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_rollout_switches_a_match_quarantined_by_hand_without_healing_it() {
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    h.operate(Action::Quarantine("checking".into()))
        .await
        .expect("quarantined");
    h.event(odds(2.5, None)).await;
    let new = faulty();
    let outcome = h.switch_on_probation(&new).await;
    assert!(matches!(outcome, SwitchOutcome::Switched { .. }), "{outcome:?}");
    let card = h.card().await;
    assert_eq!(card.state, "quarantined", "only an operator's heal lifts it");
    assert_eq!(card.version, new.version());
    assert_eq!(h.journal.parked(MATCH).expect("parked").held.len(), 1, "still held");
    // The operator's heal: the new version takes the state over and
    // applies what was held.
    let report = h.ask(|reply| Command::Heal { reply }).await;
    assert!(report.contains("seq 2; healthy"), "{report}");
    let snap = h.snapshot().await;
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(2), Some(2.5)));
    assert_eq!(snap["guest_version"].as_str(), Some(new.version()));
}
