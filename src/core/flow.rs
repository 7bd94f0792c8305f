//! Flow control: a bounded per-connection send queue that sheds the least valuable
//! messages first when a peer reads too slowly.
//!
//! Priorities follow what a message is worth to the network: replies and directed
//! messages (QueryHit, Push) carry results someone is waiting for; our own requests
//! and hop-by-hop control messages come next; relayed discovery and searches are
//! the cheapest to lose, since the flood reaches their targets by other paths.

use std::collections::VecDeque;

/// How valuable a queued message is; higher is kept longer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Priority {
    /// Relayed Pings and Pongs.
    RelayedDiscovery = 0,
    /// Relayed Queries.
    RelayedSearch = 1,
    /// Our own messages and hop-by-hop control (handshake ping, QRP, vendor).
    Own = 2,
    /// QueryHits and Pushes.
    Result = 3,
    /// Messages whose loss would leave the peer with a wrong picture of us
    /// (QRP table updates, library offers): never shed, and queued in room of
    /// their own beside the bound for the others. A refused one is for the
    /// sender to offer again later.
    Control = 4,
}

/// Every priority, by its number.
const PRIORITIES: [Priority; 5] = [
    Priority::RelayedDiscovery,
    Priority::RelayedSearch,
    Priority::Own,
    Priority::Result,
    Priority::Control,
];

/// What happened to a message offered to a full queue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Offer {
    /// Queued, nothing lost.
    Queued,
    /// Queued after dropping a less valuable message already queued.
    QueuedShedding(Priority),
    /// Not queued: everything queued is worth at least as much.
    Rejected,
}

/// A bounded queue of messages of type `T`, bounded both in count and in bytes.
///
/// Messages are kept in one FIFO per priority, stamped with their arrival, so
/// that making room (the oldest of the lowest priority) and refusing (nothing
/// lower queued) take constant time however full the queue is: a peer that
/// reads nothing makes every message offered to it cost no more than a check.
#[derive(Debug)]
pub struct SendQueue<T> {
    /// Per priority: (arrival stamp, size, message), oldest first.
    queues: [VecDeque<(u64, usize, T)>; 5],
    /// The next arrival stamp.
    stamp: u64,
    /// Bytes and messages queued, control messages not counted.
    bytes: usize,
    others: usize,
    /// Bytes of control messages queued, and their own bound.
    control_bytes: usize,
    control_room: usize,
    max_items: usize,
    max_bytes: usize,
    shed: [u64; 5],
    rejected: [u64; 5],
}

impl<T> SendQueue<T> {
    /// A queue holding at most `max_items` messages and `max_bytes` bytes.
    pub fn new(max_items: usize, max_bytes: usize) -> Self {
        Self::with_control_room(max_items, max_bytes, 0)
    }

    /// A queue as [`SendQueue::new`], with `control_room` more bytes for
    /// [`Priority::Control`] messages.
    pub fn with_control_room(max_items: usize, max_bytes: usize, control_room: usize) -> Self {
        SendQueue {
            queues: Default::default(),
            stamp: 0,
            bytes: 0,
            others: 0,
            control_bytes: 0,
            control_room,
            max_items: max_items.max(1),
            max_bytes,
            shed: [0; 5],
            rejected: [0; 5],
        }
    }

    fn push(&mut self, priority: Priority, size: usize, item: T) {
        self.queues[priority as usize].push_back((self.stamp, size, item));
        self.stamp += 1;
    }

