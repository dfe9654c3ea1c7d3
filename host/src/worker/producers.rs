//! The match's view of its producers: which producers it has heard from,
//! which of them are down (from the producer [`Board`]), telling its
//! subscribers when that changes (`producer_down` / `producer_up` status
//! frames, which take no seq), and the down set a bet is decided against.

use crate::producers::{self, Board};

use super::Worker;
use super::frame::Status;

/// What a match knows of its producers.
#[derive(Debug, Default)]
pub(super) struct Producers {
    /// Producers this match has had a message from; a match restored from
    /// the store assumes every selected one (its markets may be any's).
    pub seen: u64,
    /// Producers its subscribers were told are down.
    told: u64,
}

impl Worker {
    /// The down set changed, or the match heard from a new producer: tell
    /// subscribers about every producer of this match that went down or
    /// came back.
    pub(super) fn on_board(&mut self, board: &Board) {
        let down = board.down & self.producers.seen;
        let went_down = down & !self.producers.told;
        let came_up = self.producers.told & !down;
        self.producers.told = down;
        for p in producers::ids(went_down) {
            let reason = board.reason(p).map_or("down", |r| r.code());
            self.status_about(Status::ProducerDown, reason, Some(p));
        }
        for p in producers::ids(came_up) {
            self.status_about(Status::ProducerUp, "recovered", Some(p));
        }
    }

    /// A message from `product` arrived: from now on it is one of ours.
    pub(super) fn heard_from(&mut self, product: Option<u32>) {
        let Some(p) = product else { return };
        let b = producers::bit(p);
        if self.producers.seen & b == 0 {
            self.producers.seen |= b;
            let board = self.board.borrow().clone();
            self.on_board(&board);
        }
    }

    /// Restored from the store: its markets may be any selected
    /// producer's until it hears otherwise.
    pub(super) fn assume_every_producer(&mut self) {
        let board = self.board.borrow().clone();
        self.producers.seen = board.selected;
        self.on_board(&board);
    }

    /// Producers of this match that are down, for a snapshot.
    pub(super) fn producers_down(&self, board: &Board) -> Vec<u32> {
        producers::ids(board.down & self.producers.seen).collect()
    }
}
