//! Push payloads: parse, encode, parse again; see `servent_fuzz::round_trip`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::wire::Push;
use servent_fuzz::{budget, ggep_max, round_trip};

fuzz_target!(|data: &[u8]| {
    servent_fuzz::validate_agrees(servent::wire::Function::Push, data);
    round_trip(
        data,
        |p| Push::parse(p, &mut budget()),
        Push::encode,
        |v| v.ggep.as_ref().map_or(0, ggep_max),
    );
});
