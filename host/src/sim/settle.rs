//! A simulated match's settlements: the first half at half-time, the
//! rest at full time (draw no bet refunded on a draw through
//! `void_factor`).

use std::fmt::Write as _;

use super::game::SimMatch;

impl SimMatch {
    pub(super) fn settle_first_half(&self, now: i64) -> String {
        let (h, a) = self.ht.unwrap_or((self.home, self.away));
        let mut markets = vec![(60, String::new(), vec![("1", h > a), ("2", h == a), ("3", h < a)])];
        for line in [0.5, 1.5, 2.5] {
            let over = f64::from(h + a) > line;
            markets.push((68, format!("total={line}"), vec![("12", over), ("13", !over)]));
        }
        settlement(self.id, now, &markets)
    }

    pub(super) fn settle_full_time(&self, now: i64) -> String {
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
pub(super) type Settled<'a> = (u32, String, Vec<(&'a str, bool)>);

pub(super) fn settlement(id: u64, now: i64, markets: &[Settled<'_>]) -> String {
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
