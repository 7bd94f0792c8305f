//! The two-tier network's role policy: whether this node is a leaf or an
//! ultrapeer, what kind of link a handshake makes, and when an `auto` node
//! promotes or demotes itself. No I/O: the shell feeds it what the peers said and
//! the time, and carries out what it answers.
//!
//! Nothing here knows Gnutella header names; [`PeerRole`] is what the shell read
//! from a handshake, in the network's own terms.

use std::time::{Duration, Instant};

/// What the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Leaf,
    Ultrapeer,
    Auto,
}

/// What the node is now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leaf,
    Ultrapeer,
}

/// A link as seen from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Link {
    /// We are the other side's leaf: we send it our table and our own queries,
    /// never relayed ones.
    ToUltrapeer,
    /// The other side is our leaf: queries reach it only through its table.
    ToLeaf,
    /// Ultrapeer to ultrapeer.
    Peer,
    /// A peer that says nothing of roles (an old 0.6 servent, or 0.4): flooded
    /// like an ultrapeer link, without tables.
    Flat,
}

impl Link {
    pub fn name(self) -> &'static str {
        match self {
            Link::ToUltrapeer => "to-ultrapeer",
            Link::ToLeaf => "to-leaf",
            Link::Peer => "ultrapeer",
            Link::Flat => "flat",
        }
    }
}

/// What the other side of a handshake said about roles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerRole {
    /// `Some(true)`: it is (or offers to be) an ultrapeer; `Some(false)`: it wants
    /// to be a leaf; `None`: it did not say.
    pub ultrapeer: Option<bool>,
    /// An ultrapeer's wish for more ultrapeers (`Some(false)` to a connecting
    /// ultrapeer is leaf guidance: "become my leaf").
    pub needed: Option<bool>,
}

/// What our handshake headers say about our role.
#[derive(Clone, Copy, Debug, Default)]
pub struct RoleHeaders {
    /// `X-Ultrapeer: True`.
    pub ultrapeer: bool,
    /// Ultrapeer links we keep (`X-Degree`, said by ultrapeers only).
    pub degree: usize,
    /// We send and read inter-ultrapeer tables (`X-Ultrapeer-Query-Routing`).
    pub up_qrp: bool,
    /// `X-Ultrapeer-Needed`, said by ultrapeers only (false: leaf guidance).
    pub needed: Option<bool>,
}

/// Limits and timings.
#[derive(Clone, Debug)]
pub struct TierConfig {
    pub mode: Mode,
    /// Ultrapeers a leaf keeps.
    pub leaf_ultrapeers: usize,
    /// Ultrapeer (and flat) links an ultrapeer keeps.
    pub ultrapeer_links: usize,
    /// Leaves an ultrapeer keeps.
    pub leaves: usize,
    /// Least time up before an `auto` node promotes itself.
    pub promote_after: Duration,
    /// Least time an `auto` ultrapeer goes without leaves before it demotes.
    pub demote_after: Duration,
    /// The node accepts inbound connections (an ultrapeer must).
    pub accepts_inbound: bool,
    /// Share of the CPU in use (0..1, from the load average) at or above which
    /// the node is too busy to promote itself.
    pub max_busy: f64,
    /// As a leaf, offer our file list to ultrapeers that take it (they then
    /// answer for us); off: they know us by our table alone.
    pub offer_library: bool,
    /// As an ultrapeer, exchange tables with other ultrapeers and apply the
    /// last-hop rule (off: ultrapeers flood each other as a flat mesh).
    pub ultrapeer_qrp: bool,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig {
            mode: Mode::Auto,
            leaf_ultrapeers: 3,
            ultrapeer_links: 32,
            leaves: 30,
            promote_after: Duration::from_secs(60),
            demote_after: Duration::from_secs(120),
            accepts_inbound: true,
            max_busy: 0.8,
            offer_library: true,
            ultrapeer_qrp: true,
        }
    }
}

/// How to answer a connecting peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Accept; the link will be of this kind.
    Accept(Link),
    /// Accept an ultrapeer-capable peer, telling it to become our leaf (leaf
    /// guidance). The link is `ToLeaf` if it agrees in its final answer.
    Guide,
    /// Refuse (503), pointing at ultrapeers we know.
    Refuse(&'static str),
}

