//! Built-in feed simulator: a TCP server speaking the feed's vocabulary.
//!
//! [`Generator`] is sans-IO and deterministic for a seed: it plays `matches`
//! soccer matches at once (a Poisson goal model drives 33-37 markets per
//! match; goals come with a bet_stop before and reopened odds after;
//! half-time and full-time settle their markets; an ended match is replaced
//! by a new one announced with a fixture_change), plus an `alive` per
//! producer every 10 s of feed time. Timestamps are virtual, so the byte
//! stream for a seed is the same whatever the rate. [`serve`] paces it over
//! each accepted connection.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Feed time at the start of every run (2027-01-15T08:00:00Z).
const EPOCH_MS: i64 = 1_800_000_000_000;
/// Messages a match lasts, kick-off to final whistle.
const MESSAGES_PER_MATCH: f64 = 900.0;
/// Feed time between alive messages.
const ALIVE_EVERY_MS: i64 = 10_000;
/// How often the pacer wakes to write what is due.
const PACE_TICK: Duration = Duration::from_millis(5);
/// Producers that send alive messages.
const PRODUCERS: [u32; 2] = [1, 3];
/// Share of messages that are a pre-match producer's full book (~80 KB,
/// like the real `odds_change_prematch_full` sample).
const PREMATCH_SHARE: f64 = 1.0 / 500.0;
/// Markets in a pre-match full book.
const PREMATCH_MARKETS: u32 = 170;
/// Margin the simulated bookmaker puts on fair odds.
const MARGIN: f64 = 1.06;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub matches: u32,
    pub seed: u64,
    /// Messages per second per connection; 0 = as fast as the socket takes.
    pub rate: f64,
    /// Stop each connection after this many messages (0 = never).
    pub count: u64,
}

/// Deterministic message source.
pub struct Generator {
    rng: ChaCha8Rng,
    matches: Vec<SimMatch>,
    next_match_id: u64,
    now_ms: i64,
    step_ms: f64,
    elapsed_ms: f64,
    next_alive_ms: i64,
    /// Producers whose alive is due.
    alive_due: VecDeque<u32>,
    /// Overrides the timestamp attribute of the next messages (the
    /// benchmark stamps send times into it to measure latency).
    stamp: Option<i64>,
}

struct SimMatch {
    id: u64,
    minute: f64,
    home: u32,
    away: u32,
    ht: Option<(u32, u32)>,
    corners: u32,
    lam_home: f64,
    lam_away: f64,
    lam_corners: f64,
    started: bool,
    ended: bool,
    /// Messages due next for this match, rendered when sent (so their
    /// timestamps are send times).
    queue: VecDeque<Pending>,
}

/// A message a match owes the feed, rendered when it is sent.
enum Pending {
    FirstHalf,
    FullTime,
    NextGoal { goal_nr: u32, home: bool },
    Reopen,
}

