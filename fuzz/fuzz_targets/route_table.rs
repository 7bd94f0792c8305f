//! Route-table-update (QRP RESET / PATCH) payloads: parse, encode, parse again;
//! see `servent_fuzz::round_trip`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::wire::RouteTableUpdate;
use servent_fuzz::round_trip;

fuzz_target!(|data: &[u8]| {
    servent_fuzz::validate_agrees(servent::wire::Function::RouteTable, data);
    round_trip(
        data,
        RouteTableUpdate::parse,
        RouteTableUpdate::encode,
        |_| 0,
    );
});
