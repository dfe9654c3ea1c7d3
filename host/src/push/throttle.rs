//! A session's read rate: the stream under tungstenite (above the
//! inflater) stops reading the client's socket while the session's read
//! budget ([`super::budget::ReadBudget`]) is spent, and reads again once
//! it has refilled. What a client sends then waits in TCP's buffers, and
//! TCP holds the client back: nothing is dropped and the session is not
//! closed. The bytes counted are those tungstenite reads, so a compressed
//! message counts as what it inflated to: the work it makes the server do
//! (inflating and parsing), not what it cost the client to send.
//!
//! A read that overdraws the budget is handed on whole (tungstenite never
//! sees a message cut short by it); the next read waits until the debt is
//! repaid. So a client gets its burst, then at most the rate on average,
//! and the server reads at most one read (tungstenite's, 4 KiB) past its
//! budget; inflating may run one message (the message budget) ahead of it.
//!
//! Once the server has shut its side (the close linger,
//! [`super::close`]), what it reads is only discarded: the budget is lifted
//! so the client can finish sending and read why it was closed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::budget::{Budget, ReadBudget};

/// `io` read within a session's read budget.
pub struct Throttled<S> {
    io: S,
    /// `None`: unlimited (`--ws-read-bytes-per-sec 0`).
    budget: Option<ReadBudget>,
    /// Set while the budget is spent: reading resumes when it fires.
    wait: Option<Pin<Box<Sleep>>>,
    /// `touchline_ws_read_throttled_total`: reads that overdrew the budget
    /// (each makes the next read wait).
    throttled: Counter,
}

impl<S> Throttled<S> {
    pub fn new(io: S, budget: &Budget, throttled: Counter) -> Throttled<S> {
        Throttled {
            io,
            budget: ReadBudget::new(budget, Instant::now().into_std()),
            wait: None,
            throttled,
        }
    }

    /// The server's side is shut: from now on what is read is discarded
    /// (the close linger), so the budget no longer applies.
    fn lift(&mut self) {
        self.budget = None;
        self.wait = None;
    }

    /// `n` bytes read (by this stream, or before it: the handshake's
    /// reader read past its request, which tungstenite reads first): if
    /// that overdrew the budget, the next read waits.
    pub fn charge(&mut self, n: usize) {
        let Some(budget) = self.budget.as_mut() else { return };
        if n == 0 {
            return;
        }
        let now = Instant::now();
        if let Some(wait) = budget.take(n as u64, now.into_std()) {
            self.throttled.inc();
            self.wait = Some(Box::pin(tokio::time::sleep(wait)));
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(wait) = this.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
            this.wait = None;
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        this.charge(buf.filled().len() - before);
        Poll::Ready(Ok(()))
    }
}

crate::passthrough::writes_pass_through!(Throttled, io, on_shutdown: lift);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn budget(per_sec: u64, burst: u64) -> Budget {
        Budget {
            max_message_bytes: 64 * 1024,
            pings_per_sec: 4,
            ping_burst: 16,
            read_bytes_per_sec: per_sec,
            read_burst_bytes: burst,
            max_subscriptions: 10,
            max_pending: 4,
        }
    }

    /// Reads whatever is there, `size` bytes at most, and the time it was read.
    async fn read_some<S: AsyncRead + Unpin>(r: &mut Throttled<S>, size: usize) -> (usize, Instant) {
        let mut buf = vec![0u8; size];
        let n = r.read(&mut buf).await.expect("read");
        (n, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn reads_its_burst_at_once_then_waits_for_the_debt_to_be_repaid() {
        // 1,000 bytes a second, 3,000 at once.
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let counter = Counter::default();
        let mut r = Throttled::new(server, &budget(1_000, 3_000), counter.clone());
        client.write_all(&[7u8; 10_000]).await.expect("duplex");
        let t0 = Instant::now();
        // Within the burst: no wait, not counted.
        for _ in 0..2 {
            let (n, at) = read_some(&mut r, 1_000).await;
            assert_eq!((n, at), (1_000, t0));
        }
        assert_eq!(counter.get(), 0);
        // The read that overdraws (3,500 of 3,000) is handed on whole, at once...
        let (n, at) = read_some(&mut r, 1_500).await;
        assert_eq!((n, at), (1_500, t0));
        assert_eq!(counter.get(), 1);
        // ...and the next waits until the 500 bytes of debt are repaid:
        // 0.5 s at 1,000 bytes/s.
        let (n, at) = read_some(&mut r, 1_000).await;
        assert_eq!(n, 1_000);
        assert_eq!(at - t0, Duration::from_millis(500));
        assert_eq!(counter.get(), 2);
        // Steady at the rate from then on: 1,000 bytes, one second later.
        let (n, at2) = read_some(&mut r, 1_000).await;
        assert_eq!(n, 1_000);
        assert_eq!(at2 - at, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_client_gets_its_whole_burst_back_and_no_more() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let counter = Counter::default();
        let mut r = Throttled::new(server, &budget(1_000, 2_000), counter.clone());
        client.write_all(&[1u8; 1_999]).await.expect("duplex");
        assert_eq!(read_some(&mut r, 4_096).await.0, 1_999);
        assert_eq!(counter.get(), 0);
        // An hour later the bucket holds 2,000 again, not 3.6 million.
        tokio::time::advance(Duration::from_secs(3_600)).await;
        client.write_all(&[1u8; 2_001]).await.expect("duplex");
        let t0 = Instant::now();
        assert_eq!(read_some(&mut r, 4_096).await, (2_001, t0));
        assert_eq!(counter.get(), 1);
        client.write_all(&[1u8; 1]).await.expect("duplex");
        // The debt, 1 byte: 1 ms.
        assert_eq!(read_some(&mut r, 4_096).await, (1, t0 + Duration::from_millis(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_when_the_rate_is_zero_and_the_end_of_the_stream_passes() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let counter = Counter::default();
        let mut r = Throttled::new(server, &budget(0, 10), counter.clone());
        client.write_all(&[1u8; 100_000]).await.expect("duplex");
        drop(client);
        let t0 = Instant::now();
        let mut all = Vec::new();
        r.read_to_end(&mut all).await.expect("duplex");
        assert_eq!((all.len(), Instant::now(), counter.get()), (100_000, t0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_read_before_are_charged_and_a_shut_side_reads_unbudgeted() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let counter = Counter::default();
        let mut r = Throttled::new(server, &budget(1_000, 2_000), counter.clone());
        // The handshake's reader read 2,500 bytes past the request: 500 owed.
        r.charge(2_500);
        assert_eq!(counter.get(), 1);
        client.write_all(&[1u8; 10_000]).await.expect("duplex");
        let t0 = Instant::now();
        assert_eq!(read_some(&mut r, 100).await, (100, t0 + Duration::from_millis(500)));
        // Now 100 in debt; shut: the rest is read at once, the wait dropped.
        r.shutdown().await.expect("shutdown");
        let t1 = Instant::now();
        let mut rest = vec![0u8; 9_900];
        r.read_exact(&mut rest).await.expect("the rest");
        assert_eq!((Instant::now(), counter.get()), (t1, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn writes_are_not_throttled() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut w = Throttled::new(server, &budget(1, 1), Counter::default());
        let t0 = Instant::now();
        w.write_all(&[3u8; 50_000]).await.expect("duplex");
        w.flush().await.expect("duplex");
        let mut got = vec![0u8; 50_000];
        client.read_exact(&mut got).await.expect("duplex");
        assert_eq!(Instant::now(), t0);
    }
}
