//! The markets a simulated match offers: full time (result, totals,
//! handicaps, specials), first half, corners, and Ctrl's player markets;
//! fair prices from the goal model ([`super::pricing`]).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::game::{PREMATCH_MARKETS, SimMatch};
use super::pricing::{Book, Goals, poisson};

impl SimMatch {
    /// Result, totals, handicaps and specials on the final score.
    pub(super) fn full_time_markets(&self, book: &mut Book<'_>) {
        let g = self.goals(90.0 - self.minute);
        let (h, a) = (self.home as usize, self.away as usize);
        let p1 = g.p(|fh, fa| fh > fa);
        let px = g.p(|fh, fa| fh == fa);
        let p2 = 1.0 - p1 - px;
        book.market(1, "", self.status(true), &[("1", p1), ("2", px), ("3", p2)]);
        book.market(
            10,
            "",
            self.status(true),
            &[("9", p1 + px), ("10", p1 + p2), ("11", px + p2)],
        );
        let dnb = (p1 + p2).max(1e-9);
        book.market(11, "", self.status(true), &[("4", p1 / dnb), ("5", p2 / dnb)]);
        for line in [0.5, 1.5, 2.5, 3.5, 4.5, 5.5] {
            let over = g.p(|fh, fa| (fh + fa) as f64 > line);
            let open = self.status((h + a) as f64 <= line);
            book.market(18, &format!("total={line}"), open, &[("12", over), ("13", 1.0 - over)]);
        }
        for hcp in [-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5] {
            let p_home = g.p(|fh, fa| fh as f64 + hcp > fa as f64);
            book.market(
                16,
                &format!("hcp={hcp}"),
                self.status(true),
                &[("1714", p_home), ("1715", 1.0 - p_home)],
            );
        }
        for line in [0.5, 1.5, 2.5] {
            let home_over = g.p(|fh, _| fh as f64 > line);
            book.market(
                19,
                &format!("total={line}"),
                self.status(h as f64 <= line),
                &[("12", home_over), ("13", 1.0 - home_over)],
            );
            let away_over = g.p(|_, fa| fa as f64 > line);
            book.market(
                20,
                &format!("total={line}"),
                self.status(a as f64 <= line),
                &[("12", away_over), ("13", 1.0 - away_over)],
            );
        }
        self.special_markets(book, &g);
    }

    /// Exact goals, winning margin, both teams to score, odd/even, next goal.
    pub(super) fn special_markets(&self, book: &mut Book<'_>, g: &Goals) {
        let (h, a) = (self.home as usize, self.away as usize);
        let exact: Vec<(&'static str, f64)> = [
            ("1336", 0),
            ("1337", 1),
            ("1338", 2),
            ("1339", 3),
            ("1340", 4),
            ("1341", 5),
        ]
        .into_iter()
        .map(|(oid, k)| (oid, g.p(|fh, fa| fh + fa == k)))
        .chain(std::iter::once(("1342", g.p(|fh, fa| fh + fa >= 6))))
        .collect();
        book.market(21, "variant=sr:exact_goals:6+", self.status(true), &exact);
        let margin = |lo: i64, hi: i64| g.p(|fh, fa| (lo..=hi).contains(&(fh as i64 - fa as i64)));
        book.market(
            15,
            "variant=sr:winning_margin:3+",
            self.status(true),
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
        let btts = g.p(|fh, fa| fh > 0 && fa > 0);
        book.market(
            29,
            "",
            self.status(!(h > 0 && a > 0)),
            &[("74", btts), ("76", 1.0 - btts)],
        );
        let odd = g.p(|fh, fa| (fh + fa) % 2 == 1);
        book.market(26, "", self.status(true), &[("70", odd), ("72", 1.0 - odd)]);
        let mu = (self.lam_home + self.lam_away) * ((90.0 - self.minute) / 90.0).max(0.0);
        let none = (-mu).exp();
        let share = self.lam_home / (self.lam_home + self.lam_away);
        book.market(
            8,
            &format!("goalnr={}", h + a + 1),
            self.status(true),
            &[
                ("6", (1.0 - none) * share),
                ("7", none),
                ("8", (1.0 - none) * (1.0 - share)),
            ],
        );
    }

    /// First-half result and totals, until half-time.
    pub(super) fn first_half_markets(&self, book: &mut Book<'_>) {
        let g = self.goals(45.0 - self.minute);
        let (h, a) = (self.home as usize, self.away as usize);
        let (q1, qx) = (g.p(|fh, fa| fh > fa), g.p(|fh, fa| fh == fa));
        book.market(60, "", self.status(true), &[("1", q1), ("2", qx), ("3", 1.0 - q1 - qx)]);
        for line in [0.5, 1.5, 2.5] {
            let over = g.p(|fh, fa| (fh + fa) as f64 > line);
            book.market(
                68,
                &format!("total={line}"),
                self.status((h + a) as f64 <= line),
                &[("12", over), ("13", 1.0 - over)],
            );
        }
    }

    /// Total corners.
    pub(super) fn corner_markets(&self, book: &mut Book<'_>) {
        let corners_left = poisson(self.lam_corners * ((90.0 - self.minute) / 90.0).max(0.0));
        for line in [7.5, 8.5, 9.5, 10.5, 11.5, 12.5] {
            let over: f64 = corners_left
                .iter()
                .enumerate()
                .filter(|(k, _)| (self.corners as usize + k) as f64 > line)
                .map(|(_, p)| p)
                .sum();
            book.market(
                166,
                &format!("total={line}"),
                self.status(f64::from(self.corners) <= line),
                &[("12", over), ("13", 1.0 - over)],
            );
        }
    }
}

/// Ctrl's player markets: mostly markets LO does not carry, priced from
/// `seed` (so a recovery repeats the prices of the last full book).
pub(super) fn player_markets(book: &mut Book<'_>, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
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
        book.market(id, &format!("variant=sr:player_props:{}", k % 17), 1, &outcomes);
    }
}

/// Outcome ids for synthetic pre-match markets.
const OUTCOME_IDS: [&str; 6] = ["pre:1", "pre:2", "pre:3", "pre:4", "pre:5", "pre:6"];
