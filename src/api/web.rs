//! The node's web page: one HTML file, one script and one style sheet, built
//! into the binary and served at `/`, `/app.js` and `/app.css` on the API's
//! address. No framework and no build step; the files are in `src/api/web/`.
//!
//! The page holds no secret, so it is served to anyone who may reach the API
//! (no token needed): the token reaches the browser in the fragment of the link
//! that `servent run` prints (`http://ADDR/#token=...`, never sent to the
//! server) or pasted by the user, and the script sends it in `Authorization`.
//! See "The web page" in `protocol-spec/control-api.md`.
//!
//! Caching: the HTML is revalidated on every load (`no-cache`, with an ETag);
//! it names the script and style sheet with a hash of their contents
//! (`/app.js?v=HASH`), so those are cached for a year as immutable. Each file
//! is also kept gzipped, sent when the browser accepts it.

use std::io::Write;
use std::sync::OnceLock;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};
use sha1::{Digest, Sha1};

use super::ApiBody;

const HTML: &str = include_str!("web/index.html");
const JS: &str = include_str!("web/app.js");
const CSS: &str = include_str!("web/app.css");

/// The page's policy: its own script and style only, requests to its own
/// origin only, never framed.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One file as served.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub cache: &'static str,
    pub body: Bytes,
    pub gzip: Bytes,
    pub etag: String,
}

fn hash(parts: &[&[u8]]) -> String {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    data_encoding::HEXLOWER.encode(&h.finalize()[..8])
}

fn gzip(b: &[u8]) -> Bytes {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).expect("writes to memory");
    Bytes::from(e.finish().expect("writes to memory"))
}

fn asset(
    path: &'static str,
    content_type: &'static str,
    cache: &'static str,
    body: String,
) -> Asset {
    let etag = format!("\"{}\"", hash(&[body.as_bytes()]));
    Asset {
        path,
        content_type,
        cache,
        gzip: gzip(body.as_bytes()),
        body: Bytes::from(body),
        etag,
    }
}

/// The page's files.
pub fn assets() -> &'static [Asset] {
    static ASSETS: OnceLock<Vec<Asset>> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let v = hash(&[JS.as_bytes(), CSS.as_bytes()]);
        let immutable = "public, max-age=31536000, immutable";
        vec![
            asset(
                "/",
                "text/html; charset=utf-8",
                "no-cache",
                HTML.replace("{{V}}", &v),
            ),
            asset(
                "/app.js",
                "text/javascript; charset=utf-8",
                immutable,
                JS.to_string(),
            ),
            asset("/app.css", "text/css; charset=utf-8", immutable, CSS.into()),
        ]
    })
}

/// The answer to a GET or HEAD of one of the page's files; none for any
/// other request.
pub fn answer(method: &Method, path: &str, headers: &HeaderMap) -> Option<Response<ApiBody>> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let path = if path == "/index.html" { "/" } else { path };
    let a = assets().iter().find(|a| a.path == path)?;
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().trim_start_matches("W/") == a.etag);
    let gzip = headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| {
            let mut p = e.split(';');
            let name = p.next().unwrap_or("").trim();
            let refused = p.any(|q| matches!(q.trim(), "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
            name.eq_ignore_ascii_case("gzip") && !refused
        });
    let mut r = if fresh {
        let mut r = Response::new(ApiBody::Full(None));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if gzip {
        let mut r = Response::new(super::full(a.gzip.clone()));
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Response::new(super::full(a.body.clone()))
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(a.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(a.cache));
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&a.etag).expect("hex digits"),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str, hdrs: &[(&'static str, &str)]) -> Option<Response<ApiBody>> {
        let mut h = HeaderMap::new();
        for (k, v) in hdrs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        answer(&Method::GET, path, &h)
    }

    fn body(r: Response<ApiBody>) -> Bytes {
        match r.into_body() {
            ApiBody::Full(b) => b.unwrap_or_default(),
            ApiBody::Stream(_) => panic!("a stream"),
        }
    }

    #[test]
    fn files_types_and_caching() {
        let r = get("/", &[]).unwrap();
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(
            r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let html = String::from_utf8(body(r).to_vec()).unwrap();
        assert!(!html.contains("{{V}}"));
        let v = html.split("/app.js?v=").nth(1).unwrap();
        assert_eq!(&v[..16], hash(&[JS.as_bytes(), CSS.as_bytes()]));
        for (p, t) in [("/app.js", "text/javascript"), ("/app.css", "text/css")] {
            let r = get(p, &[]).unwrap();
            assert!(
                r.headers()[header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with(t)
            );
            assert!(
                r.headers()[header::CACHE_CONTROL]
                    .to_str()
                    .unwrap()
                    .contains("immutable")
            );
        }
        assert!(get("/nope", &[]).is_none());
        assert!(get("/api/v1/status", &[]).is_none());
        assert!(answer(&Method::POST, "/", &HeaderMap::new()).is_none());
    }

    #[test]
    fn gzip_and_etag() {
        let r = get("/app.js", &[("accept-encoding", "br, gzip;q=0.8")]).unwrap();
        assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
        let etag = r.headers()[header::ETAG].to_str().unwrap().to_string();
        let gz = body(r);
        let mut d = flate2::read::GzDecoder::new(&gz[..]);
        let mut s = String::new();
        std::io::Read::read_to_string(&mut d, &mut s).unwrap();
        assert_eq!(s, JS);
        let r = get("/app.js", &[("accept-encoding", "gzip;q=0")]).unwrap();
        assert!(r.headers().get(header::CONTENT_ENCODING).is_none());
        let r = get("/app.js", &[("if-none-match", &etag)]).unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
        assert!(body(r).is_empty());
    }

    #[test]
    fn no_data_as_html() {
        // Network strings reach the DOM as text only.
        assert!(!JS.contains("innerHTML"));
        assert!(!JS.contains("insertAdjacentHTML"));
        assert!(!JS.contains("document.write"));
        assert!(
            !HTML.contains("<script>"),
            "no inline script (the CSP forbids it)"
        );
    }
}
