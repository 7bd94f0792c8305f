//! Out-of-band vendor messages (LIME/11, LIME/12, LIME/13) as they come off
//! the UDP port or a leaf's link: whatever reads encodes to a message that
//! reads the same, never longer than the protocol allows, and the reply
//! address and token readers never panic on any query or hit.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use servent::wire::VendorMsg;
use servent::wire::oob::{self, Ack, Indication, ProxyControl};

fuzz_target!(|data: &[u8]| {
    let b = Bytes::copy_from_slice(data);
    if let Ok(m) = VendorMsg::parse(&b) {
        // Read as each of the three, whatever its selector says.
        for sel in [oob::ACK, oob::INDICATION, oob::PROXY_CONTROL] {
            let m = VendorMsg {
                vendor: oob::LIME,
                selector: sel,
                ..m.clone()
            };
            if let Ok(a) = Ack::parse(&m) {
                assert!(
                    a.token
                        .as_ref()
                        .is_none_or(|t| !t.is_empty() && t.len() <= oob::MAX_TOKEN)
                );
                assert_eq!(Ack::parse(&a.to_vendor()).expect("our ack reads"), a);
            }
            if let Ok(i) = Indication::parse(&m) {
                let v = i.to_vendor();
                assert!(v.body.len() <= 2);
                assert_eq!(Indication::parse(&v).expect("our indication reads"), i);
            }
            if let Ok(c) = ProxyControl::parse(&m) {
                assert_eq!(ProxyControl::parse(&c.to_vendor()).expect("reads"), c);
            }
        }
    }
    if let Ok(q) = servent::wire::query::QueryView::parse(data) {
        let _ = oob::OobRequest::of(&q);
    }
    if let Ok(h) = servent::wire::queryhit::QueryHitView::parse(data) {
        let _ = oob::hit_token(&h.trailer);
    }
    if let Some(g) = servent::wire::Guid::from_slice(data) {
        let a = oob::muid_addr(&g);
        assert_eq!(oob::muid_addr(&oob::with_muid_addr(g, a)), a);
    }
});
