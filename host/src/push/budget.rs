//! What one WebSocket client may make the server hold or do: message size,
//! control frames, subscriptions, bets in flight.
//!
//! Sans-IO: the session asks before it takes something on, passing the
//! time where it matters; nothing here reads a socket or a clock. Each
//! budget says what happens past it, and `docs/protocol.md` ("Limits")
//! lists them with their defaults.

use std::time::{Duration, Instant};

/// Longest match id accepted in a request: ids are kept while a match is
/// awaited, so their length is part of what a session holds. Real ids
/// (`sr:match:10927088`) are about 20 bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Bets of one session waiting for their durable decision; one more is
/// refused with an error frame (the bet is not placed).
pub const MAX_BETS_IN_FLIGHT: usize = 64;

/// A session's budgets, from the configuration (`--ws-*`,
/// `--max-subscriptions`, `--max-pending-subscriptions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Largest client message (and frame), bytes; a larger one closes the
    /// session with 1009.
    pub max_message_bytes: usize,
    /// Control frames (pings, pongs) per second on average...
    pub pings_per_sec: u32,
    /// ...and at once. One beyond closes the session with 1008.
    pub ping_burst: u32,
    /// Bytes a client's frames take to read (a compressed message counted
    /// as what it inflates to) per second on average (0: no limit)...
    pub read_bytes_per_sec: u64,
    /// ...and at once. Past it the session stops reading the client until
    /// the debt is repaid ([`super::throttle`]).
    pub read_burst_bytes: u64,
    /// Matches a session may name (known or not); `["*"]` is not counted.
    pub max_subscriptions: usize,
    /// Of those, matches not seen yet.
    pub max_pending: usize,
}

/// What a session holds now, or what a request would add to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    /// Named matches.
    pub subscriptions: usize,
    /// Named matches not seen yet.
    pub pending: usize,
}

/// Why a request is refused; the session answers with an error frame
/// carrying this text and continues.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "at most {max} subscriptions per session ({held} held, {adding} more asked): nothing of this request was applied"
    )]
    Subscriptions { max: usize, held: usize, adding: usize },
    #[error(
        "at most {max} subscriptions to matches not seen yet per session ({held} held, {adding} more asked): nothing of this request was applied"
    )]
    Pending { max: usize, held: usize, adding: usize },
    #[error("match ids are at most {MAX_ID_BYTES} bytes: nothing of this request was applied")]
    IdTooLong,
    #[error("at most {MAX_BETS_IN_FLIGHT} bets in flight per session: bet {id:?} was not placed")]
    BetsInFlight { id: String },
}

impl Refusal {
    /// The `kind` label of `touchline_ws_client_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Subscriptions { .. } | Refusal::Pending { .. } => "subscription_limit",
            Refusal::IdTooLong => "id_too_long",
            Refusal::BetsInFlight { .. } => "bets_in_flight",
        }
    }
}

impl Budget {
    /// May a session holding `held` take on `adding` more? Both caps are
    /// checked before anything is applied: a request is taken whole or not
    /// at all.
    pub fn admit(&self, held: Held, adding: Held) -> Result<(), Refusal> {
        if held.subscriptions + adding.subscriptions > self.max_subscriptions {
            return Err(Refusal::Subscriptions {
                max: self.max_subscriptions,
                held: held.subscriptions,
                adding: adding.subscriptions,
            });
        }
        if held.pending + adding.pending > self.max_pending {
            return Err(Refusal::Pending {
                max: self.max_pending,
                held: held.pending,
                adding: adding.pending,
            });
        }
        Ok(())
    }
}

/// A token bucket: `capacity` units, refilled at `rate` units a second.
/// Kept in billionths of a unit (a unit-nanosecond each), so refills are
/// exact (no float drift); negative while in debt. What [`ControlBudget`]
/// and [`ReadBudget`] share.
#[derive(Debug, Clone)]
struct Bucket {
    credit: i128,
    /// Units per second: credit per nanosecond.
    rate: i128,
    capacity: i128,
    last: Instant,
}

