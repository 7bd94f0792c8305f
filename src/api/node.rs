//! The node's routes.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{ApiBody, Handler, Req, error, json, json_raw, no_content, parse_body, text};
use crate::fasttrack::hash::Fth;
use crate::node::control::{Control, SearchFor};
use crate::node::get::{SourceSpec, Wanted};
use crate::node::queue::QueueError;
use crate::output::{self, List};
use crate::wire::Guid;
use crate::wire::http::HttpUrl;
use crate::wire::huge::Sha1Urn;
use crate::wire::magnet::Magnet;

/// Every route of the node's API, as (method, path pattern); `{x}` is a
/// path parameter. The OpenAPI document describes each (a test checks it).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/status"),
    ("GET", "/api/v1/peers"),
    ("GET", "/api/v1/library"),
    ("GET", "/api/v1/hosts"),
    ("GET", "/api/v1/uploads"),
    ("GET", "/api/v1/shares"),
    ("POST", "/api/v1/shares"),
    ("DELETE", "/api/v1/shares"),
    ("POST", "/api/v1/shares/rescan"),
    ("GET", "/api/v1/searches"),
    ("POST", "/api/v1/searches"),
    ("GET", "/api/v1/searches/{id}"),
    ("DELETE", "/api/v1/searches/{id}"),
    ("GET", "/api/v1/searches/{id}/events"),
    ("GET", "/api/v1/downloads"),
    ("POST", "/api/v1/downloads"),
    ("GET", "/api/v1/downloads/{id}"),
    ("DELETE", "/api/v1/downloads/{id}"),
    ("POST", "/api/v1/downloads/{id}/pause"),
    ("POST", "/api/v1/downloads/{id}/resume"),
    ("GET", "/metrics"),
];

/// Matches `path` against `pattern`, giving the path parameters.
pub fn match_route<'a>(pattern: &str, path: &'a str) -> Option<Vec<&'a str>> {
    let mut params = Vec::new();
    let mut p = pattern.split('/');
    let mut s = path.split('/');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return Some(params),
            (Some(a), Some(b)) if a.starts_with('{') && !b.is_empty() => params.push(b),
            (Some(a), Some(b)) if a == b => {}
            _ => return None,
        }
    }
}

/// The node's API.
pub struct NodeApi {
    pub control: Control,
    /// Cancelled when the node stops (ends the event streams).
    pub cancel: CancellationToken,
}

impl Handler for NodeApi {
    fn handle(&self, req: Req) -> Pin<Box<dyn Future<Output = Response<ApiBody>> + Send + '_>> {
        Box::pin(async move { self.route(req) })
    }

    fn web_page(&self) -> bool {
        true
    }
}

