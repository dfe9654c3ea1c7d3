//! The simulator over real sockets: feed connections and the HTTP API on
//! 127.0.0.1:0, the stream read back through the framer and parser. The
//! generator's own behaviour is tested without sockets in `generator`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use touchline_guest::event::MatchEvent;

use super::*;
use crate::feed::frame::Framer;
use crate::feed::parse::{FeedMessage, parse};

/// Guards every socket test against hanging (a failure, not a wait).
const TEST_TIMEOUT: Duration = Duration::from_secs(60);

fn cfg(matches: u32, rate: f64) -> SimConfig {
    SimConfig {
        matches,
        seed: 5,
        rate,
        count: 0,
    }
}

/// A running simulator.
struct Sim {
    at: Listening,
    provider: Provider,
    stop: CancellationToken,
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(cfg: SimConfig) -> Sim {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    let sim = Simulator::bind(any, any, cfg, FaultScript::default())
        .await
        .expect("bind");
    let at = sim.listening().expect("addresses");
    let provider = sim.provider();
    let stop = CancellationToken::new();
    tokio::spawn(sim.run(stop.clone()));
    Sim { at, provider, stop }
}

/// One HTTP request to the API: (status, body).
async fn http(addr: SocketAddr, method: &'static str, path: &str) -> (u16, String) {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        touchline_testkit::http::request(addr, method, &path, &[], b"", Duration::from_secs(10))
    })
    .await
    .expect("request task")
    .expect("HTTP answer")
}

/// A feed client: the stream as parsed messages.
struct Feed {
    stream: TcpStream,
    framer: Framer,
}

impl Feed {
    async fn connect(addr: SocketAddr) -> Feed {
        Feed {
            stream: TcpStream::connect(addr).await.expect("connect"),
            framer: Framer::new(1 << 20),
        }
    }

    /// The next message; `None` once the simulator closed the connection.
    async fn next(&mut self) -> Option<FeedMessage> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            if let Some(raw) = self.framer.next_message() {
                let raw = raw.expect("whole messages");
                return Some(parse(&raw).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&raw))));
            }
            let n = self.stream.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.framer.push(&chunk[..n]);
        }
    }

    /// Messages up to and including the first that `done` accepts.
    async fn until(&mut self, done: impl Fn(&FeedMessage) -> bool) -> Vec<FeedMessage> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await.expect("the feed goes on");
            let last = done(&m);
            out.push(m);
            if last {
                return out;
            }
        }
    }
}

fn request_id(m: &FeedMessage) -> Option<u64> {
    match m {
        FeedMessage::Match(e) => e.header().request_id,
        FeedMessage::SnapshotComplete(s) => s.request_id,
        FeedMessage::Alive(_) | FeedMessage::Unused { .. } => None,
    }
}

fn product_and_time(m: &FeedMessage) -> (Option<u32>, i64) {
    match m {
        FeedMessage::Alive(a) => (a.product, a.timestamp),
        FeedMessage::Match(e) => (e.header().product, e.header().timestamp),
        FeedMessage::SnapshotComplete(s) => (s.product, s.timestamp),
        FeedMessage::Unused { .. } => (None, 0),
    }
}

/// A recovery as the feed shows it: the ordinary messages before it, and
/// (product, event id) of each of its odds_changes; it must be contiguous
/// and end with its snapshot_complete for `product`.
async fn read_recovery(feed: &mut Feed, product: u32, id: u64) -> (usize, Vec<(u32, String)>) {
    let messages = feed
        .until(|m| matches!(m, FeedMessage::SnapshotComplete(s) if s.request_id == Some(id)))
        .await;
    let first = messages
        .iter()
        .position(|m| request_id(m) == Some(id))
        .expect("the recovery");
    let (before, block) = messages.split_at(first);
    let (done, books) = block.split_last().expect("snapshot_complete");
    let FeedMessage::SnapshotComplete(done) = done else {
        unreachable!("until stops there")
    };
    assert_eq!(done.product, Some(product));
    let books = books
        .iter()
        .map(|m| match m {
            FeedMessage::Match(MatchEvent::OddsChange(oc)) if oc.header.request_id == Some(id) => {
                (oc.header.product.expect("product"), oc.header.event_id.clone())
            }
            other => panic!("the recovery is contiguous odds_changes: {other:?}"),
        })
        .collect();
    (before.len(), books)
}

