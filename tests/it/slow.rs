//! Clients that read too slowly, against the real binary: one that stops
//! reading is closed (1008) while the others miss nothing; one that falls
//! further behind than its session's outbox is caught up with no gap
//! and no duplicate.
//!
//! Both make the server's writes block for real: the client stops polling
//! its socket (whose receive buffer is set small) while the feed sends
//! large updates, more bytes than the kernel can hold between the two.
//! How many is computed from the kernel's limits and the measured frame
//! size, so the block happens whatever the machine's speed.

use std::io::Write;

use serde_json::{Value, json};

use crate::support::{Server, Tracker, Ws, big_odds_change, tcp_send_buffer_max, wait_for};

const MATCH: &str = "sr:match:777";
/// Markets per event: every event moves them all, so each update is large.
const MARKETS: u32 = 200;
/// Bytes a WebSocket library may hold in its own write buffer (tungstenite's
/// default is 128 KiB), counted twice for slack.
const LIBRARY_BUFFERS: u64 = 256 * 1024;
/// Frames a session's outbox holds before a subscription lags
/// (`touchline::push::OUTBOX_CAPACITY`).
const OUTBOX: u64 = touchline::push::OUTBOX_CAPACITY as u64;

/// Frames a server can push to a client that reads nothing before its
/// writes block: everything the kernel and libraries can buffer, in frames
/// of at least `frame_bytes`, plus the frame being written and one queued.
fn frames_until_blocked(frame_bytes: u64, recv_buffer: u32) -> u64 {
    (tcp_send_buffer_max() + u64::from(recv_buffer) + LIBRARY_BUFFERS) / frame_bytes + 2
}

fn kind_seq(f: &Value) -> (Option<&str>, Option<u64>) {
    (f["type"].as_str(), f["seq"].as_u64())
}