    /// Offers a message of `size` bytes. When the queue is full, the oldest message
    /// of the lowest priority below `priority` is dropped to make room; if none is,
    /// the new message is refused.
    pub fn offer(&mut self, priority: Priority, size: usize, item: T) -> Offer {
        if priority == Priority::Control {
            if self.control_bytes + size > self.control_room {
                self.rejected[priority as usize] += 1;
                return Offer::Rejected;
            }
            self.control_bytes += size;
            self.push(priority, size, item);
            return Offer::Queued;
        }
        if size > self.max_bytes {
            // Larger than the whole queue: nothing can make room, so drop nothing.
            self.rejected[priority as usize] += 1;
            return Offer::Rejected;
        }
        let mut shed = None;
        while self.others >= self.max_items || self.bytes + size > self.max_bytes {
            let Some(p) = (0..priority as usize).find(|&p| !self.queues[p].is_empty()) else {
                self.rejected[priority as usize] += 1;
                return Offer::Rejected;
            };
            let (_, s, _) = self.queues[p].pop_front().expect("not empty");
            self.bytes -= s;
            self.others -= 1;
            self.shed[p] += 1;
            shed = Some(PRIORITIES[p]);
        }
        self.bytes += size;
        self.others += 1;
        self.push(priority, size, item);
        match shed {
            Some(p) => Offer::QueuedShedding(p),
            None => Offer::Queued,
        }
    }

    /// The next message to send, oldest first.
    pub fn pop(&mut self) -> Option<T> {
        let p = (0..self.queues.len())
            .filter_map(|p| self.queues[p].front().map(|(stamp, _, _)| (*stamp, p)))
            .min()?
            .1;
        let (_, s, item) = self.queues[p].pop_front().expect("not empty");
        if p == Priority::Control as usize {
            self.control_bytes -= s;
        } else {
            self.bytes -= s;
            self.others -= 1;
        }
        Some(item)
    }

    /// Number of queued messages.
    pub fn len(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queues.iter().all(VecDeque::is_empty)
    }

    /// Bytes queued (control messages included).
    pub fn bytes(&self) -> usize {
        self.bytes + self.control_bytes
    }

    /// Messages of `priority` dropped from the queue to make room.
    pub fn shed(&self, priority: Priority) -> u64 {
        self.shed[priority as usize]
    }