/// One unit (a token, a byte), in the bucket's units.
const UNIT: i128 = 1_000_000_000;

impl Bucket {
    /// A full bucket at `now`.
    fn full(per_sec: u64, burst: u64, now: Instant) -> Bucket {
        let capacity = i128::from(burst) * UNIT;
        Bucket {
            credit: capacity,
            rate: i128::from(per_sec),
            capacity,
            last: now,
        }
    }

    /// Refilled for the time since it was last looked at (a clock that
    /// steps back refills nothing), up to its capacity.
    fn refill(&mut self, now: Instant) {
        let elapsed = i128::try_from(now.saturating_duration_since(self.last).as_nanos()).unwrap_or(i128::MAX);
        self.last = now.max(self.last);
        self.credit = self
            .credit
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.capacity);
    }
}

/// A token bucket for a session's control frames: `burst` tokens, refilled
/// at `rate` per second. tungstenite answers every ping it reads (one pong
/// pending at a time), so the budget bounds the pongs a client can make the
/// server write; the session flushes each one under its write timeout.
#[derive(Debug, Clone)]
pub struct ControlBudget(Bucket);

impl ControlBudget {
    /// A full bucket at `now`.
    pub fn new(budget: &Budget, now: Instant) -> ControlBudget {
        ControlBudget(Bucket::full(
            u64::from(budget.pings_per_sec),
            u64::from(budget.ping_burst),
            now,
        ))
    }

    /// A control frame arrived at `now`: `true` if it is within the budget.
    pub fn take(&mut self, now: Instant) -> bool {
        let b = &mut self.0;
        b.refill(now);
        let within = b.credit >= UNIT;
        if within {
            b.credit -= UNIT;
        }
        within
    }
}

/// A token bucket for the bytes a session reads: `read_burst_bytes` of
/// credit, refilled at `read_bytes_per_sec`. A read is taken whole and
/// may leave a debt; the reader waits until it is repaid.
#[derive(Debug, Clone)]
pub struct ReadBudget(Bucket);

impl ReadBudget {
    /// A full bucket at `now`; `None` with no limit (a rate of 0).
    pub fn new(budget: &Budget, now: Instant) -> Option<ReadBudget> {
        (budget.read_bytes_per_sec > 0)
            .then(|| ReadBudget(Bucket::full(budget.read_bytes_per_sec, budget.read_burst_bytes, now)))
    }

