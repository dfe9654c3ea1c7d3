//! [`Generator`]: the simulated feed as a deterministic, sans-IO message
//! source. It owns the matches, feed time, the alive schedule and the
//! fault windows a [`Control`] opens; it renders messages and never does
//! IO (the pacing and the sockets are `serve`'s).

use std::collections::VecDeque;
use std::fmt::Write as _;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::game::SimMatch;
use super::{CTRL, PRODUCERS, SimConfig};

/// Feed time at the start of a deterministic run (2027-01-15T08:00:00Z).
pub const EPOCH_MS: i64 = 1_800_000_000_000;
/// Feed time between alive messages.
const ALIVE_EVERY_MS: i64 = 10_000;
/// A new match's messages before kick-off: between a fifth and a quarter
/// of its life (900 live messages). With 12 matches at 40 msg/s that is
/// about a feed-minute.
const PREMATCH_MESSAGES: u32 = 200;

/// What the provider asks of one connection's generator (from the API or
/// the fault script). Durations are feed time, which a served connection
/// keeps on the wall clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Every match `product` owns, as one odds_change with `request_id`
    /// each, then a snapshot_complete.
    Recover { product: u32, request_id: u64 },
    /// Only a snapshot_complete (to test a server against a wrong one).
    SnapshotComplete { product: u32, request_id: u64 },
    /// No alive from `product` for the next `ms`.
    StopAlive { product: u32, ms: i64 },
    /// One alive with `subscribed="0"` from `product`, now.
    Unsubscribe { product: u32 },
    /// For the next `ms`, `product`'s messages carry timestamps `lag_ms`
    /// in the past.
    Delay { product: u32, lag_ms: i64, ms: i64 },
}

/// The fault windows open on one producer, in feed time.
#[derive(Debug, Clone, Copy, Default)]
struct Windows {
    /// No alive before this.
    silent_until: i64,
    /// Timestamps lag by `lag_ms` before this.
    delayed_until: i64,
    lag_ms: i64,
}

/// Deterministic message source.
pub struct Generator {
    rng: ChaCha8Rng,
    matches: Vec<SimMatch>,
    next_match_id: u64,
    start_ms: i64,
    now_ms: i64,
    step_ms: f64,
    elapsed_ms: f64,
    next_alive_ms: i64,
    /// Producers whose alive is due.
    alive_due: VecDeque<u32>,
    /// Overrides the timestamp attribute of the next messages (the
    /// benchmark stamps send times into it to measure latency).
    stamp: Option<i64>,
    /// Matches before kick-off: the last one waits for the next fixture,
    /// so Ctrl always owns a match.
    pre_match: usize,
    /// Per producer of [`PRODUCERS`], in that order.
    windows: [Windows; PRODUCERS.len()],
}

impl Generator {
    /// A generator whose feed time starts at [`EPOCH_MS`].
    pub fn new(cfg: &SimConfig) -> Generator {
        Generator::starting_at(cfg, EPOCH_MS)
    }

    /// A generator whose feed time starts at `start_ms` (a served
    /// connection passes the wall clock). The messages are those of
    /// [`Generator::new`] but for their timestamps.
    pub fn starting_at(cfg: &SimConfig, start_ms: i64) -> Generator {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let first = 40_000_000 + (cfg.seed % 1000) * 100_000;
        let n = u64::from(cfg.matches.max(1));
        // A quarter before kick-off, kicking off one after another; a lone
        // match starts live.
        let pre = if n >= 2 { n.div_ceil(4) } else { 0 };
        let matches: Vec<SimMatch> = (0..n)
            .map(|i| {
                if i < pre {
                    let left = u64::from(PREMATCH_MESSAGES) * (i + 1) / pre;
                    SimMatch::pre_match(first + i, &mut rng, u32::try_from(left).unwrap_or(u32::MAX))
                } else {
                    SimMatch::kicked_off(first + i, &mut rng)
                }
            })
            .collect();
        // Feed time advances as if the rate were 50 msg/s when unpaced.
        let rate = if cfg.rate > 0.0 { cfg.rate } else { 50.0 };
        Generator {
            rng,
            pre_match: matches.iter().filter(|m| m.is_pre_match()).count(),
            matches,
            next_match_id: first + n,
            start_ms,
            now_ms: start_ms,
            step_ms: 1000.0 / rate,
            elapsed_ms: 0.0,
            next_alive_ms: start_ms,
            alive_due: VecDeque::new(),
            stamp: None,
            windows: [Windows::default(); PRODUCERS.len()],
        }
    }

