//! Bye payloads: parse, encode, parse again; see `servent_fuzz::round_trip`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::wire::Bye;
use servent_fuzz::round_trip;

fuzz_target!(|data: &[u8]| {
    servent_fuzz::validate_agrees(servent::wire::Function::Bye, data);
    round_trip(data, Bye::parse, Bye::encode, |_| 0);
});
