//! The node's deciding core (`servent::core::engine`) fed random sequences of
//! events: links opening (of every kind), frames from them (any function, any
//! payload), ticks, library changes and closes. After each step: nothing
//! panicked, every action is addressed to an open link, and the core's state
//! is within its bounds (its links are the open ones, its host cache within
//! its capacity, dynamic queries within their limit).
#![no_main]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use servent::core::ConnId;
use servent::core::dq::DqConfig;
use servent::core::engine::{Config, Engine, Event, LinkInfo, Links};
use servent::core::flow::{Offer, Priority};
use servent::core::hosts::HostCache;
use servent::core::library::Library;
use servent::core::tier::{Link, Mode, Tier, TierConfig};
use servent::wire::{Frame, Function, Guid, Header, Hops, Push, Ttl};

/// Checks every action against the links open now.
#[derive(Default)]
struct Check {
    open: HashSet<ConnId>,
}

impl Check {
    fn addressed(&self, conn: ConnId) {
        assert!(
            self.open.contains(&conn),
            "an action for {conn:?}, not open"
        );
    }
}

impl Links for Check {
    fn send(&mut self, conn: ConnId, _: Priority, bytes: Bytes) -> Offer {
        self.addressed(conn);
        assert!(bytes.len() >= 23, "a frame at least");
        Offer::Queued
    }
    fn close(&mut self, conn: ConnId, _: u16, _: &str) {
        self.addressed(conn);
    }
    fn close_silently(&mut self, conn: ConnId) {
        self.addressed(conn);
    }
    fn push(&mut self, _: Push) {}
    fn connect_back(&mut self, to: SocketAddr) {
        assert_ne!(to.port(), 0);
    }
    fn uploads_busy(&self) -> bool {
        false
    }
}

const HOSTS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let t0 = Instant::now();
    let me = Guid([0x4d; 16]);
    let mode = match mode % 3 {
        0 => Mode::Leaf,
        1 => Mode::Ultrapeer,
        _ => Mode::Auto,
    };
    let mut library = Library::new();
    library.add(
        "fuzz song.ogg",
        PathBuf::from("/s/fuzz song.ogg"),
        1000,
        SystemTime::UNIX_EPOCH,
        None,
    );
    let mut e = Engine::new(
        Config {
            max_results: 20,
            hosts: HostCache::new(HOSTS),
            firewalled: mode == Mode::Leaf,
            ..Config::new(
                me,
                library,
                Tier::new(
                    TierConfig {
                        mode,
                        ..TierConfig::default()
                    },
                    t0,
                    0.5,
                ),
            )
        },
        Check::default(),
    );
    let mut now = t0;
    let mut next = 1u64;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let pick = |e: &mut Engine<Check>, b: u8| -> Option<ConnId> {
            let mut open: Vec<ConnId> = e.links_mut().open.iter().copied().collect();
            open.sort();
            (!open.is_empty()).then(|| open[b as usize % open.len()])
        };
        match op % 7 {
            // A link opens.
            0 if e.links_mut().open.len() < 16 => {
                let Some((&k, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                let link =
                    [Link::ToUltrapeer, Link::ToLeaf, Link::Peer, Link::Flat][k as usize % 4];
                let conn = ConnId(next);
                next += 1;
                e.links_mut().open.insert(conn);
                let addr = SocketAddr::from(([127, 0, 0, (k % 200) + 1], 6000 + k as u16));
                e.handle(
                    Event::Opened {
                        conn,
                        info: LinkInfo {
                            local: "127.0.0.1:6346".parse().unwrap(),
                            remote_listen: (k & 0x10 != 0).then_some(addr),
                            link,
                            up_qrp: k & 0x20 != 0,
                            offers: k & 0x40 != 0,
                            degree: 32,
                            guid: (k & 0x80 != 0).then_some(Guid([k; 16])),
                            remote: addr,
                            vendor_messages: true,
                            hsep: true,
                            inbound: true,
                        },
                    },
                    now,
                );
            }
            // A frame from a link: function, TTL, hops, GUID seed, length, payload.
            1 | 2 => {
                if rest.len() < 5 {
                    break;
                }
                let (head, tail) = rest.split_at(5);
                let len = (head[4] as usize).min(tail.len());
                let (payload, tail) = tail.split_at(len);
                rest = tail;
                let Some(conn) = pick(&mut e, head[0]) else {
                    continue;
                };
                let function = Function::from_code(
                    [0x00, 0x01, 0x02, 0x30, 0x31, 0x40, 0x80, 0x81, head[1]][head[1] as usize % 9],
                );
                let mut guid = [head[3]; 16];
                guid[0] = head[0];
                let frame = Frame {
                    header: Header {
                        guid: Guid(guid),
                        function,
                        ttl: Ttl(head[2] % 16),
                        hops: Hops(head[2] / 16),
                        payload_len: payload.len() as u32,
                    },
                    payload: Bytes::copy_from_slice(payload),
                };
                e.handle(
                    Event::Frames {
                        conn,
                        frames: vec![frame],
                    },
                    now,
                );
            }
            // A link closes.
            3 => {
                let Some((&b, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                if let Some(conn) = pick(&mut e, b) {
                    e.handle(Event::Closed { conn }, now);
                    e.links_mut().open.remove(&conn);
                }
            }
            // Time passes.
            4 => {
                let Some((&b, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                now += Duration::from_millis(b as u64 * 200);
                e.handle(
                    Event::Tick {
                        busy: 0.0,
                        wall: SystemTime::UNIX_EPOCH,
                    },
                    now,
                );
            }
            // A datagram: source, length, bytes as they came.
            6 => {
                if rest.len() < 2 {
                    break;
                }
                let (head, tail) = rest.split_at(2);
                let len = (head[1] as usize).min(tail.len());
                let (bytes, tail) = tail.split_at(len);
                rest = tail;
                let from = SocketAddr::from(([11, 0, 0, head[0] % 4], 6346));
                e.handle(
                    Event::Datagram {
                        from,
                        bytes: Bytes::copy_from_slice(bytes),
                    },
                    now,
                );
            }
            // The library changes.
            _ => {
                let Some((&b, tail)) = rest.split_first() else {
                    break;
                };
                rest = tail;
                let path = PathBuf::from(format!("/s/f{}", b % 8));
                if b & 0x80 == 0 {
                    e.handle(
                        Event::Added {
                            name: format!("file {b} mp3"),
                            path,
                            size: b as u64,
                            mtime: SystemTime::UNIX_EPOCH,
                            urn: None,
                            fth: None,
                        },
                        now,
                    );
                } else {
                    e.handle(Event::Removed { path }, now);
                }
            }
        }
        let open = e.links_mut().open.len();
        let st = e.stats();
        assert_eq!(st.connections, open, "the core's links are the open ones");
        assert!(st.hosts <= HOSTS);
        assert!(st.dynamic_running <= DqConfig::default().max_searches);
    }
});
