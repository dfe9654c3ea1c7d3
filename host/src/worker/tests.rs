//! Unit tests of the worker, in process: the native model (and the real
//! fault-injection guest where a guest must fail), the in-memory journal,
//! and tokio's paused clock for every timer. Commands are answered in
//! mailbox order, so a reply is the synchronisation point: nothing sleeps
//! in real time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use touchline_guest::bet::BetRequest;
use touchline_guest::event::MatchEvent;

use super::*;
use crate::feed::parse::{FeedMessage, parse};
use crate::journal::JournalError;
use crate::journal::memory::MemoryJournal;
use crate::sandbox::{Limits, Platform};

pub(super) const MATCH: &str = "sr:match:1";

/// Everything observed, in order; whether it sleeps, apart.
#[derive(Default)]
struct Recording(Mutex<Vec<String>>, Mutex<Vec<bool>>);

impl Recording {
    fn seen(&self) -> Vec<String> {
        self.0.lock().expect("recording lock").clone()
    }
    fn note(&self, s: String) {
        self.0.lock().expect("recording lock").push(s);
    }
}

impl Observer for Recording {
    fn runs(&self, _: &Arc<str>, version: Arc<str>) {
        self.note(format!("runs {}", short(&version)));
    }
    fn stopped(&self, _: &str) {
        self.note("stopped".into());
    }
    fn probation(&self, _: &Arc<str>, news: ProbationNews) {
        self.note(match news {
            ProbationNews::Started => "probation started".into(),
            ProbationNews::Ended => "probation ended".into(),
            ProbationNews::Failed(_) => "probation failed".into(),
        });
    }
    fn sleeps(&self, _: &Arc<str>, asleep: bool) {
        self.1.lock().expect("recording lock").push(asleep);
    }
    fn bet_changed(&self, record: &BetRecord) {
        self.note(format!("bet {}", record.request.id));
    }
}

pub(super) struct Harness {
    mailbox: Mailbox,
    updates: Watch,
    pub(super) journal: Arc<MemoryJournal>,
    pub(super) metrics: Arc<Metrics>,
    observer: Arc<Recording>,
    tasks: tokio_util::task::TaskTracker,
    /// The server is behind its feed, as the feed reader would set it.
    pub(super) feed_behind: crate::worker::FeedBehind,
    /// The producer board the worker watches (nothing down at first).
    board: watch::Sender<Board>,
}

fn config(
    journal: &Arc<MemoryJournal>,
    observer: &Arc<Recording>,
    metrics: &Arc<Metrics>,
    board: watch::Receiver<Board>,
) -> Arc<WorkerConfig> {
    Arc::new(WorkerConfig {
        journal: Some(journal.clone() as Arc<dyn Journal>),
        policy: Policy {
            max_failures: 2,
            window: Duration::from_secs(60),
        },
        snapshot_every: 100,
        snapshot_interval: Duration::from_secs(3600),
        clean_after: Duration::from_secs(1),
        hibernate_after: Some(Duration::from_secs(30)),
        nap_after: None,
        observer: observer.clone(),
        metrics: metrics.clone(),
        producers: board,
        feed_behind: Default::default(),
        names: None,
        tap: None,
        bet_log: None,
        snapshots: None,
        current: None,
    })
}

impl Harness {
    pub(super) fn start(version: GuestVersion, journal: Arc<MemoryJournal>, recovered: Option<Recovered>) -> Harness {
        Harness::start_with(version, journal, recovered, |_| {})
    }

    /// Started with the harness's settings as `tweak` changes them.
    pub(super) fn start_with(
        version: GuestVersion,
        journal: Arc<MemoryJournal>,
        recovered: Option<Recovered>,
        tweak: impl FnOnce(&mut WorkerConfig),
    ) -> Harness {
        let (observer, metrics) = (Arc::new(Recording::default()), Arc::new(Metrics::new()));
        let tasks = tokio_util::task::TaskTracker::new();
        let (board, board_rx) = watch::channel(Board::default());
        let mut config = config(&journal, &observer, &metrics, board_rx);
        tweak(Arc::get_mut(&mut config).expect("not shared yet"));
        let feed_behind = config.feed_behind.clone();
        let handle = spawn(Arc::from(MATCH), version, config, recovered, &tasks);
        Harness {
            feed_behind,
            updates: handle.updates.watch(1024),
            mailbox: handle.mailbox,
            journal,
            metrics,
            observer,
            tasks,
            board,
        }
    }