    /// Feed time of the last message.
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }

    /// The event ids of the matches `product` owns now (whose odds it
    /// sends, and a recovery of it would send).
    pub fn matches_of(&self, product: u32) -> Vec<String> {
        self.matches
            .iter()
            .filter(|m| m.producer() == product)
            .map(SimMatch::event_id)
            .collect()
    }

    /// The next message with `timestamp` set to `stamp` (any unit).
    pub fn next_message_stamped(&mut self, stamp: i64) -> String {
        self.stamp = Some(stamp);
        let m = self.next_message();
        self.stamp = None;
        m
    }

    /// The next message, without BOM or declaration.
    pub fn next_message(&mut self) -> String {
        self.elapsed_ms += self.step_ms;
        self.now_ms = self.start_ms + self.elapsed_ms as i64;
        if self.now_ms >= self.next_alive_ms {
            self.next_alive_ms += ALIVE_EVERY_MS;
            self.alive_due.extend(PRODUCERS.map(|p| p.id));
        }
        while let Some(product) = self.alive_due.pop_front() {
            if self.window(product).is_some_and(|w| self.now_ms < w.silent_until) {
                continue;
            }
            return format!(
                r#"<alive product="{product}" timestamp="{}" subscribed="1"/>"#,
                self.feed_time(product)
            );
        }
        let i = self.rng.random_range(0..self.matches.len());
        if self.matches[i].finished() {
            let id = self.next_match_id;
            self.next_match_id += 1;
            self.matches[i] = SimMatch::pre_match(id, &mut self.rng, PREMATCH_MESSAGES);
            self.pre_match += 1;
            let kick_off =
                self.now_ms + (f64::from(PREMATCH_MESSAGES) * self.matches.len() as f64 * self.step_ms) as i64;
            let now = self.stamp.unwrap_or(self.feed_time(CTRL));
            return format!(
                r#"<fixture_change product="{CTRL}" event_id="sr:match:{id}" timestamp="{now}" change_type="1" start_time="{kick_off}"/>"#
            );
        }
        let now = self.stamp.unwrap_or(self.feed_time(self.matches[i].producer()));
        let may_kick_off = self.matches.len() == 1 || self.pre_match > 1;
        let m = &mut self.matches[i];
        let was_pre_match = m.is_pre_match();
        let message = m.step(&mut self.rng, now, may_kick_off);
        if was_pre_match && !m.is_pre_match() {
            self.pre_match -= 1;
        }
        message
    }

    /// Apply a provider control. Messages it sends at once (a recovery,
    /// a snapshot_complete, an unsubscribed alive) are appended to `out`,
    /// each followed by a newline.
    pub fn control(&mut self, control: &Control, out: &mut String) {
        let now = self.now_ms;
        match *control {
            Control::Recover { product, request_id } => {
                let at = self.feed_time(product);
                for m in self.matches.iter().filter(|m| m.producer() == product) {
                    m.recovery_book(out, at, request_id);
                    out.push('\n');
                }
                snapshot_complete(out, product, request_id, at);
            }
            Control::SnapshotComplete { product, request_id } => {
                snapshot_complete(out, product, request_id, self.feed_time(product));
            }
            Control::StopAlive { product, ms } => {
                if let Some(w) = self.window_mut(product) {
                    w.silent_until = now + ms;
                }
            }
            Control::Unsubscribe { product } => {
                let _ = writeln!(
                    out,
                    r#"<alive product="{product}" timestamp="{}" subscribed="0"/>"#,
                    self.feed_time(product)
                );
            }
            Control::Delay { product, lag_ms, ms } => {
                if let Some(w) = self.window_mut(product) {
                    w.delayed_until = now + ms;
                    w.lag_ms = lag_ms;
                }
            }
        }
    }

    /// The timestamp `product`'s messages carry now: feed time, less the
    /// lag of a delay fault.
    fn feed_time(&self, product: u32) -> i64 {
        match self.window(product) {
            Some(w) if self.now_ms < w.delayed_until => self.now_ms - w.lag_ms,
            _ => self.now_ms,
        }
    }

    fn window(&self, product: u32) -> Option<&Windows> {
        PRODUCERS.iter().position(|p| p.id == product).map(|i| &self.windows[i])
    }

    fn window_mut(&mut self, product: u32) -> Option<&mut Windows> {
        PRODUCERS
            .iter()
            .position(|p| p.id == product)
            .map(|i| &mut self.windows[i])
    }
}

