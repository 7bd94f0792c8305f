//! What servent says it can do, in one place: the vendor messages listed in
//! our Messages-Supported (`null/0v0`), the entries of our Capabilities
//! (`null/10`) and the features of our `X-Features` handshake header. A part
//! that starts handling a message adds one line here, and only then: peers
//! send a message only to those that list it (LimeWire sends connect-back
//! requests only to peers listing LIME/7 and LIME/8).

use crate::wire::vendor::{Capability, Supported};

const fn m(vendor: &[u8; 4], selector: u16, version: u16) -> Supported {
    Supported {
        vendor: *vendor,
        selector,
        version,
    }
}

/// The vendor messages we handle, each version on its own line.
pub const MESSAGES: &[Supported] = &[
    // TCP connect-back (we connect back and say "\n\n").
    m(b"BEAR", 7, 1),
    // Leaf-guided dynamic querying: query status request (answered as a
    // leaf) and response (read as an ultrapeer).
    m(b"BEAR", 11, 1),
    m(b"BEAR", 12, 1),
    // UDP connect-back: we send the Ping back (v1: to the GUID it names,
    // v2: reusing its MUID).
    m(b"GTKG", 7, 1),
    m(b"GTKG", 7, 2),
    // Push-proxy request (answered as an ultrapeer) and its ack (read as a
    // leaf, v1 and v2).
    m(b"LIME", 21, 1),
    m(b"LIME", 22, 1),
    m(b"LIME", 22, 2),
    // Connect-back redirects (LimeWire asks only peers that list them): we
    // connect back, or ping back, ourselves.
    m(b"LIME", 7, 1),
    m(b"LIME", 8, 1),
    // Out-of-band hits (`protocol-spec/oob.md`): reply ack and indication
    // (by UDP), and a leaf's proxy control.
    m(b"LIME", 11, 2),
    m(b"LIME", 11, 3),
    m(b"LIME", 12, 2),
    m(b"LIME", 12, 3),
    m(b"LIME", 13, 1),
    // The library offer (`protocol-spec/library-offer.md`).
    m(b"SRVT", 1, 1),
    m(b"SRVT", 1, 2),
];

/// Our Capabilities entries. `accepted_incoming`: we took an incoming TCP
/// connection (`TCPI`).
pub fn capabilities(accepted_incoming: bool) -> Vec<Capability> {
    vec![
        // Horizon size estimation (HSEP 0.2 messages, function 0xCD).
        Capability {
            name: *b"HSEP",
            version: 1,
        },
        Capability {
            name: *b"QRP1",
            version: 1,
        },
        Capability {
            name: *b"TCPI",
            version: u32::from(accepted_incoming),
        },
    ]
}

/// The features we announce in `X-Features`, as `name/version`.
pub const FEATURES: &[&str] = &[
    // Browse host (`GET /` with `Accept: application/x-gnutella-packets`).
    crate::wire::browse::FEATURE,
    // Horizon size estimation.
    crate::wire::hsep::FEATURE,
];

/// The `X-Features` value.
pub fn x_features() -> String {
    FEATURES.join(", ")
}

/// Whether an `X-Features` value lists `feature` (`name/major.minor`) at
/// that major version or later (names compared without case, as gtk-gnutella
/// does).
pub fn has_feature(x_features: &str, feature: &str) -> bool {
    let (name, version) = feature.split_once('/').unwrap_or((feature, "0"));
    let major = |v: &str| -> Option<u32> { v.trim().split('.').next()?.trim().parse().ok() };
    let Some(want) = major(version) else {
        return false;
    };
    x_features.split(',').any(|f| {
        let (n, v) = f.trim().split_once('/').unwrap_or((f.trim(), "0"));
        n.trim().eq_ignore_ascii_case(name) && major(v).is_some_and(|v| v >= want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_message_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for e in MESSAGES {
            assert!(
                seen.insert((e.vendor, e.selector, e.version)),
                "{e:?} twice"
            );
        }
        let encoded = crate::wire::VendorMsg::messages_supported(MESSAGES);
        assert_eq!(encoded.supported_entries().expect("ours parse"), MESSAGES);
    }

    #[test]
    fn features_as_gtk_gnutella_writes_them() {
        let gtk = "sflag/0.1, HSEP/0.2, browse/1.0";
        assert!(has_feature(gtk, "HSEP/0.2"));
        assert!(has_feature(gtk, "hsep/0.1"));
        assert!(has_feature(gtk, "browse/1.0"));
        assert!(!has_feature(gtk, "browse/2.0"));
        assert!(!has_feature(gtk, "tls/1.0"));
        assert!(!has_feature("", "HSEP/0.2"));
        assert!(has_feature(&x_features(), "HSEP/0.2"));
        assert!(has_feature(&x_features(), "browse/1.0"));
    }
}
