//! The Napster index's routes (`servent index --api`): its status and metrics.

use std::pin::Pin;
use std::time::Instant;

use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::metrics::{CONTENT_TYPE, Page};
use super::{ApiBody, Handler, Req, error, json, json_raw, text};
use crate::napster::server::Counters;
use crate::output::Record;

/// Every route of the index's API.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/status"),
    ("GET", "/metrics"),
];

/// The index's status (`type` "index_status").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStatus {
    pub uptime_secs: u64,
    /// Users logged in.
    pub users: usize,
    /// Files shared by them.
    pub files: usize,
    /// Searches and messages since the start.
    pub searches: u64,
    pub messages: u64,
}

impl Record for IndexStatus {
    const TYPE: &'static str = "index_status";
}

/// The index's API.
pub struct IndexApi {
    pub counters: watch::Receiver<Counters>,
    pub started: Instant,
}

impl Handler for IndexApi {
    fn handle(&self, req: Req) -> Pin<Box<dyn Future<Output = Response<ApiBody>> + Send + '_>> {
        Box::pin(async move {
            let known = ROUTES.iter().any(|(_, p)| *p == req.path);
            if !known {
                return error(StatusCode::NOT_FOUND, "no such endpoint");
            }
            if req.method != hyper::Method::GET && req.method != hyper::Method::HEAD {
                return error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed here");
            }
            let c = self.counters.borrow().clone();
            match req.path.as_str() {
                "/api/v1/openapi.json" => json_raw(&super::openapi::index_document()),
                "/api/v1/status" => json(
                    StatusCode::OK,
                    &IndexStatus {
                        uptime_secs: self.started.elapsed().as_secs(),
                        users: c.users,
                        files: c.files,
                        searches: c.stats.searches,
                        messages: c.stats.messages,
                    },
                ),
                _ => text(CONTENT_TYPE, metrics(&c)),
            }
        })
    }
}

/// The index's metrics.
pub fn metrics(c: &Counters) -> String {
    let s = &c.stats;
    let mut p = Page::default();
    p.one(
        "servent_index_users",
        "gauge",
        "Users logged in.",
        c.users as u64,
    );
    p.one(
        "servent_index_files",
        "gauge",
        "Files shared by the users logged in.",
        c.files as u64,
    );
    p.one(
        "servent_index_messages_total",
        "counter",
        "Messages received.",
        s.messages,
    );
    p.one(
        "servent_index_searches_total",
        "counter",
        "Searches run.",
        s.searches,
    );
    p.one(
        "servent_index_results_total",
        "counter",
        "Search results sent.",
        s.results,
    );
    p.one(
        "servent_index_logins_total",
        "counter",
        "Logins accepted.",
        s.logins,
    );
    p.one(
        "servent_index_login_failures_total",
        "counter",
        "Logins refused.",
        s.login_failures,
    );
    p.one(
        "servent_index_errors_total",
        "counter",
        "Errors sent for bad or unknown messages.",
        s.errors,
    );
    p.one(
        "servent_index_throttled_total",
        "counter",
        "Requests refused for coming too fast.",
        s.throttled,
    );
    p.one(
        "servent_index_dropped_total",
        "counter",
        "Connections dropped for errors, floods, timeouts or framing.",
        s.dropped,
    );
    p.one(
        "servent_index_transfers_brokered_total",
        "counter",
        "Transfers brokered.",
        s.transfers_brokered,
    );
    p.finish()
}
