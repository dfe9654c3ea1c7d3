//! Faults the simulated provider injects: the vocabulary ([`Fault`]) and
//! its one validation ([`Fault::new`], shared by the HTTP API and the
//! command line), the `--fault` spec ([`FaultAt`],
//! `KIND[:PRODUCT][:SECONDS]@AT`) and the script that plays them
//! ([`FaultScript`]). Pure but for [`FaultScript::play`], which only waits
//! and calls the [`Provider`].

use std::str::FromStr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::generator::Control;
use super::{Producer, Provider};

/// One fault, valid by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// No alive from `product` for `seconds`.
    StopAlive { product: u32, seconds: u64 },
    /// One `<alive product=.. subscribed="0"/>` from `product`, now.
    Unsubscribed { product: u32 },
    /// Close every feed connection now.
    Drop,
    /// For `seconds`, every message of `product` carries a timestamp
    /// `seconds` old.
    Delay { product: u32, seconds: u64 },
}

/// Why a fault or a fault spec is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    #[error("unknown fault kind {0:?} (stop_alive, unsubscribed, drop, delay)")]
    UnknownKind(String),
    #[error("unknown producer {0} (the simulator has 1 LO and 3 Ctrl)")]
    UnknownProducer(u64),
    #[error("{0} needs a producer")]
    MissingProducer(&'static str),
    #[error("{0} concerns every producer: give none")]
    NoProducer(&'static str),
    #[error("{0} needs a duration of at least one second")]
    MissingSeconds(&'static str),
    #[error("{0} happens at once: give no duration (or 0)")]
    NoSeconds(&'static str),
    #[error("fault {spec:?}: {kind} is written {form}")]
    Shape {
        spec: String,
        kind: &'static str,
        form: &'static str,
    },
    #[error("fault {spec:?}: no @AT (seconds after the first feed connection)")]
    MissingAt { spec: String },
    #[error("fault {spec:?}: {value:?} is not a whole number")]
    NotANumber { spec: String, value: String },
    #[error("--fault-every must be at least one second")]
    ZeroPeriod,
    #[error("a fault at {at} s does not fit in --fault-every {every} s")]
    BeyondPeriod { at: u64, every: u64 },
}

/// Each kind: its name, whether it names a producer, whether it lasts,
/// and how the spec writes it.
const KINDS: [(&str, bool, bool, &str); 4] = [
    ("stop_alive", true, true, "stop_alive:PRODUCT:SECONDS@AT"),
    ("unsubscribed", true, false, "unsubscribed:PRODUCT@AT"),
    ("drop", false, false, "drop@AT"),
    ("delay", true, true, "delay:PRODUCT:SECONDS@AT"),
];

impl Fault {
    /// The one validation: `kind` by name; `product` required for every
    /// kind but `drop` (which refuses one) and a known producer;
    /// `seconds` (> 0) required for `stop_alive` and `delay`, absent or 0
    /// for the others.
    pub fn new(kind: &str, product: Option<u32>, seconds: Option<u64>) -> Result<Fault, FaultError> {
        let (name, wants_product, lasts, _) = kind_of(kind)?;
        let product = match (wants_product, product) {
            (true, None) => return Err(FaultError::MissingProducer(name)),
            (false, Some(_)) => return Err(FaultError::NoProducer(name)),
            (true, Some(p)) if Producer::by_id(p).is_none() => return Err(FaultError::UnknownProducer(p.into())),
            (_, p) => p.unwrap_or_default(),
        };
        let seconds = match (lasts, seconds) {
            (true, None | Some(0)) => return Err(FaultError::MissingSeconds(name)),
            (false, Some(s)) if s > 0 => return Err(FaultError::NoSeconds(name)),
            (_, s) => s.unwrap_or_default(),
        };
        Ok(match name {
            "stop_alive" => Fault::StopAlive { product, seconds },
            "unsubscribed" => Fault::Unsubscribed { product },
            "drop" => Fault::Drop,
            _ => Fault::Delay { product, seconds },
        })
    }

    /// How long it lasts, for the timed kinds.
    pub fn duration(&self) -> Option<Duration> {
        match *self {
            Fault::StopAlive { seconds, .. } | Fault::Delay { seconds, .. } => Some(Duration::from_secs(seconds)),
            Fault::Unsubscribed { .. } | Fault::Drop => None,
        }
    }

    /// Whether `other` opens the same window (same kind and producer), so
    /// replaces this one.
    pub fn same_window(&self, other: &Fault) -> bool {
        match (self, other) {
            (Fault::StopAlive { product: a, .. }, Fault::StopAlive { product: b, .. })
            | (Fault::Delay { product: a, .. }, Fault::Delay { product: b, .. }) => a == b,
            _ => false,
        }
    }

    /// What a generator is told, with `remaining` of the window left
    /// (`None` for `drop`, which is the connection's business).
    pub fn control(&self, remaining: Duration) -> Option<Control> {
        let ms = i64::try_from(remaining.as_millis()).unwrap_or(i64::MAX);
        match *self {
            Fault::StopAlive { product, .. } => Some(Control::StopAlive { product, ms }),
            Fault::Unsubscribed { product } => Some(Control::Unsubscribe { product }),
            Fault::Drop => None,
            Fault::Delay { product, seconds } => Some(Control::Delay {
                product,
                lag_ms: i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX),
                ms,
            }),
        }
    }
}

fn kind_of(kind: &str) -> Result<(&'static str, bool, bool, &'static str), FaultError> {
    KINDS
        .into_iter()
        .find(|k| k.0 == kind)
        .ok_or_else(|| FaultError::UnknownKind(kind.to_owned()))
}

/// A fault and when it happens: one `--fault` spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAt {
    pub fault: Fault,
    /// Seconds after the first feed connection (of each round, with
    /// `--fault-every`).
    pub at: u64,
}

impl FromStr for FaultAt {
    type Err = FaultError;

    /// `stop_alive:PRODUCT:SECONDS@AT`, `delay:PRODUCT:SECONDS@AT`,
    /// `unsubscribed:PRODUCT[:0]@AT`, `drop[:0]@AT`.
    fn from_str(spec: &str) -> Result<FaultAt, FaultError> {
        let number = |value: &str| -> Result<u64, FaultError> {
            value.parse().map_err(|_| FaultError::NotANumber {
                spec: spec.to_owned(),
                value: value.to_owned(),
            })
        };
        let (left, at) = spec
            .rsplit_once('@')
            .ok_or_else(|| FaultError::MissingAt { spec: spec.to_owned() })?;
        let mut parts = left.split(':');
        let (name, wants_product, lasts, form) = kind_of(parts.next().unwrap_or_default())?;
        let fields = parts.map(number).collect::<Result<Vec<u64>, _>>()?;
        let shape = || FaultError::Shape {
            spec: spec.to_owned(),
            kind: name,
            form,
        };
        let (product, seconds) = match (wants_product, lasts, &fields[..]) {
            (true, true, &[p, s]) => (Some(p), Some(s)),
            (true, false, &[p]) => (Some(p), None),
            (true, false, &[p, s]) => (Some(p), Some(s)),
            (false, false, &[]) => (None, None),
            (false, false, &[s]) => (None, Some(s)),
            _ => return Err(shape()),
        };
        let product = product
            .map(|p| u32::try_from(p).map_err(|_| FaultError::UnknownProducer(p)))
            .transpose()?;
        Ok(FaultAt {
            fault: Fault::new(name, product, seconds)?,
            at: number(at)?,
        })
    }
}

/// The `--fault` specs, in time order, played once or every `every`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultScript {
    faults: Vec<FaultAt>,
    every: Option<u64>,
}

