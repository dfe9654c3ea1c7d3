//! Issue 13, bets in a cluster: any node takes a bet, the match's owner
//! decides it and records the decision in JetStream before answering. A
//! bet accepted before its owner's `kill -9` is answered the same after
//! the failover, a bet sent during the failover gets exactly one answer
//! (decided by the new owner), and the new owner settles both from the
//! real settlement sample. An owner that stops answering (paused) leaves
//! the receiving node to record the bet `unavailable` itself after its
//! patience, and that stays the bet's one decision when the owner comes
//! back to the request.

use std::io::Write;
use std::time::Instant;

use serde_json::{Value, json};
use touchline::cluster::Partitions;
use touchline_testkit::provider::bring_up;

use crate::settle_bets::book;
use crate::support::nodes::{PARTITIONS, cluster, holdings, matches_of, node_ttl, settled};
use crate::support::{DEADLINE, Ws, http_get, sample, wait_for};

/// The match the minus5 `bet_settlement` sample settles.
const MATCH: &str = "sr:match:16807109";

/// A bet on market 201 of [`MATCH`], outcome `outcome`, at odds 2.0.
fn bet(id: &str, outcome: &str, odds: f64) -> Value {
    json!({"op": "bet", "id": id, "match": MATCH, "market": 201, "specifiers": "",
           "outcome": outcome, "odds": odds, "stake": 10.0})
}

/// Every bet frame the client sees, in order.
#[derive(Default)]
struct Seen(Vec<Value>);

impl Seen {
    /// Read frames until the answer to bet `id` (status `accepted` or
    /// `rejected`, not a settlement).
    async fn answer(&mut self, ws: &mut Ws, id: &str) -> Value {
        loop {
            let f = ws.next().await;
            if f["type"] == "bet" {
                self.0.push(f.clone());
                if f["id"] == id && matches!(f["status"].as_str(), Some("accepted" | "rejected")) {
                    return f;
                }
            }
        }
    }

    /// Read frames until bet `id` is settled as `status`.
    async fn settled(&mut self, ws: &mut Ws, id: &str, status: &str) -> Value {
        loop {
            let f = ws.next().await;
            if f["type"] == "bet" {
                self.0.push(f.clone());
                if f["id"] == id && f["status"] == status {
                    return f;
                }
            }
        }
    }