    /// Producers 1 and 3 selected; `down` of them down for `reason`.
    fn producers_down(&self, down: &[u32], reason: crate::producers::Reason) {
        let views: Vec<crate::producers::View> = [1, 3]
            .into_iter()
            .map(|id| crate::producers::View {
                id,
                name: format!("p{id}"),
                state: if down.contains(&id) { "down" } else { "up" },
                reason: down.contains(&id).then_some(reason),
                since: 0,
                last_alive: None,
                recovery_after: None,
                request_id: None,
                last_recovery_seconds: None,
            })
            .collect();
        self.board.send_replace(Board {
            down: down.iter().map(|&p| crate::producers::bit(p)).sum(),
            selected: crate::producers::bit(1) | crate::producers::bit(3),
            views: views.into(),
        });
    }

    /// The next status frame: (status, product, reason).
    async fn next_status(&mut self) -> (String, u64, String) {
        loop {
            let f = self.updates.recv().await.expect("worker alive");
            let v: serde_json::Value = serde_json::from_str(f.bytes.as_str()).expect("JSON");
            if v["type"] == "status" {
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                return (s("status"), v["product"].as_u64().unwrap_or_default(), s("reason"));
            }
        }
    }

    pub(super) async fn event(&self, event: MatchEvent) {
        self.mailbox
            .send(Command::Event {
                event,
                routed: std::time::Instant::now(),
                raw: None,
                position: None,
            })
            .await
            .expect("worker alive");
    }

    pub(super) async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> T {
        let (tx, rx) = oneshot::channel();
        self.mailbox.send(make(tx)).await.expect("worker alive");
        rx.await.expect("worker answers")
    }

    /// Switch to `version` with a first-event probation, as a rollout does.
    pub(super) async fn switch_on_probation(&self, version: &GuestVersion) -> SwitchOutcome {
        self.ask(|reply| Command::Switch {
            version: version.clone(),
            probation: true,
            reply,
        })
        .await
    }

    /// Switch to `version` without probation, as a rollback does.
    pub(super) async fn switch_back(&self, version: &GuestVersion) -> SwitchOutcome {
        self.ask(|reply| Command::Switch {
            version: version.clone(),
            probation: false,
            reply,
        })
        .await
    }

    /// A fresh snapshot's JSON (also: everything sent before is applied).
    pub(super) async fn snapshot(&self) -> serde_json::Value {
        match self.ask(|reply| Command::Subscribe { since: None, reply }).await {
            Catchup::Snapshot(f) => serde_json::from_str(f.bytes.as_str()).expect("JSON"),
            other => panic!("expected a snapshot, got {other:?}"),
        }
    }

    async fn bet(&self, id: &str, odds: f64) -> Result<BetRecord, JournalError> {
        let request = BetRequest {
            id: id.into(),
            market: 1,
            specifiers: String::new(),
            outcome: "1".into(),
            odds,
            stake: 10.0,
            accept_better_odds: false,
        };
        self.ask(|reply| Command::Bet { request, reply }).await
    }

