//! The server's side of two-way traffic: messages subscribers send up are tallied per sender
//! ([`crate::upstream::Ledger`]) and, with the echo on, copied to the sender's room, where
//! every reader following that room picks them up beside its events.
//!
//! Copies are kept whole for the run (a room's log only grows), so a reader needs one cursor
//! per room and a copy is encoded once and shared by everyone it goes to.

use std::sync::{Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use crate::clock::alarm::alarm_at;
use crate::event::Seen;
use crate::upstream::{Ledger, Message, Totals};

/// How a hub takes messages from its subscribers.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UpstreamOptions {
    /// Messages each subscriber sends over the stream.
    pub per_sender: u64,
    /// Whether each message is copied to the sender's room.
    pub echo: bool,
    /// An injected fault: each message is held this long after receipt before it is handled.
    pub delay: Option<Duration>,
    /// The most senders the ledger tallies: one per subscriber the server holds, so messages
    /// from made-up senders cannot grow it without bound.
    #[serde(default = "unbounded")]
    pub max_senders: usize,
}

fn unbounded() -> usize {
    usize::MAX
}

/// The upstream ledger and the rooms' copies.
#[derive(Debug)]
pub(super) struct Rooms {
    options: UpstreamOptions,
    ledger: Mutex<Ledger>,
    rooms: Vec<Room>,
}

/// One room's copies, in the order the server took the messages.
#[derive(Debug)]
struct Room {
    copies: RwLock<Vec<Bytes>>,
    /// How many copies the room holds, watched by its readers.
    held: watch::Sender<usize>,
}

/// One reader's place in one room.
#[derive(Debug)]
pub(super) struct RoomCursor {
    room: usize,
    next: usize,
    held: watch::Receiver<usize>,
}

impl RoomCursor {
    /// Copies of the room this cursor has passed.
    pub(super) fn position(&self) -> usize {
        self.next
    }

    /// Moves the cursor to `position`; refused past the copies the room holds.
    pub(super) fn move_to(&mut self, position: u64) -> Result<(), String> {
        let held = *self.held.borrow();
        match usize::try_from(position) {
            Ok(position) if position <= held => {
                self.next = position;
                Ok(())
            }
            _ => Err(format!(
                "copy position {position} in room {}: it holds {held} copies",
                self.room
            )),
        }
    }

    /// Waits until the room holds a copy this cursor has not seen.
    pub(super) async fn changed(&mut self) {
        // The room lives as long as the hub, which the reader holds: the channel cannot close.
        let _ = self.held.changed().await;
    }
}

impl Rooms {
    /// Rooms for a hub of `streams` streams (one room per stream).
    pub(super) fn new(options: UpstreamOptions, streams: u64) -> Self {
        let rooms = if options.echo {
            (0..streams.max(1))
                .map(|_| Room {
                    copies: RwLock::new(Vec::new()),
                    held: watch::Sender::new(0),
                })
                .collect()
        } else {
            Vec::new()
        };
        Self {
            options,
            ledger: Mutex::new(Ledger::new(options.per_sender)),
            rooms,
        }
    }

    /// Takes one message a subscriber sent: tallies it and, with the echo on and the message
    /// new, copies it to its room. Refuses bytes that are not a message, or name a room this
    /// server does not have.
    pub(super) async fn receive(&self, wire: Bytes, received_ns: u64) -> Result<(), String> {
        // The planted delay is handling time from receipt, which the round trip shows and the
        // upstream latency does not; a message handed over late waits only what is left of it.
        if let Some(delay) = self.options.delay {
            alarm_at(received_ns + delay.as_nanos() as u64).await;
        }
        let message = Message::decode(&wire).ok_or_else(|| {
            format!(
                "not an upstream message (expected {{\"up\":{{\"from\":..,\"seq\":..}}}}): {}",
                String::from_utf8_lossy(&wire[..wire.len().min(80)])
            )
        })?;
        let room = match (message.topic, self.rooms.len()) {
            (_, 0) => None,
            (None, _) => Some(0),
            (Some(topic), rooms) if (topic as usize) < rooms => Some(topic as usize),
            (Some(topic), rooms) => {
                return Err(format!(
                    "upstream message for room {topic}: this server has rooms 0 to {}",
                    rooms - 1
                ))
            }
        };
        let seen = {
            let mut ledger = lock(&self.ledger);
            if !ledger.knows(message.from) && ledger.senders() >= self.options.max_senders {
                return Err(format!(
                    "a message from sender {}: this server already tallies {} senders, one per \
                     subscriber it holds (--max-subscribers)",
                    message.from, self.options.max_senders
                ));
            }
            ledger.record(&message, wire.len(), received_ns)
        };
        if let (Some(room), Seen::New) = (room, seen) {
            let room = &self.rooms[room];
            let held = {
                let mut copies = room.copies.write().unwrap_or_else(|e| e.into_inner());
                copies.push(wire);
                copies.len()
            };
            room.held.send_replace(held);
        }
        Ok(())
    }

    /// Cursors for a reader of `rooms` (every room when `None`), from the copies they hold
    /// now on: a subscriber gets the copies taken after it joined.
    pub(super) fn cursors(&self, rooms: Option<&[u32]>) -> Vec<RoomCursor> {
        let cursor = |room: usize| {
            let mut held = self.rooms[room].held.subscribe();
            let next = *held.borrow_and_update();
            RoomCursor { room, next, held }
        };
        match rooms {
            _ if self.rooms.is_empty() => Vec::new(),
            None => (0..self.rooms.len()).map(cursor).collect(),
            Some(rooms) => rooms
                .iter()
                .map(|&r| r as usize)
                .filter(|&r| r < self.rooms.len())
                .map(cursor)
                .collect(),
        }
    }

    /// Copies past the cursors, at most `max` of them, moving the cursors on.
    pub(super) fn take(&self, cursors: &mut [RoomCursor], max: usize, into: &mut Vec<Bytes>) {
        for cursor in cursors {
            let held = *cursor.held.borrow_and_update();
            if cursor.next >= held || into.len() >= max {
                continue;
            }
            let copies = self.rooms[cursor.room]
                .copies
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let end = held.min(cursor.next + (max - into.len()));
            into.extend_from_slice(&copies[cursor.next..end]);
            cursor.next = end;
        }
    }

    /// The ledger's totals so far.
    pub(super) fn totals(&self) -> Totals {
        lock(&self.ledger).totals()
    }

    /// Copies held over every room.
    pub(super) fn copies(&self) -> u64 {
        self.rooms.iter().map(|r| *r.held.borrow() as u64).sum()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
