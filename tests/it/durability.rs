//! Whole-host faults: `kill -9` and SIGTERM mid-stream, restart on the same
//! data dir, and clients resuming with their last (epoch, seq).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use touchline::feed::parse::{FeedMessage, parse};
use touchline::sim::{Generator, SimConfig};

use crate::support::{ClientView, Server, Tracker, Ws, merge, normalise};

/// `n` simulator messages for seed `seed` and how many are match events.
fn traffic(seed: u64, matches: u32, n: usize) -> (Vec<Vec<u8>>, usize) {
    let mut g = Generator::new(&SimConfig {
        matches,
        seed,
        rate: 100.0,
        count: 0,
    });
    let msgs: Vec<Vec<u8>> = (0..n).map(|_| g.next_message().into_bytes()).collect();
    let events = msgs
        .iter()
        .filter(|m| matches!(parse(m), Ok(FeedMessage::Match(_))))
        .count();
    (msgs, events)
}

/// Feed `messages` in the background, 20 at a time, until stopped or the
/// server goes away.
struct Streaming {
    stop: Arc<AtomicBool>,
    writer: std::thread::JoinHandle<()>,
}

impl Streaming {
    fn start(server: &Server, messages: Vec<Vec<u8>>) -> Streaming {
        let stop = Arc::new(AtomicBool::new(false));
        let mut feed = server.feed();
        let flag = stop.clone();
        let writer = std::thread::spawn(move || {
            for chunk in messages.chunks(20) {
                if flag.load(Ordering::Relaxed) || feed.write_all(&chunk.concat()).is_err() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(2)); // pacing, not synchronisation
            }
        });
        Streaming { stop, writer }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.writer.join();
    }
}

/// Apply frames to `t` until `updates` updates arrived.
async fn follow(ws: &mut Ws, t: &mut Tracker, updates: usize) {
    let mut seen = 0;
    while seen < updates {
        let f = ws.next().await;
        seen += usize::from(f["type"] == "update");
        t.apply(&f);
    }
}

/// A fresh snapshot of every match, at least those in `need`.
async fn snapshots<'a>(server: &Server, need: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, ClientView> {
    let need: Vec<&String> = need.into_iter().collect();
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": ["*"]})).await;
    let mut t = Tracker::default();
    while !need.iter().all(|id| t.matches.contains_key(*id)) {
        let f = ws.next().await;
        if f["type"] == "snapshot" {
            t.apply(&f);
        }
    }
    t.matches
}