impl FaultScript {
    /// A round of `every` seconds must hold every fault (AT < every).
    pub fn new(mut faults: Vec<FaultAt>, every: Option<u64>) -> Result<FaultScript, FaultError> {
        faults.sort_by_key(|f| f.at);
        if let Some(every) = every {
            if every == 0 {
                return Err(FaultError::ZeroPeriod);
            }
            if let Some(late) = faults.iter().find(|f| f.at >= every) {
                return Err(FaultError::BeyondPeriod { at: late.at, every });
            }
        }
        Ok(FaultScript { faults, every })
    }

    /// Wait for the first feed connection, then inject each fault at its
    /// time (every round, with `every`), until `shutdown`.
    pub async fn play(self, provider: Provider, shutdown: CancellationToken) {
        if self.faults.is_empty() {
            return;
        }
        let first_connection = provider.first_connection();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = first_connection.cancelled() => {}
        }
        let start = tokio::time::Instant::now();
        for round in 0u64.. {
            let round_start = start + Duration::from_secs(self.every.unwrap_or(0).saturating_mul(round));
            for f in &self.faults {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep_until(round_start + Duration::from_secs(f.at)) => {}
                }
                let connections = provider.fault(f.fault);
                tracing::info!(fault = ?f.fault, at = f.at, round, connections, "simulator: fault injected");
            }
            if self.every.is_none() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &str, expected: Result<FaultAt, &str>) {
        let got = spec.parse::<FaultAt>().map_err(|e| e.to_string());
        match (&got, &expected) {
            (Ok(g), Ok(e)) => assert_eq!(g, e, "{spec}"),
            (Err(g), Err(e)) => assert!(g.contains(e), "{spec}: {g:?} lacks {e:?}"),
            _ => panic!("{spec}: got {got:?}, expected {expected:?}"),
        }
    }

    fn at(fault: Fault, at: u64) -> Result<FaultAt, &'static str> {
        Ok(FaultAt { fault, at })
    }

    #[test]
    fn fault_specs() {
        let table = [
            (
                "stop_alive:1:30@10",
                at(
                    Fault::StopAlive {
                        product: 1,
                        seconds: 30,
                    },
                    10,
                ),
            ),
            (
                "delay:3:25@0",
                at(
                    Fault::Delay {
                        product: 3,
                        seconds: 25,
                    },
                    0,
                ),
            ),
            ("unsubscribed:3@20", at(Fault::Unsubscribed { product: 3 }, 20)),
            ("unsubscribed:1:0@20", at(Fault::Unsubscribed { product: 1 }, 20)),
            ("drop@45", at(Fault::Drop, 45)),
            ("drop:0@45", at(Fault::Drop, 45)),
            ("explode:1:3@4", Err("unknown fault kind \"explode\"")),
            ("stop_alive:1:30", Err("no @AT")),
            (
                "stop_alive:1@10",
                Err("stop_alive is written stop_alive:PRODUCT:SECONDS@AT"),
            ),
            ("stop_alive:1:2:3@10", Err("stop_alive is written")),
            ("stop_alive:2:30@10", Err("unknown producer 2")),
            ("stop_alive:1:0@10", Err("stop_alive needs a duration")),
            ("delay:1:x@10", Err("\"x\" is not a whole number")),
            ("delay:1:5@soon", Err("\"soon\" is not a whole number")),
            ("delay:-1:5@1", Err("\"-1\" is not a whole number")),
            ("unsubscribed@3", Err("unsubscribed is written unsubscribed:PRODUCT@AT")),
            ("unsubscribed:1:5@3", Err("unsubscribed happens at once")),
            ("drop:5@3", Err("drop happens at once")),
            ("drop:1:0@3", Err("drop is written drop@AT")),
            ("", Err("no @AT")),
        ];
        for (spec, expected) in table {
            check(spec, expected);
        }
    }

    #[test]
    fn the_http_form_follows_the_same_rules() {
        assert_eq!(Fault::new("drop", None, None), Ok(Fault::Drop));
        assert_eq!(Fault::new("drop", Some(1), None), Err(FaultError::NoProducer("drop")));
        assert_eq!(
            Fault::new("delay", Some(3), None),
            Err(FaultError::MissingSeconds("delay"))
        );
        assert_eq!(
            Fault::new("unsubscribed", None, None),
            Err(FaultError::MissingProducer("unsubscribed"))
        );
        assert_eq!(
            serde_json::to_value(Fault::Delay { product: 1, seconds: 3 }).expect("json"),
            serde_json::json!({"kind": "delay", "product": 1, "seconds": 3})
        );
    }

    #[test]
    fn a_script_round_holds_its_faults() {
        let f = |s: &str| s.parse::<FaultAt>().expect("spec");
        let script = FaultScript::new(vec![f("drop@50"), f("unsubscribed:1@5")], Some(60)).expect("fits");
        assert_eq!(script.faults[0].at, 5, "in time order");
        assert_eq!(
            FaultScript::new(vec![f("drop@60")], Some(60)),
            Err(FaultError::BeyondPeriod { at: 60, every: 60 })
        );
        assert_eq!(FaultScript::new(vec![], Some(0)), Err(FaultError::ZeroPeriod));
        assert!(FaultScript::new(vec![f("drop@600")], None).is_ok());
    }

    /// The script's clock starts at the first connection; each round
    /// repeats it.
    #[tokio::test(start_paused = true)]
    async fn a_script_plays_from_the_first_connection() {
        let provider = Provider::default();
        let f = |s: &str| s.parse::<FaultAt>().expect("spec");
        let script = FaultScript::new(vec![f("unsubscribed:1@5"), f("stop_alive:3:20@10")], Some(30)).expect("fits");
        let stop = CancellationToken::new();
        let play = tokio::spawn(script.play(provider.clone(), stop.clone()));
        tokio::time::sleep(Duration::from_secs(100)).await;
        let t0 = tokio::time::Instant::now();
        let mut conn = provider.connect();
        let mut seen = Vec::new();
        while seen.len() < 4 {
            let c = conn.next().await.expect("the provider keeps the queue open");
            seen.push((t0.elapsed().as_secs(), c));
        }
        stop.cancel();
        play.await.expect("script");
        assert_eq!(
            seen,
            [
                (5, Control::Unsubscribe { product: 1 }),
                (10, Control::StopAlive { product: 3, ms: 20_000 }),
                (35, Control::Unsubscribe { product: 1 }),
                (40, Control::StopAlive { product: 3, ms: 20_000 }),
            ]
        );
    }
}
