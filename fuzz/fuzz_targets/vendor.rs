//! Vendor-message payloads (0x31 and 0x32 share the layout): parse, encode, parse
//! again; see `servent_fuzz::round_trip`. The "Messages Supported" body reader is
//! run on every parsed message too, and must agree with its builder.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::wire::VendorMsg;
use servent_fuzz::round_trip;

fuzz_target!(|data: &[u8]| {
    servent_fuzz::validate_agrees(servent::wire::Function::Vendor, data);
    round_trip(data, VendorMsg::parse, VendorMsg::encode, |_| 0);
    if let Ok(msg) = VendorMsg::parse(&bytes::Bytes::copy_from_slice(data))
        && let Ok(entries) = msg.supported_entries()
    {
        let rebuilt = VendorMsg::messages_supported(&entries);
        assert_eq!(rebuilt.body, msg.body, "supported list does not rebuild");
    }
});
