//! A worker's mailbox: a bounded FIFO of [`Command`]s from many senders to
//! the one worker, as lean as an idle match needs.
//!
//! tokio's `mpsc` channel costs about 1 KB per channel before anything is
//! sent (cache-padded halves and a first block of 32 slots), which is a
//! quarter of what a hibernated match may hold. This one is a mutex around
//! a `VecDeque` that owns no buffer while empty, a [`Semaphore`] for the
//! free places (fair: senders waiting on a full mailbox go in the order
//! they came) and a [`Notify`] for the worker: about 200 bytes.
//!
//! Semantics are `mpsc`'s: commands come out in the order they went in; a
//! send waits while [`MAILBOX_CAPACITY`](super::MAILBOX_CAPACITY) commands
//! are queued; once the worker has stopped a send fails; once every
//! [`Mailbox`] is gone the worker receives what was queued and then `None`.
//! A [`WeakMailbox`] does not keep the mailbox open. Must never block: the
//! lock is held only to move a box in or out.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{Notify, Semaphore};

use super::Command;

/// The sending end; cloning it adds a sender.
#[derive(Debug)]
pub struct Mailbox {
    inner: Arc<Inner>,
}

/// A sending end that does not keep the mailbox open (the worker's own,
/// for bets whose record failed).
#[derive(Debug)]
pub(super) struct WeakMailbox {
    inner: Weak<Inner>,
}

/// The worker's end.
#[derive(Debug)]
pub(super) struct Receiver {
    inner: Arc<Inner>,
}

/// The worker has stopped: the command was not queued.
#[derive(Debug, thiserror::Error)]
#[error("the match worker has stopped")]
pub struct Closed;

#[derive(Debug)]
struct Inner {
    queue: Mutex<Queue>,
    /// One permit per free place.
    space: Semaphore,
    /// Something was queued, or the last sender left.
    arrived: Notify,
}

#[derive(Debug)]
struct Queue {
    commands: VecDeque<Box<Command>>,
    senders: usize,
    /// The receiver is gone.
    closed: bool,
}