/// Subscribe to MATCH and apply the snapshot.
async fn subscribe(ws: &mut Ws, view: &mut Tracker) -> u64 {
    ws.send(json!({"op": "subscribe", "matches": [MATCH]})).await;
    let snap = ws.next().await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    view.apply(&snap);
    snap["seq"].as_u64().expect("seq")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_1008_and_the_others_miss_nothing() {
    let server = Server::start(&[]);
    let mut feed = server.feed();
    feed.write_all(&big_odds_change(MATCH, MARKETS, 0)).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);

    let (mut slow, recv_buffer) = Ws::connect_with_recv_buffer(server.http, 4096).await;
    let mut slow_view = Tracker::default();
    assert_eq!(subscribe(&mut slow, &mut slow_view).await, 1);
    let mut good = Ws::connect(server.http).await;
    let mut good_view = Tracker::default();
    assert_eq!(subscribe(&mut good, &mut good_view).await, 1);

    // From here the slow client reads nothing. The feed sends one event at
    // a time, the next only once the good client has its update, so the
    // good client is never behind by more than one frame.
    let mut step = 0;
    let mut target = u64::MAX;
    while step < target {
        step += 1;
        feed.write_all(&big_odds_change(MATCH, MARKETS, step as u32))
            .expect("feed");
        let u = good.next().await;
        assert_eq!(kind_seq(&u), (Some("update"), Some(step + 1)), "good client: {u}");
        if step == 1 {
            let frame_bytes = u.to_string().len() as u64;
            target = frames_until_blocked(frame_bytes * 9 / 10, recv_buffer) + 4;
        }
        good_view.apply(&u);
    }
    // The slow session's write is blocked now; after WRITE_TIMEOUT (10 s)
    // the server gives up on it.
    server.wait_metric("touchline_ws_slow_disconnects_total", 1.0);

    // The good client still gets every update, contiguous.
    for _ in 0..20 {
        step += 1;
        feed.write_all(&big_odds_change(MATCH, MARKETS, step as u32))
            .expect("feed");
        let u = good.next().await;
        assert_eq!(kind_seq(&u), (Some("update"), Some(step + 1)), "good client: {u}");
        good_view.apply(&u);
    }
    assert_eq!(good_view.gaps, 0);
    let mut fresh = Ws::connect(server.http).await;
    let mut fresh_view = Tracker::default();
    assert_eq!(subscribe(&mut fresh, &mut fresh_view).await, step + 1);
    assert_eq!(
        good_view.matches[MATCH], fresh_view.matches[MATCH],
        "the good client's state is the server's"
    );

    // What the slow client was sent before the cut is contiguous, then the
    // session ends with a close frame saying why.
    let mut got = 0;
    while let Some(f) = slow.next_or_close().await {
        slow_view.apply(&f);
        got += 1;
    }
    assert_eq!(slow.closed, Some(Some(1008)), "closed for not reading (code 1008)");
    assert!(
        got >= 1 && got < step,
        "the slow client got some updates ({got}), not all {step}"
    );
    assert_eq!(slow_view.gaps, 0);
    wait_for("the slow session to end", || {
        Some(()).filter(|_| server.metric("touchline_ws_sessions") == 2.0)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_falls_behind_its_outbox_catches_up_without_gap_or_duplicate() {
    let server = Server::start(&[]);
    let mut feed = server.feed();
    feed.write_all(&big_odds_change(MATCH, MARKETS, 0)).expect("feed");
    server.wait_metric("touchline_events_applied_total", 1.0);

    let (mut lagging, recv_buffer) = Ws::connect_with_recv_buffer(server.http, 4096).await;
    let mut view = Tracker::default();
    assert_eq!(subscribe(&mut lagging, &mut view).await, 1);
    // One update to measure a frame: the lagging client already stops reading.
    let mut probe = Ws::connect(server.http).await;
    subscribe(&mut probe, &mut Tracker::default()).await;
    feed.write_all(&big_odds_change(MATCH, MARKETS, 1)).expect("feed");
    let u = probe.next().await;
    assert_eq!(kind_seq(&u), (Some("update"), Some(2)));
    drop(probe);
    let frame_bytes = u.to_string().len() as u64 * 9 / 10;

    // A burst: enough to block the session's writes, then more than the
    // outbox holds while it is blocked. The session may have taken up to
    // a whole outbox into its writer (references to the shared frames)
    // when the write blocks, so two outboxes' worth on top.
    let burst = frames_until_blocked(frame_bytes, recv_buffer) + 2 * OUTBOX + 16;
    let mut bytes = Vec::new();
    for step in 2..2 + burst {
        bytes.extend(big_odds_change(MATCH, MARKETS, step as u32));
    }
    let resyncs = server.metric("touchline_ws_resyncs_total");
    feed.write_all(&bytes).expect("feed");
    let last = 2 + burst;
    server.wait_metric("touchline_events_applied_total", last as f64);

    // Now read: frames are contiguous updates, a `resumed` naming the seq
    // the client has (the missed updates follow), or a fresh snapshot that
    // replaces the state; never a gap, never a seq seen twice.
    let mut resyncs_seen = Vec::new();
    let mut seen = view.matches[MATCH].seq;
    while seen < last {
        let f = lagging.next().await;
        let (kind, seq) = kind_seq(&f);
        let seq = seq.expect("seq");
        match kind {
            Some("update") => assert_eq!(seq, seen + 1, "no gap, no duplicate: {f}"),
            Some("resumed") => assert_eq!(seq, seen, "resumed where the client is: {f}"),
            Some("snapshot") => assert!(seq > seen, "a resync snapshot moves forward: {seq} after {seen}"),
            _ => panic!("unexpected frame {f}"),
        }
        if kind != Some("update") {
            resyncs_seen.push(format!("{} {seq} (at {seen})", kind.unwrap_or_default()));
        }
        view.apply(&f);
        seen = seq;
    }
    assert_eq!(view.gaps, 0);
    assert!(
        server.metric("touchline_ws_resyncs_total") > resyncs,
        "the subscriber did lag ({burst} updates of ~{frame_bytes} bytes while it read nothing) and was resynchronised"
    );
    let mut fresh = Ws::connect(server.http).await;
    let mut fresh_view = Tracker::default();
    assert_eq!(subscribe(&mut fresh, &mut fresh_view).await, last);
    assert_eq!(
        view.matches[MATCH], fresh_view.matches[MATCH],
        "after catching up ({resyncs_seen:?}) the client's state is the server's"
    );
    // Nothing more is queued for it: no update or snapshot comes before the
    // answer to a request sent now. (A receiver attached while the worker
    // still had a backlog can lag again before it is used; its catch-up is
    // then an empty `resumed` at the seq the client has, which is allowed.)
    lagging.send(json!({"op": "ping"})).await;
    let next = lagging
        .next_matching(|f| !(f["type"] == "resumed" && f["seq"].as_u64() == Some(last)))
        .await;
    assert_eq!(next["type"], "error", "after catching up ({resyncs_seen:?}): {next}");
}