/// Fair probability and feed outcome id.
type Priced = (&'static str, f64);

impl Generator {
    pub fn new(cfg: &SimConfig) -> Generator {
        let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
        let first = 40_000_000 + (cfg.seed % 1000) * 100_000;
        let n = cfg.matches.max(1) as u64;
        let matches = (0..n).map(|i| SimMatch::new(first + i, &mut rng)).collect();
        // Feed time advances as if the rate were 50 msg/s when unpaced.
        let rate = if cfg.rate > 0.0 { cfg.rate } else { 50.0 };
        Generator {
            rng,
            matches,
            next_match_id: first + n,
            now_ms: EPOCH_MS,
            step_ms: 1000.0 / rate,
            elapsed_ms: 0.0,
            next_alive_ms: EPOCH_MS,
            alive_due: VecDeque::new(),
            stamp: None,
        }
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
        self.now_ms = EPOCH_MS + self.elapsed_ms as i64;
        if self.now_ms >= self.next_alive_ms {
            self.next_alive_ms += ALIVE_EVERY_MS;
            self.alive_due.extend(PRODUCERS);
        }
        if let Some(product) = self.alive_due.pop_front() {
            return format!(
                r#"<alive product="{product}" timestamp="{}" subscribed="1"/>"#,
                self.now_ms
            );
        }
        let i = self.rng.random_range(0..self.matches.len());
        let now = self.stamp.unwrap_or(self.now_ms);
        if self.matches[i].ended {
            let id = self.next_match_id;
            self.next_match_id += 1;
            self.matches[i] = SimMatch::new(id, &mut self.rng);
            return format!(
                r#"<fixture_change product="1" event_id="sr:match:{id}" timestamp="{now}" change_type="1" start_time="{}"/>"#,
                self.now_ms + 60_000
            );
        }
        if self.rng.random_bool(PREMATCH_SHARE) {
            return self.matches[i].prematch_book(&mut self.rng, now);
        }
        self.matches[i].step(&mut self.rng, now)
    }
}

impl SimMatch {
    fn new(id: u64, rng: &mut ChaCha8Rng) -> SimMatch {
        SimMatch {
            id,
            minute: 0.0,
            home: 0,
            away: 0,
            ht: None,
            corners: 0,
            lam_home: rng.random_range(0.8..2.0),
            lam_away: rng.random_range(0.6..1.7),
            lam_corners: rng.random_range(8.0..12.0),
            started: false,
            ended: false,
            queue: VecDeque::new(),
        }
    }

    fn step(&mut self, rng: &mut ChaCha8Rng, now: i64) -> String {
        if let Some(p) = self.queue.pop_front() {
            return match p {
                Pending::FirstHalf => self.settle_first_half(now),
                Pending::FullTime => self.settle_full_time(now),
                Pending::NextGoal { goal_nr, home } => settlement(
                    self.id,
                    now,
                    &[(
                        8,
                        format!("goalnr={goal_nr}"),
                        vec![("6", home), ("7", false), ("8", !home)],
                    )],
                ),
                Pending::Reopen => self.odds_change(now),
            };
        }
        if !self.started {
            self.started = true;
            return self.odds_change(now);
        }
        let before = self.minute;
        self.minute += 90.0 / MESSAGES_PER_MATCH;
        // Odds drift: the model's view of the teams moves a little.
        self.lam_home = (self.lam_home * rng.random_range(0.97..1.03)).clamp(0.3, 3.5);
        self.lam_away = (self.lam_away * rng.random_range(0.97..1.03)).clamp(0.3, 3.5);
        if rng.random_bool((self.lam_corners / MESSAGES_PER_MATCH).min(1.0)) {
            self.corners += 1;
        }
        if before < 45.0 && self.minute >= 45.0 {
            self.ht = Some((self.home, self.away));
            self.queue.push_back(Pending::FirstHalf);
        }
        if self.minute >= 90.0 {
            self.ended = true;
            self.queue.push_back(Pending::FullTime);
            return self.odds_change(now);
        }
        let p_goal = (self.lam_home + self.lam_away) / MESSAGES_PER_MATCH;
        if rng.random_bool(p_goal.min(1.0)) {
            let goal_nr = self.home + self.away + 1;
            let home_scores = rng.random_bool(self.lam_home / (self.lam_home + self.lam_away));
            if home_scores {
                self.home += 1;
            } else {
                self.away += 1;
            }
            // The stop goes out now; the score and new odds follow.
            let stop = format!(
                r#"<bet_stop product="1" event_id="sr:match:{}" timestamp="{now}" groups="all" market_status="-1"/>"#,
                self.id
            );
            self.queue.push_back(Pending::NextGoal {
                goal_nr,
                home: home_scores,
            });
            self.queue.push_back(Pending::Reopen);
            return stop;
        }
        self.odds_change(now)
    }

    /// Probability matrix of the goals still to come (home i, away j).
    fn remaining(&self, minutes_left: f64) -> [[f64; 9]; 9] {
        let f = (minutes_left / 90.0).max(0.0);
        let (ph, pa) = (poisson(self.lam_home * f), poisson(self.lam_away * f));
        let mut m = [[0.0; 9]; 9];
        for (i, row) in m.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                *cell = ph[i] * pa[j];
            }
        }
        m
    }

    fn odds_change(&self, now: i64) -> String {
        let ended = self.ended;
        let live = |st: bool| if ended || !st { 0 } else { 1 };
        let (status, match_status) = if ended {
            (3, 100)
        } else if self.minute < 45.0 {
            (1, 6)
        } else {
            (1, 7)
        };
        let mut x = String::with_capacity(8 * 1024);
        let _ = write!(
            x,
            r#"<odds_change product="1" event_id="sr:match:{}" timestamp="{now}"><sport_event_status status="{status}" reporting="1" match_status="{match_status}" home_score="{}" away_score="{}">"#,
            self.id, self.home, self.away
        );
        let _ = write!(
            x,
            r#"<clock match_time="{}:{:02}"/>"#,
            self.minute as u32,
            ((self.minute.fract()) * 60.0) as u32
        );
        x.push_str("<period_scores>");
        if let Some((h, a)) = self.ht {
            let _ = write!(
                x,
                r#"<period_score match_status_code="6" number="1" home_score="{h}" away_score="{a}"/>"#
            );
            let _ = write!(
                x,
                r#"<period_score match_status_code="7" number="2" home_score="{}" away_score="{}"/>"#,
                self.home - h,
                self.away - a
            );
        } else {
            let _ = write!(
                x,
                r#"<period_score match_status_code="6" number="1" home_score="{}" away_score="{}"/>"#,
                self.home, self.away
            );
        }
        x.push_str("</period_scores></sport_event_status><odds>");
        let m = self.remaining(90.0 - self.minute);
        let (h, a) = (self.home as usize, self.away as usize);
        let sum = |pred: &dyn Fn(usize, usize) -> bool| -> f64 {
            let mut p = 0.0;
            for (i, row) in m.iter().enumerate() {
                for (j, cell) in row.iter().enumerate() {
                    if pred(h + i, a + j) {
                        p += cell;
                    }
                }
            }
            p
        };
        let p1 = sum(&|fh, fa| fh > fa);
        let px = sum(&|fh, fa| fh == fa);
        let p2 = 1.0 - p1 - px;
        market(&mut x, 1, "", live(true), &[("1", p1), ("2", px), ("3", p2)]);
        market(
            &mut x,
            10,
            "",
            live(true),
            &[("9", p1 + px), ("10", p1 + p2), ("11", px + p2)],
        );
        let dnb = (p1 + p2).max(1e-9);
        market(&mut x, 11, "", live(true), &[("4", p1 / dnb), ("5", p2 / dnb)]);
        for line in [0.5, 1.5, 2.5, 3.5, 4.5, 5.5] {
            let over = sum(&|fh, fa| (fh + fa) as f64 > line);
            let open = live((h + a) as f64 <= line);
            market(
                &mut x,
                18,
                &format!("total={line}"),
                open,
                &[("12", over), ("13", 1.0 - over)],
            );
        }
        for hcp in [-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5] {
            let p_home = sum(&|fh, fa| fh as f64 + hcp > fa as f64);
            market(
                &mut x,
                16,
                &format!("hcp={hcp}"),
                live(true),
                &[("1714", p_home), ("1715", 1.0 - p_home)],
            );
        }
        for line in [0.5, 1.5, 2.5] {
            let home_over = sum(&|fh, _| fh as f64 > line);
            market(
                &mut x,
                19,
                &format!("total={line}"),
                live(h as f64 <= line),
                &[("12", home_over), ("13", 1.0 - home_over)],
            );
            let away_over = sum(&|_, fa| fa as f64 > line);
            market(
                &mut x,
                20,
                &format!("total={line}"),
                live(a as f64 <= line),
                &[("12", away_over), ("13", 1.0 - away_over)],
            );
        }
        let exact: Vec<(&'static str, f64)> = [
            ("1336", 0),
            ("1337", 1),
            ("1338", 2),
            ("1339", 3),
            ("1340", 4),
            ("1341", 5),
        ]
        .into_iter()
        .map(|(oid, k)| (oid, sum(&|fh, fa| fh + fa == k)))
        .chain(std::iter::once(("1342", sum(&|fh, fa| fh + fa >= 6))))
        .collect();
        market(&mut x, 21, "variant=sr:exact_goals:6+", live(true), &exact);
        let margin = |lo: i64, hi: i64| sum(&|fh, fa| (lo..=hi).contains(&(fh as i64 - fa as i64)));
        market(
            &mut x,
            15,
            "variant=sr:winning_margin:3+",
            live(true),
            &[
                ("1350", margin(3, 99)),
                ("1351", margin(2, 2)),
                ("1352", margin(1, 1)),
                ("1353", margin(0, 0)),
                ("1354", margin(-1, -1)),
                ("1355", margin(-2, -2)),
                ("1356", margin(-99, -3)),
            ],
        );
        let btts = sum(&|fh, fa| fh > 0 && fa > 0);
        market(
            &mut x,
            29,
            "",
            live(!(h > 0 && a > 0)),
            &[("74", btts), ("76", 1.0 - btts)],
        );
        let odd = sum(&|fh, fa| (fh + fa) % 2 == 1);
        market(&mut x, 26, "", live(true), &[("70", odd), ("72", 1.0 - odd)]);
        let mu = (self.lam_home + self.lam_away) * ((90.0 - self.minute) / 90.0).max(0.0);
        let none = (-mu).exp();
        let share = self.lam_home / (self.lam_home + self.lam_away);
        market(
            &mut x,
            8,
            &format!("goalnr={}", h + a + 1),
            live(true),
            &[
                ("6", (1.0 - none) * share),
                ("7", none),
                ("8", (1.0 - none) * (1.0 - share)),
            ],
        );
        if self.ht.is_none() {
            let m1 = self.remaining(45.0 - self.minute);
            let sum1 = |pred: &dyn Fn(usize, usize) -> bool| -> f64 {
                let mut p = 0.0;
                for (i, row) in m1.iter().enumerate() {
                    for (j, cell) in row.iter().enumerate() {
                        if pred(h + i, a + j) {
                            p += cell;
                        }
                    }
                }
                p
            };
            let (q1, qx) = (sum1(&|fh, fa| fh > fa), sum1(&|fh, fa| fh == fa));
            market(
                &mut x,
                60,
                "",
                live(true),
                &[("1", q1), ("2", qx), ("3", 1.0 - q1 - qx)],
            );
            for line in [0.5, 1.5, 2.5] {
                let over = sum1(&|fh, fa| (fh + fa) as f64 > line);
                market(
                    &mut x,
                    68,
                    &format!("total={line}"),
                    live((h + a) as f64 <= line),
                    &[("12", over), ("13", 1.0 - over)],
                );
            }
        }
        let corners_left = poisson(self.lam_corners * ((90.0 - self.minute) / 90.0).max(0.0));
        for line in [7.5, 8.5, 9.5, 10.5, 11.5, 12.5] {
            let over: f64 = corners_left
                .iter()
                .enumerate()
                .filter(|(k, _)| (self.corners as usize + k) as f64 > line)
                .map(|(_, p)| p)
                .sum();
            market(
                &mut x,
                166,
                &format!("total={line}"),
                live(f64::from(self.corners) <= line),
                &[("12", over), ("13", 1.0 - over)],
            );
        }
        x.push_str("</odds></odds_change>");
        x
    }

    /// A pre-match producer's (product 3) full book: many markets, mostly
    /// player and specials markets the live producer does not carry.
    fn prematch_book(&self, rng: &mut ChaCha8Rng, now: i64) -> String {
        let mut x = String::with_capacity(96 * 1024);
        let _ = write!(
            x,
            r#"<odds_change product="3" event_id="sr:match:{}" timestamp="{now}"><sport_event_status status="0" match_status="0"/><odds>"#,
            self.id
        );
        for k in 0..PREMATCH_MARKETS {
            let id = 500 + k;
            let n = 3 + (k % 4) as usize;
            let weights: Vec<f64> = (0..n).map(|_| rng.random_range(0.2..1.0)).collect();
            let total: f64 = weights.iter().sum();
            let outcomes: Vec<(&'static str, f64)> = OUTCOME_IDS
                .iter()
                .zip(&weights)
                .map(|(oid, w)| (*oid, w / total))
                .collect();
            market(&mut x, id, &format!("variant=sr:player_props:{}", k % 17), 1, &outcomes);
        }
        x.push_str("</odds></odds_change>");
        x
    }

    fn settle_first_half(&self, now: i64) -> String {
        let (h, a) = self.ht.unwrap_or((self.home, self.away));
        let mut markets = vec![(60, String::new(), vec![("1", h > a), ("2", h == a), ("3", h < a)])];
        for line in [0.5, 1.5, 2.5] {
            let over = f64::from(h + a) > line;
            markets.push((68, format!("total={line}"), vec![("12", over), ("13", !over)]));
        }
        settlement(self.id, now, &markets)
    }

    fn settle_full_time(&self, now: i64) -> String {
        let (h, a) = (self.home, self.away);
        let mut markets = vec![
            (1, String::new(), vec![("1", h > a), ("2", h == a), ("3", h < a)]),
            (10, String::new(), vec![("9", h >= a), ("10", h != a), ("11", h <= a)]),
            (
                29,
                String::new(),
                vec![("74", h > 0 && a > 0), ("76", !(h > 0 && a > 0))],
            ),
            (
                26,
                String::new(),
                vec![("70", (h + a) % 2 == 1), ("72", (h + a) % 2 == 0)],
            ),
            (
                8,
                format!("goalnr={}", h + a + 1),
                vec![("6", false), ("7", true), ("8", false)],
            ),
        ];
        for line in [0.5, 1.5, 2.5, 3.5, 4.5, 5.5] {
            let over = f64::from(h + a) > line;
            markets.push((18, format!("total={line}"), vec![("12", over), ("13", !over)]));
        }
        for hcp in [-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5] {
            let home = f64::from(h) + hcp > f64::from(a);
            markets.push((16, format!("hcp={hcp}"), vec![("1714", home), ("1715", !home)]));
        }
        for line in [0.5, 1.5, 2.5] {
            markets.push((
                19,
                format!("total={line}"),
                vec![("12", f64::from(h) > line), ("13", f64::from(h) <= line)],
            ));
            markets.push((
                20,
                format!("total={line}"),
                vec![("12", f64::from(a) > line), ("13", f64::from(a) <= line)],
            ));
        }
        for line in [7.5, 8.5, 9.5, 10.5, 11.5, 12.5] {
            let over = f64::from(self.corners) > line;
            markets.push((166, format!("total={line}"), vec![("12", over), ("13", !over)]));
        }
        let mut x = settlement(self.id, now, &markets);
        // Draw no bet is void on a draw: refund via void_factor.
        if h == a {
            x = x.replace("</outcomes>", r#"<market id="11"><outcome id="4" result="0" void_factor="1"/><outcome id="5" result="0" void_factor="1"/></market></outcomes>"#);
        } else {
            x = x.replace(
                "</outcomes>",
                &format!(
                    r#"<market id="11"><outcome id="4" result="{}"/><outcome id="5" result="{}"/></market></outcomes>"#,
                    u8::from(h > a),
                    u8::from(a > h)
                ),
            );
        }
        x
    }
}

/// A market to settle: id, specifiers, (outcome id, won).
type Settled<'a> = (u32, String, Vec<(&'a str, bool)>);