    /// Frames pushed so far: (type, seq, status).
    fn frames(&mut self) -> Vec<(String, u64, String)> {
        let mut out = Vec::new();
        while let Some(f) = self.updates.try_recv() {
            let v: serde_json::Value = serde_json::from_str(f.bytes.as_str()).expect("JSON");
            out.push((
                v["type"].as_str().unwrap_or_default().to_owned(),
                v["seq"].as_u64().unwrap_or_default(),
                v["status"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        out
    }

    /// Close the mailbox and wait for the worker to stop.
    async fn stop(self) -> (Arc<MemoryJournal>, Arc<Recording>) {
        drop(self.mailbox);
        self.tasks.close();
        self.tasks.wait().await;
        (self.journal, self.observer)
    }
}

/// An odds_change for market 1 with one outcome at `odds` (and market
/// `extra` too, which the fault-injection guest reacts to).
pub(super) fn odds(odds: f64, extra: Option<u32>) -> MatchEvent {
    let extra = extra.map_or(String::new(), |m| {
        format!(r#"<market id="{m}" status="1"><outcome id="1" odds="1.5" active="1"/></market>"#)
    });
    let xml = format!(
        r#"<odds_change product="1" event_id="{MATCH}" timestamp="1"><odds><market id="1" status="1"><outcome id="1" odds="{odds}" active="1"/></market>{extra}</odds></odds_change>"#
    );
    match parse(xml.as_bytes()) {
        Ok(FeedMessage::Match(e)) => e,
        other => panic!("not a match event: {other:?}"),
    }
}

pub(super) fn odds_in(snapshot: &serde_json::Value) -> Option<f64> {
    let markets = snapshot["state"]["markets"].as_array()?;
    let m = markets.iter().find(|m| m["id"] == 1)?;
    m["outcomes"].as_array()?.iter().find(|o| o["id"] == "1")?["odds"].as_f64()
}

fn faulty() -> GuestVersion {
    let platform = Platform::new(Limits {
        max_instances: 8,
        memory_bytes: 16 << 20,
        call_deadline: Duration::from_millis(50),
    })
    .expect("platform");
    let bytes = std::fs::read(env!("TOUCHLINE_FAULTY_GUEST")).expect("the fault-injection guest (make guest)");
    platform.load(&bytes).expect("loads")
}

const PANIC: Option<u32> = Some(999_001);

#[tokio::test(start_paused = true)]
async fn events_get_contiguous_seqs_one_frame_and_one_journal_entry_each() {
    let mut h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    for o in [2.0, 2.5, 3.0] {
        h.event(odds(o, None)).await;
    }
    let snap = h.snapshot().await;
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(3), Some(3.0)));
    let seqs: Vec<u64> = h.frames().iter().filter(|f| f.0 == "update").map(|f| f.1).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(h.journal.seqs(MATCH), [1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_trap_restarts_from_the_last_state_retries_once_then_dead_letters() {
    let mut h = Harness::start(faulty(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    h.event(odds(9.0, PANIC)).await;
    h.event(odds(2.5, None)).await;
    let snap = h.snapshot().await;
    // The poison took no seq; the state before it was rebuilt and moved on.
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(2), Some(2.5)));
    let failures = h.metrics.render();
    assert!(
        failures.contains("worker_failures_total{cause=\"trap\"} 2"),
        "{failures}"
    );
    assert_eq!(h.metrics.dead_letters.get(), 1);
    // Each restart timed on the clock, in the thread's CPU time and in its
    // wait for a core (Linux: the wait is always known).
    let count = |histogram: &str| {
        failures
            .lines()
            .find_map(|l| l.strip_prefix(&format!("touchline_{histogram}_count ")))
            .map(|v| v.trim().to_owned())
    };
    let restarts = count("recovery_seconds");
    assert!(restarts.as_deref().is_some_and(|n| n != "0"), "{failures}");
    assert_eq!(count("recovery_cpu_seconds"), restarts);
    assert_eq!(count("recovery_runqueue_seconds"), restarts);
    let statuses: Vec<String> = h.frames().into_iter().map(|f| f.2).filter(|s| !s.is_empty()).collect();
    assert_eq!(statuses, ["dead_letter"]);
    assert_eq!(h.journal.parked(MATCH).expect("parked").dead_letters.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn past_the_intensity_it_is_quarantined_holds_events_and_heal_replays_them() {
    let mut h = Harness::start(faulty(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    // Two failures per poison event (first try and retry): the third
    // failure is past max_failures = 2.
    h.event(odds(9.0, PANIC)).await;
    h.event(odds(9.0, PANIC)).await;
    h.event(odds(3.0, None)).await;
    let snap = h.snapshot().await;
    assert!(
        snap["quarantined"].as_str().is_some_and(|r| r.contains("intensity")),
        "{snap}"
    );
    assert_eq!(
        (snap["seq"].as_u64(), odds_in(&snap)),
        (Some(1), Some(2.0)),
        "held, not applied"
    );
    assert_eq!(h.metrics.quarantined_matches.get(), 1);
    assert!(h.journal.meta(MATCH).expect("meta").quarantined.is_some());
    let rejected = h.bet("b1", 2.0).await.expect("recorded");
    assert_eq!(rejected.decision, Err("match_quarantined".into()));

    let report = h.ask(|reply| Command::Heal { reply }).await;
    assert!(report.contains("healthy"), "{report}");
    let snap = h.snapshot().await;
    // The held event applied; the poison dead-lettered again.
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(2), Some(3.0)));
    assert!(snap.get("quarantined").is_none());
    assert_eq!(h.metrics.quarantined_matches.get(), 0);
    assert_eq!(h.journal.meta(MATCH).expect("meta").quarantined, None);
    let statuses: Vec<String> = h.frames().into_iter().map(|f| f.2).filter(|s| !s.is_empty()).collect();
    assert!(
        statuses.starts_with(&["dead_letter".into(), "quarantined".into(), "healed".into()]),
        "{statuses:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn idle_it_is_marked_clean_then_hibernates_and_wakes_with_its_state() {
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    h.snapshot().await;
    assert_eq!(
        h.journal.meta(MATCH).expect("meta").clean_seq,
        None,
        "dirty after a push"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        h.journal.meta(MATCH).expect("meta").clean_seq,
        Some(1),
        "clean after clean_after"
    );
    assert_eq!(h.metrics.hibernated_matches.get(), 0);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(h.metrics.hibernated_matches.get(), 1, "asleep after hibernate_after");
    h.event(odds(2.5, None)).await;
    let snap = h.snapshot().await;
    assert_eq!(h.metrics.hibernated_matches.get(), 0, "awake");
    assert_eq!((snap["seq"].as_u64(), odds_in(&snap)), (Some(2), Some(2.5)));
}

#[tokio::test(start_paused = true)]
async fn a_restart_keeps_the_epoch_only_when_clean_at_its_seq() {
    let journal = MemoryJournal::shared(1);
    let h = Harness::start(GuestVersion::native(), journal.clone(), None);
    h.event(odds(2.0, None)).await;
    let epoch = h.snapshot().await["epoch"].as_u64();
    let (journal, _) = h.stop().await;
    // A graceful stop leaves a clean mark at its seq: the epoch survives.
    let recovered = journal.recover(MATCH).expect("kept");
    let restarted = MemoryJournal::shared(2);
    let h = Harness::start(GuestVersion::native(), restarted.clone(), Some(recovered.clone()));
    let snap = h.snapshot().await;
    assert_eq!(
        (snap["epoch"].as_u64(), snap["seq"].as_u64(), odds_in(&snap)),
        (epoch, Some(1), Some(2.0))
    );
    h.stop().await;
    // A mark at another seq proves nothing: a new epoch (this start's).
    let mut dirty = recovered;
    dirty.meta.clean_seq = Some(0);
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(3), Some(dirty));
    let snap = h.snapshot().await;
    assert_eq!((snap["epoch"].as_u64(), snap["seq"].as_u64()), (Some(3), Some(1)));
}

#[tokio::test(start_paused = true)]
async fn a_bet_whose_record_is_not_durable_is_answered_with_an_error_and_does_not_stand() {
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    let ok = h.bet("ok", 2.0).await.expect("durable");
    assert_eq!(ok.decision, Ok(2.0));
    h.journal.fail_writes_of(Some(MATCH));
    let err = h.bet("lost", 2.0).await.expect_err("not durable");
    assert!(matches!(err, JournalError::WriteFailed(_)), "{err:?}");
    h.journal.fail_writes_of(None);
    assert!(h.journal.bet("lost").is_none());
    // A settlement touches the bet that stands, not the one that failed.
    let xml = format!(
        r#"<bet_settlement product="1" event_id="{MATCH}" timestamp="2" certainty="2"><outcomes><market id="1"><outcome id="1" result="1"/></market></outcomes></bet_settlement>"#
    );
    let Ok(FeedMessage::Match(settlement)) = parse(xml.as_bytes()) else {
        panic!("bet_settlement parses")
    };
    h.event(settlement).await;
    h.snapshot().await;
    let seen = h.observer.seen();
    let bets: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|s| s.starts_with("bet "))
        .collect();
    assert_eq!(bets, ["bet ok"]);
}

#[tokio::test(start_paused = true)]
async fn a_down_producer_refuses_bets_on_its_markets_and_its_subscribers_are_told() {
    use crate::producers::Reason;
    let mut h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    assert_eq!(h.bet("before", 2.0).await.expect("durable").decision, Ok(2.0));
    // Producer 3 going down is none of this match's business (it only
    // heard from 1): its subscribers hear nothing, its bets stand.
    h.producers_down(&[3], Reason::AliveTimeout);
    assert_eq!(h.bet("other", 2.0).await.expect("durable").decision, Ok(2.0));
    h.producers_down(&[1, 3], Reason::AliveTimeout);
    assert_eq!(
        h.next_status().await,
        ("producer_down".into(), 1, "alive_timeout".into())
    );
    assert_eq!(
        h.bet("during", 2.0).await.expect("durable").decision,
        Err("producer_down".into())
    );
    let snap = h.snapshot().await;
    assert_eq!(snap["producers_down"], serde_json::json!([1]));
    // A client resuming (or catching up) learns it from the `resumed` head.
    let since = Position {
        epoch: snap["epoch"].as_u64().expect("epoch"),
        seq: 0,
    };
    match h
        .ask(|reply| Command::Subscribe {
            since: Some(since),
            reply,
        })
        .await
    {
        Catchup::Missed(frames) => {
            let head: serde_json::Value = serde_json::from_str(frames[0].bytes.as_str()).expect("JSON");
            assert_eq!(
                (head["type"].as_str(), &head["producers_down"]),
                (Some("resumed"), &serde_json::json!([1]))
            );
        }
        other => panic!("expected the missed updates, got {other:?}"),
    }
    // Status frames take no seq: the update stream stays contiguous.
    let before = snap["seq"].as_u64();
    h.producers_down(&[3], Reason::AliveTimeout);
    assert_eq!(h.next_status().await, ("producer_up".into(), 1, "recovered".into()));
    h.event(odds(2.5, None)).await;
    let snap = h.snapshot().await;
    assert_eq!(snap["producers_down"], serde_json::json!([]));
    assert_eq!(snap["seq"].as_u64(), before.map(|s| s + 1));
    assert_eq!(h.bet("after", 2.5).await.expect("durable").decision, Ok(2.5));
}

#[tokio::test(start_paused = true)]
async fn a_restored_match_refuses_bets_until_its_producers_are_up() {
    use crate::producers::Reason;
    let h = Harness::start(GuestVersion::native(), MemoryJournal::shared(1), None);
    h.event(odds(2.0, None)).await;
    let (journal, _) = h.stop().await;
    let recovered = journal.recover(MATCH).expect("kept");
    let h = Harness::start(GuestVersion::native(), journal, Some(recovered));
    // Every producer down, as after a restart.
    h.producers_down(&[1, 3], Reason::Startup);
    let snap = h.snapshot().await;
    assert_eq!(odds_in(&snap), Some(2.0), "the odds were restored");
    assert_eq!(
        snap["producers_down"],
        serde_json::json!([1, 3]),
        "restored: any selected producer's"
    );
    assert_eq!(
        h.bet("restored", 2.0).await.expect("durable").decision,
        Err("producer_down".into())
    );
    h.producers_down(&[], Reason::Startup);
    assert_eq!(h.bet("recovered", 2.0).await.expect("durable").decision, Ok(2.0));
}

mod asleep;
mod catchup;
mod checkpointing;
mod napping;
mod operating;
mod switching;