/// A change of role the shell must carry out: close the links that no longer
/// fit (`drop`), then dial as the new role.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleChange {
    pub to: Role,
    pub drop: Vec<Link>,
}

/// The policy's state.
#[derive(Debug)]
pub struct Tier {
    config: TierConfig,
    role: Role,
    started: Instant,
    /// Open links per kind.
    counts: [usize; 4],
    /// Since when we have had no ultrapeer (leaf) or no leaf (ultrapeer).
    alone_since: Instant,
    /// Leaves asked us to serve them while we were a leaf (a sign the network
    /// lacks ultrapeers).
    leaf_requests: u32,
    /// Ultrapeers that turned us away said they want more ultrapeers.
    needed_signals: u32,
    /// A neighbour ultrapeer with a higher rank than ours exists (see `demote`).
    outranked: bool,
    /// Connect-backs never came (see `set_unreachable`).
    unreachable: bool,
    /// When our send queues last had to shed (we were short of bandwidth).
    congested_at: Option<Instant>,
    /// Per-node jitter (0..1) that spreads promotions and demotions in time.
    jitter: f64,
    changes: u64,
}

fn slot(link: Link) -> usize {
    match link {
        Link::ToUltrapeer => 0,
        Link::ToLeaf => 1,
        Link::Peer => 2,
        Link::Flat => 3,
    }
}

