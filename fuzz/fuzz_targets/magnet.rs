//! Magnet links: `Magnet::parse` on the input (made UTF-8 lossily).
//!
//! When it accepts a link: at most `MAX_SOURCES` sources, each an `http://` URL
//! with a host and a non-zero port; and the link written back in one canonical
//! form (`xt=urn:sha1:`, then `dn`, `xl` and every `xs`, values percent-encoded)
//! parses to the same magnet. There is no encoder in the crate: the one here
//! writes only what the parser keeps (the first SHA-1 topic, the last name and
//! size, the first `MAX_SOURCES` sources), so the read-back must be exact.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::wire::http::percent_encode;
use servent::wire::magnet::{MAX_SOURCES, Magnet};

fn write(m: &Magnet) -> String {
    let mut out = format!("magnet:?xt={}", m.urn);
    if let Some(name) = &m.name {
        out.push_str(&format!("&dn={}", percent_encode(name)));
    }
    if let Some(size) = m.size {
        out.push_str(&format!("&xl={size}"));
    }
    for s in &m.sources {
        let url = format!("http://{}{}", s.authority, s.target);
        out.push_str(&format!("&xs={}", percent_encode(&url)));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(m) = Magnet::parse(&text) else {
        return;
    };
    assert!(
        m.sources.len() <= MAX_SOURCES,
        "{} sources",
        m.sources.len()
    );
    for s in &m.sources {
        assert!(!s.host.is_empty() && s.port != 0, "{s:?}");
    }
    let written = write(&m);
    assert_eq!(Magnet::parse(&written), Ok(m), "{written}");
});