fn snapshot_complete(out: &mut String, product: u32, request_id: u64, now: i64) {
    let _ = writeln!(
        out,
        r#"<snapshot_complete request_id="{request_id}" product="{product}" timestamp="{now}"/>"#
    );
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::feed::parse::{FeedMessage, parse};
    use crate::sim::LO;
    use touchline_guest::event::MatchEvent;

    fn cfg(matches: u32, seed: u64) -> SimConfig {
        SimConfig {
            matches,
            seed,
            rate: 100.0,
            count: 0,
        }
    }

    /// Every message of `out` (newline-separated), parsed.
    fn parsed(out: &str) -> Vec<FeedMessage> {
        out.lines()
            .map(|l| parse(l.as_bytes()).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn same_seed_same_stream_and_every_message_parses() {
        let (mut a, mut b, mut c) = (
            Generator::new(&cfg(3, 7)),
            Generator::new(&cfg(3, 7)),
            Generator::new(&cfg(3, 8)),
        );
        let mut kinds = BTreeMap::new();
        let mut differs = false;
        for _ in 0..5000 {
            let m = a.next_message();
            assert_eq!(m, b.next_message());
            differs |= m != c.next_message();
            let parsed = parse(m.as_bytes()).unwrap_or_else(|e| panic!("{e}: {m}"));
            *kinds.entry(parsed.kind()).or_insert(0) += 1;
            if let FeedMessage::Match(MatchEvent::OddsChange(oc)) = parsed {
                let n = oc.markets.len();
                let status = oc.sport_event_status.map(|s| s.status);
                match oc.header.product {
                    Some(CTRL) => {
                        assert_eq!(status, Some(0), "Ctrl prices only matches before kick-off");
                        let handed_over = oc.markets.iter().filter(|m| m.status == -2).count();
                        assert!(
                            handed_over == 0 || handed_over == n,
                            "a hand-over hands over every market"
                        );
                        assert!(
                            (33..=37).contains(&n) || n == PREMATCH_MARKETS || handed_over == n,
                            "a main book, a full book or a hand-over: {n}"
                        );
                    }
                    _ => assert!((33..=37).contains(&n), "a live odds_change carries the live book: {n}"),
                }
            }
        }
        assert!(differs, "another seed gives another stream");
        let sizes: Vec<usize> = (0..4000).map(|_| a.next_message().len()).collect();
        assert!(sizes.iter().any(|&n| n > 60_000), "an occasional full pre-match book");
        for k in ["odds_change", "bet_stop", "bet_settlement", "fixture_change", "alive"] {
            assert!(kinds.contains_key(k), "no {k} in 5000 messages: {kinds:?}");
        }
    }

    const PREMATCH_MARKETS: usize = 170;

    /// What one match's stream looked like, in order.
    #[derive(Debug, PartialEq)]
    enum Seen {
        Fixture,
        /// Ctrl's odds before kick-off (status 0, nothing handed over).
        CtrlOdds,
        /// Ctrl's odds_change with every market at -2; how many.
        HandOver(usize),
        /// Anything LO sends.
        Lo,
    }

    #[test]
    fn a_new_match_is_priced_by_ctrl_then_handed_over_to_lo() {
        let mut g = Generator::new(&cfg(4, 3));
        let mut seen: BTreeMap<String, Vec<Seen>> = BTreeMap::new();
        // Markets Ctrl priced, per match: the hand-over must name them all.
        let mut ctrl_markets: BTreeMap<String, BTreeSet<(u32, String)>> = BTreeMap::new();
        for _ in 0..20_000 {
            assert!(!g.matches_of(CTRL).is_empty(), "Ctrl always owns a match");
            let FeedMessage::Match(e) = parse(g.next_message().as_bytes()).expect("parses") else {
                continue;
            };
            let id = e.event_id().to_owned();
            let what = match (&e, e.header().product) {
                (MatchEvent::FixtureChange(_), Some(CTRL)) => Seen::Fixture,
                (MatchEvent::OddsChange(oc), Some(CTRL)) if oc.markets.iter().all(|m| m.status == -2) => {
                    let named: BTreeSet<_> = oc.markets.iter().map(|m| (m.id, m.specifiers.to_string())).collect();
                    assert_eq!(Some(&named), ctrl_markets.get(&id), "{id}: hands over what it priced");
                    Seen::HandOver(oc.markets.len())
                }
                (MatchEvent::OddsChange(oc), Some(CTRL)) => {
                    let markets = ctrl_markets.entry(id.clone()).or_default();
                    markets.extend(oc.markets.iter().map(|m| (m.id, m.specifiers.to_string())));
                    Seen::CtrlOdds
                }
                (_, Some(LO)) => Seen::Lo,
                (e, p) => panic!("unexpected {} from {p:?}", e.kind()),
            };
            seen.entry(id).or_default().push(what);
        }
        let new: Vec<_> = seen.values().filter(|s| s.first() == Some(&Seen::Fixture)).collect();
        let handed_over: Vec<_> = new.iter().filter(|s| s.contains(&Seen::Lo)).collect();
        assert!(handed_over.len() >= 4, "new matches kicked off: {}", handed_over.len());
        for s in handed_over {
            let h = s
                .iter()
                .position(|w| matches!(w, Seen::HandOver(_)))
                .expect("a hand-over before LO");
            assert!(h >= 2, "Ctrl priced it first: {:?}", &s[..h]);
            assert!(
                s[1..h].iter().all(|w| *w == Seen::CtrlOdds),
                "only Ctrl before kick-off"
            );
            assert!(s[h + 1..].iter().all(|w| *w == Seen::Lo), "only LO after the hand-over");
        }
        let full_books_handed_over = seen
            .values()
            .flatten()
            .filter(|w| matches!(w, Seen::HandOver(n) if *n > PREMATCH_MARKETS))
            .count();
        assert!(full_books_handed_over > 0, "a full book's markets are handed over too");
    }

    #[test]
    fn a_recovery_sends_the_producers_matches_then_snapshot_complete() {
        let mut g = Generator::new(&cfg(12, 5));
        for _ in 0..3000 {
            g.next_message();
        }
        for (product, request_id) in [(LO, 41), (CTRL, 42)] {
            let mut out = String::new();
            g.control(&Control::Recover { product, request_id }, &mut out);
            let messages = parsed(&out);
            let (last, books) = messages.split_last().expect("messages");
            let FeedMessage::SnapshotComplete(done) = last else {
                panic!("ends with snapshot_complete: {last:?}")
            };
            assert_eq!((done.product, done.request_id), (Some(product), Some(request_id)));
            let mut ids: Vec<String> = books
                .iter()
                .map(|m| match m {
                    FeedMessage::Match(MatchEvent::OddsChange(oc)) => {
                        assert_eq!(oc.header.product, Some(product));
                        assert_eq!(oc.header.request_id, Some(request_id));
                        assert!(oc.markets.len() >= 33, "a whole book");
                        oc.header.event_id.clone()
                    }
                    other => panic!("only odds_change before it: {other:?}"),
                })
                .collect();
            ids.sort();
            let mut owned = g.matches_of(product);
            owned.sort();
            assert!(!owned.is_empty());
            assert_eq!(ids, owned, "one odds_change per match of producer {product}");
        }
        let mut out = String::new();
        g.control(
            &Control::Recover {
                product: 4,
                request_id: 9,
            },
            &mut out,
        );
        assert!(
            matches!(parsed(&out)[..], [FeedMessage::SnapshotComplete(_)]),
            "no matches: {out}"
        );
    }

    /// Alives of `product` in the next `n` messages and whether any other
    /// producer's alive came, with their timestamps less feed time.
    fn alives(g: &mut Generator, n: usize, product: u32) -> (Vec<i64>, bool) {
        let (mut mine, mut others) = (Vec::new(), false);
        for _ in 0..n {
            if let FeedMessage::Alive(a) = parse(g.next_message().as_bytes()).expect("parses") {
                if a.product == Some(product) {
                    mine.push(a.timestamp - g.now_ms());
                } else {
                    others = true;
                }
            }
        }
        (mine, others)
    }

    #[test]
    fn stop_alive_silences_one_producer_for_its_window() {
        let mut g = Generator::new(&cfg(3, 1));
        alives(&mut g, 50, LO);
        let mut out = String::new();
        g.control(
            &Control::StopAlive {
                product: LO,
                ms: 30_000,
            },
            &mut out,
        );
        assert!(out.is_empty());
        // 100 msg/s: 2900 messages are 29 s of feed time.
        let (lo, ctrl) = alives(&mut g, 2900, LO);
        assert!(lo.is_empty(), "no LO alive in the window");
        assert!(ctrl, "Ctrl's alives go on");
        let (lo, _) = alives(&mut g, 1100, LO);
        assert!(!lo.is_empty(), "LO's alives come back after it");
    }

    #[test]
    fn unsubscribed_is_one_alive_at_once() {
        let mut g = Generator::new(&cfg(3, 1));
        g.next_message();
        let mut out = String::new();
        g.control(&Control::Unsubscribe { product: CTRL }, &mut out);
        let [FeedMessage::Alive(a)] = &parsed(&out)[..] else {
            panic!("one alive: {out}")
        };
        assert_eq!((a.product, a.subscribed, a.timestamp), (Some(CTRL), false, g.now_ms()));
    }

    #[test]
    fn delay_lags_every_message_of_one_producer_for_its_window() {
        let mut g = Generator::new(&cfg(6, 2));
        let mut out = String::new();
        g.control(
            &Control::Delay {
                product: LO,
                lag_ms: 30_000,
                ms: 30_000,
            },
            &mut out,
        );
        let lag_of = |g: &Generator, m: &FeedMessage| {
            let (product, ts) = match m {
                FeedMessage::Alive(a) => (a.product, a.timestamp),
                FeedMessage::Match(e) => (e.header().product, e.header().timestamp),
                FeedMessage::SnapshotComplete(s) => (s.product, s.timestamp),
                FeedMessage::Unused { .. } => (None, g.now_ms()),
            };
            (product, g.now_ms() - ts)
        };
        let mut lagged = BTreeSet::new();
        for _ in 0..2900 {
            let m = parse(g.next_message().as_bytes()).expect("parses");
            match lag_of(&g, &m) {
                (Some(LO), lag) => {
                    assert_eq!(lag, 30_000, "{m:?}");
                    lagged.insert(m.kind());
                }
                (_, lag) => assert_eq!(lag, 0, "Ctrl is on time: {m:?}"),
            }
        }
        assert!(lagged.contains("alive") && lagged.contains("odds_change"), "{lagged:?}");
        g.control(
            &Control::Recover {
                product: LO,
                request_id: 1,
            },
            &mut out,
        );
        for m in parsed(&out) {
            assert_eq!(lag_of(&g, &m).1, 30_000, "a recovery lags too");
        }
        for _ in 0..200 {
            g.next_message();
        }
        for _ in 0..1000 {
            let m = parse(g.next_message().as_bytes()).expect("parses");
            assert_eq!(lag_of(&g, &m).1, 0, "on time after the window: {m:?}");
        }
    }

    #[test]
    fn starting_at_shifts_only_the_timestamps() {
        let mut a = Generator::new(&cfg(5, 9));
        let start = EPOCH_MS + 123_456;
        let mut b = Generator::starting_at(&cfg(5, 9), start);
        // The values of the attributes that hold times, removed.
        let timeless = |m: &str| {
            m.split(['='])
                .map(|part| match part.strip_prefix('"').and_then(|r| r.split_once('"')) {
                    Some((value, rest)) if value.bytes().all(|b| b.is_ascii_digit()) && value.len() >= 13 => rest,
                    _ => part,
                })
                .collect::<Vec<_>>()
                .join("=")
        };
        for _ in 0..2000 {
            let (ma, mb) = (a.next_message(), b.next_message());
            assert_ne!(ma, mb);
            assert_eq!(timeless(&ma), timeless(&mb));
        }
        assert_eq!(b.now_ms() - a.now_ms(), 123_456);
    }
}
