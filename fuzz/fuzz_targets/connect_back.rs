//! Connect-back requests (BEAR/7, GTKG/7 v1 and v2, LIME/7, LIME/8) read from
//! any vendor-message payload: what reads encodes to a message that reads the
//! same; and a Pong's `IP` read from any GGEP block encodes back to itself.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use servent::wire::reach::{self, ConnectBack};
use servent::wire::{Ggep, VendorMsg};

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(m) = VendorMsg::parse(&bytes)
        && let Some(Ok(cb)) = reach::connect_back(&m)
    {
        let again = match cb {
            ConnectBack::Tcp(t) => t.to_vendor(),
            ConnectBack::Udp(u) => u.to_vendor(),
            ConnectBack::Redirect(r) => r.to_vendor(),
        };
        assert_eq!(reach::connect_back(&again), Some(Ok(cb)));
    }
    if let Ok((g, _)) = Ggep::parse(&bytes)
        && let Some(seen) = reach::ip_seen(&g)
    {
        let back = Ggep::new(vec![reach::ip_answer(seen)]);
        assert_eq!(reach::ip_seen(&back), Some(seen));
    }
});