impl Tier {
    /// A new policy at `now`; `jitter` in 0..1 (random per node).
    pub fn new(config: TierConfig, now: Instant, jitter: f64) -> Tier {
        // A node that takes no connections cannot serve leaves, whatever it
        // was asked to be.
        let role = match config.mode {
            Mode::Ultrapeer if config.accepts_inbound => Role::Ultrapeer,
            _ => Role::Leaf,
        };
        Tier {
            config,
            role,
            started: now,
            counts: [0; 4],
            alone_since: now,
            leaf_requests: 0,
            needed_signals: 0,
            outranked: false,
            unreachable: false,
            congested_at: None,
            jitter: jitter.clamp(0.0, 1.0),
            changes: 0,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn config(&self) -> &TierConfig {
        &self.config
    }

    /// Role changes so far.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    pub fn count(&self, link: Link) -> usize {
        self.counts[slot(link)]
    }

    /// Ultrapeer and flat links together.
    fn mesh_links(&self) -> usize {
        self.count(Link::Peer) + self.count(Link::Flat)
    }

    /// Whether an ultrapeer would welcome more ultrapeer links.
    pub fn ultrapeers_needed(&self) -> bool {
        self.mesh_links() < self.config.ultrapeer_links
    }

    /// Connections the maintainer should hold open by dialing.
    pub fn dial_target(&self, target_peers: usize) -> usize {
        match self.role {
            Role::Leaf => self.config.leaf_ultrapeers,
            Role::Ultrapeer => target_peers.min(self.config.ultrapeer_links),
        }
    }

    /// Links that count towards the dial target.
    pub fn dialed_links(&self) -> usize {
        match self.role {
            Role::Leaf => self.count(Link::ToUltrapeer) + self.count(Link::Flat),
            Role::Ultrapeer => self.mesh_links(),
        }
    }

    /// A leaf (or a search client) connects to an `auto` node that is a leaf
    /// with no ultrapeer and knows of none, while it can take connections: it
    /// becomes an ultrapeer at once to serve it, rather than turning it away
    /// with "I am a leaf" until the promotion timer runs out. Its flat links
    /// stay (an ultrapeer keeps them too). Call before [`Tier::admit`].
    pub fn serve_first_leaf(
        &mut self,
        peer: PeerRole,
        knows_ultrapeers: bool,
        now: Instant,
    ) -> Option<RoleChange> {
        let first = self.config.mode == Mode::Auto
            && self.role == Role::Leaf
            && peer.ultrapeer == Some(false)
            && self.config.accepts_inbound
            && self.count(Link::ToUltrapeer) == 0
            && !knows_ultrapeers;
        if !first {
            return None;
        }
        self.set_role(Role::Ultrapeer, now);
        Some(RoleChange {
            to: Role::Ultrapeer,
            drop: Vec::new(),
        })
    }

    /// Decides how to answer a peer that connected to us.
    pub fn admit(&mut self, peer: PeerRole) -> Admit {
        match (self.role, peer.ultrapeer) {
            (Role::Ultrapeer, Some(false)) => {
                if self.count(Link::ToLeaf) < self.config.leaves {
                    Admit::Accept(Link::ToLeaf)
                } else {
                    Admit::Refuse("Too many leaves")
                }
            }
            (Role::Ultrapeer, Some(true)) => {
                // Leaf guidance: with ultrapeer links enough and room for leaves,
                // another ultrapeer-capable node is more use as our leaf.
                let plenty = self.mesh_links() >= self.config.ultrapeer_links.clamp(1, 4);
                if plenty && self.count(Link::ToLeaf) < self.config.leaves {
                    Admit::Guide
                } else if self.mesh_links() < self.config.ultrapeer_links {
                    Admit::Accept(Link::Peer)
                } else {
                    Admit::Refuse("Too many ultrapeer connections")
                }
            }
            (Role::Ultrapeer, None) => {
                if self.mesh_links() < self.config.ultrapeer_links {
                    Admit::Accept(Link::Flat)
                } else {
                    Admit::Refuse("Too many connections")
                }
            }
            (Role::Leaf, Some(true)) => {
                if self.count(Link::ToUltrapeer) < self.config.leaf_ultrapeers {
                    Admit::Accept(Link::ToUltrapeer)
                } else {
                    Admit::Refuse("I am a shielded leaf")
                }
            }
            (Role::Leaf, Some(false)) => {
                self.leaf_requests = self.leaf_requests.saturating_add(1);
                Admit::Refuse("I am a leaf")
            }
            (Role::Leaf, None) => {
                if self.count(Link::ToUltrapeer) == 0
                    && self.count(Link::Flat) < self.config.leaf_ultrapeers
                {
                    Admit::Accept(Link::Flat)
                } else {
                    Admit::Refuse("I am a shielded leaf")
                }
            }
        }
    }

    /// Decides what a link we dialed becomes, from the other side's answer.
    /// `Err` means refuse it in our final answer.
    pub fn dialed(&mut self, peer: PeerRole, now: Instant) -> Result<Link, &'static str> {
        match (self.role, peer.ultrapeer) {
            (Role::Leaf, Some(true)) => {
                if self.count(Link::ToUltrapeer) < self.config.leaf_ultrapeers {
                    Ok(Link::ToUltrapeer)
                } else {
                    Err("Enough ultrapeers")
                }
            }
            (Role::Leaf, Some(false)) => Err("Leaves do not connect to leaves"),
            (Role::Leaf, None) => {
                if self.count(Link::ToUltrapeer) == 0 {
                    Ok(Link::Flat)
                } else {
                    Err("I am a shielded leaf")
                }
            }
            (Role::Ultrapeer, Some(true)) => {
                if peer.needed == Some(false) && self.can_take_guidance() {
                    // Leaf guidance taken: we become this ultrapeer's leaf.
                    self.set_role(Role::Leaf, now);
                    Ok(Link::ToUltrapeer)
                } else if self.mesh_links() < self.config.ultrapeer_links {
                    Ok(Link::Peer)
                } else {
                    Err("Too many ultrapeer connections")
                }
            }
            (Role::Ultrapeer, Some(false)) => {
                if self.count(Link::ToLeaf) < self.config.leaves {
                    Ok(Link::ToLeaf)
                } else {
                    Err("Too many leaves")
                }
            }
            (Role::Ultrapeer, None) => {
                if self.mesh_links() < self.config.ultrapeer_links {
                    Ok(Link::Flat)
                } else {
                    Err("Too many connections")
                }
            }
        }
    }

    /// An `auto` ultrapeer with no leaves gives way to one that has room.
    fn can_take_guidance(&self) -> bool {
        self.config.mode == Mode::Auto
            && self.role == Role::Ultrapeer
            && self.count(Link::ToLeaf) == 0
    }

    /// Whether a peer we guided took the guidance: its final answer says it is
    /// a leaf.
    pub fn guided(&self, final_answer: PeerRole) -> Option<Link> {
        match final_answer.ultrapeer {
            Some(false) if self.count(Link::ToLeaf) < self.config.leaves => Some(Link::ToLeaf),
            Some(true) | None if self.mesh_links() < self.config.ultrapeer_links => {
                Some(Link::Peer)
            }
            _ => None,
        }
    }