    /// Messages of `priority` refused because the queue was full of better ones.
    pub fn rejected(&self, priority: Priority) -> u64 {
        self.rejected[priority as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Priority::*;

    #[test]
    fn sheds_cheapest_oldest_first() {
        let mut q = SendQueue::new(3, 1000);
        assert_eq!(q.offer(RelayedSearch, 10, "q1"), Offer::Queued);
        assert_eq!(q.offer(RelayedDiscovery, 10, "p1"), Offer::Queued);
        assert_eq!(q.offer(RelayedSearch, 10, "q2"), Offer::Queued);
        // Full: a hit pushes out the ping, then the oldest query.
        assert_eq!(
            q.offer(Result, 10, "h1"),
            Offer::QueuedShedding(RelayedDiscovery)
        );
        assert_eq!(
            q.offer(Result, 10, "h2"),
            Offer::QueuedShedding(RelayedSearch)
        );
        // A relayed query cannot push out anything worth as much or more.
        assert_eq!(q.offer(RelayedSearch, 10, "q3"), Offer::Rejected);
        assert_eq!(
            q.offer(Result, 10, "h3"),
            Offer::QueuedShedding(RelayedSearch)
        );
        assert_eq!(q.offer(Result, 10, "h4"), Offer::Rejected);
        assert_eq!(
            std::iter::from_fn(|| q.pop()).collect::<Vec<_>>(),
            ["h1", "h2", "h3"]
        );
        assert_eq!(q.shed(RelayedSearch), 2);
        assert_eq!(q.shed(RelayedDiscovery), 1);
        assert_eq!(q.rejected(Result), 1);
        assert_eq!(q.bytes(), 0);
    }

    #[test]
    fn bounded_in_bytes_too() {
        let mut q = SendQueue::new(100, 100);
        assert_eq!(q.offer(RelayedSearch, 60, 1), Offer::Queued);
        assert_eq!(q.offer(Own, 60, 2), Offer::QueuedShedding(RelayedSearch));
        assert_eq!(q.bytes(), 60);
        assert_eq!(
            q.offer(Result, 500, 3),
            Offer::Rejected,
            "larger than the queue"
        );
        assert_eq!(q.len(), 1, "nothing was shed for a message that cannot fit");
    }

    #[test]
    fn control_messages_have_their_own_room_and_are_never_shed() {
        let mut q = SendQueue::with_control_room(2, 100, 50);
        assert_eq!(q.offer(Control, 30, "t1"), Offer::Queued);
        // The other room is full of relayed queries...
        assert_eq!(q.offer(RelayedSearch, 50, "q1"), Offer::Queued);
        assert_eq!(q.offer(RelayedSearch, 50, "q2"), Offer::Queued);
        // ...and a control message still fits in its own, until that is full.
        assert_eq!(q.offer(Control, 20, "t2"), Offer::Queued);
        assert_eq!(q.offer(Control, 1, "t3"), Offer::Rejected);
        // Results shed queries, never control messages.
        assert_eq!(
            q.offer(Result, 50, "h1"),
            Offer::QueuedShedding(RelayedSearch)
        );
        assert_eq!(
            q.offer(Result, 50, "h2"),
            Offer::QueuedShedding(RelayedSearch)
        );
        assert_eq!(q.offer(Result, 50, "h3"), Offer::Rejected);
        assert_eq!(q.bytes(), 150);
        assert_eq!(
            std::iter::from_fn(|| q.pop()).collect::<Vec<_>>(),
            ["t1", "t2", "h1", "h2"]
        );
        assert_eq!(q.bytes(), 0);
        assert_eq!(
            q.offer(Control, 50, "t4"),
            Offer::Queued,
            "room is given back"
        );
    }

    /// The queue as first written: one FIFO, scanned for a victim.
    struct Model {
        items: VecDeque<(Priority, usize, u32)>,
        max_items: usize,
        max_bytes: usize,
        room: usize,
    }

    impl Model {
        fn offer(&mut self, p: Priority, size: usize, item: u32) -> Offer {
            let others = |m: &Model| m.items.iter().filter(|i| i.0 != Control).count();
            let bytes = |m: &Model| -> usize {
                m.items.iter().filter(|i| i.0 != Control).map(|i| i.1).sum()
            };
            if p == Control {
                let used: usize = self
                    .items
                    .iter()
                    .filter(|i| i.0 == Control)
                    .map(|i| i.1)
                    .sum();
                if used + size > self.room {
                    return Offer::Rejected;
                }
                self.items.push_back((p, size, item));
                return Offer::Queued;
            }
            if size > self.max_bytes {
                return Offer::Rejected;
            }
            let mut shed = None;
            while others(self) >= self.max_items || bytes(self) + size > self.max_bytes {
                let victim = self
                    .items
                    .iter()
                    .enumerate()
                    .filter(|(_, i)| i.0 < p)
                    .min_by_key(|(k, i)| (i.0, *k))
                    .map(|(k, _)| k);
                let Some(k) = victim else {
                    return Offer::Rejected;
                };
                shed = Some(self.items.remove(k).expect("in range").0);
            }
            self.items.push_back((p, size, item));
            match shed {
                Some(p) => Offer::QueuedShedding(p),
                None => Offer::Queued,
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn behaves_as_one_scanned_fifo(
            ops in proptest::collection::vec((0u8..6, 1usize..40), 1..300),
            max_items in 1usize..12,
            max_bytes in 1usize..200,
            room in 0usize..100,
        ) {
            let mut q = SendQueue::with_control_room(max_items, max_bytes, room);
            let mut m = Model { items: VecDeque::new(), max_items, max_bytes, room };
            for (k, (op, size)) in ops.into_iter().enumerate() {
                if op == 5 {
                    proptest::prop_assert_eq!(q.pop(), m.items.pop_front().map(|i| i.2));
                } else {
                    let p = PRIORITIES[op as usize];
                    proptest::prop_assert_eq!(q.offer(p, size, k as u32), m.offer(p, size, k as u32));
                }
                proptest::prop_assert_eq!(q.len(), m.items.len());
            }
        }
    }
}
