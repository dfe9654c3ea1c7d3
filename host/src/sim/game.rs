//! One simulated match, from its fixture to its settlements.
//!
//! A match lives in three phases ([`Phase`]): before kick-off the
//! pre-match producer (Ctrl, product 3) prices it (a main book of the same
//! markets the live producer carries, and now and then a ~80 KB full book
//! of player markets); at kick-off Ctrl hands it over (one odds_change
//! with every market it ever priced at status -2) and the live producer
//! (LO, product 1) takes over: a Poisson goal model that moves minute by
//! minute, goals with a bet_stop before and reopened odds after, half-time
//! and full-time settlements. Any phase can also render the owning
//! producer's current book for a recovery ([`SimMatch::recovery_book`]).

use std::collections::VecDeque;
use std::fmt::Write as _;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::markets::player_markets;
use super::pricing::{Book, Goals};
use super::settle::settlement;
use super::{CTRL, LO};

/// Messages a match lasts, kick-off to final whistle.
const MESSAGES_PER_MATCH: f64 = 900.0;
/// Markets in a pre-match full book.
pub(super) const PREMATCH_MARKETS: u32 = 170;
/// Share of Ctrl's pre-match messages that are its full book (~80 KB, like
/// the real `odds_change_prematch_full` sample). About a fifth of the
/// messages are Ctrl's, so this keeps roughly one message in 500 a full
/// book, the mix the simulator had before it had a pre-match phase (30,000
/// messages of 1000 matches: 8.1 KB a message on average either way).
const FULL_BOOK_SHARE: f64 = 1.0 / 120.0;

pub(super) struct SimMatch {
    pub(super) id: u64,
    phase: Phase,
    pub(super) minute: f64,
    pub(super) home: u32,
    pub(super) away: u32,
    pub(super) ht: Option<(u32, u32)>,
    pub(super) corners: u32,
    pub(super) lam_home: f64,
    pub(super) lam_away: f64,
    pub(super) lam_corners: f64,
    /// A bet_stop went out and the odds reopening the markets have not: a
    /// recovery shows the open markets suspended (-1).
    stopped: bool,
    /// Messages due next for this match, rendered when sent (so their
    /// timestamps are send times).
    queue: VecDeque<Pending>,
}

/// Who prices the match, and what that producer still has to do.
enum Phase {
    /// Ctrl prices it; it kicks off after `left` more of its messages (or
    /// later: the generator keeps one match before kick-off).
    PreMatch {
        left: u32,
        /// Seed of the player markets of Ctrl's last full book, once it
        /// sent one: a recovery repeats exactly those prices, and the
        /// hand-over names those markets.
        props: Option<u64>,
    },
    /// LO prices it, minute by minute.
    Live,
    /// Full time: LO's last odds went out; the match is replaced once its
    /// settlements (`queue`) are sent.
    Ended,
}

/// A message a match owes the feed, rendered when it is sent.
enum Pending {
    FirstHalf,
    FullTime,
    NextGoal {
        goal_nr: u32,
        home: bool,
    },
    /// LO's odds: its first book after the hand-over, or the markets
    /// reopened after a goal.
    Odds,
}

impl SimMatch {
    /// A new fixture, before kick-off: Ctrl prices it for `left` messages.
    pub(super) fn pre_match(id: u64, rng: &mut ChaCha8Rng, left: u32) -> SimMatch {
        SimMatch::new(id, rng, Phase::PreMatch { left, props: None })
    }

    /// A match at kick-off that Ctrl handed over before the feed started:
    /// its first message is LO's book.
    pub(super) fn kicked_off(id: u64, rng: &mut ChaCha8Rng) -> SimMatch {
        let mut m = SimMatch::new(id, rng, Phase::Live);
        m.queue.push_back(Pending::Odds);
        m
    }

    fn new(id: u64, rng: &mut ChaCha8Rng, phase: Phase) -> SimMatch {
        SimMatch {
            id,
            phase,
            minute: 0.0,
            home: 0,
            away: 0,
            ht: None,
            corners: 0,
            lam_home: rng.random_range(0.8..2.0),
            lam_away: rng.random_range(0.6..1.7),
            lam_corners: rng.random_range(8.0..12.0),
            stopped: false,
            queue: VecDeque::new(),
        }
    }

    pub(super) fn event_id(&self) -> String {
        format!("sr:match:{}", self.id)
    }

    /// The producer whose messages this match sends now (the hand-over
    /// itself is still Ctrl's).
    pub(super) fn producer(&self) -> u32 {
        match self.phase {
            Phase::PreMatch { .. } => CTRL,
            Phase::Live | Phase::Ended => LO,
        }
    }

    pub(super) fn is_pre_match(&self) -> bool {
        matches!(self.phase, Phase::PreMatch { .. })
    }

    /// Ended and every settlement sent: time for a new fixture.
    pub(super) fn finished(&self) -> bool {
        matches!(self.phase, Phase::Ended) && self.queue.is_empty()
    }

