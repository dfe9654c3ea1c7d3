//! Admin authorization: the `Authorization: Bearer <token>` of the admin
//! routes (the scheme in any case, RFC 7235; the token compared in
//! constant time) and a limit on wrong tokens per source address.
//!
//! An address that sent [`MAX_FAILURES`] wrong or missing tokens within
//! [`WINDOW`] is refused (429, `Retry-After`) until that window has passed,
//! whatever token it sends meanwhile: guessing gets [`MAX_FAILURES`] tries
//! a minute. At most [`TRACKED`] addresses are remembered; past that the
//! one whose window began first is forgotten. Pure but for the clock the
//! caller passes in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Wrong tokens an address may send per window.
pub const MAX_FAILURES: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at once.
pub const TRACKED: usize = 4096;

/// What a request to an admin route gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token is configured: the admin routes do not exist.
    NotFound,
    /// Wrong or missing token.
    Denied,
    /// Too many wrong tokens from this address; try again after this long.
    Limited(Duration),
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
}

/// The admin token and the wrong tokens seen per address.
#[derive(Debug)]
pub struct Guard {
    token: Option<String>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

/// The credentials of a `Bearer` authorization value, if it is one.
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl Guard {
    pub fn new(token: Option<String>) -> Guard {
        Guard {
            token,
            failures: Mutex::default(),
        }
    }

    /// Whether a token is configured (the admin routes exist).
    pub fn enabled(&self) -> bool {
        self.token.is_some()
    }

    /// Judge a request from `peer` carrying `authorization` (the header's
    /// value) at `now`.
    pub fn check(&self, peer: Option<IpAddr>, authorization: Option<&str>, now: Instant) -> Verdict {
        use subtle::ConstantTimeEq as _;
        let Some(token) = &self.token else {
            return Verdict::NotFound;
        };
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(ip) = peer
            && let Some(f) = failures.get(&ip)
        {
            let elapsed = now.saturating_duration_since(f.since);
            if elapsed >= WINDOW {
                failures.remove(&ip);
            } else if f.count >= MAX_FAILURES {
                return Verdict::Limited(WINDOW - elapsed);
            }
        }
        let given = authorization.and_then(bearer).unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return Verdict::Allowed;
        }
        if let Some(ip) = peer {
            if !failures.contains_key(&ip) && failures.len() >= TRACKED {
                failures.retain(|_, f| now.saturating_duration_since(f.since) < WINDOW);
                if failures.len() >= TRACKED
                    && let Some(oldest) = failures.iter().min_by_key(|(_, f)| f.since).map(|(ip, _)| *ip)
                {
                    failures.remove(&oldest);
                }
            }
            failures.entry(ip).or_insert(Failures { since: now, count: 0 }).count += 1;
        }
        Verdict::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "the-admin-token";

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, n]))
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_token_exact() {
        let g = Guard::new(Some(TOKEN.into()));
        let t0 = Instant::now();
        for good in [
            "Bearer the-admin-token",
            "bearer the-admin-token",
            "BEARER  the-admin-token ",
        ] {
            assert_eq!(g.check(ip(1), Some(good), t0), Verdict::Allowed, "{good}");
        }
        for bad in ["Bearer the-admin-tokeN", "Basic the-admin-token", "the-admin-token", ""] {
            assert_eq!(g.check(ip(2), Some(bad), t0), Verdict::Denied, "{bad}");
        }
        assert_eq!(g.check(ip(2), None, t0), Verdict::Denied);
        assert_eq!(Guard::new(None).check(ip(1), Some("Bearer x"), t0), Verdict::NotFound);
    }

    #[test]
    fn wrong_tokens_from_one_address_are_limited_for_the_rest_of_its_window() {
        let g = Guard::new(Some(TOKEN.into()));
        let t0 = Instant::now();
        let good = Some("Bearer the-admin-token");
        for i in 0..MAX_FAILURES {
            assert_eq!(
                g.check(ip(1), Some("Bearer guess"), t0 + Duration::from_secs(u64::from(i))),
                Verdict::Denied
            );
        }
        // Limited, even with the right token; another address is not.
        let at = t0 + Duration::from_secs(20);
        assert_eq!(g.check(ip(1), good, at), Verdict::Limited(Duration::from_secs(40)));
        assert_eq!(
            g.check(ip(1), Some("Bearer guess"), at),
            Verdict::Limited(Duration::from_secs(40))
        );
        assert_eq!(g.check(ip(2), good, at), Verdict::Allowed);
        // The window over, the address starts afresh.
        assert_eq!(g.check(ip(1), good, t0 + WINDOW), Verdict::Allowed);
    }

    #[test]
    fn the_addresses_remembered_are_bounded() {
        let g = Guard::new(Some(TOKEN.into()));
        let t0 = Instant::now();
        for n in 0..(TRACKED as u32 + 10) {
            let peer = Some(IpAddr::from(n.to_be_bytes()));
            g.check(peer, None, t0 + Duration::from_millis(u64::from(n)));
        }
        assert_eq!(g.failures.lock().expect("lock").len(), TRACKED);
    }
}
