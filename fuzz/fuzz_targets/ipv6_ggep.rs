//! The IPv6-Ready GGEP forms (`servent::wire::ipv6`) on arbitrary input.
//!
//! The first byte picks what the rest is read as:
//! 0. a packed IPv6 list (`IPP6`, `ALT6`, `PUSH6`): refused exactly when empty
//!    or not a whole number of 18-byte entries; otherwise at most 255 entries,
//!    the ones the value begins with, and writing them gives those bytes back.
//! 1. a packed IPv4 list: the same with 6-byte entries.
//! 2. a `6` value: an address exactly when 16 bytes or more, its first 16.
//! 3. an `IP` echo: an address exactly for 6 or 18 bytes, written back alike.
//! 4. a GGEP block: reading its `6`, `I6`, `IPP`/`IPP6`, and writing the
//!    addresses again as `IPP`/`IPP6` reads back to the same addresses; the
//!    block as a Pong's, a hit trailer's and a Push's never panics.
//! 5. an `SCP` value: IPv6 asked whenever IPv4 is refused.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use servent::wire::Ggep;
use servent::wire::ipv6::{self, PackedError};

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 6 {
        0 => packed(rest, 18, |d| {
            ipv6::parse_packed6(d).map(|v| {
                let n = v.len();
                (n, ipv6::encode_packed6(&v))
            })
        }),
        1 => packed(rest, 6, |d| {
            ipv6::parse_packed4(d).map(|v| {
                let n = v.len();
                (n, ipv6::encode_packed4(&v))
            })
        }),
        2 => {
            let a = ipv6::ipv6_value(rest);
            assert_eq!(a.is_some(), rest.len() >= 16);
            if let Some(a) = a {
                assert_eq!(&a.octets()[..], &rest[..16]);
            }
        }
        3 => {
            let a = ipv6::parse_ip_echo(rest);
            assert_eq!(a.is_some(), rest.len() == 6 || rest.len() == 18);
            if let Some(a) = a {
                let back = ipv6::encode_ip_echo(a);
                // An IPv4-mapped IPv6 echo is written back as IPv4.
                if rest.len() == 6 || a.ip().to_canonical().is_ipv6() {
                    assert_eq!(&back[..], rest);
                }
            }
        }
        4 => {
            let buf = Bytes::copy_from_slice(rest);
            let Ok((g, _)) = Ggep::parse(&buf) else {
                return;
            };
            let _ = ipv6::ipv6_of(&g);
            let _ = ipv6::i6_of(&g);
            let hosts = ipv6::packed_of(&g, "IPP", ipv6::GGEP_IPP6);
            let again = Ggep::new(ipv6::packed_exts(
                &hosts,
                "IPP",
                ipv6::GGEP_IPP6,
                true,
                false,
            ));
            if !again.exts.is_empty() {
                let wire = again.to_bytes(false).unwrap();
                let (back, _) = Ggep::parse(&wire).unwrap();
                let mut want = hosts.clone();
                // Mapped IPv6 entries move to the IPv4 list.
                want.iter_mut()
                    .for_each(|a| a.set_ip(a.ip().to_canonical()));
                let (mut v4, v6): (Vec<_>, Vec<_>) = want.into_iter().partition(|a| a.is_ipv4());
                v4.truncate(ipv6::MAX_PACKED);
                v4.extend(v6.into_iter().take(ipv6::MAX_PACKED));
                assert_eq!(ipv6::packed_of(&back, "IPP", ipv6::GGEP_IPP6), v4);
            }
            let pong = servent::wire::Pong {
                port: 1,
                ip: ipv6::IPV4_NONE,
                files: 0,
                kbytes: 0,
                ggep: Some(g.clone()),
            };
            let _ = (
                pong.addr(),
                pong.addrs(),
                pong.packed_hosts(),
                pong.ip_echo(),
            );
            let push = servent::wire::Push {
                servent: servent::wire::Guid([0; 16]),
                index: 0,
                ip: ipv6::IPV4_NONE,
                port: 1,
                ggep: Some(g),
            };
            let _ = push.target();
        }
        _ => {
            let (v4, v6) = ipv6::scp_families(rest);
            assert!(v4 || v6);
        }
    }
});

/// A packed list of `entry`-byte entries: refused exactly when empty or
/// ragged; else the count is bounded and writing gives the leading bytes back.
fn packed(d: &[u8], entry: usize, read: impl Fn(&[u8]) -> Result<(usize, Bytes), PackedError>) {
    match read(d) {
        Err(PackedError::Empty) => assert!(d.is_empty()),
        Err(PackedError::Ragged { len, entry: e }) => {
            assert_eq!((len, e), (d.len(), entry));
            assert!(!d.len().is_multiple_of(entry));
        }
        Ok((n, wire)) => {
            assert!(!d.is_empty() && d.len().is_multiple_of(entry));
            assert_eq!(n, (d.len() / entry).min(ipv6::MAX_PACKED));
            assert_eq!(&wire[..], &d[..n * entry]);
        }
    }
}
