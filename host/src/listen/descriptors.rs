//! File descriptors: how many the process may open (so the connection cap
//! stays below it), a reserve one to shed a connection with when they run
//! out anyway, and how long the accept loop pauses then.

use std::io;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::net::TcpListener;

/// Descriptors kept out of the HTTP connection cap by default: the store's
/// files, feed connections, the provider's API, the reserve below.
pub const FD_RESERVE: u64 = 128;

/// The connection cap when `--max-connections` is not given: the open-file
/// limit less [`FD_RESERVE`] (less half the limit when it is that small),
/// or the largest cap accepted when there is no limit to read.
pub fn default_max_connections(open_file_limit: Option<u64>) -> usize {
    match open_file_limit {
        Some(n) => n.saturating_sub(FD_RESERVE.min(n / 2)).max(1) as usize,
        None => 1_000_000,
    }
}

/// The process's soft open-file limit (`RLIMIT_NOFILE`), from
/// `/proc/self/limits`; `None` where that cannot be read or says unlimited.
pub fn open_file_limit() -> Option<u64> {
    limit_in(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// `Max open files  <soft>  <hard>  files` from a `/proc/PID/limits` text.
fn limit_in(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// Did an accept fail for want of descriptors (or kernel memory for them)?
pub fn exhausted(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux (std names none of them).
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// One descriptor held in reserve: when accepts fail for want of
/// descriptors and no connection can be evicted, it is closed to accept
/// the newest connection and close it at once (its client learns at once,
/// rather than waiting in the backlog), then taken again.
#[derive(Debug)]
pub struct Reserve(Option<std::fs::File>);

impl Reserve {
    pub fn open() -> Reserve {
        Reserve(std::fs::File::open("/dev/null").ok())
    }

    /// Shed one waiting connection; `true` if there was one.
    pub fn shed(&mut self, listener: &TcpListener) -> bool {
        self.0 = None;
        let mut cx = Context::from_waker(Waker::noop());
        let shed = matches!(listener.poll_accept(&mut cx), Poll::Ready(Ok(_)));
        self.0 = std::fs::File::open("/dev/null").ok();
        shed
    }
}

/// Pauses between failed accepts: from 5 ms, doubling to 1 s, back to the
/// start after an accept succeeds.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: u32,
}

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(5);
    pub const MAX: Duration = Duration::from_secs(1);

    pub fn pause(&mut self) -> Duration {
        let pause = Self::FIRST.saturating_mul(1 << self.failures.min(16)).min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        pause
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max processes             63438                63438                processes \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(limit_in(text), Some(1024));
        assert_eq!(
            limit_in("Max open files            unlimited            unlimited            files"),
            None
        );
        assert_eq!(limit_in("nothing here"), None);
        assert!(open_file_limit().is_some(), "this machine's limit is readable");
    }

    #[test]
    fn the_default_cap_keeps_descriptors_back() {
        assert_eq!(default_max_connections(Some(20_000)), 19_872);
        assert_eq!(default_max_connections(Some(1024)), 896);
        assert_eq!(default_max_connections(Some(200)), 100);
        assert_eq!(default_max_connections(Some(1)), 1);
        assert_eq!(default_max_connections(None), 1_000_000);
    }

    #[test]
    fn backoff_doubles_to_a_second_and_starts_over() {
        let mut b = Backoff::default();
        let ms: Vec<u128> = (0..10).map(|_| b.pause().as_millis()).collect();
        assert_eq!(ms, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.pause(), Backoff::FIRST);
    }

    #[test]
    fn only_descriptor_shortages_count_as_exhausted() {
        assert!(exhausted(&io::Error::from_raw_os_error(24)));
        assert!(exhausted(&io::Error::from_raw_os_error(23)));
        assert!(!exhausted(&io::Error::from_raw_os_error(104)));
        assert!(!exhausted(&io::Error::other("x")));
    }
}