/// Results of a listing at most (`limit` parameter).
const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSearch {
    words: Option<String>,
    urn: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewDownload {
    hit: Option<output::Hit>,
    magnet: Option<String>,
    url: Option<String>,
    /// The file's name in the download directory.
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShareBody {
    path: PathBuf,
}

impl NodeApi {
    fn route(&self, req: Req) -> Response<ApiBody> {
        let method = req.method.as_str().to_string();
        let path = req.path.clone();
        let mut known_path = false;
        for (m, pattern) in ROUTES {
            let Some(params) = match_route(pattern, &path) else {
                continue;
            };
            known_path = true;
            if *m != method && !(method == "HEAD" && *m == "GET") {
                continue;
            }
            let id = params.first().map(|p| p.parse::<u64>());
            let id = match id {
                None => None,
                Some(Ok(i)) => Some(i),
                Some(Err(_)) => return error(StatusCode::BAD_REQUEST, "the id must be a number"),
            };
            return self.dispatch(m, pattern, id, &req);
        }
        if known_path {
            error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here")
        } else {
            error(StatusCode::NOT_FOUND, "no such endpoint")
        }
    }

    fn dispatch(&self, m: &str, pattern: &str, id: Option<u64>, req: &Req) -> Response<ApiBody> {
        let c = &self.control;
        let id = id.unwrap_or(0);
        match (m, pattern) {
            ("GET", "/api/v1/openapi.json") => json_raw(&super::openapi::node_document()),
            ("GET", "/api/v1/status") => json(StatusCode::OK, &c.status()),
            ("GET", "/api/v1/peers") => json(StatusCode::OK, &List { items: c.peers() }),
            ("GET", "/api/v1/library") => {
                let num = |n: &str, d: usize| -> Result<usize, String> {
                    match req.param(n) {
                        None => Ok(d),
                        Some(v) => v.parse().map_err(|_| format!("{n} must be a number")),
                    }
                };
                let (offset, limit) = match (num("offset", 0), num("limit", 1000)) {
                    (Ok(o), Ok(l)) => (o, l.min(MAX_LIMIT)),
                    (Err(e), _) | (_, Err(e)) => return error(StatusCode::BAD_REQUEST, e),
                };
                json(
                    StatusCode::OK,
                    &List {
                        items: c.library(offset, limit),
                    },
                )
            }
            ("GET", "/api/v1/hosts") => json(StatusCode::OK, &List { items: c.hosts() }),
            ("GET", "/api/v1/uploads") => json(StatusCode::OK, &List { items: c.uploads() }),
            ("GET", "/api/v1/shares") => json(StatusCode::OK, &List { items: c.shares() }),
            ("POST", "/api/v1/shares") => {
                let b: ShareBody = match parse_body(req) {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                match c.add_share(b.path.clone()) {
                    Ok(()) => json(
                        StatusCode::CREATED,
                        &output::Share {
                            path: b.path.display().to_string(),
                        },
                    ),
                    Err(e) => error(StatusCode::BAD_REQUEST, output::escape(&e)),
                }
            }
            ("DELETE", "/api/v1/shares") => {
                let Some(p) = req.param("path") else {
                    return error(StatusCode::BAD_REQUEST, "give the directory as ?path=");
                };
                if c.remove_share(std::path::Path::new(&p)) {
                    no_content()
                } else {
                    error(StatusCode::NOT_FOUND, "that directory is not shared")
                }
            }
            ("POST", "/api/v1/shares/rescan") => {
                c.rescan();
                let mut r = no_content();
                *r.status_mut() = StatusCode::ACCEPTED;
                r
            }
            ("GET", "/api/v1/searches") => json(
                StatusCode::OK,
                &List {
                    items: c.searches(),
                },
            ),
            ("POST", "/api/v1/searches") => {
                let b: NewSearch = match parse_body(req) {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let what = match (b.words, b.urn) {
                    (Some(w), None) => SearchFor::Words(w),
                    (None, Some(u)) => match u.parse::<Sha1Urn>() {
                        Ok(u) => SearchFor::Urn(u),
                        Err(_) => {
                            return error(StatusCode::BAD_REQUEST, "not a urn:sha1: URN");
                        }
                    },
                    _ => return error(StatusCode::BAD_REQUEST, "give either words or urn"),
                };
                match c.search(what) {
                    Ok(e) => {
                        let mut r = json(StatusCode::CREATED, &e.record());
                        if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/searches/{}", e.id))
                        {
                            r.headers_mut().insert(header::LOCATION, v);
                        }
                        r
                    }
                    Err(e) => error(StatusCode::BAD_REQUEST, e),
                }
            }
            ("GET", "/api/v1/searches/{id}") => match c.search_by_id(id) {
                Some(e) => json(
                    StatusCode::OK,
                    &output::SearchResults {
                        search: e.record(),
                        items: e.hits(),
                    },
                ),
                None => error(StatusCode::NOT_FOUND, "no such search"),
            },
            ("DELETE", "/api/v1/searches/{id}") => {
                if c.stop_search(id) {
                    no_content()
                } else {
                    error(StatusCode::NOT_FOUND, "no such search")
                }
            }
            ("GET", "/api/v1/searches/{id}/events") => match c.search_by_id(id) {
                Some(e) => {
                    let (hits, feed) = e.subscribe();
                    events(hits, feed, self.cancel.clone())
                }
                None => error(StatusCode::NOT_FOUND, "no such search"),
            },
            ("GET", "/api/v1/downloads") => json(
                StatusCode::OK,
                &List {
                    items: c.queue().list(),
                },
            ),
            ("POST", "/api/v1/downloads") => {
                let b: NewDownload = match parse_body(req) {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let wanted = match wanted_of(&b) {
                    Ok(w) => w,
                    Err(e) => return error(StatusCode::BAD_REQUEST, e),
                };
                match c.queue().add(wanted, b.name.as_deref()) {
                    Ok(id) => {
                        let d = c.queue().get(id).expect("just added");
                        let mut r = json(StatusCode::CREATED, &d);
                        if let Ok(v) = HeaderValue::from_str(&format!("/api/v1/downloads/{id}")) {
                            r.headers_mut().insert(header::LOCATION, v);
                        }
                        r
                    }
                    Err(e) => queue_error(e),
                }
            }
            ("GET", "/api/v1/downloads/{id}") => match c.queue().get(id) {
                Some(d) => json(StatusCode::OK, &d),
                None => error(StatusCode::NOT_FOUND, "no such download"),
            },
            ("DELETE", "/api/v1/downloads/{id}") => {
                let delete = match req.param("delete_part").as_deref() {
                    None | Some("false") | Some("0") => false,
                    Some("true") | Some("1") => true,
                    Some(_) => {
                        return error(StatusCode::BAD_REQUEST, "delete_part is true or false");
                    }
                };
                match c.queue().cancel(id, delete) {
                    Ok(()) => no_content(),
                    Err(e) => queue_error(e),
                }
            }
            ("POST", "/api/v1/downloads/{id}/pause") => match c.queue().pause(id) {
                Ok(d) => json(StatusCode::OK, &d),
                Err(e) => queue_error(e),
            },
            ("POST", "/api/v1/downloads/{id}/resume") => match c.queue().resume(id) {
                Ok(d) => json(StatusCode::OK, &d),
                Err(e) => queue_error(e),
            },
            ("GET", "/metrics") => text(super::metrics::CONTENT_TYPE, super::metrics::node(c)),
            _ => error(StatusCode::NOT_FOUND, "no such endpoint"),
        }
    }
}

fn queue_error(e: QueueError) -> Response<ApiBody> {
    let status = match e {
        QueueError::NotFound => StatusCode::NOT_FOUND,
        QueueError::Bad(_) => StatusCode::CONFLICT,
        QueueError::Full => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, output::escape(&e.to_string()))
}

/// What to download, from a hit, a magnet or a URL.
fn wanted_of(b: &NewDownload) -> Result<Wanted, String> {
    match (&b.hit, &b.magnet, &b.url) {
        (Some(h), None, None) => {
            let g = h
                .gnutella
                .as_ref()
                .ok_or("only Gnutella hits can be downloaded")?;
            if g.push {
                return Err(
                    "this source accepts no connections (push); the node's queue cannot reach it yet"
                        .into(),
                );
            }
            let ip: IpAddr = h
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| "the hit's host is not an IP address")?;
            let port = h.port.ok_or("the hit has no port")?;
            let servent = Guid::from_hex(&g.servent_guid).ok_or("bad servent_guid")?;
            let urn = match &h.urn {
                Some(u) => Some(u.parse::<Sha1Urn>().map_err(|_| "bad urn")?),
                None => None,
            };
            let fth = match &h.fth {
                Some(f) => Some(Fth::from_hex(f.as_bytes()).map_err(|_| "bad fth")?),
                None => None,
            };
            Ok(Wanted {
                urn,
                fth,
                size: Some(h.size),
                name: Some(h.name.clone()),
                sources: vec![SourceSpec::Hit {
                    addr: SocketAddr::new(ip, port),
                    index: g.index,
                    name: h.name.clone(),
                    servent,
                    push: false,
                }],
            })
        }
        (None, Some(m), None) => {
            let m = Magnet::parse(m).map_err(|e| e.to_string())?;
            if m.sources.is_empty() {
                return Err("the magnet link names no source (xs=http://...)".into());
            }
            Ok(Wanted {
                urn: Some(m.urn),
                fth: None,
                size: m.size,
                name: m.name,
                sources: m.sources.into_iter().map(SourceSpec::Url).collect(),
            })
        }
        (None, None, Some(u)) => {
            let url = HttpUrl::parse(u).ok_or("not an http:// URL")?;
            Ok(Wanted {
                urn: url.urn(),
                fth: None,
                size: None,
                name: url.file_name(),
                sources: vec![SourceSpec::Url(url)],
            })
        }
        _ => Err("give one of hit, magnet or url".into()),
    }
}

/// How often an idle event stream says it is alive.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A server-sent event stream: every hit so far, then new ones as they come
/// (`event: hit`), and `event: end` when the search ends.
fn events(
    hits: Vec<output::Hit>,
    feed: Option<broadcast::Receiver<output::Hit>>,
    cancel: CancellationToken,
) -> Response<ApiBody> {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let event = |kind: &str, data: String| Bytes::from(format!("event: {kind}\ndata: {data}\n\n"));
    tokio::spawn(async move {
        for h in hits {
            if tx.send(event("hit", output::json_line(&h))).await.is_err() {
                return;
            }
        }
        if let Some(mut feed) = feed {
            loop {
                let next = tokio::select! {
                    n = feed.recv() => n,
                    _ = tokio::time::sleep(KEEPALIVE) => {
                        if tx.send(Bytes::from_static(b": alive\n\n")).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    _ = cancel.cancelled() => return,
                    _ = tx.closed() => return,
                };
                match next {
                    Ok(h) => {
                        if tx.send(event("hit", output::json_line(&h))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let missed = serde_json::json!({ "missed": n }).to_string();
                        let _ = tx.send(event("lagged", missed)).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
        let _ = tx
            .send(event("end", serde_json::json!({}).to_string()))
            .await;
    });
    let mut r = Response::new(ApiBody::Stream(rx));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
