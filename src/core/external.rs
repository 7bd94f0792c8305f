//! Our address as others see it: each peer's `Remote-IP` is a vote, and an
//! address is believed once several different peers agree on it. One peer alone
//! could lie (or sit behind the same NAT as we do), so it never decides.

use std::net::IpAddr;

/// Peers whose latest vote is kept; the oldest voter makes room.
const MAX_VOTERS: usize = 32;

/// Votes for our external address.
#[derive(Debug)]
pub struct ExternalIp {
    /// (voter, what it said), oldest first; one entry per voter.
    votes: Vec<(IpAddr, IpAddr)>,
    /// Distinct voters that must agree.
    needed: usize,
}

impl ExternalIp {
    /// Believes an address once `needed` (at least 2) different peers said it.
    pub fn new(needed: usize) -> ExternalIp {
        ExternalIp {
            votes: Vec::new(),
            needed: needed.max(2),
        }
    }

    /// Records that `voter` sees us at `said`. Unspecified and multicast
    /// addresses are not votes.
    pub fn vote(&mut self, voter: IpAddr, said: IpAddr) {
        if said.is_unspecified() || said.is_multicast() {
            return;
        }
        self.votes.retain(|(v, _)| *v != voter);
        if self.votes.len() == MAX_VOTERS {
            self.votes.remove(0);
        }
        self.votes.push((voter, said));
    }

    /// The address most voters agree on, if at least `needed` of them do (ties
    /// go to the one said most recently).
    pub fn agreed(&self) -> Option<IpAddr> {
        let mut best: Option<(usize, usize, IpAddr)> = None;
        for (i, (_, said)) in self.votes.iter().enumerate() {
            let n = self.votes.iter().filter(|(_, s)| s == said).count();
            if best.is_none_or(|(bn, bi, _)| (n, i) > (bn, bi)) {
                best = Some((n, i, *said));
            }
        }
        best.filter(|(n, _, _)| *n >= self.needed)
            .map(|(_, _, ip)| ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_address_needs_several_peers_to_agree() {
        let mut e = ExternalIp::new(2);
        assert_eq!(e.agreed(), None);
        e.vote(ip("1.1.1.1"), ip("9.9.9.9"));
        assert_eq!(e.agreed(), None, "one peer alone does not decide");
        e.vote(ip("1.1.1.1"), ip("9.9.9.9"));
        assert_eq!(e.agreed(), None, "nor by saying it twice");
        e.vote(ip("2.2.2.2"), ip("9.9.9.9"));
        assert_eq!(e.agreed(), Some(ip("9.9.9.9")));
        // A liar is outvoted; a change needs a majority of its own.
        e.vote(ip("3.3.3.3"), ip("6.6.6.6"));
        assert_eq!(e.agreed(), Some(ip("9.9.9.9")));
        e.vote(ip("1.1.1.1"), ip("8.8.8.8"));
        e.vote(ip("2.2.2.2"), ip("8.8.8.8"));
        e.vote(ip("4.4.4.4"), ip("8.8.8.8"));
        assert_eq!(e.agreed(), Some(ip("8.8.8.8")));
        e.vote(ip("5.5.5.5"), ip("0.0.0.0"));
        assert_eq!(e.agreed(), Some(ip("8.8.8.8")));
        // Bounded.
        for i in 0..100u8 {
            e.vote(IpAddr::from([10, 0, 0, i]), ip("7.7.7.7"));
        }
        assert_eq!(e.votes.len(), MAX_VOTERS);
        assert_eq!(e.agreed(), Some(ip("7.7.7.7")));
    }
}
