//! Fair prices from a Poisson goal model, and markets in the feed's XML
//! (priced, or handed over). Pure: no randomness, no IO.

use std::fmt::Write as _;

/// Margin the simulated bookmaker puts on fair odds.
const MARGIN: f64 = 1.06;

/// Fair probability and feed outcome id.
pub(super) type Priced = (&'static str, f64);

/// The goals still to come (home i, away j; 8 stands for 8 or more) on
/// top of a score.
pub(super) struct Goals {
    matrix: [[f64; 9]; 9],
    score: (usize, usize),
}

impl Goals {
    pub fn new(lam_home: f64, lam_away: f64, minutes_left: f64, score: (usize, usize)) -> Goals {
        let f = (minutes_left / 90.0).max(0.0);
        let (ph, pa) = (poisson(lam_home * f), poisson(lam_away * f));
        let mut matrix = [[0.0; 9]; 9];
        for (i, row) in matrix.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                *cell = ph[i] * pa[j];
            }
        }
        Goals { matrix, score }
    }

    /// Probability that the final score (home, away) satisfies `pred`.
    pub fn p(&self, pred: impl Fn(usize, usize) -> bool) -> f64 {
        let (h, a) = self.score;
        let mut p = 0.0;
        for (i, row) in self.matrix.iter().enumerate() {
            for (j, cell) in row.iter().enumerate() {
                if pred(h + i, a + j) {
                    p += cell;
                }
            }
        }
        p
    }
}

/// Where a message's markets go: priced, or, in a hand-over, as bare
/// `status="-2"` tags naming the same markets (so the list of markets a
/// producer offers is written once, in `game`).
pub(super) struct Book<'a> {
    x: &'a mut String,
    handed_over: bool,
}

impl<'a> Book<'a> {
    pub fn priced(x: &'a mut String) -> Book<'a> {
        Book { x, handed_over: false }
    }

    pub fn handed_over(x: &'a mut String) -> Book<'a> {
        Book { x, handed_over: true }
    }

    pub fn market(&mut self, id: u32, spec: &str, status: i32, outcomes: &[Priced]) {
        if self.handed_over {
            if spec.is_empty() {
                let _ = write!(self.x, r#"<market status="-2" id="{id}"/>"#);
            } else {
                let _ = write!(self.x, r#"<market status="-2" id="{id}" specifiers="{spec}"/>"#);
            }
        } else {
            market(self.x, id, spec, status, outcomes);
        }
    }
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
pub(super) fn poisson(mu: f64) -> [f64; 9] {
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
