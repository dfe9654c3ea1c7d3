//! Name rendering: market and outcome names from the description templates,
//! a market's specifiers and the match's competitors, as the provider's
//! SDKs render them.
//!
//! A template is text with `{...}` expressions: `{total}` (the specifier's
//! value as written), `{+hcp}` / `{-hcp}` (signed, negated for `-`),
//! `{!goalnr}` (English ordinal: 1st, 2nd, 11th, 21st), `{(minute-1)}` and
//! `{!(inningnr+1)}` (a specifier plus or minus a whole number),
//! `{$competitor1}` / `{$competitor2}` / `{$event}` and `{%player}` (the
//! name of the profile the specifier holds, e.g. `sr:player:123`). Outcome
//! ids that are profiles (`sr:player:..`, `sr:competitor:..`) are named from
//! [`Profiles`]; flex-score outcomes (`1:0`) are added to the `score`
//! specifier. Whatever cannot be rendered falls back to something readable
//! (`Market 15 (hcp=1)`, the raw outcome id, `Player 123`): never a panic,
//! never an empty name. Pure: no IO, no clock.

use std::collections::{BTreeMap, HashMap};

use super::descriptions::{Descriptions, Outcome};

/// The match a name is rendered for: what `{$competitor1}`,
/// `{$competitor2}` and `{$event}` stand for. Empty names render as `Home`,
/// `Away` and `Home vs. Away`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Competitors {
    pub home: String,
    pub away: String,
    pub event: String,
}

impl Competitors {
    /// A match between `home` and `away`, named `home vs. away`.
    pub fn new(home: impl Into<String>, away: impl Into<String>) -> Competitors {
        let (home, away) = (home.into(), away.into());
        let event = format!("{home} vs. {away}");
        Competitors { home, away, event }
    }

    fn home(&self) -> &str {
        non_empty(&self.home).unwrap_or("Home")
    }

    fn away(&self) -> &str {
        non_empty(&self.away).unwrap_or("Away")
    }

    fn event(&self) -> String {
        match non_empty(&self.event) {
            Some(e) => e.to_owned(),
            None => format!("{} vs. {}", self.home(), self.away()),
        }
    }
}

/// Names of players and competitors by id (`sr:player:123`), from the
/// provider's API or a fixture. A profile not found is shown as
/// `Player 123` / `Competitor 123`.
pub trait Profiles {
    fn profile_name(&self, id: &str) -> Option<&str>;
}

/// No profile known: every player is shown by the fallback.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProfiles;

impl Profiles for NoProfiles {
    fn profile_name(&self, _: &str) -> Option<&str> {
        None
    }
}

impl<S: std::hash::BuildHasher> Profiles for HashMap<String, String, S> {
    fn profile_name(&self, id: &str) -> Option<&str> {
        self.get(id).map(String::as_str)
    }
}

impl Profiles for BTreeMap<String, String> {
    fn profile_name(&self, id: &str) -> Option<&str> {
        self.get(id).map(String::as_str)
    }
}

/// Why one template could not be rendered (the renderer then falls back).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unbalanced braces in {0:?}")]
    Unbalanced(String),
    #[error("empty expression {{}}")]
    EmptyExpression,
    #[error("no specifier `{0}`")]
    MissingSpecifier(String),
    #[error("specifier `{name}` = {value:?} is not a {wanted}")]
    NotANumber {
        name: String,
        value: String,
        wanted: &'static str,
    },
    #[error("unreadable operand {0:?}")]
    BadOperand(String),
    #[error("unknown entity ${0}")]
    UnknownEntity(String),
    #[error("flex score: {0:?} is not a score")]
    NotAScore(String),
}

/// Renders names for one match from the descriptions.
#[derive(Clone, Copy)]
pub struct Renderer<'a> {
    descriptions: &'a Descriptions,
    competitors: &'a Competitors,
    profiles: &'a dyn Profiles,
}

impl std::fmt::Debug for Renderer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field("competitors", self.competitors)
            .finish_non_exhaustive()
    }
}

impl<'a> Renderer<'a> {
    pub fn new(descriptions: &'a Descriptions, competitors: &'a Competitors, profiles: &'a dyn Profiles) -> Self {
        Renderer {
            descriptions,
            competitors,
            profiles,
        }
    }