    pub fn opened(&mut self, link: Link, now: Instant) {
        let before = self.lonely();
        self.counts[slot(link)] += 1;
        if !before && self.lonely() {
            self.alone_since = now;
        }
    }

    pub fn closed(&mut self, link: Link, now: Instant) {
        let before = self.lonely();
        let c = &mut self.counts[slot(link)];
        *c = c.saturating_sub(1);
        if !before && self.lonely() {
            self.alone_since = now;
        }
    }

    /// A leaf without ultrapeers, or an ultrapeer without leaves.
    fn lonely(&self) -> bool {
        match self.role {
            Role::Leaf => self.count(Link::ToUltrapeer) == 0,
            Role::Ultrapeer => self.count(Link::ToLeaf) == 0,
        }
    }

    /// Whether some neighbour ultrapeer outranks us (the shell compares servent
    /// GUIDs): then, with no leaves, we are the one to step down.
    pub fn set_outranked(&mut self, outranked: bool) {
        self.outranked = outranked;
    }

    /// Whether connect-backs showed that nobody can connect to us (learned,
    /// where `accepts_inbound` is what we were told): such a node is not
    /// promoted.
    pub fn set_unreachable(&mut self, unreachable: bool) {
        self.unreachable = unreachable;
    }

    fn set_role(&mut self, role: Role, now: Instant) {
        if self.role != role {
            self.role = role;
            self.changes += 1;
            self.alone_since = now;
            self.leaf_requests = 0;
            self.needed_signals = 0;
        }
    }

    /// An ultrapeer refused us as its leaf and said `X-Ultrapeer-Needed: true`:
    /// the network wants more ultrapeers. Like leaves asking us to serve them,
    /// it brings an `auto` leaf's promotion forward.
    pub fn ultrapeers_wanted(&mut self) {
        if self.role == Role::Leaf {
            self.needed_signals = self.needed_signals.saturating_add(1);
        }
    }

    /// Our send queues had to shed messages at `now`: the links are fuller than
    /// our bandwidth, so for a while we are no candidate for more work.
    pub fn congested(&mut self, now: Instant) {
        self.congested_at = Some(now);
    }