    /// The match's next message. `may_kick_off` is false while this is the
    /// last match before kick-off (the generator keeps one for Ctrl).
    pub(super) fn step(&mut self, rng: &mut ChaCha8Rng, now: i64, may_kick_off: bool) -> String {
        if let Phase::PreMatch { left, props } = &mut self.phase {
            if *left == 0 && may_kick_off {
                let handover = self.handover(now);
                self.phase = Phase::Live;
                self.queue.push_back(Pending::Odds);
                return handover;
            }
            *left = left.saturating_sub(1);
            // Team news: the model's view of the teams moves a little.
            self.lam_home = (self.lam_home * rng.random_range(0.99..1.01)).clamp(0.3, 3.5);
            self.lam_away = (self.lam_away * rng.random_range(0.99..1.01)).clamp(0.3, 3.5);
            if rng.random_bool(FULL_BOOK_SHARE) {
                let seed = rng.random();
                *props = Some(seed);
                let mut x = String::with_capacity(96 * 1024);
                self.open_pre_match(&mut x, now, None);
                player_markets(&mut Book::priced(&mut x), seed);
                x.push_str("</odds></odds_change>");
                return x;
            }
            return self.odds(now);
        }
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
                Pending::Odds => {
                    self.stopped = false;
                    self.odds(now)
                }
            };
        }
        if matches!(self.phase, Phase::Ended) {
            return self.odds(now);
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
            self.phase = Phase::Ended;
            self.queue.push_back(Pending::FullTime);
            return self.odds(now);
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
            self.stopped = true;
            self.queue.push_back(Pending::NextGoal {
                goal_nr,
                home: home_scores,
            });
            self.queue.push_back(Pending::Odds);
            return stop;
        }
        self.odds(now)
    }

    /// The match's ordinary odds message: Ctrl's main markets before
    /// kick-off, LO's live markets after.
    fn odds(&self, now: i64) -> String {
        let mut x = String::with_capacity(8 * 1024);
        self.write_odds(&mut x, now, None);
        x
    }

    /// The owning producer's whole current book as one odds_change with
    /// the recovery's `request_id`, appended to `x`: before kick-off Ctrl's
    /// main markets and the player markets of its last full book, after it
    /// LO's live markets (suspended between a bet_stop and its reopening).
    pub(super) fn recovery_book(&self, x: &mut String, now: i64, request_id: u64) {
        self.write_odds(x, now, Some(request_id));
    }

    /// An odds_change of the owning producer; with a `request_id` (a
    /// recovery) Ctrl's also repeats its last full book's player markets,
    /// which its ordinary messages leave unchanged.
    fn write_odds(&self, x: &mut String, now: i64, request_id: Option<u64>) {
        if let Phase::PreMatch { props, .. } = self.phase {
            self.open_pre_match(x, now, request_id);
            self.main_markets(&mut Book::priced(x));
            if let (Some(seed), Some(_)) = (props, request_id) {
                player_markets(&mut Book::priced(x), seed);
            }
        } else {
            self.open_live(x, now, request_id);
            self.main_markets(&mut Book::priced(x));
        }
        x.push_str("</odds></odds_change>");
    }

    /// Ctrl's last word on the match: every market it priced, handed over.
    fn handover(&self, now: i64) -> String {
        let mut x = String::with_capacity(4 * 1024);
        self.open_pre_match(&mut x, now, None);
        let mut book = Book::handed_over(&mut x);
        self.main_markets(&mut book);
        if let Phase::PreMatch { props: Some(seed), .. } = self.phase {
            player_markets(&mut book, seed);
        }
        x.push_str("</odds></odds_change>");
        x
    }

    /// The markets both producers carry: full time, first half (until
    /// half-time) and corners.
    fn main_markets(&self, book: &mut Book<'_>) {
        self.full_time_markets(book);
        if self.ht.is_none() {
            self.first_half_markets(book);
        }
        self.corner_markets(book);
    }

    /// The goals still to come in `minutes_left`, from the current score.
    pub(super) fn goals(&self, minutes_left: f64) -> Goals {
        Goals::new(
            self.lam_home,
            self.lam_away,
            minutes_left,
            (self.home as usize, self.away as usize),
        )
    }

    /// A market's status: deactivated once the match ended or the market
    /// is decided, suspended between a bet_stop and its reopening, else
    /// open.
    pub(super) fn status(&self, open: bool) -> i32 {
        if matches!(self.phase, Phase::Ended) || !open {
            0
        } else if self.stopped {
            -1
        } else {
            1
        }
    }

    /// `<odds_change ...>`, with the request id of a recovery.
    fn open_tag(&self, x: &mut String, product: u32, now: i64, request_id: Option<u64>) {
        let _ = write!(
            x,
            r#"<odds_change product="{product}" event_id="sr:match:{}" timestamp="{now}""#,
            self.id
        );
        if let Some(r) = request_id {
            let _ = write!(x, r#" request_id="{r}""#);
        }
        x.push('>');
    }

    /// Ctrl's opening: not started.
    fn open_pre_match(&self, x: &mut String, now: i64, request_id: Option<u64>) {
        self.open_tag(x, CTRL, now, request_id);
        x.push_str(r#"<sport_event_status status="0" match_status="0"/><odds>"#);
    }

    /// LO's opening: score, clock and period scores.
    fn open_live(&self, x: &mut String, now: i64, request_id: Option<u64>) {
        let (status, match_status) = if matches!(self.phase, Phase::Ended) {
            (3, 100)
        } else if self.minute < 45.0 {
            (1, 6)
        } else {
            (1, 7)
        };
        self.open_tag(x, LO, now, request_id);
        let _ = write!(
            x,
            r#"<sport_event_status status="{status}" reporting="1" match_status="{match_status}" home_score="{}" away_score="{}">"#,
            self.home, self.away
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
    }
}
