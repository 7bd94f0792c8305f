//! UDP host-cache pings and pongs: what a Ping asks and what a Pong carries
//! are read from any payload without panicking, and the extras of a Pong,
//! written back by our encoder, read the same again.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use servent::wire::uhc::{PingAsks, PongExtras};
use servent::wire::{Ping, Pong};
use servent_fuzz::budget;

fuzz_target!(|data: &[u8]| {
    let payload = Bytes::copy_from_slice(data);
    if let Ok(p) = Ping::parse(&payload, &mut budget()) {
        let _ = PingAsks::of(&p);
    }
    let Ok(pong) = Pong::parse(&payload, &mut budget()) else {
        return;
    };
    let x = PongExtras::of(&pong);
    let addr = std::net::SocketAddrV4::new(pong.ip, pong.port);
    let mut out = BytesMut::new();
    x.pong(addr, pong.files, pong.kbytes)
        .encode(&mut out)
        .expect("our extras encode");
    let again = Pong::parse(&out.freeze(), &mut budget()).expect("our pong reads");
    assert_eq!(PongExtras::of(&again), x);
});
