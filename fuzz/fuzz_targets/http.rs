//! The text forms of HTTP file transfer (`servent::wire::http`). Byte 0 of the
//! input selects the parser (`b % 7`); the rest is its input, made UTF-8 lossily
//! for the ones that take text.
//!
//! 0. `parse_range` / `RangeSpec::resolve` / `answer_range`: an accepted header has
//!    1 to 64 specs, `a <= b` in every `a-b`, and written back as `bytes=...`
//!    parses to the same specs. For sizes around every number in the header (and
//!    0, 1, `u64::MAX`) a resolved range lies in the file (`start <= end < size`),
//!    is `None` exactly when nothing of the file is selected, and has the length
//!    the spec asks for; `answer_range` answers the first spec, and the whole file
//!    exactly when `parse_range` fails (RFC 9110: such a Range is ignored).
//! 1. `parse_content_range`: `a <= b < total`, and `bytes a-b/total` reads back.
//! 2. `percent_decode` / `percent_encode`: `decode(encode(s)) == s` for the input
//!    and for what it decodes to; the encoding holds only unreserved characters and
//!    `%XX`; text without `%` decodes to itself.
//! 3. `parse_target` (path and query split at the first `?`): a file target has a
//!    non-zero index and a safe name, and `/get/<index>/<encoded name>` reads back
//!    to it; a URN target reads back from `/uri-res/N2R?<urn>`; a FastTrack hash
//!    from `/.hash=<hex>`; a FastTrack file id is at most 0x3FFF, its name is safe,
//!    and `/<id>/<encoded name>` reads back to it; `is_fasttrack_path` says
//!    FastTrack exactly for the FastTrack targets.
//! 4. `parse_x_alt` / `format_x_alt`: at most `max` (byte 1) usable entries (IPv4,
//!    or IPv6 that is not IPv4-mapped), a prefix of the unbounded list, and
//!    formatting them parses back to them (with IPv6, or to the IPv4 ones
//!    without).
//! 5. `Giv::parse` / `Giv::encode` (raw bytes): a GIV takes the bytes up to the
//!    first blank line, within the input and `MAX_GIV_LEN`; parsing just those
//!    bytes gives the same, one byte fewer gives none; the encoding parses back to
//!    the same GIV using all its bytes, unless percent-encoding the name made it
//!    longer than `MAX_GIV_LEN` (then it is refused as too long).
//! 6. `HttpUrl::parse`: host and port set, target starting with `/` without
//!    whitespace; `http://<authority><target>` reads back to the same URL; the
//!    file name it names, if any, is safe.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use servent::wire::http::{
    Giv, HttpUrl, MAX_GIV_LEN, RangeAnswer, RangeSpec, Target, answer_range, format_x_alt,
    is_fasttrack_path, is_unsafe_name, parse_content_range, parse_range, parse_target, parse_x_alt,
    percent_decode, percent_encode,
};
use servent_fuzz::hex;

fn write_range(specs: &[RangeSpec]) -> String {
    let specs: Vec<String> = specs
        .iter()
        .map(|s| match s {
            RangeSpec::FromTo(a, b) => format!("{a}-{b}"),
            RangeSpec::From(a) => format!("{a}-"),
            RangeSpec::Suffix(n) => format!("-{n}"),
        })
        .collect();
    format!("bytes={}", specs.join(","))
}

fn check_resolve(spec: RangeSpec, size: u64) {
    let got = spec.resolve(size);
    let (want_some, want_len) = match spec {
        RangeSpec::FromTo(a, b) => (
            a < size,
            b.min(size.saturating_sub(1))
                .wrapping_sub(a)
                .wrapping_add(1),
        ),
        RangeSpec::From(a) => (a < size, size.wrapping_sub(a)),
        RangeSpec::Suffix(n) => (n > 0 && size > 0, n.min(size)),
    };
    assert_eq!(
        got.is_some(),
        want_some,
        "{spec:?} of {size} bytes: {got:?}"
    );
    if let Some((start, end)) = got {
        assert!(
            start <= end && end < size,
            "{spec:?} of {size} bytes: {start}-{end}"
        );
        assert_eq!(end - start + 1, want_len, "{spec:?} of {size} bytes");
    }
}

fn range(s: &str) {
    let specs = match parse_range(s) {
        Ok(specs) => specs,
        Err(e) => {
            let _ = e;
            // A header that cannot be read is ignored: the whole file.
            assert_eq!(answer_range(Some(s), 0), RangeAnswer::Whole);
            return;
        }
    };
    assert!(
        !specs.is_empty() && specs.len() <= 64,
        "{} specs",
        specs.len()
    );
    let mut sizes = vec![0, 1, u64::MAX];
    for spec in &specs {
        let (a, b) = match *spec {
            RangeSpec::FromTo(a, b) => {
                assert!(a <= b, "{spec:?}");
                (a, b)
            }
            RangeSpec::From(a) => (a, a),
            RangeSpec::Suffix(n) => (n, n),
        };
        for n in [a, b] {
            sizes.extend([n.saturating_sub(1), n, n.saturating_add(1)]);
        }
    }
    let written = write_range(&specs);
    assert_eq!(parse_range(&written).as_ref(), Ok(&specs), "{written}");
    for size in sizes {
        for &spec in &specs {
            check_resolve(spec, size);
        }
        let want = match specs[0].resolve(size) {
            Some((start, end)) => RangeAnswer::Part { start, end },
            None => RangeAnswer::Unsatisfiable,
        };
        assert_eq!(answer_range(Some(s), size), want, "size {size}");
        assert_eq!(answer_range(None, size), RangeAnswer::Whole);
    }
}

