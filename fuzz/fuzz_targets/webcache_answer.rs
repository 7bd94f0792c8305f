//! HTTP host cache answers, requests and URLs (`servent::wire::webcache`),
//! chosen by the first byte (`b % 3`), the rest as the text.
//!
//! * Answer: `parse_answer` never panics, reads at most `MAX_LINES` lines and
//!   counts every non-blank line it read as understood or junk; the answer
//!   written back (`Answer::encode`) parses to the same lines with no junk, and
//!   writes the same text again.
//! * Query string: when `Query::parse` accepts it, `encode` gives a string that
//!   parses back to the same query and encodes identically (or, when encoding
//!   made it longer than `MAX_QUERY_LEN`, is refused as too long).
//! * Cache URL: when `CacheUrl::parse` accepts it, it has a host and a non-zero
//!   port, its target starts with `/`, and its written form parses back to the
//!   same URL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use servent::wire::webcache::{
    CacheUrl, MAX_LINES, MAX_QUERY_LEN, Query, QueryError, parse_answer,
};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 3 {
        0 => {
            let a = parse_answer(rest);
            assert!(a.lines.len() + a.junk <= MAX_LINES);
            let text = a.encode();
            let again = parse_answer(text.as_bytes());
            assert_eq!(again.lines, a.lines, "{text:?}");
            assert_eq!(again.junk, 0, "{text:?}");
            assert_eq!(again.encode(), text);
        }
        1 => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(q) = Query::parse(&text) {
                let written = q.encode();
                if written.len() > MAX_QUERY_LEN {
                    // Encoding may triple a value: too long to be read back.
                    assert_eq!(Query::parse(&written), Err(QueryError::TooLong));
                    return;
                }
                let back = Query::parse(&written);
                assert_eq!(back.as_ref(), Ok(&q), "{written}");
                assert_eq!(back.unwrap().encode(), written);
            }
        }
        _ => {
            let text = String::from_utf8_lossy(rest);
            if let Ok(u) = CacheUrl::parse(&text) {
                assert!(!u.host.is_empty() && u.port != 0, "{u:?}");
                assert!(u.target.starts_with('/'), "{u:?}");
                let written = u.to_string();
                assert_eq!(CacheUrl::parse(&written).as_ref(), Ok(&u), "{written}");
            }
        }
    }
});