#[test]
fn the_simulator_line_reads_back() {
    let at = Listening {
        feed: "127.0.0.1:9000".parse().expect("addr"),
        api: "127.0.0.1:41234".parse().expect("addr"),
    };
    assert_eq!(at.line(), "SIMULATOR feed=127.0.0.1:9000 api=http://127.0.0.1:41234");
    assert_eq!(Listening::parse(&at.line()), Some(at));
    assert_eq!(Listening::parse("READY http=1.2.3.4:5"), None);
}

#[tokio::test]
async fn a_recovery_request_replays_exactly_that_producers_matches() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let sim = start(cfg(12, 400.0)).await;
        let mut feed = Feed::connect(sim.at.feed).await;
        let mut shadow = Generator::new(&cfg(12, 400.0));
        let mut normal = 0;
        for (name, product, after, id) in [("LO", LO, Some(1234), 77), ("Ctrl", CTRL, None, 78)] {
            normal += feed.until(|_| true).await.len();
            let after_q = after.map(|a| format!("after={a}&")).unwrap_or_default();
            let (status, body) = http(
                sim.at.api,
                "POST",
                &format!("/v1/{name}/recovery/initiate_request?{after_q}request_id={id}"),
            )
            .await;
            assert_eq!(status, 202, "{body}");
            assert!(
                body.contains(
                    r#"<response response_code="ACCEPTED"><action>Request for recovery accepted</action></response>"#
                ),
                "{body}"
            );
            let (before, books) = read_recovery(&mut feed, product, id).await;
            normal += before;
            for _ in 0..normal {
                shadow.next_message();
            }
            normal = 0;
            assert!(books.iter().all(|(p, _)| *p == product), "only {name}'s odds");
            let ids: BTreeSet<String> = books.iter().map(|(_, e)| e.clone()).collect();
            assert_eq!(ids.len(), books.len(), "one odds_change per match");
            let owned: BTreeSet<String> = shadow.matches_of(product).into_iter().collect();
            assert!(!owned.is_empty());
            assert_eq!(ids, owned, "{name}'s matches when the request came");
        }
        let (status, body) = http(sim.at.api, "GET", "/control/requests").await;
        assert_eq!(status, 200);
        let log: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        let log = log.as_array().expect("array");
        assert_eq!(log.len(), 2, "{body}");
        assert_eq!(
            (
                &log[0]["producer"],
                &log[0]["product"],
                &log[0]["after"],
                &log[0]["request_id"]
            ),
            (&"LO".into(), &1.into(), &1234.into(), &77.into())
        );
        assert_eq!(
            (
                &log[1]["producer"],
                &log[1]["product"],
                &log[1]["after"],
                &log[1]["request_id"]
            ),
            (&"Ctrl".into(), &3.into(), &serde_json::Value::Null, &78.into())
        );
        let at = log[0]["at_ms"].as_i64().expect("at_ms");
        assert!((wall_ms() - at).abs() < 60_000, "the wall clock when it came: {at}");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn the_api_refuses_what_it_does_not_know() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let sim = start(cfg(3, 100.0)).await;
        let api = sim.at.api;
        let (status, body) = http(api, "POST", "/v1/BetPal/recovery/initiate_request?request_id=1").await;
        assert_eq!(status, 404);
        assert!(body.contains(r#"response_code="NOT_FOUND""#), "{body}");
        for bad in ["request_id=x", "after=1", "after=soon&request_id=1", "request_id=-1"] {
            let (status, body) = http(api, "POST", &format!("/v1/LO/recovery/initiate_request?{bad}")).await;
            assert_eq!(status, 400, "{bad}: {body}");
            assert!(body.contains(r#"response_code="BAD_REQUEST""#), "{body}");
        }
        for (query, reason) in [
            ("kind=explode", "unknown fault kind"),
            ("kind=delay&product=1", "needs a duration"),
            ("kind=stop_alive&product=2&seconds=5", "unknown producer 2"),
            ("kind=drop&product=1", "concerns every producer"),
            ("product=1", "kind"),
        ] {
            let (status, body) = http(api, "POST", &format!("/control/fault?{query}")).await;
            assert_eq!(status, 400, "{query}: {body}");
            assert!(body.contains(reason), "{query}: {body}");
        }
        let (status, _) = http(api, "POST", "/control/snapshot_complete?product=1").await;
        assert_eq!(status, 400);
        assert!(sim.provider.requests().is_empty(), "nothing refused is logged");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn served_timestamps_are_the_wall_clock_and_a_delay_lags_one_producer() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let sim = start(cfg(8, 500.0)).await;
        let mut feed = Feed::connect(sim.at.feed).await;
        for _ in 0..200 {
            let m = feed.next().await.expect("message");
            let skew = wall_ms() - product_and_time(&m).1;
            assert!((-1000..1000).contains(&skew), "on the wall clock: {skew} ms off, {m:?}");
        }
        let (status, body) = http(sim.at.api, "POST", "/control/fault?kind=delay&product=1&seconds=30").await;
        assert_eq!(status, 200, "{body}");
        let echo: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(
            echo,
            serde_json::json!({"kind": "delay", "product": 1, "seconds": 30, "connections": 1})
        );
        let lag = |m: &FeedMessage| (product_and_time(m).0, wall_ms() - product_and_time(m).1);
        feed.until(|m| matches!(lag(m), (Some(LO), l) if l > 25_000)).await;
        let mut seen = BTreeSet::new();
        for _ in 0..1500 {
            let m = feed.next().await.expect("message");
            match lag(&m) {
                (Some(LO), l) => assert!((29_000..31_000).contains(&l), "LO lags 30 s: {l}"),
                (_, l) => assert!(l < 1000, "Ctrl does not: {l}"),
            }
            seen.insert(product_and_time(&m).0);
        }
        assert_eq!(seen, BTreeSet::from([Some(LO), Some(CTRL)]), "both producers seen");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn unsubscribed_snapshot_complete_and_drop_over_http() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let sim = start(cfg(4, 200.0)).await;
        let api = sim.at.api;
        let mut feed = Feed::connect(sim.at.feed).await;
        feed.next().await.expect("connected");

        let (status, body) = http(api, "POST", "/control/fault?kind=unsubscribed&product=3").await;
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"connections":1,"kind":"unsubscribed","product":3}"#)
        );
        feed.until(|m| matches!(m, FeedMessage::Alive(a) if a.product == Some(CTRL) && !a.subscribed))
            .await;

        let (status, _) = http(api, "POST", "/control/snapshot_complete?product=1&request_id=999").await;
        assert_eq!(status, 200);
        let got = feed
            .until(|m| matches!(m, FeedMessage::SnapshotComplete(s) if s.request_id == Some(999)))
            .await;
        assert!(
            got.iter()
                .all(|m| request_id(m).is_none() || request_id(m) == Some(999)),
            "a bare snapshot_complete, no recovery"
        );
        assert!(sim.provider.requests().is_empty(), "not a recovery request");

        let (status, body) = http(api, "POST", "/control/fault?kind=drop").await;
        assert_eq!((status, body.as_str()), (200, r#"{"connections":1,"kind":"drop"}"#));
        while feed.next().await.is_some() {}
        let mut again = Feed::connect(sim.at.feed).await;
        assert!(again.next().await.is_some(), "a new connection is served");
    })
    .await
    .expect("in time");
}

#[tokio::test]
async fn a_full_recovery_of_a_thousand_matches_takes_milliseconds() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let sim = start(cfg(1000, 100.0)).await;
        let mut feed = Feed::connect(sim.at.feed).await;
        feed.next().await.expect("connected");
        let asked = Instant::now();
        assert_eq!(sim.provider.recover(Producer::by_id(LO).expect("LO"), None, 1), 1);
        assert_eq!(sim.provider.recover(Producer::by_id(CTRL).expect("Ctrl"), None, 2), 1);
        let (_, lo) = read_recovery(&mut feed, LO, 1).await;
        let (_, ctrl) = read_recovery(&mut feed, CTRL, 2).await;
        let took = asked.elapsed();
        assert_eq!(lo.len() + ctrl.len(), 1000, "every match, once");
        // Rendering, writing, framing and parsing ~10 MB of XML.
        assert!(took < Duration::from_millis(1500), "a full recovery took {took:?}");
        eprintln!("full recovery of 1000 matches, read and parsed: {took:?}");
    })
    .await
    .expect("in time");
}

