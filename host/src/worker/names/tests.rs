//! Names in a worker's frames, in process: the native model, the
//! simulator's market descriptions, no fixture source.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{oneshot, watch};

use super::NameSource;
use crate::feed::parse::{FeedMessage, parse};
use crate::metrics::Metrics;
use crate::names::Descriptions;
use crate::producers::Board;
use crate::reference::Fixtures;
use crate::sandbox::GuestVersion;
use crate::supervisor::Policy;
use crate::worker::{Catchup, Command, Frame, Nobody, WorkerConfig, spawn};

const MATCH: &str = "sr:match:7";

fn odds_change(markets: &str) -> Command {
    let xml =
        format!(r#"<odds_change product="1" event_id="{MATCH}" timestamp="1"><odds>{markets}</odds></odds_change>"#);
    match parse(xml.as_bytes()).expect("parses") {
        FeedMessage::Match(event) => Command::Event {
            event,
            routed: std::time::Instant::now(),
            raw: None,
            position: None,
        },
        other => panic!("not a match event: {other:?}"),
    }
}

fn json(f: &Frame) -> Value {
    serde_json::from_str(f.bytes.as_str()).expect("JSON")
}

#[tokio::test(start_paused = true)]
async fn updates_name_only_what_is_new_and_snapshots_name_everything() {
    let metrics = Arc::new(Metrics::new());
    let descriptions =
        Descriptions::parse(&crate::sim::reference::markets_xml()).expect("the simulator's descriptions");
    let (_descriptions_tx, descriptions_rx) = watch::channel(Arc::new(descriptions));
    let (_board_tx, board) = watch::channel(Board::default());
    let cfg = Arc::new(WorkerConfig {
        journal: None,
        policy: Policy {
            max_failures: 2,
            window: Duration::from_secs(60),
        },
        snapshot_every: 100,
        snapshot_interval: Duration::from_secs(3600),
        clean_after: Duration::from_secs(1),
        hibernate_after: None,
        nap_after: None,
        observer: Arc::new(Nobody),
        metrics: metrics.clone(),
        producers: board,
        feed_behind: Default::default(),
        names: Some(NameSource {
            descriptions: descriptions_rx,
            fixtures: Fixtures::none(metrics),
        }),
        tap: None,
        bet_log: None,
        snapshots: None,
        current: None,
    });
    let tasks = tokio_util::task::TaskTracker::new();
    let handle = spawn(Arc::from(MATCH), GuestVersion::native(), cfg, None, &tasks);
    let mut updates = handle.updates.watch(1024);
    let one_x_two = r#"<market id="1" status="1"><outcome id="1" odds="2" active="1"/><outcome id="2" odds="3" active="1"/></market>"#;
    let total =
        r#"<market id="18" specifiers="total=2.5" status="1"><outcome id="12" odds="1.9" active="1"/></market>"#;
    let total_under = r#"<market id="18" specifiers="total=2.5" status="1"><outcome id="12" odds="1.8" active="1"/><outcome id="13" odds="2" active="1"/></market>"#;
    let mailbox = handle.mailbox.clone();
    for markets in [
        one_x_two.to_owned(),
        one_x_two.to_owned(),
        format!("{one_x_two}{total}"),
        total_under.to_owned(),
    ] {
        mailbox.send(odds_change(&markets)).await.expect("worker alive");
    }
    let mut frames = Vec::new();
    for _ in 0..4 {
        frames.push(json(&updates.recv().await.expect("an update")));
    }
    // New: 1x2 with both outcomes, named from the templates (no fixture: Home).
    let first = &frames[0]["names"]["markets"];
    assert_eq!(first[0]["name"], "1x2", "{first}");
    assert_eq!(first[0]["outcomes"]["1"], "Home", "{first}");
    assert_eq!(first[0]["outcomes"]["2"], "draw", "{first}");
    assert!(frames[0]["names"]["event"].is_null(), "no fixture, no event names");
    // The same markets again: no names at all.
    assert!(frames[1].get("names").is_none(), "{}", frames[1]);
    // Only the new market, then only its new outcome.
    let third = frames[2]["names"]["markets"].as_array().expect("names");
    assert_eq!(third.len(), 1, "{third:?}");
    assert_eq!(
        (third[0]["id"].as_u64(), third[0]["name"].as_str()),
        (Some(18), Some("Total"))
    );
    assert_eq!(third[0]["outcomes"]["12"], "over 2.5");
    let fourth = &frames[3]["names"]["markets"][0];
    assert_eq!(fourth["outcomes"].as_object().map(|o| o.len()), Some(1), "{fourth}");
    assert_eq!(fourth["outcomes"]["13"], "under 2.5");
    // A snapshot names every market and outcome of the state.
    let (reply, rx) = oneshot::channel();
    mailbox
        .send(Command::Subscribe { since: None, reply })
        .await
        .expect("worker alive");
    let Catchup::Snapshot(snap) = rx.await.expect("answer") else {
        panic!("a snapshot")
    };
    let snap = json(&snap);
    let names = snap["names"]["markets"].as_array().expect("names");
    assert_eq!(names.len(), 2, "{names:?}");
    assert_eq!(names[1]["outcomes"]["13"], "under 2.5");
    drop((mailbox, handle));
    tasks.close();
    tasks.wait().await;
}