/// A mailbox of `capacity` places.
pub(super) fn channel(capacity: usize) -> (Mailbox, Receiver) {
    let inner = Arc::new(Inner {
        queue: Mutex::new(Queue {
            commands: VecDeque::new(),
            senders: 1,
            closed: false,
        }),
        space: Semaphore::new(capacity),
        arrived: Notify::new(),
    });
    (Mailbox { inner: inner.clone() }, Receiver { inner })
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // Nothing panics while holding it; a poisoned queue is still whole.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Mailbox {
    /// Queue `cmd`, waiting while the mailbox is full; `Err` once the
    /// worker has stopped.
    pub async fn send(&self, cmd: Command) -> Result<(), Closed> {
        let permit = self.inner.space.acquire().await.map_err(|_| Closed)?;
        let mut queue = self.inner.lock();
        if queue.closed {
            return Err(Closed);
        }
        // The place is given back when the worker takes the command out.
        permit.forget();
        queue.commands.push_back(Box::new(cmd));
        drop(queue);
        self.inner.arrived.notify_one();
        Ok(())
    }

    /// Commands queued now (not counting senders waiting for a place).
    pub fn len(&self) -> usize {
        self.inner.lock().commands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn downgrade(&self) -> WeakMailbox {
        WeakMailbox {
            inner: Arc::downgrade(&self.inner),
        }
    }
}

impl Clone for Mailbox {
    fn clone(&self) -> Mailbox {
        self.inner.lock().senders += 1;
        Mailbox {
            inner: self.inner.clone(),
        }
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let mut queue = self.inner.lock();
        queue.senders -= 1;
        let last = queue.senders == 0;
        drop(queue);
        if last {
            self.inner.arrived.notify_one();
        }
    }
}

impl Clone for WeakMailbox {
    fn clone(&self) -> WeakMailbox {
        WeakMailbox {
            inner: self.inner.clone(),
        }
    }
}

impl WeakMailbox {
    /// A sender, unless every sender is gone (the mailbox is closing).
    pub(super) fn upgrade(&self) -> Option<Mailbox> {
        let inner = self.inner.upgrade()?;
        let mut queue = inner.lock();
        if queue.senders == 0 || queue.closed {
            return None;
        }
        queue.senders += 1;
        drop(queue);
        Some(Mailbox { inner })
    }
}

impl Receiver {
    /// Nothing is queued, and at most one sender exists (a stand-in's
    /// keeper checks this, under the lock it hands out clones with,
    /// before letting it go: no one is about to send).
    pub fn unshared_and_empty(&self) -> bool {
        let queue = self.inner.lock();
        queue.commands.is_empty() && queue.senders <= 1
    }

    /// Commands waiting to be handled.
    pub fn len(&self) -> usize {
        self.inner.lock().commands.len()
    }

    /// The next command; `None` once every sender is gone and the queue
    /// is empty. Cancel-safe: a command is taken out only when returned.
    pub async fn recv(&mut self) -> Option<Box<Command>> {
        loop {
            {
                let mut queue = self.inner.lock();
                if let Some(cmd) = queue.commands.pop_front() {
                    if queue.commands.is_empty() {
                        // A burst leaves a buffer behind; an idle match
                        // holds none.
                        queue.commands = VecDeque::new();
                    }
                    drop(queue);
                    self.inner.space.add_permits(1);
                    return Some(cmd);
                }
                if queue.senders == 0 {
                    return None;
                }
            }
            // A notification sent before this wait is kept (one permit),
            // so none is lost between the check above and here.
            self.inner.arrived.notified().await;
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut queue = self.inner.lock();
        queue.closed = true;
        let left = std::mem::take(&mut queue.commands);
        drop(queue);
        self.inner.space.close();
        // Dropped outside the lock: a command's reply channel may wake
        // someone.
        drop(left);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forget(id: &str) -> Command {
        Command::ForgetBet { id: id.to_owned() }
    }

    #[tokio::test]
    async fn unshared_and_empty_only_while_nobody_else_could_send() {
        let (keeper, mut rx) = channel(4);
        assert!(rx.unshared_and_empty(), "only the keeper's sender");
        let handed_out = keeper.clone();
        assert!(!rx.unshared_and_empty(), "a handle is out: a send may come");
        handed_out.send(forget("a")).await.expect("open");
        drop(handed_out);
        assert!(!rx.unshared_and_empty(), "a command is queued");
        assert_eq!(id_of(rx.recv().await).as_deref(), Some("a"));
        assert!(rx.unshared_and_empty());
    }

    fn id_of(cmd: Option<Box<Command>>) -> Option<String> {
        match *cmd? {
            Command::ForgetBet { id } => Some(id),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[tokio::test]
    async fn commands_come_out_in_order_then_none_once_every_sender_left() {
        let (tx, mut rx) = channel(4);
        let tx2 = tx.clone();
        tx.send(forget("a")).await.expect("open");
        tx2.send(forget("b")).await.expect("open");
        drop((tx, tx2));
        assert_eq!(id_of(rx.recv().await).as_deref(), Some("a"));
        assert_eq!(id_of(rx.recv().await).as_deref(), Some("b"));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_full_mailbox_makes_the_sender_wait_for_a_place() {
        let (tx, mut rx) = channel(1);
        tx.send(forget("a")).await.expect("open");
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(forget("b")).await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "no place yet");
        assert_eq!(id_of(rx.recv().await).as_deref(), Some("a"));
        waiting.await.expect("task").expect("open");
        assert_eq!(id_of(rx.recv().await).as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn a_stopped_worker_refuses_commands_even_to_waiting_senders() {
        let (tx, rx) = channel(1);
        tx.send(forget("a")).await.expect("open");
        let tx2 = tx.clone();
        let waiting = tokio::spawn(async move { tx2.send(forget("b")).await });
        tokio::task::yield_now().await;
        drop(rx);
        assert!(waiting.await.expect("task").is_err());
        assert!(tx.send(forget("c")).await.is_err());
    }

    #[tokio::test]
    async fn a_weak_mailbox_does_not_keep_it_open() {
        let (tx, mut rx) = channel(4);
        let weak = tx.downgrade();
        let again = weak.upgrade().expect("a sender is left");
        again.send(forget("a")).await.expect("open");
        drop((tx, again));
        assert!(weak.upgrade().is_none(), "every sender left");
        assert_eq!(id_of(rx.recv().await).as_deref(), Some("a"));
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn the_receiver_wakes_for_a_command_sent_while_it_waits() {
        let (tx, mut rx) = channel(4);
        let receiving = tokio::spawn(async move { id_of(rx.recv().await) });
        tokio::task::yield_now().await;
        tx.send(forget("a")).await.expect("open");
        assert_eq!(receiving.await.expect("task").as_deref(), Some("a"));
    }
}