    fn decisions_of(&self, id: &str) -> Vec<&Value> {
        self.0
            .iter()
            .filter(|f| f["id"] == id && matches!(f["status"].as_str(), Some("accepted" | "rejected")))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bet_outlives_its_owner_and_one_sent_during_the_failover_gets_one_answer() {
    let (_nats, nodes, held) = cluster(["a", "b", "c"]);
    let p = Partitions::new(PARTITIONS).expect("count").partition_of(MATCH);
    let owner_id = held
        .iter()
        .find(|(_, ps)| ps.contains(&p))
        .map(|(id, _)| id.clone())
        .expect("an owner");
    let mut nodes: Vec<_> = ["a", "b", "c"].into_iter().zip(nodes).collect();
    let at = nodes.iter().position(|(id, _)| *id == owner_id).expect("owner");
    let (_, owner) = nodes.remove(at);
    // The feed and the client on one of the others, a third node beside.
    let [(_, entry), (_, spare)] = <[_; 2]>::try_from(nodes).unwrap_or_else(|_| panic!("three nodes"));
    let mut feed = entry.feed();
    for n in [&entry, &spare, &owner] {
        bring_up(&n.provider, &mut feed, n.http, DEADLINE).expect("producers up");
    }
    feed.write_all(&book(MATCH, &[(201, "", &["861", "862", "863", "864"])], 2.0))
        .expect("feed");
    tokio::task::block_in_place(|| {
        wait_for("the owner to run the match", || {
            matches_of(&owner).contains(MATCH).then_some(())
        })
    });

    let mut ws = Ws::connect(entry.http).await;
    let mut seen = Seen::default();
    ws.send(bet("before", "861", 2.0)).await;
    let before = seen.answer(&mut ws, "before").await;
    assert_eq!(before["status"], "accepted", "{before}");
    assert_eq!(before["odds"], 2.0, "{before}");
    ws.send(bet("stale", "862", 2.5)).await;
    let stale = seen.answer(&mut ws, "stale").await;
    assert_eq!(stale["reason"], "odds_changed", "{stale}");
    // The same id for another bet is refused, cluster-wide.
    ws.send(bet("before", "862", 2.0)).await;
    let conflict = seen.answer(&mut ws, "before").await;
    assert!(
        conflict["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("id_conflict")),
        "{conflict}"
    );

    // The owner dies; a bet is sent at once, while nobody holds the
    // partition.
    drop(owner.kill9());
    let killed = Instant::now();
    ws.send(bet("during", "862", 2.0)).await;
    let during = seen.answer(&mut ws, "during").await;
    let answered_after = killed.elapsed();
    assert_eq!(during["status"], "accepted", "decided by the new owner: {during}");

    // Asked again after the failover, each id gives the answer it had.
    for (id, outcome, odds, first) in [
        ("before", "861", 2.0, &before),
        ("stale", "862", 2.5, &stale),
        ("during", "862", 2.0, &during),
    ] {
        ws.send(bet(id, outcome, odds)).await;
        let again = seen.answer(&mut ws, id).await;
        assert_eq!(&again, first, "{id} answered the same after the failover");
    }
    // One answer per request: the bet in flight was not answered twice.
    assert_eq!(seen.decisions_of("during").len(), 2, "{:?}", seen.0);

    // The new owner knows both bets: the real settlement pays them.
    feed.write_all(&sample("uof-minus5/messages/bet_settlement.xml"))
        .expect("feed");
    let won = seen.settled(&mut ws, "before", "won").await;
    assert_eq!(
        won["payout"].as_f64(),
        Some(15.0),
        "10 × half void + 10 × ½ × 2.0: {won}"
    );
    let lost = seen.settled(&mut ws, "during", "lost").await;
    assert_eq!(lost["payout"].as_f64(), Some(0.0), "{lost}");
    // Any node answers from the records.
    let stored: Value = tokio::task::block_in_place(|| {
        wait_for("the settled record on the spare node", || {
            let (code, body) = http_get(spare.http, "/api/bets/before");
            let v: Value = serde_json::from_str(&body).ok()?;
            (code == 200 && v["status"] == "won").then_some(v)
        })
    });
    assert_eq!(stored["payout"].as_f64(), Some(15.0), "{stored}");
    eprintln!("bet sent at the owner's kill -9 answered after {answered_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bet_its_owner_never_answers_is_rejected_once_and_stays_rejected() {
    // A long TTL: the paused owner keeps its partitions (no takeover).
    let nats = crate::support::cluster::nats();
    let (a, b) = (node_ttl(&nats.url(), "a", "30000"), node_ttl(&nats.url(), "b", "30000"));
    tokio::task::block_in_place(|| settled(&a, &["a", "b"]));
    let p = Partitions::new(PARTITIONS).expect("count").partition_of(MATCH);
    // The owner must still own the match when it is paused: a partition
    // moved by a balancing round while the match started would leave the
    // node the bet goes to as its owner (CI once saw the bet accepted).
    // So the choice is confirmed after the match runs, and made again if
    // the holdings moved meanwhile.
    let mut attempts = 0;
    // The feed stays open to the end: closing it would take the producers
    // down (no more alives) and every later bet with them.
    let (owner, entry, _feed) = loop {
        attempts += 1;
        // With a 30 s TTL nodes balance every 10 s: the holdings are
        // settled only once they stayed the same across a whole round.
        let held = tokio::task::block_in_place(|| {
            let (mut last, mut since) = (holdings(&a), Instant::now());
            wait_for("holdings unchanged across a balancing round", || {
                let now = holdings(&a);
                if now != last || now.is_none() {
                    (last, since) = (now, Instant::now());
                    return None;
                }
                (since.elapsed() > std::time::Duration::from_millis(10_500)).then(|| now.clone())?
            })
        });
        let (owner, entry) = if held["a"].contains(&p) { (&a, &b) } else { (&b, &a) };
        let mut feed = entry.feed();
        for n in [entry, owner] {
            bring_up(&n.provider, &mut feed, n.http, DEADLINE).expect("producers up");
        }
        feed.write_all(&book(MATCH, &[(201, "", &["861", "862", "863", "864"])], 2.0))
            .expect("feed");
        tokio::task::block_in_place(|| {
            wait_for("the owner to run the match", || {
                matches_of(owner).contains(MATCH).then_some(())
            })
        });
        let (now, on_entry) = (holdings(&a), matches_of(entry).contains(MATCH));
        if now.as_ref() == Some(&held) && !on_entry {
            break (owner, entry, feed);
        }
        assert!(
            attempts < 3,
            "the owner could not be pinned down: holdings {now:?} against {held:?}, the other node runs the match: {on_entry}"
        );
        eprintln!("holdings moved while the match started ({held:?} then {now:?}); choosing again");
    };
    let mut ws = Ws::connect(entry.http).await;
    let mut seen = Seen::default();

    owner.signal("STOP");
    let sent = Instant::now();
    ws.send(bet("paused", "861", 2.0)).await;
    let answer = seen.answer(&mut ws, "paused").await;
    let waited = sent.elapsed();
    owner.signal("CONT");
    assert_eq!(answer["status"], "rejected", "{answer}");
    assert!(
        answer["reason"].as_str().is_some_and(|r| r.starts_with("unavailable")),
        "{answer}"
    );
    assert!(waited.as_secs() >= 9, "the node waited its patience: {waited:?}");

    // The owner, back, has the request queued: it finds the rejection
    // recorded and decides nothing. Asked again, on either node, the bet
    // is what was recorded; a new bet is accepted.
    ws.send(bet("paused", "861", 2.0)).await;
    assert_eq!(seen.answer(&mut ws, "paused").await, answer, "one decision");
    let mut on_owner = Ws::connect(owner.http).await;
    on_owner.send(bet("paused", "861", 2.0)).await;
    assert_eq!(Seen::default().answer(&mut on_owner, "paused").await, answer);
    ws.send(bet("after", "861", 2.0)).await;
    assert_eq!(seen.answer(&mut ws, "after").await["status"], "accepted");
    assert_eq!(seen.decisions_of("paused").len(), 2, "{:?}", seen.0);
    eprintln!("a bet to a paused owner was rejected after {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_decision_recorded_stands_whoever_writes_the_next() {
    use touchline::cluster::bets::BetBook;
    use touchline::journal::BetRecord;
    let nats = crate::support::cluster::nats();
    let node = crate::support::cluster::connect(&[nats.url()], "a", std::time::Duration::from_secs(3), 1).await;
    let book = BetBook::open(&node).await.expect("bet book");
    let request: touchline_guest::bet::BetRequest = serde_json::from_value(json!({
        "id": "x", "market": 201, "specifiers": "", "outcome": "861", "odds": 2.0, "stake": 10.0,
        "accept_better_odds": false
    }))
    .expect("request");
    let record = |decision: Result<f64, String>| BetRecord {
        match_id: MATCH.to_owned(),
        request: request.clone(),
        decision,
        seq: 3,
        epoch: 1,
        decided_at: 1,
        settlement: None,
    };
    let (accepted, refused) = (record(Ok(2.0)), record(Err("unavailable".into())));
    assert_eq!(
        book.record_decision(7, &accepted).await.expect("first"),
        None,
        "recorded"
    );
    // The same record again (a retry): a duplicate, it stands.
    assert_eq!(book.record_decision(7, &accepted).await.expect("retry"), None);
    // Another writer's decision for the bet loses to the first, within the
    // duplicate window too.
    assert_eq!(
        book.record_decision(7, &refused).await.expect("second"),
        Some(accepted.clone())
    );
    assert_eq!(book.recorded(7, "x").await.expect("read"), Some(accepted));
}
