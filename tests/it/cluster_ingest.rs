//! Ingest into the cluster against a real nats-server: each match event of
//! the real samples stored on its partition's subject with its encoded
//! bytes, and the same feed published by two ingest nodes (redundant feed
//! connections) stored once (issue 13).

use std::time::Duration;

use touchline::cluster::ingest::{Ingest, message_id};
use touchline::cluster::partition::event_subject;
use touchline::cluster::streams::EVENTS_STREAM;
use touchline::feed::parse::{FeedMessage, parse};

use crate::support::all_samples;
use crate::support::cluster::{connect, nats};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_nodes_on_the_same_feed_store_each_event_once() {
    let nats = nats();
    let urls = vec![nats.url()];
    let ttl = Duration::from_secs(3);
    let (a, b) = (connect(&urls, "a", ttl, 1).await, connect(&urls, "b", ttl, 1).await);
    let (ingest_a, ingest_b) = (Ingest::new(&a), Ingest::new(&b));
    let events: Vec<(String, Vec<u8>, Vec<u8>)> = all_samples()
        .into_iter()
        .filter_map(|(_, xml)| match parse(&xml) {
            Ok(FeedMessage::Match(e)) => Some((e.event_id().to_owned(), touchline_guest::encode(&e), xml)),
            _ => None,
        })
        .collect();
    assert!(events.len() >= 10, "{} match events in the samples", events.len());

    let mut stored = Vec::new();
    for (id, encoded, xml) in &events {
        let first = ingest_a
            .publish(id, encoded.clone().into(), message_id(id, xml))
            .await
            .expect("a publishes");
        let second = ingest_b
            .publish(id, encoded.clone().into(), message_id(id, xml))
            .await
            .expect("b publishes");
        assert!(!first.duplicate, "{id}: the first copy is stored");
        assert!(second.duplicate, "{id}: the second copy is recognised");
        assert_eq!(second.sequence, first.sequence, "{id}");
        stored.push(first);
    }
    // A message re-sent later (a reconnect) is still the same message.
    let (id, encoded, xml) = &events[0];
    let again = ingest_b
        .publish(id, encoded.clone().into(), message_id(id, xml))
        .await
        .expect("publishes");
    assert!(again.duplicate && again.sequence == stored[0].sequence, "{again:?}");

    let mut stream = a.js.get_stream(EVENTS_STREAM).await.expect("the events stream");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.state.messages, events.len() as u64, "every event once");
    for ((id, encoded, _), published) in events.iter().zip(&stored) {
        let m = stream
            .get_raw_message(published.sequence)
            .await
            .expect("stored message");
        assert_eq!(
            m.subject.as_str(),
            event_subject(published.partition, id).expect("subject")
        );
        assert_eq!(
            m.payload.as_ref(),
            encoded.as_slice(),
            "{id}: the encoded event, intact"
        );
    }
}