fn content_range(s: &str) {
    if let Some((a, b, total)) = parse_content_range(s) {
        assert!(a <= b && b < total, "{a}-{b}/{total}");
        let written = format!("bytes {a}-{b}/{total}");
        assert_eq!(parse_content_range(&written), Some((a, b, total)));
    }
}

fn percent(s: &str) {
    let encoded = percent_encode(s);
    assert!(
        encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
        "{encoded}"
    );
    assert_eq!(percent_decode(&encoded).as_deref(), Some(s), "{encoded}");
    if let Some(decoded) = percent_decode(s) {
        assert_eq!(
            percent_decode(&percent_encode(&decoded)).as_deref(),
            Some(decoded.as_str())
        );
        if !s.contains('%') {
            assert_eq!(decoded, s);
        }
    }
}

fn target(s: &str) {
    let (path, query) = match s.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (s, None),
    };
    let parsed = parse_target(path, query);
    if let Ok(t) = &parsed {
        assert_eq!(t.is_fasttrack(), is_fasttrack_path(path), "{path}");
    }
    match parsed {
        Ok(Target::Index { index, name }) => {
            assert!(index > 0);
            assert!(!is_unsafe_name(&name), "unsafe name {name:?}");
            let path = format!("/get/{index}/{}", percent_encode(&name));
            assert_eq!(
                parse_target(&path, None),
                Ok(Target::Index { index, name }),
                "{path}"
            );
        }
        Ok(Target::Urn(u)) => {
            let q = u.to_string();
            assert_eq!(parse_target("/uri-res/N2R", Some(&q)), Ok(Target::Urn(u)));
        }
        Ok(Target::Fth(h)) => {
            assert_eq!(parse_target(&h.http_path(), None), Ok(Target::Fth(h)));
        }
        Ok(Target::FileId { id, name }) => {
            assert!(id <= 0x3FFF);
            assert!(!is_unsafe_name(&name), "unsafe name {name:?}");
            let path = format!("/{id}/{}", percent_encode(&name));
            assert_eq!(
                parse_target(&path, None),
                Ok(Target::FileId { id, name }),
                "{path}"
            );
        }
        Err(_) => {}
    }
}

fn x_alt(max: usize, s: &str) {
    let all = parse_x_alt(s, usize::MAX);
    let some = parse_x_alt(s, max);
    assert_eq!(some[..], all[..max.min(all.len())], "max {max}");
    for a in &all {
        assert!(!a.ip().is_unspecified() && a.port() != 0, "{a}");
        assert_eq!(a.ip(), a.ip().to_canonical(), "{a}");
    }
    let written = format_x_alt(&all, true);
    assert_eq!(parse_x_alt(&written, usize::MAX), all, "{written}");
    let four: Vec<SocketAddr> = all.iter().filter(|a| a.is_ipv4()).copied().collect();
    let written = format_x_alt(&all, false);
    assert_eq!(parse_x_alt(&written, usize::MAX), four, "{written}");
}

fn giv(data: &[u8]) {
    let Ok(Some((g, used))) = Giv::parse(data) else {
        return;
    };
    assert!(used <= data.len() && used <= MAX_GIV_LEN, "used {used}");
    assert!(data[..used].ends_with(b"\n\n"), "no blank line");
    assert_eq!(Giv::parse(&data[..used]), Ok(Some((g.clone(), used))));
    assert!(
        matches!(Giv::parse(&data[..used - 1]), Ok(None)),
        "one byte fewer still gives a GIV"
    );
    let wire = g.encode();
    if wire.len() > MAX_GIV_LEN {
        assert_eq!(Giv::parse(&wire), Err("GIV line too long"));
        return;
    }
    assert_eq!(
        Giv::parse(&wire),
        Ok(Some((g, wire.len()))),
        "encoding: {}",
        hex(&wire)
    );
}

fn url(s: &str) {
    let Some(u) = HttpUrl::parse(s) else {
        return;
    };
    assert!(!u.host.is_empty() && u.port != 0, "{u:?}");
    assert!(
        !u.authority.is_empty() && !u.authority.contains(['/', '@']),
        "{u:?}"
    );
    assert!(u.target.starts_with('/'), "{u:?}");
    assert!(
        !u.target
            .chars()
            .any(|c| c.is_whitespace() || c.is_control()),
        "{u:?}"
    );
    let written = format!("http://{}{}", u.authority, u.target);
    assert_eq!(HttpUrl::parse(&written).as_ref(), Some(&u), "{written}");
    if let Some(name) = u.file_name() {
        assert!(!is_unsafe_name(&name), "{name:?}");
    }
    let _ = u.urn();
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match selector % 7 {
        0 => range(&text),
        1 => content_range(&text),
        2 => percent(&text),
        3 => target(&text),
        4 => {
            let Some((&max, rest)) = rest.split_first() else {
                return;
            };
            x_alt(max as usize, &String::from_utf8_lossy(rest));
        }
        5 => giv(rest),
        _ => url(&text),
    }
});
