//! The catalog against the simulator's real API (in process, port 0):
//! fetched at start, kept in the journal, the stored copy used while the
//! API is away, refreshed on demand.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::journal::memory::MemoryJournal;
use crate::sim::{FaultScript, SimConfig, Simulator};

async fn simulator() -> (Endpoint, CancellationToken) {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let cfg = SimConfig {
        matches: 2,
        seed: 1,
        rate: 10.0,
        count: 0,
    };
    let sim = Simulator::bind(any, any, cfg, FaultScript::default())
        .await
        .expect("bind");
    let url = sim.listening().expect("addresses").api_url();
    let stop = CancellationToken::new();
    tokio::spawn(sim.run(stop.clone()));
    (Endpoint::parse(&url, None).expect("url"), stop)
}

async fn wait_for_markets(catalog: &Catalog) -> usize {
    let mut rx = catalog.watch();
    tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|d| !d.is_empty()))
        .await
        .expect("descriptions in time")
        .expect("catalog running")
        .len()
}

#[tokio::test]
async fn fetched_at_start_kept_and_refreshed_on_demand() {
    let (endpoint, sim) = simulator().await;
    let journal = MemoryJournal::shared(1);
    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let source = Source::Api {
        endpoint,
        timeout: Duration::from_secs(5),
    };
    let catalog = start(
        source,
        &[],
        Some(journal.clone() as Arc<dyn Journal>),
        stop.clone(),
        &tasks,
    )
    .expect("start");
    let n = wait_for_markets(&catalog).await;
    assert!(n > 100, "every market the simulator emits: {n}");
    let d = catalog.descriptions();
    assert_eq!(
        d.groups_of(166).map(|g| g.join("|")),
        Some("all|regular_play|corners".into())
    );
    assert_eq!(catalog.refresh().await, Ok(n), "a refresh fetches again");
    stop.cancel();
    sim.cancel();
}

#[tokio::test]
async fn the_stored_copy_serves_while_the_api_is_away_and_files_are_not_fetched() {
    let markets = crate::sim::reference::markets_xml();
    let variants = crate::sim::reference::variants_xml();
    let cached = vec![
        ("markets.xml".to_owned(), markets.clone()),
        ("variants.xml".to_owned(), variants),
    ];
    // Nothing listens on port 1: every fetch fails and is retried.
    let away = Source::Api {
        endpoint: Endpoint::parse("http://127.0.0.1:1", None).expect("url"),
        timeout: Duration::from_secs(1),
    };
    let (tasks, stop) = (TaskTracker::new(), CancellationToken::new());
    let catalog = start(away, &cached, None, stop.clone(), &tasks).expect("start");
    assert!(catalog.descriptions().market(1).is_some(), "the stored copy");
    let refused = catalog.refresh().await.expect_err("the API is away");
    assert!(refused.contains("127.0.0.1:1"), "{refused}");
    assert!(catalog.descriptions().market(1).is_some(), "still the stored copy");

    let files = start(Source::Files(vec![markets]), &[], None, stop.clone(), &tasks).expect("file");
    assert!(files.descriptions().market(18).is_some());
    assert_eq!(files.refresh().await, Err(CatalogError::NotFetched.to_string()));
    let broken = start(
        Source::Files(vec!["<market_descriptions>".into()]),
        &[],
        None,
        stop.clone(),
        &tasks,
    );
    assert!(matches!(broken, Err(CatalogError::Parse(_))), "{broken:?}");
    stop.cancel();
}