    /// The market's name; `specifiers` as the feed carries them
    /// (`hcp=-1.5|variant=sr:..`). Falls back to `Market 15` or
    /// `Market 15 (hcp=1)`.
    pub fn market_name(&self, market_id: u32, specifiers: &str) -> String {
        let variant = specifier(specifiers, "variant").and_then(|v| self.descriptions.variant(market_id, v));
        let template = variant
            .and_then(|v| v.market_name.as_deref())
            .or_else(|| self.descriptions.market(market_id).map(|m| m.name.as_str()));
        template
            .and_then(|t| self.template(t, specifiers).ok())
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| match specifiers.trim() {
                "" => format!("Market {market_id}"),
                s => format!("Market {market_id} ({s})"),
            })
    }

    /// The outcome's name. Falls back to the raw outcome id.
    pub fn outcome_name(&self, market_id: u32, specifiers: &str, outcome_id: &str) -> String {
        self.try_outcome_name(market_id, specifiers, outcome_id)
            .filter(|name| !name.trim().is_empty())
            .unwrap_or_else(|| outcome_id.to_owned())
    }

    fn try_outcome_name(&self, market_id: u32, specifiers: &str, outcome_id: &str) -> Option<String> {
        if is_profile(outcome_id) {
            // Several profiles (a pair of players) are listed with commas.
            let names: Vec<String> = outcome_id.split(',').map(|id| self.profile(id.trim())).collect();
            return Some(names.join(", "));
        }
        let market = self.descriptions.market(market_id);
        let from_variant = specifier(specifiers, "variant")
            .and_then(|v| self.descriptions.variant(market_id, v))
            .and_then(|v| v.outcome(outcome_id));
        let (outcome, flex): (&Outcome, bool) = match (from_variant, market) {
            (Some(o), _) => (o, false),
            (None, Some(m)) => (m.outcome(outcome_id)?, m.flex_score),
            (None, None) => return None,
        };
        if flex && is_score(&outcome.name) {
            return flex_score(&outcome.name, specifiers).ok();
        }
        self.template(&outcome.name, specifiers).ok()
    }

    /// One template rendered with `specifiers`; the building block of both
    /// names, public so callers and tests can render their own.
    pub fn template(&self, template: &str, specifiers: &str) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(template.len() + 16);
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(TemplateError::Unbalanced(template.to_owned()));
            }
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let close = after
                .find(['{', '}'])
                .filter(|&i| after.as_bytes()[i] == b'}')
                .ok_or_else(|| TemplateError::Unbalanced(template.to_owned()))?;
            out.push_str(&self.expression(&after[..close], specifiers)?);
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// The inside of one `{...}`.
    fn expression(&self, expr: &str, specifiers: &str) -> Result<String, TemplateError> {
        let mut chars = expr.chars();
        let op = chars.next().ok_or(TemplateError::EmptyExpression)?;
        let operand = chars.as_str();
        if matches!(op, '+' | '-' | '!' | '$' | '%') && operand.is_empty() {
            return Err(TemplateError::EmptyExpression);
        }
        match op {
            '+' => Ok(signed(Operand::parse(operand)?.decimal(specifiers)?)),
            '-' => Ok(signed(-Operand::parse(operand)?.decimal(specifiers)?)),
            '!' => {
                let operand = Operand::parse(operand)?;
                match operand.integer(specifiers)? {
                    n if n >= 0 => Ok(ordinal(n)),
                    n => Err(operand.not_a(&n.to_string(), "whole number of at least 0")),
                }
            }
            '$' => match operand {
                "competitor1" => Ok(self.competitors.home().to_owned()),
                "competitor2" => Ok(self.competitors.away().to_owned()),
                "event" => Ok(self.competitors.event()),
                other => Err(TemplateError::UnknownEntity(other.to_owned())),
            },
            '%' => {
                let id = Operand::parse(operand)?.text(specifiers)?;
                Ok(self.profile(&id))
            }
            _ => Operand::parse(expr)?.text(specifiers),
        }
    }

    /// A profile's name, or `Player 123` / `Competitor 123` / the raw id.
    fn profile(&self, id: &str) -> String {
        if let Some(name) = self.profiles.profile_name(id).and_then(non_empty) {
            return name.to_owned();
        }
        let mut parts = id.rsplitn(2, ':');
        let number = parts.next().unwrap_or_default();
        match parts.next().and_then(|kind| kind.rsplit(':').next()) {
            Some("player") => format!("Player {number}"),
            Some("competitor") => format!("Competitor {number}"),
            _ => id.to_owned(),
        }
    }
}

