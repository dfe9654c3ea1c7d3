//! The HTTP port's connection table: how many connections each source
//! address holds and how many are open in all, and which connection makes
//! room when the table is full. Sans-IO: no socket, clock or lock here;
//! [`super::conn::Registry`] shares it and acts on its answers.
//!
//! A connection's states (one transition function each, below):
//!
//! | state      | entered                                        | leaves by            | may be evicted |
//! |------------|------------------------------------------------|----------------------|----------------|
//! | `Waiting`  | accepted; its response sent (keep-alive)       | `busy`, `evict`      | yes, oldest first |
//! | `Busy`     | a request head arrived (`busy`)                | `done`               | no             |
//! | `Upgraded` | its response was 101: a WebSocket session      | `release` only       | no             |
//! | `Evicted`  | chosen to make room (`admit` when full, `evict`) | `release` only     | already is     |
//!
//! Every state ends with `release`, when the socket is dropped. An evicted
//! connection is not counted against the total (its socket is about to
//! close), but still against its address until it is released.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// A connection's name in the table.
pub type Id = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for a request head; `since` orders evictions (oldest first).
    Waiting {
        since: u64,
    },
    Busy,
    Upgraded,
    Evicted,
}

/// Why a connection is closed as it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("too many connections from this address")]
    PerIp,
    #[error("too many connections, none waiting that could make room")]
    Full,
}

impl Refused {
    /// The `kind` label of `touchline_http_refused_total`.
    pub fn kind(self) -> &'static str {
        match self {
            Refused::PerIp => "per_ip",
            Refused::Full => "full",
        }
    }
}

/// A connection let in, and the one evicted to make room for it, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    pub id: Id,
    pub evicted: Option<Id>,
}

#[derive(Debug)]
struct Entry {
    ip: IpAddr,
    state: State,
}

#[derive(Debug)]
pub struct Table {
    /// Open connections counted against the total (evicted ones are not).
    max: usize,
    per_ip_max: usize,
    per_ip: HashMap<IpAddr, usize>,
    conns: HashMap<Id, Entry>,
    /// Waiting connections by the time they started waiting.
    waiting: BTreeMap<u64, Id>,
    evicted: usize,
    next_id: Id,
    clock: u64,
}

impl Table {
    pub fn new(max: usize, per_ip_max: usize) -> Table {
        Table {
            max,
            per_ip_max,
            per_ip: HashMap::new(),
            conns: HashMap::new(),
            waiting: BTreeMap::new(),
            evicted: 0,
            next_id: 0,
            clock: 0,
        }
    }

    /// Open connections, evicted ones included (each holds a descriptor).
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn state(&self, id: Id) -> Option<State> {
        self.conns.get(&id).map(|e| e.state)
    }

    /// A connection from `ip` was accepted: let it in (waiting for its
    /// request), evicting the connection waiting longest if the table is
    /// full, or refuse it.
    pub fn admit(&mut self, ip: IpAddr) -> Result<Admitted, Refused> {
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= self.per_ip_max {
            return Err(Refused::PerIp);
        }
        let mut evicted = None;
        if self.conns.len() - self.evicted >= self.max {
            evicted = Some(self.evict().ok_or(Refused::Full)?);
        }
        let id = self.next_id;
        self.next_id += 1;
        *self.per_ip.entry(ip).or_default() += 1;
        let since = self.tick();
        self.conns.insert(
            id,
            Entry {
                ip,
                state: State::Waiting { since },
            },
        );
        self.waiting.insert(since, id);
        Ok(Admitted { id, evicted })
    }

    /// Choose the connection waiting longest to be closed (descriptors ran
    /// out, or the table is full); `None` if none is waiting.
    pub fn evict(&mut self) -> Option<Id> {
        let (_, id) = self.waiting.pop_first()?;
        self.set(id, State::Evicted);
        self.evicted += 1;
        Some(id)
    }

    /// A request head arrived on `id`: it is no longer evictable.
    pub fn busy(&mut self, id: Id) {
        if let Some(State::Waiting { since }) = self.state(id) {
            self.waiting.remove(&since);
            self.set(id, State::Busy);
        }
    }

    /// `id`'s response is sent: it waits for its next request, or, after a
    /// 101, is a WebSocket session until it closes.
    pub fn done(&mut self, id: Id, upgraded: bool) {
        if self.state(id) != Some(State::Busy) {
            return;
        }
        if upgraded {
            self.set(id, State::Upgraded);
        } else {
            let since = self.tick();
            self.waiting.insert(since, id);
            self.set(id, State::Waiting { since });
        }
    }