    /// Checks for a role change at `now`; `busy` is the share of CPU in use (0..1).
    pub fn tick(&mut self, now: Instant, busy: f64) -> Option<RoleChange> {
        if self.config.mode != Mode::Auto {
            return None;
        }
        let up = now.saturating_duration_since(self.started);
        let alone = now.saturating_duration_since(self.alone_since);
        match self.role {
            Role::Leaf => {
                // Promote when able to serve and the network needs it: no
                // ultrapeer reachable for a while (sooner when leaves have asked us
                // to serve them), spread in time so neighbours do not all promote.
                let wait = self
                    .config
                    .promote_after
                    .mul_f64(1.0 + self.jitter)
                    .div_f64(
                        1.0 + self
                            .leaf_requests
                            .saturating_add(self.needed_signals)
                            .min(3) as f64,
                    );
                let short_of_bandwidth = self
                    .congested_at
                    .is_some_and(|t| now.saturating_duration_since(t) < self.config.promote_after);
                let able = self.config.accepts_inbound
                    && !self.unreachable
                    && busy < self.config.max_busy
                    && !short_of_bandwidth;
                if able && up >= self.config.promote_after && self.lonely() && alone >= wait {
                    self.set_role(Role::Ultrapeer, now);
                    return Some(RoleChange {
                        to: Role::Ultrapeer,
                        drop: vec![Link::ToUltrapeer, Link::Flat],
                    });
                }
                None
            }
            Role::Ultrapeer => {
                // Demote when ultrapeers are plenty (one that outranks us is a
                // neighbour) and nobody needs us as their ultrapeer.
                let wait = self.config.demote_after.mul_f64(1.0 + self.jitter);
                if self.lonely() && self.outranked && alone >= wait {
                    self.set_role(Role::Leaf, now);
                    return Some(RoleChange {
                        to: Role::Leaf,
                        drop: vec![Link::Peer, Link::Flat],
                    });
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn up() -> PeerRole {
        PeerRole {
            ultrapeer: Some(true),
            needed: None,
        }
    }

    fn leaf() -> PeerRole {
        PeerRole {
            ultrapeer: Some(false),
            needed: None,
        }
    }

    #[test]
    fn an_auto_leaf_alone_serves_the_first_leaf_at_once() {
        let t0 = Instant::now();
        let mut t = Tier::new(TierConfig::default(), t0, 0.5);
        assert_eq!(t.role(), Role::Leaf);
        // It knows an ultrapeer: it keeps waiting for it.
        assert_eq!(t.serve_first_leaf(leaf(), true, t0), None);
        // An ultrapeer asking is no reason.
        assert_eq!(t.serve_first_leaf(up(), false, t0), None);
        let change = t.serve_first_leaf(leaf(), false, t0).expect("promoted");
        assert_eq!(change.to, Role::Ultrapeer);
        assert!(change.drop.is_empty());
        assert_eq!(t.admit(leaf()), Admit::Accept(Link::ToLeaf));
        // Not in fixed modes, nor when firewalled.
        for config in [
            TierConfig {
                mode: Mode::Leaf,
                ..TierConfig::default()
            },
            TierConfig {
                accepts_inbound: false,
                ..TierConfig::default()
            },
        ] {
            let mut t = Tier::new(config, t0, 0.5);
            assert_eq!(t.serve_first_leaf(leaf(), false, t0), None);
            assert_eq!(t.admit(leaf()), Admit::Refuse("I am a leaf"));
        }
        // A leaf with an ultrapeer stays one.
        let mut t = Tier::new(TierConfig::default(), t0, 0.5);
        t.opened(Link::ToUltrapeer, t0);
        assert_eq!(t.serve_first_leaf(leaf(), false, t0), None);
    }

    #[test]
    fn a_leaf_takes_three_ultrapeers_and_no_leaves() {
        let t0 = Instant::now();
        let mut t = Tier::new(
            TierConfig {
                mode: Mode::Leaf,
                ..TierConfig::default()
            },
            t0,
            0.0,
        );
        for _ in 0..3 {
            assert_eq!(t.admit(up()), Admit::Accept(Link::ToUltrapeer));
            t.opened(Link::ToUltrapeer, t0);
        }
        assert!(matches!(t.admit(up()), Admit::Refuse(_)));
        assert!(matches!(t.admit(leaf()), Admit::Refuse(_)));
        assert!(t.dialed(leaf(), t0).is_err());
        assert_eq!(t.tick(t0 + s(3600), 0.0), None, "leaf mode never promotes");
    }

    #[test]
    fn an_ultrapeer_takes_leaves_and_peers_up_to_its_limits() {
        let t0 = Instant::now();
        let mut t = Tier::new(
            TierConfig {
                mode: Mode::Ultrapeer,
                leaves: 2,
                ultrapeer_links: 2,
                ..TierConfig::default()
            },
            t0,
            0.0,
        );
        assert_eq!(t.role(), Role::Ultrapeer);
        for _ in 0..2 {
            assert_eq!(t.admit(leaf()), Admit::Accept(Link::ToLeaf));
            t.opened(Link::ToLeaf, t0);
        }
        assert!(matches!(t.admit(leaf()), Admit::Refuse(_)));
        assert_eq!(t.admit(up()), Admit::Accept(Link::Peer));
        t.opened(Link::Peer, t0);
        // Two links are "plenty" at a limit of two: the third is guided... but
        // there is no leaf room, so it is refused instead.
        t.opened(Link::Flat, t0);
        assert!(matches!(t.admit(up()), Admit::Refuse(_)));
        assert!(t.dialed(up(), t0).is_err());
    }

    #[test]
    fn guidance_is_given_with_links_enough_and_taken_only_without_leaves() {
        let t0 = Instant::now();
        let mut giver = Tier::new(
            TierConfig {
                mode: Mode::Ultrapeer,
                ..TierConfig::default()
            },
            t0,
            0.0,
        );
        for _ in 0..4 {
            giver.opened(Link::Peer, t0);
        }
        assert_eq!(giver.admit(up()), Admit::Guide);
        assert_eq!(giver.guided(leaf()), Some(Link::ToLeaf));
        assert_eq!(giver.guided(up()), Some(Link::Peer));

        let guidance = PeerRole {
            ultrapeer: Some(true),
            needed: Some(false),
        };
        let mut taker = Tier::new(TierConfig::default(), t0, 0.0);
        taker.set_role(Role::Ultrapeer, t0);
        assert_eq!(taker.dialed(guidance, t0), Ok(Link::ToUltrapeer));
        assert_eq!(taker.role(), Role::Leaf);

        let mut busy = Tier::new(TierConfig::default(), t0, 0.0);
        busy.set_role(Role::Ultrapeer, t0);
        busy.opened(Link::ToLeaf, t0);
        assert_eq!(busy.dialed(guidance, t0), Ok(Link::Peer), "has a leaf");
    }

    #[test]
    fn auto_promotes_when_alone_long_enough_and_able() {
        let t0 = Instant::now();
        let config = TierConfig {
            promote_after: s(10),
            ..TierConfig::default()
        };
        let mut t = Tier::new(config.clone(), t0, 0.5);
        assert_eq!(t.tick(t0 + s(10), 0.0), None, "jitter: 15 s");
        let change = t.tick(t0 + s(15), 0.0).expect("promotes");
        assert_eq!(change.to, Role::Ultrapeer);
        assert_eq!(t.role(), Role::Ultrapeer);

        let mut busy = Tier::new(config.clone(), t0, 0.0);
        assert_eq!(busy.tick(t0 + s(60), 0.95), None, "short of CPU");

        let mut shedding = Tier::new(config.clone(), t0, 0.0);
        shedding.congested(t0 + s(55));
        assert_eq!(shedding.tick(t0 + s(60), 0.0), None, "short of bandwidth");
        assert!(shedding.tick(t0 + s(66), 0.0).is_some(), "a while later");

        let mut firewalled = Tier::new(
            TierConfig {
                accepts_inbound: false,
                ..config.clone()
            },
            t0,
            0.0,
        );
        assert_eq!(firewalled.tick(t0 + s(60), 0.0), None);
        // Found firewalled by connect-backs: the same, until reached.
        let mut walled = Tier::new(config.clone(), t0, 0.0);
        walled.set_unreachable(true);
        assert_eq!(walled.tick(t0 + s(60), 0.0), None);
        walled.set_unreachable(false);
        assert!(walled.tick(t0 + s(61), 0.0).is_some());

        let mut served = Tier::new(config.clone(), t0, 0.0);
        served.opened(Link::ToUltrapeer, t0 + s(1));
        assert_eq!(served.tick(t0 + s(60), 0.0), None, "has an ultrapeer");
        served.closed(Link::ToUltrapeer, t0 + s(60));
        assert_eq!(served.tick(t0 + s(65), 0.0), None, "alone for 5 s only");
        assert!(served.tick(t0 + s(70), 0.0).is_some());

        let mut asked = Tier::new(config.clone(), t0, 0.0);
        asked.admit(leaf());
        asked.admit(leaf());
        assert_eq!(asked.tick(t0 + s(9), 0.0), None, "not up long enough");
        assert!(asked.tick(t0 + s(10), 0.0).is_some());

        // Refused by an ultrapeer that wants more ultrapeers: sooner too.
        let mut told = Tier::new(config.clone(), t0, 0.9);
        assert_eq!(told.tick(t0 + s(15), 0.0), None, "jitter: 19 s");
        told.ultrapeers_wanted();
        assert!(told.tick(t0 + s(15), 0.0).is_some(), "19 s / 2");
    }

    #[test]
    fn auto_demotes_without_leaves_when_outranked() {
        let t0 = Instant::now();
        let mut t = Tier::new(
            TierConfig {
                promote_after: s(1),
                demote_after: s(10),
                ..TierConfig::default()
            },
            t0,
            0.0,
        );
        assert!(t.tick(t0 + s(1), 0.0).is_some());
        t.opened(Link::Peer, t0 + s(1));
        assert_eq!(t.tick(t0 + s(30), 0.0), None, "not outranked");
        t.set_outranked(true);
        t.opened(Link::ToLeaf, t0 + s(30));
        assert_eq!(t.tick(t0 + s(60), 0.0), None, "has a leaf");
        t.closed(Link::ToLeaf, t0 + s(60));
        assert_eq!(t.tick(t0 + s(65), 0.0), None);
        let change = t.tick(t0 + s(70), 0.0).expect("demotes");
        assert_eq!(change.to, Role::Leaf);
        assert_eq!(change.drop, vec![Link::Peer, Link::Flat]);
        assert_eq!(t.changes(), 2);
    }
}