fn is_profile(outcome_id: &str) -> bool {
    outcome_id.contains(":player:") || outcome_id.contains(":competitor:")
}

fn non_empty(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.trim().is_empty())
}

/// The value of specifier `name` in the feed's `a=1|b=2` form.
pub fn specifier<'s>(specifiers: &'s str, name: &str) -> Option<&'s str> {
    specifiers
        .split('|')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

/// A specifier, possibly with a whole number added or subtracted:
/// `goalnr`, `(inningnr+1)`, `(minute-1)`.
struct Operand<'t> {
    name: &'t str,
    offset: i64,
}

impl<'t> Operand<'t> {
    fn parse(text: &'t str) -> Result<Operand<'t>, TemplateError> {
        let bad = || TemplateError::BadOperand(text.to_owned());
        let Some(inner) = text.strip_prefix('(') else {
            if text.contains([')', '(']) || text.trim().is_empty() {
                return Err(bad());
            }
            return Ok(Operand { name: text, offset: 0 });
        };
        let inner = inner.strip_suffix(')').ok_or_else(bad)?;
        let at = inner.find(['+', '-']).ok_or_else(bad)?;
        let (name, number) = (&inner[..at], &inner[at + 1..]);
        let number: i64 = number.trim().parse().map_err(|_| bad())?;
        if name.trim().is_empty() {
            return Err(bad());
        }
        let offset = if inner.as_bytes()[at] == b'-' { -number } else { number };
        Ok(Operand {
            name: name.trim(),
            offset,
        })
    }

    fn value<'s>(&self, specifiers: &'s str) -> Result<&'s str, TemplateError> {
        specifier(specifiers, self.name).ok_or_else(|| TemplateError::MissingSpecifier(self.name.to_owned()))
    }

    fn not_a(&self, value: &str, wanted: &'static str) -> TemplateError {
        TemplateError::NotANumber {
            name: self.name.to_owned(),
            value: value.to_owned(),
            wanted,
        }
    }

    /// As written when there is no arithmetic; a whole number otherwise.
    fn text(&self, specifiers: &str) -> Result<String, TemplateError> {
        if self.offset == 0 {
            return Ok(self.value(specifiers)?.to_owned());
        }
        Ok(self.integer(specifiers)?.to_string())
    }

    fn integer(&self, specifiers: &str) -> Result<i64, TemplateError> {
        let raw = self.value(specifiers)?;
        raw.parse::<i64>()
            .ok()
            .and_then(|v| v.checked_add(self.offset))
            .ok_or_else(|| self.not_a(raw, "whole number"))
    }

    fn decimal(&self, specifiers: &str) -> Result<f64, TemplateError> {
        let raw = self.value(specifiers)?;
        raw.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .map(|v| v + self.offset as f64)
            .ok_or_else(|| self.not_a(raw, "decimal number"))
    }
}

/// `+1.5`, `-0.25`, `0`: the shortest text that reads back as the value.
fn signed(value: f64) -> String {
    if value > 0.0 {
        format!("+{value}")
    } else if value < 0.0 {
        format!("{value}")
    } else {
        "0".to_owned()
    }
}

/// English ordinal: 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 101st.
fn ordinal(n: i64) -> String {
    let suffix = match (n.rem_euclid(100), n.rem_euclid(10)) {
        (11..=13, _) => "th",
        (_, 1) => "st",
        (_, 2) => "nd",
        (_, 3) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn score(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once(':')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn is_score(s: &str) -> bool {
    score(s).is_some()
}

/// A flex-score outcome (`1:0`) after the `score` specifier (`1:1`): `2:1`.
fn flex_score(outcome: &str, specifiers: &str) -> Result<String, TemplateError> {
    let base = specifier(specifiers, "score").ok_or_else(|| TemplateError::MissingSpecifier("score".into()))?;
    let (a, b) = score(base).ok_or_else(|| TemplateError::NotAScore(base.to_owned()))?;
    let (c, d) = score(outcome).ok_or_else(|| TemplateError::NotAScore(outcome.to_owned()))?;
    Ok(format!("{}:{}", a.saturating_add(c), b.saturating_add(d)))
}