    /// `id`'s socket is closed.
    pub fn release(&mut self, id: Id) {
        let Some(entry) = self.conns.remove(&id) else {
            return;
        };
        match entry.state {
            State::Waiting { since } => {
                self.waiting.remove(&since);
            }
            State::Evicted => self.evicted -= 1,
            State::Busy | State::Upgraded => {}
        }
        if let Some(n) = self.per_ip.get_mut(&entry.ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&entry.ip);
            }
        }
    }

    fn set(&mut self, id: Id, state: State) {
        if let Some(e) = self.conns.get_mut(&id) {
            e.state = state;
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run `script` on a table of `max` connections, `per_ip` per address:
    /// one step per word, `a`/`b` the addresses, `N` a connection by the
    /// order it was admitted in (0, 1, ...):
    /// `+a` admit from a, `busy:N`, `done:N`, `up:N` (done with a 101),
    /// `rel:N` release, `evict`. Each step's outcome, space-separated:
    /// `N` admitted, `N/-M` admitted evicting M, `per_ip`, `full`, `-M`
    /// evicted, `none`, `.` for the others.
    fn check(max: usize, per_ip: usize, script: &str, expected: &str) {
        let mut t = Table::new(max, per_ip);
        let ip = |c: &str| -> IpAddr {
            match c {
                "a" => [127, 0, 0, 1].into(),
                _ => [127, 0, 0, 2].into(),
            }
        };
        let mut out = Vec::new();
        for step in script.split_whitespace() {
            let (op, arg) = step.split_once(':').unwrap_or((step, ""));
            let n = || arg.parse::<Id>().expect("a connection number");
            out.push(match op {
                _ if op.starts_with('+') => match t.admit(ip(&op[1..])) {
                    Ok(Admitted { id, evicted: None }) => id.to_string(),
                    Ok(Admitted { id, evicted: Some(e) }) => format!("{id}/-{e}"),
                    Err(r) => r.kind().to_owned(),
                },
                "busy" => {
                    t.busy(n());
                    ".".to_owned()
                }
                "done" | "up" => {
                    t.done(n(), op == "up");
                    ".".to_owned()
                }
                "rel" => {
                    t.release(n());
                    ".".to_owned()
                }
                "evict" => t.evict().map_or("none".to_owned(), |e| format!("-{e}")),
                other => panic!("unknown step {other}"),
            });
        }
        assert_eq!(out.join(" "), expected, "script {script:?}");
    }

    #[test]
    fn per_address_limit_counts_every_state_until_release() {
        check(10, 2, "+a +a +a +b", "0 1 per_ip 2");
        check(10, 2, "+a +a busy:0 up:0 +a rel:0 +a", "0 1 . . per_ip . 2");
        // An evicted connection still holds its address's place until closed.
        check(10, 1, "+a evict +a rel:0 +a", "0 -0 per_ip . 1");
    }

    #[test]
    fn a_full_table_evicts_the_connection_waiting_longest() {
        check(2, 10, "+a +b +a", "0 1 2/-0");
        // Busy and upgraded connections are never evicted.
        check(2, 10, "+a +b busy:0 +a", "0 1 . 2/-1");
        check(2, 10, "+a +b busy:0 busy:1 +a", "0 1 . . full");
        check(2, 10, "+a +b busy:0 up:0 busy:1 +a done:1 +a", "0 1 . . . full . 2/-1");
        // Waiting again after a response: at the back of the line.
        check(3, 10, "+a +a +a busy:0 done:0 +a", "0 1 2 . . 3/-1");
        // Evicted connections do not count against the total.
        check(1, 10, "+a +a +a", "0 1/-0 2/-1");
    }

    #[test]
    fn evictions_for_descriptors_take_the_oldest_waiting_first() {
        check(10, 10, "+a +b +a busy:0 evict evict evict", "0 1 2 . -1 -2 none");
        check(10, 10, "+a busy:0 evict done:0 evict", "0 . none . -0");
    }

    #[test]
    fn release_forgets_everything() {
        let mut t = Table::new(2, 2);
        let ip: IpAddr = [10, 0, 0, 1].into();
        let a = t.admit(ip).expect("a").id;
        let b = t.admit(ip).expect("b").id;
        t.busy(b);
        t.done(b, true);
        assert_eq!(t.state(b), Some(State::Upgraded));
        let c = t.admit([10, 0, 0, 2].into()).expect("c, evicting a");
        assert_eq!(c.evicted, Some(a));
        for id in [a, b, c.id] {
            t.release(id);
        }
        t.release(a); // twice: nothing
        assert!(t.is_empty());
        assert!(t.per_ip.is_empty() && t.waiting.is_empty());
        assert_eq!(t.evicted, 0);
    }
}
