//! GUESS extensions (`QK`, `GUE`, `SCP`, `Z`, `IPP`) read out of arbitrary
//! Ping, Pong and Query payloads; a query given a key reads back with that
//! key, and loses it again when stripped for leaves.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use servent::wire::guess::{self as g, GuessPing, GuessPong, GuessQuery, QueryKey};
use servent::wire::query::QueryView;
use servent::wire::{Ping, Pong};
use servent_fuzz::budget;

fuzz_target!(|data: &[u8]| {
    let b = Bytes::copy_from_slice(data);
    if let Ok(p) = Ping::parse(&b, &mut budget()) {
        let _ = GuessPing::of(&p);
    }
    if let Ok(p) = Pong::parse(&b, &mut budget()) {
        let gp = GuessPong::of(&p);
        assert!(gp.hosts.len() <= data.len() / g::IPP_ENTRY);
        if let Some(k) = gp.key {
            assert!((1..=g::MAX_KEY).contains(&k.as_bytes().len()));
        }
    }
    let Ok(view) = QueryView::parse(data) else {
        return;
    };
    let _ = GuessQuery::of(&view);
    let key = QueryKey::new(&data[..data.len().min(4)]).unwrap_or(QueryKey::new(&[0; 4]).unwrap());
    if let Ok(keyed) = g::with_key(&b, &key, true, true) {
        let v = QueryView::parse(&keyed).expect("our query reads");
        assert_eq!(v.text, view.text);
        let gq = GuessQuery::of(&v);
        assert_eq!(gq.key, Some(Some(key)));
        assert!(gq.scp && gq.deflate);
        let bare = g::without_guess(&keyed).expect("it has GUESS extensions");
        let v = QueryView::parse(&bare).expect("stripped reads");
        assert_eq!(GuessQuery::of(&v), GuessQuery::default());
    }
});
