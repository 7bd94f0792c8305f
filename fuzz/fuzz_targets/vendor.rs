//! Vendor-message payloads (0x31 and 0x32 share the layout): parse, encode, parse
//! again; see `servent_fuzz::round_trip`. The "Messages Supported" and
//! "Capabilities" body readers are run on every parsed message too, and must
//! agree with their builders on the canonical part of the body (bytes after the
//! lists are ignored, as the shipped servents ignore them).
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
        assert_eq!(
            rebuilt.body,
            msg.body[..rebuilt.body.len()],
            "supported list does not rebuild"
        );
        assert_eq!(rebuilt.supported_entries().unwrap(), entries);
    }
    // BEAR/12: the count in the first two body bytes, rebuilt exactly.
    if let Ok(msg) = VendorMsg::parse(&bytes::Bytes::copy_from_slice(data))
        && let Some(Ok(r)) = servent::wire::vendor::QueryStatusResponse::parse(&msg)
    {
        let rebuilt = r.to_vendor();
        assert_eq!(
            rebuilt.body,
            msg.body[..2],
            "status response does not rebuild"
        );
        assert_eq!(
            servent::wire::vendor::QueryStatusResponse::parse(&rebuilt),
            Some(Ok(r))
        );
    }
    if let Ok(msg) = VendorMsg::parse(&bytes::Bytes::copy_from_slice(data))
        && let Ok(caps) = msg.capability_entries()
    {
        assert!(caps.len() <= servent::wire::vendor::MAX_CAPABILITIES);
        let rebuilt = VendorMsg::capabilities(&caps);
        let again = rebuilt.capability_entries().unwrap();
        assert_eq!(again.len(), caps.len());
    }
});
