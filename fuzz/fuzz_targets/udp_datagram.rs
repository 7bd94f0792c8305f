//! Datagrams off the Gnutella UDP port: read (inflating a deflated payload
//! within its bound), and what is read encodes back to a datagram that reads
//! the same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use servent::wire::udp;

fuzz_target!(|data: &[u8]| {
    let Ok(d) = udp::parse(Bytes::copy_from_slice(data)) else {
        return;
    };
    assert!(d.frame.payload.len() <= udp::MAX_INFLATED);
    assert_eq!(d.frame.header.payload_len as usize, d.frame.payload.len());
    for deflate in [false, true] {
        let again = udp::parse(udp::encode(&d.frame, deflate)).expect("our datagram reads");
        assert_eq!(again.frame, d.frame);
    }
});
