//! QueryHit payloads: parse, encode, parse again; see `servent_fuzz::round_trip`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::wire::queryhit::QueryHitView;
use servent::wire::{QueryHit, TrailerArea};
use servent_fuzz::{budget, ext_area_max, ggep_max, round_trip};

fn longest_ggep_value(h: &QueryHit) -> usize {
    let in_results = h.results.iter().map(|r| ext_area_max(&r.ext));
    let in_trailer = match &h.trailer {
        TrailerArea::Qhd(t) => t.private.ggep.as_ref().map_or(0, ggep_max),
        _ => 0,
    };
    in_results.chain([in_trailer]).max().unwrap_or(0)
}

/// The borrowed view reads the same fields as the owned value.
fn views_agree(data: &[u8]) {
    let payload = bytes::Bytes::copy_from_slice(data);
    let (Ok(owned), Ok(view)) = (
        QueryHit::parse(&payload, &mut budget()),
        QueryHitView::parse(data),
    ) else {
        return;
    };
    assert_eq!(
        (view.port, view.ip, view.speed, view.servent, view.len()),
        (
            owned.port,
            owned.ip,
            owned.speed,
            owned.servent,
            owned.results.len()
        )
    );
    for (v, o) in view.results().zip(&owned.results) {
        assert_eq!((v.index, v.size, v.name), (o.index, o.size, &o.name[..]));
        assert_eq!(v.file_size(), o.file_size(), "file size");
        assert_eq!(v.fth(), o.fth(), "FastTrack hash");
        assert_eq!(
            v.ext.sha1_urns().collect::<Vec<_>>(),
            o.ext.sha1_urns().collect::<Vec<_>>()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    views_agree(data);
    servent_fuzz::validate_agrees(servent::wire::Function::QueryHit, data);
    round_trip(
        data,
        |p| QueryHit::parse(p, &mut budget()),
        QueryHit::encode,
        longest_ggep_value,
    );
});