#[test]
fn rendering_a_full_recovery_of_a_thousand_matches() {
    let mut g = Generator::new(&cfg(1000, 100.0));
    for _ in 0..20_000 {
        g.next_message();
    }
    let started = Instant::now();
    let mut out = String::new();
    g.control(
        &Control::Recover {
            product: LO,
            request_id: 1,
        },
        &mut out,
    );
    g.control(
        &Control::Recover {
            product: CTRL,
            request_id: 2,
        },
        &mut out,
    );
    let took = started.elapsed();
    eprintln!("rendered {} bytes in {took:?}", out.len());
    assert_eq!(out.lines().count(), 1002);
    assert!(took < Duration::from_millis(500), "rendering took {took:?}");
}

#[tokio::test]
async fn descriptions_and_fixtures_are_served_and_the_fixture_endpoint_can_fail() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let sim = start(cfg(3, 100.0)).await;
        let api = sim.at.api;
        let (status, body) = http(api, "GET", "/v1/descriptions/en/markets.xml").await;
        assert_eq!(status, 200);
        assert!(
            body.contains(r#"<market id="166" name="Total corners" groups="all|regular_play|corners">"#),
            "{body}"
        );
        let (status, body) = http(api, "GET", "/v1/descriptions/en/variants.xml").await;
        assert_eq!(status, 200);
        assert!(body.contains(r#"<variant id="sr:winning_margin:3+">"#), "{body}");
        let path = "/v1/sports/en/sport_events/sr:match:40100001/fixture.xml";
        let (status, body) = http(api, "GET", path).await;
        assert_eq!(status, 200);
        assert!(
            body.contains(r#"qualifier="home""#) && body.contains("Soccer"),
            "{body}"
        );
        let (status, _) = http(api, "GET", "/v1/sports/en/sport_events/sr:stage:1/fixture.xml").await;
        assert_eq!(status, 404);
        let (status, _) = http(api, "POST", "/control/fixtures?mode=down").await;
        assert_eq!(status, 200);
        assert_eq!(http(api, "GET", path).await.0, 503);
        let (status, body) = http(api, "POST", "/control/fixtures?mode=slow&ms=200").await;
        assert_eq!((status, body.as_str()), (200, r#"{"slow":200}"#));
        let started = std::time::Instant::now();
        assert_eq!(http(api, "GET", path).await.0, 200);
        assert!(started.elapsed() >= Duration::from_millis(200), "answered late");
        for bad in ["mode=slow", "mode=sideways", "mode=down&ms=5"] {
            assert_eq!(
                http(api, "POST", &format!("/control/fixtures?{bad}")).await.0,
                400,
                "{bad}"
            );
        }
        assert_eq!(http(api, "POST", "/control/fixtures?mode=up").await.0, 200);
        assert_eq!(http(api, "GET", path).await.0, 200);
    })
    .await
    .expect("in time");
}
