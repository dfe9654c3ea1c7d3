//! Fixtures: the provider's `/v1/sports/en/sport_events/{id}/fixture.xml`
//! (`<fixtures_fixture><fixture ..>`) parsed into a [`Fixture`]: the event
//! id, its competitors (name, id, home or away), tournament, sport and
//! scheduled start.
//!
//! Lenient like the descriptions: venues, TV channels, coverage and any
//! unknown element are skipped, a fixture without a tournament still
//! parses. Only a response without a `<fixture id>`, a competitor without
//! id or name, an unreadable start time or broken XML is an error. Sans-IO:
//! it reads a `&str`; fetching and caching are the caller's.

use super::render::{Competitors, Profiles};
use super::xml::{DataError, Step, Walker};

/// Which side a competitor plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qualifier {
    Home,
    Away,
}

/// One competitor of a fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Competitor {
    /// `sr:competitor:2953`.
    pub id: String,
    pub name: String,
    pub abbreviation: Option<String>,
    /// `None` when the response gives no (or an unknown) qualifier.
    pub qualifier: Option<Qualifier>,
}

/// One sport event's fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixture {
    /// `sr:match:18001015`: the feed's `event_id`.
    pub event_id: String,
    /// In the response's order.
    pub competitors: Vec<Competitor>,
    /// `UEFA Champions League`; `None` when the response has no tournament.
    pub tournament: Option<String>,
    /// `Soccer`; given inside the tournament.
    pub sport: Option<String>,
    /// The `scheduled` start (else `start_time`), Unix milliseconds.
    pub scheduled_ms: Option<i64>,
}

impl Fixture {
    pub fn parse(xml: &str) -> Result<Fixture, DataError> {
        let mut w = Walker::new(xml);
        let mut fixture: Option<Fixture> = None;
        while let Some(step) = w.next()? {
            let Step::Open(attrs) = step else { continue };
            if w.at(&["fixture"]) {
                if fixture.is_some() {
                    continue; // one fixture per response; later ones ignored
                }
                let times = ["scheduled", "start_time"];
                let scheduled = times.iter().find_map(|&t| attrs.text(t).map(|v| (t, v)));
                let scheduled_ms = match scheduled {
                    Some((attr, v)) => Some(unix_ms(&v).ok_or(DataError::BadValue {
                        element: "fixture",
                        attr,
                        value: v,
                    })?),
                    None => None,
                };
                fixture = Some(Fixture {
                    event_id: attrs.required("fixture", "id")?.trim().to_owned(),
                    competitors: Vec::new(),
                    tournament: None,
                    sport: None,
                    scheduled_ms,
                });
                continue;
            }
            let Some(f) = fixture.as_mut() else { continue };
            if w.at(&["fixture", "tournament"]) {
                f.tournament = attrs.text("name");
            } else if w.at(&["fixture", "tournament", "sport"]) {
                f.sport = attrs.text("name");
            } else if w.at(&["fixture", "competitors", "competitor"]) {
                f.competitors.push(Competitor {
                    id: attrs.required("competitor", "id")?.trim().to_owned(),
                    name: attrs.required("competitor", "name")?.to_owned(),
                    abbreviation: attrs.text("abbreviation"),
                    qualifier: match attrs.get("qualifier") {
                        Some("home") => Some(Qualifier::Home),
                        Some("away") => Some(Qualifier::Away),
                        _ => None,
                    },
                });
            }
        }
        fixture.ok_or(DataError::MissingElement("fixture"))
    }

    /// The home competitor: qualified `home`, else the first listed.
    pub fn home(&self) -> Option<&Competitor> {
        self.side(Qualifier::Home, 0)
    }

    /// The away competitor: qualified `away`, else the second listed.
    pub fn away(&self) -> Option<&Competitor> {
        self.side(Qualifier::Away, 1)
    }

    fn side(&self, q: Qualifier, position: usize) -> Option<&Competitor> {
        let by_qualifier = self.competitors.iter().find(|c| c.qualifier == Some(q));
        let unqualified = || self.competitors.iter().filter(|c| c.qualifier.is_none()).nth(position);
        by_qualifier.or_else(unqualified)
    }

    /// What names are rendered with: home and away names and
    /// `Home vs. Away` (empty, hence the renderer's fallbacks, when the
    /// fixture lacks a side).
    pub fn competitors(&self) -> Competitors {
        match (self.home(), self.away()) {
            (Some(h), Some(a)) => Competitors::new(h.name.clone(), a.name.clone()),
            (h, a) => Competitors {
                home: h.map(|c| c.name.clone()).unwrap_or_default(),
                away: a.map(|c| c.name.clone()).unwrap_or_default(),
                event: String::new(),
            },
        }
    }
}

/// A fixture names its competitors (3-ball and head-to-head outcomes are
/// `sr:competitor:..` ids).
impl Profiles for Fixture {
    fn profile_name(&self, id: &str) -> Option<&str> {
        self.competitors.iter().find(|c| c.id == id).map(|c| c.name.as_str())
    }
}

/// `2019-05-08T19:00:00+00:00` (also `Z`, fractional seconds, other
/// offsets) → Unix milliseconds.
pub fn unix_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    let b = t.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &t[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        // Milliseconds: the first three digits, padded.
        let ms: String = frac[..digits].chars().chain("00".chars()).take(3).collect();
        millis = ms.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_minutes = match rest {
        "" | "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hm = &rest[1..];
            let (h, m) = hm.split_once(':').unwrap_or((hm.get(..2)?, hm.get(2..)?));
            let all_digits = |s: &str| s.len() == 2 && s.bytes().all(|c| c.is_ascii_digit());
            if !all_digits(h) || !all_digits(m) {
                return None;
            }
            sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?)
        }
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date: whole years, then
/// the months of the last one.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    // Days before `year`'s 1 January, counted from year 0.
    let before = |y: i64| {
        let y = y - 1;
        365 * (y + 1) + y.div_euclid(4) - y.div_euclid(100) + y.div_euclid(400) + 1
    };
    let months: i64 = (1..month).map(|m| days_in_month(year, m)).sum();
    before(year) - before(1970) + months + day - 1
}