/// Outcome ids for synthetic pre-match markets.
const OUTCOME_IDS: [&str; 6] = ["pre:1", "pre:2", "pre:3", "pre:4", "pre:5", "pre:6"];

fn settlement(id: u64, now: i64, markets: &[Settled<'_>]) -> String {
    let mut x =
        format!(r#"<bet_settlement product="1" event_id="sr:match:{id}" timestamp="{now}" certainty="2"><outcomes>"#);
    for (mid, spec, outcomes) in markets {
        if spec.is_empty() {
            let _ = write!(x, r#"<market id="{mid}">"#);
        } else {
            let _ = write!(x, r#"<market id="{mid}" specifiers="{spec}">"#);
        }
        for (oid, won) in outcomes {
            let _ = write!(x, r#"<outcome id="{oid}" result="{}"/>"#, u8::from(*won));
        }
        x.push_str("</market>");
    }
    x.push_str("</outcomes></bet_settlement>");
    x
}

fn market(x: &mut String, id: u32, spec: &str, status: i32, outcomes: &[Priced]) {
    if spec.is_empty() {
        let _ = write!(x, r#"<market status="{status}" id="{id}">"#);
    } else {
        let _ = write!(x, r#"<market status="{status}" id="{id}" specifiers="{spec}">"#);
    }
    for (oid, p) in outcomes {
        let p = p.clamp(0.0, 1.0);
        let odds = (1.0 / (p * MARGIN).max(1e-6)).clamp(1.01, 500.0);
        let odds = (odds * 100.0).round() / 100.0;
        let active = u8::from(status == 1 && p > 0.002 && p < 0.99);
        let _ = write!(
            x,
            r#"<outcome id="{oid}" odds="{odds}" probabilities="{p:.4}" active="{active}"/>"#
        );
    }
    x.push_str("</market>");
}

/// P(k) for k = 0..=8 of a Poisson(mu), the tail folded into k = 8.
fn poisson(mu: f64) -> [f64; 9] {
    let mut p = [0.0; 9];
    let mut term = (-mu).exp();
    let mut total = 0.0;
    for (k, slot) in p.iter_mut().enumerate().take(8) {
        *slot = term;
        total += term;
        term *= mu / (k as f64 + 1.0);
    }
    p[8] = (1.0 - total).max(0.0);
    p
}

/// Serve the simulated feed to every connection until `shutdown`.
pub async fn serve(listener: TcpListener, cfg: SimConfig, shutdown: CancellationToken) {
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "simulator accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        tracing::info!(%peer, matches = cfg.matches, seed = cfg.seed, rate = cfg.rate, "simulator: feed client connected");
        let cfg = cfg.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let mut generator = Generator::new(&cfg);
            let started = tokio::time::Instant::now();
            let mut sent: u64 = 0;
            let mut buf = String::with_capacity(64 * 1024);
            let mut tick = tokio::time::interval(PACE_TICK);
            loop {
                if cfg.rate > 0.0 {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                } else if shutdown.is_cancelled() {
                    return;
                }
                let due = if cfg.rate > 0.0 {
                    (started.elapsed().as_secs_f64() * cfg.rate) as u64
                } else {
                    sent + 64
                };
                let due = if cfg.count > 0 { due.min(cfg.count) } else { due };
                buf.clear();
                while sent < due {
                    buf.push_str(&generator.next_message());
                    buf.push('\n');
                    sent += 1;
                }
                if !buf.is_empty() && stream.write_all(buf.as_bytes()).await.is_err() {
                    tracing::info!(%peer, sent, "simulator: feed client left");
                    return;
                }
                if cfg.count > 0 && sent >= cfg.count {
                    tracing::info!(%peer, sent, "simulator: all messages sent");
                    // Keep the connection open; the client decides when to go.
                    shutdown.cancelled().await;
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::parse::{FeedMessage, parse};

    fn cfg(seed: u64) -> SimConfig {
        SimConfig {
            matches: 3,
            seed,
            rate: 100.0,
            count: 0,
        }
    }

    #[test]
    fn same_seed_same_stream_and_every_message_parses() {
        let (mut a, mut b, mut c) = (
            Generator::new(&cfg(7)),
            Generator::new(&cfg(7)),
            Generator::new(&cfg(8)),
        );
        let mut kinds = std::collections::BTreeMap::new();
        let mut differs = false;
        for _ in 0..5000 {
            let m = a.next_message();
            assert_eq!(m, b.next_message());
            differs |= m != c.next_message();
            let parsed = parse(m.as_bytes()).unwrap_or_else(|e| panic!("{e}: {m}"));
            *kinds.entry(parsed.kind()).or_insert(0) += 1;
            if let FeedMessage::Match(touchline_guest::event::MatchEvent::OddsChange(oc)) = parsed {
                let n = oc.markets.len();
                match oc.header.product {
                    Some(3) => assert_eq!(n, 170, "the pre-match full book"),
                    _ => assert!((33..=37).contains(&n), "a live odds_change carries the live book: {n}"),
                }
            }
        }
        assert!(differs, "another seed gives another stream");
        let sizes: Vec<usize> = (0..2000).map(|_| a.next_message().len()).collect();
        assert!(sizes.iter().any(|&n| n > 60_000), "an occasional full pre-match book");
        for k in ["odds_change", "bet_stop", "bet_settlement", "fixture_change", "alive"] {
            assert!(kinds.contains_key(k), "no {k} in 5000 messages: {kinds:?}");
        }
    }
}