    /// `n` bytes were read at `now`: how long to wait before reading
    /// again, if that left a debt.
    pub fn take(&mut self, n: u64, now: Instant) -> Option<Duration> {
        let b = &mut self.0;
        b.refill(now);
        b.credit = b.credit.saturating_sub(i128::from(n) * UNIT);
        (b.credit < 0).then(|| {
            // Rounded up: the debt is repaid when the wait ends.
            let nanos = b.credit.unsigned_abs().div_ceil(b.rate.unsigned_abs());
            Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const BUDGET: Budget = Budget {
        max_message_bytes: 64 * 1024,
        pings_per_sec: 4,
        ping_burst: 3,
        read_bytes_per_sec: 1_000,
        read_burst_bytes: 3_000,
        max_subscriptions: 10,
        max_pending: 4,
    };

    /// Control frames at these offsets (ms from the start): which pass.
    fn check(frames_ms: &[u64], expected: &str) {
        let t0 = Instant::now();
        let mut bucket = ControlBudget::new(&BUDGET, t0);
        let got: String = frames_ms
            .iter()
            .map(|&ms| {
                if bucket.take(t0 + Duration::from_millis(ms)) {
                    'y'
                } else {
                    'n'
                }
            })
            .collect();
        assert_eq!(got, expected, "frames at {frames_ms:?} ms");
    }

    #[test]
    fn control_frames_pass_in_a_burst_then_at_the_rate() {
        check(&[0, 0, 0], "yyy");
        check(&[0, 0, 0, 0], "yyyn");
        // 4 per second: one token back every 250 ms.
        check(&[0, 0, 0, 0, 249, 250, 251], "yyynnyn");
        check(&[0, 0, 0, 500, 500, 500], "yyyyyn");
        // Refilled to the burst, never beyond.
        check(&[0, 0, 0, 10_000, 10_000, 10_000, 10_000], "yyyyyyn");
        // Steady at the rate: every one passes.
        check(&[0, 250, 500, 750, 1000, 1250, 1500, 1750, 2000], "yyyyyyyyy");
        // A clock that steps back refills nothing and panics on nothing.
        check(&[1000, 1000, 1000, 0, 0], "yyynn");
    }

    #[test]
    fn reads_take_the_burst_then_wait_out_their_debt_at_the_rate() {
        // 1,000 bytes a second, 3,000 at once.
        let t0 = Instant::now();
        let ms = |ms| t0 + Duration::from_millis(ms);
        let mut b = ReadBudget::new(&BUDGET, t0).expect("a rate");
        assert_eq!(b.take(2_000, t0), None);
        assert_eq!(b.take(1_000, t0), None, "the whole burst, to the byte");
        assert_eq!(b.take(1, t0), Some(Duration::from_millis(1)));
        // 1 ms later the byte is repaid; 250 ms later 250 bytes are back.
        assert_eq!(b.take(250, ms(251)), None);
        assert_eq!(b.take(300, ms(251)), Some(Duration::from_millis(300)));
        assert_eq!(b.take(1, ms(551)), Some(Duration::from_millis(1)));
        // Idle for an hour: the burst back, no more.
        assert_eq!(b.take(3_000, ms(3_600_000)), None);
        assert_eq!(b.take(1, ms(3_600_000)), Some(Duration::from_millis(1)));
        // A clock that steps back refills nothing.
        assert_eq!(b.take(1, ms(0)), Some(Duration::from_millis(2)));
        // A huge read leaves a huge debt, not an overflow.
        assert_eq!(b.take(u64::MAX, ms(3_600_002)), Some(Duration::from_nanos(u64::MAX)));
        // At 3 bytes a second a byte takes a third of a second: the wait is
        // rounded up, so the debt is repaid when it ends.
        let slow = Budget {
            read_bytes_per_sec: 3,
            read_burst_bytes: 0,
            ..BUDGET
        };
        let mut b = ReadBudget::new(&slow, t0).expect("a rate");
        assert_eq!(b.take(1, t0), Some(Duration::from_nanos(333_333_334)));
        let unlimited = Budget {
            read_bytes_per_sec: 0,
            ..BUDGET
        };
        assert!(ReadBudget::new(&unlimited, t0).is_none());
    }

    #[test]
    fn subscriptions_are_taken_whole_or_refused() {
        let held = |subscriptions, pending| Held { subscriptions, pending };
        assert_eq!(BUDGET.admit(held(0, 0), held(10, 4)), Ok(()));
        assert_eq!(BUDGET.admit(held(6, 0), held(4, 4)), Ok(()));
        assert_eq!(
            BUDGET.admit(held(6, 0), held(5, 0)),
            Err(Refusal::Subscriptions {
                max: 10,
                held: 6,
                adding: 5
            })
        );
        assert_eq!(
            BUDGET.admit(held(3, 3), held(2, 2)),
            Err(Refusal::Pending {
                max: 4,
                held: 3,
                adding: 2
            })
        );
        let none = Budget {
            max_pending: 0,
            ..BUDGET
        };
        assert_eq!(none.admit(held(0, 0), held(3, 0)), Ok(()));
        assert!(none.admit(held(0, 0), held(1, 1)).is_err());
        let refusal = BUDGET.admit(held(3, 3), held(2, 2)).expect_err("over");
        assert_eq!(refusal.kind(), "subscription_limit");
        assert!(
            refusal
                .to_string()
                .starts_with("at most 4 subscriptions to matches not seen yet")
        );
    }
}
