//! Query payloads: parse, encode, parse again; see `servent_fuzz::round_trip`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::wire::Query;
use servent::wire::query::QueryView;
use servent_fuzz::{budget, ext_area_max, round_trip};

/// The borrowed view reads the same fields as the owned value.
fn views_agree(data: &[u8]) {
    let payload = bytes::Bytes::copy_from_slice(data);
    let (Ok(owned), Ok(view)) = (
        Query::parse(&payload, &mut budget()),
        QueryView::parse(data),
    ) else {
        return;
    };
    assert_eq!((view.flags, view.text), (owned.flags, &owned.text[..]));
    assert_eq!(view.ext.iter().count(), owned.ext.items.len());
    assert_eq!(
        view.ext.sha1_urns().collect::<Vec<_>>(),
        owned.ext.sha1_urns().collect::<Vec<_>>()
    );
}

fuzz_target!(|data: &[u8]| {
    views_agree(data);
    servent_fuzz::validate_agrees(servent::wire::Function::Query, data);
    round_trip(
        data,
        |p| Query::parse(p, &mut budget()),
        Query::encode,
        |v| ext_area_max(&v.ext),
    );
});