/// Resume `id` from `view`; returns whether the epoch was kept, after
/// checking the resumed state against a fresh snapshot.
async fn resume(server: &Server, id: &str, view: &ClientView, fresh: &ClientView) -> bool {
    let mut ws = Ws::connect(server.http).await;
    let since = json!({ id: {"epoch": view.epoch, "seq": view.seq} });
    ws.send(json!({"op": "subscribe", "matches": [id], "since": since}))
        .await;
    let first = ws.next().await;
    match first["type"].as_str() {
        Some("resumed") => {
            assert_eq!(
                first["epoch"].as_u64(),
                Some(view.epoch),
                "{id}: resumed in the same epoch"
            );
            assert_eq!(fresh.epoch, view.epoch, "{id}");
            let mut mine = view.clone();
            while mine.seq < fresh.seq {
                let u = ws.next().await;
                assert_eq!(u["type"], "update", "{id}: {u}");
                assert_eq!(u["seq"].as_u64(), Some(mine.seq + 1), "{id}: contiguous catch-up");
                merge(&mut mine.state, &u["delta"]);
                mine.seq += 1;
            }
            assert_eq!(
                normalise(&mine.state),
                normalise(&fresh.state),
                "{id}: same epoch, so identical state"
            );
            true
        }
        Some("snapshot") => {
            let epoch = first["epoch"].as_u64().expect("epoch");
            assert_ne!(epoch, view.epoch, "{id}: a snapshot on resume means a new epoch");
            assert_eq!(first["state"], fresh.state, "{id}");
            false
        }
        other => panic!("{id}: unexpected first frame {other:?}: {first}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_flushed_and_never_reuses_a_seq() {
    let server = Server::start(&[]);
    let mut feed = server.feed();

    // Phase 1: traffic, then idle until every match is durably clean.
    let (quiet, quiet_events) = traffic(11, 12, 400);
    feed.write_all(&quiet.concat()).expect("feed");
    server.wait_metric("touchline_events_applied_total", quiet_events as f64);
    crate::support::wait_for("every match durably clean", || {
        Some(()).filter(|_| server.metric("touchline_unclean_matches") == 0.0)
    });
    let ids: Vec<String> = (0..12)
        .map(|i| format!("sr:match:{}", 40_000_000 + 11 * 100_000 + i))
        .collect();
    let before = snapshots(&server, &ids).await;
    assert_eq!(before.len(), 12);

    // Phase 2: other matches, streaming, with a client following along.
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": ["*"]})).await;
    let (busy, _) = traffic(12, 12, 20_000);
    let streaming = Streaming::start(&server, busy);
    let mut t = Tracker::default();
    follow(&mut ws, &mut t, 300).await;
    let data = server.kill9();
    streaming.stop();
    while let Some(f) = ws.next_or_close().await {
        t.apply(&f);
    }
    assert_eq!(t.gaps, 0);

    let server = Server::start_in(data, &[]);
    let after = snapshots(&server, before.keys().chain(t.matches.keys())).await;
    for (id, b) in &before {
        let a = &after[id];
        assert_eq!(
            (a.epoch, a.seq),
            (b.epoch, b.seq),
            "{id}: flushed before the kill, so same epoch and seq"
        );
        assert_eq!(a.state, b.state, "{id}: same state");
    }
    let mut kept = 0;
    for (id, view) in t.matches.iter().filter(|(id, _)| !before.contains_key(*id)) {
        kept += usize::from(resume(&server, id, view, &after[id]).await);
    }
    eprintln!(
        "after kill -9: {kept} of {} streaming matches kept their epoch",
        t.matches.len() - before.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_loses_nothing_and_keeps_epochs() {
    let server = Server::start(&[]);
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": ["*"]})).await;
    let (busy, _) = traffic(13, 10, 20_000);
    let streaming = Streaming::start(&server, busy);
    let mut t = Tracker::default();
    follow(&mut ws, &mut t, 300).await;
    let reader = tokio::spawn(async move {
        while let Some(f) = ws.next_or_close().await {
            t.apply(&f);
        }
        (ws.closed, t)
    });
    let data = server.terminate();
    streaming.stop();
    let (closed, t) = reader.await.expect("reader");
    assert_eq!(closed, Some(Some(1001)), "sessions get a close frame (going away)");
    assert!(t.matches.len() >= 5, "the client followed several matches");
    assert_eq!(t.gaps, 0);

    let server = Server::start_in(data, &[]);
    let after = snapshots(&server, t.matches.keys()).await;
    for (id, view) in &t.matches {
        let fresh = &after[id];
        assert!(fresh.seq >= view.seq, "{id}: nothing applied is missing");
        assert!(
            resume(&server, id, view, fresh).await,
            "{id}: a graceful restart keeps the epoch"
        );
    }
}

/// A data dir whose active guest was built for an older contract (a host
/// upgrade): the server runs its built-in guest instead, which takes over
/// every match's saved state; nothing is quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_guest_of_an_older_contract_gives_way_to_the_built_in_one() {
    use touchline::journal::{GuestRecord, Journal as _, Op, sync};
    let server = Server::start(&[]);
    let mut feed = server.feed();
    feed.write_all(&crate::support::sample("uof/messages/odds_change.xml"))
        .expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);
    drop(feed);
    let data = server.terminate();

    // What an older build leaves: a guest of the previous interface (no
    // `migrate`) as the active version.
    let old = std::fs::read(format!("{}/no-migrate.wasm", env!("TOUCHLINE_FOREIGN_GUESTS"))).expect("foreign guest");
    {
        let store = touchline::store::Store::open(data.path()).expect("store");
        let (handle, rx) = touchline::store::queue(store.clone());
        let stop = tokio_util::sync::CancellationToken::new();
        let writer = tokio::spawn(touchline::store::run_writer(
            store.clone(),
            rx,
            std::time::Duration::from_millis(1),
            Arc::new(touchline::metrics::Metrics::new()),
            stop.clone(),
        ));
        let hash = "0ld".repeat(21) + "0";
        handle
            .write(Op::PutGuest {
                hash: hash.clone(),
                record: GuestRecord {
                    component: old,
                    installed_at: 0,
                },
            })
            .await
            .expect("queued");
        handle
            .write(Op::ActiveGuest {
                active: hash,
                previous: None,
            })
            .await
            .expect("queued");
        sync(&handle, None).await.expect("durable");
        stop.cancel();
        drop(handle);
        writer.await.expect("writer");
        store.flush().expect("flush");
    }

    let server = Server::start_in(data, &[]);
    let mut ws = Ws::connect(server.http).await;
    ws.send(json!({"op": "subscribe", "matches": ["sr:match:10927088"]}))
        .await;
    let snap = ws.next_matching(|f| f["type"] == "snapshot").await;
    assert_eq!(snap["seq"], 1, "the match was restored: {snap}");
    assert!(snap.get("quarantined").is_none(), "{snap}");
    assert!(
        snap["state"]["markets"].as_array().is_some_and(|m| !m.is_empty()),
        "its state was taken over: {snap}"
    );
    assert_eq!(server.metric("touchline_quarantined_matches"), 0.0);
}
