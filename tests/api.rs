//! The control API: every route against the OpenAPI document (status codes,
//! required fields and types), the token, the metrics through a strict
//! Prometheus text parser, the index's API, the download queue surviving a
//! kill -9 of `servent run`, and the client commands. Loopback only, every
//! port chosen by the system, every wait bounded.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::Value;
use servent::api::{self, client::Client};
use servent::node::{self, Mode, NodeConfig, NodeHandle, TierConfig};
use servent::output::{Listening, Versioned};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod common;
use common::{Dir, pattern, servent_cmd};

const WAIT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------ schema check

/// Checks `v` against `schema` (of `doc`): `$ref`, `allOf`, `type` (one or
/// several), `required`, `properties`, `additionalProperties` (a schema),
/// `items`, `enum`, `const`. Returns what does not fit.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/components/schemas/");
        let s = &doc["components"]["schemas"][name];
        assert!(!s.is_null(), "no schema {name}");
        return check(doc, s, v, at, errors);
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(doc, s, v, at, errors);
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type in schema at {at}"),
        };
        let fits = types.iter().any(|t| match *t {
            "string" => v.is_string(),
            "integer" => v.is_u64() || v.is_i64(),
            "number" => v.is_number(),
            "boolean" => v.is_boolean(),
            "array" => v.is_array(),
            "object" => v.is_object(),
            "null" => v.is_null(),
            other => panic!("unknown type {other}"),
        });
        if !fits {
            errors.push(format!("{at}: {v} is not {types:?}"));
            return;
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(v) {
            errors.push(format!("{at}: {v} not in {e:?}"));
        }
    }
    if let Some(c) = schema.get("const") {
        if c != v {
            errors.push(format!("{at}: {v} is not {c}"));
        }
    }
    if let Some(o) = v.as_object() {
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !o.contains_key(r) {
                errors.push(format!("{at}: required {r} missing"));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        for (k, x) in o {
            match props.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, x, &format!("{at}.{k}"), errors),
                None => {
                    if let Some(s) = schema.get("additionalProperties").filter(|s| s.is_object()) {
                        check(doc, s, x, &format!("{at}.{k}"), errors);
                    }
                }
            }
        }
    }
    if let (Some(items), Some(a)) = (schema.get("items"), v.as_array()) {
        for (i, x) in a.iter().enumerate() {
            check(doc, items, x, &format!("{at}[{i}]"), errors);
        }
    }
}

/// The OpenAPI path template a concrete path matches.
fn template<'a>(doc: &'a Value, path: &str) -> &'a str {
    let path = path.split('?').next().unwrap();
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .find(|t| servent::api::node::match_route(t, path).is_some())
        .unwrap_or_else(|| panic!("{path} is not in the document"))
}

/// An API answer, checked against the document: its status is documented for
/// the route, and a JSON body fits the documented schema.
struct Api {
    client: Client,
    doc: Value,
    seen: std::sync::Mutex<HashSet<(String, String)>>,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let (status, bytes) = raw(&self.client, method.clone(), path, body).await;
        let t = template(&self.doc, path).to_string();
        let op = &self.doc["paths"][&t][method.as_str().to_lowercase()];
        assert!(!op.is_null(), "{method} {t} is not documented");
        let resp = &op["responses"][status.to_string()];
        assert!(
            !resp.is_null(),
            "{method} {path}: status {status} is not documented; body {}",
            String::from_utf8_lossy(&bytes)
        );
        self.seen
            .lock()
            .unwrap()
            .insert((method.as_str().to_string(), t.clone()));
        let schema = &resp["content"]["application/json"]["schema"];
        let v: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        if !schema.is_null() {
            let mut errors = Vec::new();
            check(&self.doc, schema, &v, "body", &mut errors);
            assert!(errors.is_empty(), "{method} {path}: {errors:#?}\n{v}");
        }
        (status, v)
    }
}

/// A request, whatever its status.
async fn raw(c: &Client, method: Method, path: &str, body: Option<Value>) -> (u16, Vec<u8>) {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", c.addr.to_string());
    if let Some(t) = &c.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let body = body.map_or_else(Vec::new, |b| serde_json::to_vec(&b).unwrap());
    let r = tokio::time::timeout(
        WAIT,
        sender.send_request(
            req.body(http_body_util::Full::new(bytes::Bytes::from(body)))
                .unwrap(),
        ),
    )
    .await
    .expect("an answer in time")
    .unwrap();
    let status = r.status().as_u16();
    let bytes = r.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, bytes)
}

// ------------------------------------------------------------ nodes

fn flat(listen_share: std::path::PathBuf, peers: Vec<String>) -> NodeConfig {
    NodeConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        shares: vec![listen_share],
        peers,
        target_peers: 0,
        handshake_timeout: Duration::from_secs(2),
        tier: TierConfig {
            mode: Mode::Ultrapeer,
            ultrapeer_qrp: false,
            ..TierConfig::default()
        },
        dq: node::DqConfig {
            max_searches: 0,
            ..node::DqConfig::default()
        },
        ..NodeConfig::default()
    }
}

/// Starts the API for `node`, with a token in `data`.
async fn api_for(node: &NodeHandle, data: &std::path::Path, tasks: &TaskTracker) -> Client {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let token = api::create_token(data).unwrap();
    let handler = Arc::new(api::node::NodeApi {
        control: node.control(),
        cancel: node.cancelled(),
    });
    let s = api::serve(
        listener,
        handler,
        Some(token.clone()),
        tasks,
        node.cancelled(),
    )
    .unwrap();
    Client {
        addr: s.local_addr,
        token: Some(token),
    }
}

async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let end = Instant::now() + WAIT;
    loop {
        if let Some(t) = f().await {
            return t;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_documented() {
    let dir = Dir::new("api-routes");
    let share_a = dir.sub("a");
    std::fs::write(share_a.join("alpha song.ogg"), pattern(100_000, 1)).unwrap();
    std::fs::write(share_a.join("beta song.ogg"), pattern(3000, 2)).unwrap();
    let share_b = dir.sub("b");
    std::fs::write(share_b.join("gamma.txt"), b"gamma").unwrap();
    let extra = dir.sub("extra");
    std::fs::write(extra.join("delta song.txt"), b"delta").unwrap();
    let a = node::start(flat(share_a, vec![]), CancellationToken::new())
        .await
        .unwrap();
    let data_b = dir.sub("data-b");
    let config_b = NodeConfig {
        data_dir: Some(data_b.clone()),
        download_dir: Some(dir.sub("got")),
        ..flat(share_b, vec![a.local_addr.to_string()])
    };
    let mut b = node::start(config_b, CancellationToken::new())
        .await
        .unwrap();
    assert!(b.wait_for(WAIT, |s| s.connections == 1).await, "no link");
    let tasks = TaskTracker::new();
    let client = api_for(&b, &data_b, &tasks).await;
    assert_eq!(
        std::fs::metadata(api::token_path(&data_b))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let (_, doc) = raw(&client, Method::GET, "/api/v1/openapi.json", None).await;
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    // Every route the router knows is in the document, and nothing else.
    let mut documented = HashSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            if m != "parameters" {
                documented.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    let routed: HashSet<(String, String)> = api::node::ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed);

    let api = Api {
        client: client.clone(),
        doc: doc.clone(),
        seen: Default::default(),
    };
    let anon = Client {
        addr: client.addr,
        token: None,
    };
    let wrong = Client {
        addr: client.addr,
        token: Some("0".repeat(64)),
    };
    // Every change without the token, or with a wrong one, is refused.
    for (m, p) in api::node::ROUTES {
        if *m == "GET" {
            continue;
        }
        let path = p.replace("{id}", "1");
        let path = if path == "/api/v1/shares" && *m == "DELETE" {
            format!("{path}?path=/x")
        } else {
            path
        };
        for c in [&anon, &wrong] {
            let (status, body) =
                raw(c, m.parse().unwrap(), &path, Some(serde_json::json!({}))).await;
            assert_eq!(status, 401, "{m} {path}");
            let e: Versioned<servent::output::ApiError> = serde_json::from_slice(&body).unwrap();
            assert_eq!((e.kind.as_str(), e.record.status), ("error", 401));
        }
    }
    // GETs are open on loopback.
    assert_eq!(raw(&anon, Method::GET, "/api/v1/status", None).await.0, 200);

    let (_, status) = api.call(Method::GET, "/api/v1/status", None).await;
    assert_eq!(status["type"], "status");
    assert_eq!(status["links"]["total"], 1);
    let (_, peers) = api.call(Method::GET, "/api/v1/peers", None).await;
    let p = &peers["items"][0];
    assert_eq!(p["addr"], a.local_addr.to_string());
    assert!(
        p["user_agent"].as_str().unwrap().starts_with("servent/"),
        "{p}"
    );
    api.call(Method::GET, "/api/v1/hosts", None).await;
    api.call(Method::GET, "/api/v1/uploads", None).await;
    let (_, lib) = api.call(Method::GET, "/api/v1/library", None).await;
    assert_eq!(lib["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.call(Method::GET, "/api/v1/library?limit=x", None)
            .await
            .0,
        400
    );
    // Shares: add a directory, see its file come, take it away again.
    let (_, shares) = api.call(Method::GET, "/api/v1/shares", None).await;
    assert_eq!(shares["items"].as_array().unwrap().len(), 1);
    let body = serde_json::json!({ "path": extra });
    assert_eq!(
        api.call(Method::POST, "/api/v1/shares", Some(body.clone()))
            .await
            .0,
        201
    );
    assert_eq!(
        api.call(Method::POST, "/api/v1/shares", Some(body)).await.0,
        400
    );
    let nowhere = serde_json::json!({ "path": dir.0.join("nowhere") });
    assert_eq!(
        api.call(Method::POST, "/api/v1/shares", Some(nowhere))
            .await
            .0,
        400
    );
    until("the added share's file", async || {
        let (_, lib) = api.call(Method::GET, "/api/v1/library", None).await;
        (lib["items"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    let q = format!(
        "/api/v1/shares?path={}",
        servent::wire::http::percent_encode(&extra.display().to_string())
    );
    assert_eq!(api.call(Method::DELETE, &q, None).await.0, 204);
    assert_eq!(api.call(Method::DELETE, &q, None).await.0, 404);
    assert_eq!(
        api.call(Method::DELETE, "/api/v1/shares", None).await.0,
        400
    );
    assert_eq!(
        api.call(Method::POST, "/api/v1/shares/rescan", None)
            .await
            .0,
        202
    );
    until("the removed share's file gone", async || {
        let (_, lib) = api.call(Method::GET, "/api/v1/library", None).await;
        (lib["items"].as_array().unwrap().len() == 1).then_some(())
    })
    .await;

    // Searches: bad requests, then one that finds A's files.
    for bad in [
        serde_json::json!({}),
        serde_json::json!({ "words": "" }),
        serde_json::json!({ "urn": "urn:sha1:nope" }),
        serde_json::json!({ "words": "a", "urn": "b" }),
        serde_json::json!({ "nonsense": 1 }),
    ] {
        assert_eq!(
            api.call(Method::POST, "/api/v1/searches", Some(bad))
                .await
                .0,
            400
        );
    }
    // A's files must be hashed for the hits to carry a URN.
    let hit = until("a hit with a URN", async || {
        let (s, created) = api
            .call(
                Method::POST,
                "/api/v1/searches",
                Some(serde_json::json!({ "words": "alpha song" })),
            )
            .await;
        assert_eq!(s, 201);
        let id = created["id"].as_u64().unwrap();
        assert_eq!(created["sent_to"], 1);
        let mut found = None;
        for _ in 0..40 {
            let (_, r) = api
                .call(Method::GET, &format!("/api/v1/searches/{id}"), None)
                .await;
            if let Some(h) = r["items"].as_array().and_then(|a| a.first()) {
                found = Some(h.clone());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        found.filter(|h| !h["urn"].is_null()).map(|h| (id, h))
    })
    .await;
    let (id, hit) = hit;
    assert_eq!(hit["name"], "alpha song.ogg");
    // The event stream replays the hits so far.
    let mut events = client
        .events(&format!("/api/v1/searches/{id}/events"))
        .await
        .unwrap();
    let (name, data) = tokio::time::timeout(WAIT, events.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(name, "hit");
    let h: Versioned<servent::output::Hit> = serde_json::from_str(&data).unwrap();
    assert_eq!(h.record.name, "alpha song.ogg");
    api.seen
        .lock()
        .unwrap()
        .insert(("GET".into(), "/api/v1/searches/{id}/events".into()));
    let (_, list) = api.call(Method::GET, "/api/v1/searches", None).await;
    assert!(!list["items"].as_array().unwrap().is_empty());
    assert_eq!(
        api.call(Method::DELETE, &format!("/api/v1/searches/{id}"), None)
            .await
            .0,
        204
    );
    // Once stopped, the stream ends.
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match events.next().await.unwrap() {
                Some((n, _)) if n == "end" => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await
    .unwrap();
    assert!(end);
    assert_eq!(
        api.call(Method::GET, &format!("/api/v1/searches/{id}"), None)
            .await
            .0,
        404
    );
    assert_eq!(
        api.call(Method::DELETE, "/api/v1/searches/999", None)
            .await
            .0,
        404
    );
    assert_eq!(
        raw(&client, Method::GET, "/api/v1/searches/999/events", None)
            .await
            .0,
        404
    );

    // Downloads: a hit from the search, done byte for byte.
    for bad in [
        serde_json::json!({}),
        serde_json::json!({ "url": "ftp://x/y" }),
        serde_json::json!({ "magnet": "magnet:?xt=urn:sha1:nope" }),
        serde_json::json!({ "url": "http://a/b", "magnet": "magnet:?" }),
    ] {
        assert_eq!(
            api.call(Method::POST, "/api/v1/downloads", Some(bad))
                .await
                .0,
            400
        );
    }
    let (s, d) = api
        .call(
            Method::POST,
            "/api/v1/downloads",
            Some(serde_json::json!({ "hit": hit })),
        )
        .await;
    assert_eq!(s, 201, "{d}");
    let id = d["id"].as_u64().unwrap();
    let done = until("the download done", async || {
        let (_, d) = api
            .call(Method::GET, &format!("/api/v1/downloads/{id}"), None)
            .await;
        assert_ne!(d["state"], "failed", "{d}");
        (d["state"] == "done").then_some(d)
    })
    .await;
    let path = done["path"].as_str().unwrap();
    assert_eq!(std::fs::read(path).unwrap(), pattern(100_000, 1));
    // The same hit as a bridged FastTrack file comes: an FTH and no SHA-1.
    // Fetched by index, checked by the FTH, which the queue keeps.
    let fth = hit["fth"]
        .as_str()
        .expect("a sharing node's hit carries its FTH");
    let mut ft_hit = hit.clone();
    ft_hit["urn"] = Value::Null;
    let (s, d) = api
        .call(
            Method::POST,
            "/api/v1/downloads",
            Some(serde_json::json!({ "hit": ft_hit, "name": "alpha by fth.ogg" })),
        )
        .await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(
        (d["urn"].is_null(), d["fth"].as_str()),
        (true, Some(fth)),
        "{d}"
    );
    let ft_id = d["id"].as_u64().unwrap();
    let done = until("the download by FTH done", async || {
        let (_, d) = api
            .call(Method::GET, &format!("/api/v1/downloads/{ft_id}"), None)
            .await;
        assert_ne!(d["state"], "failed", "{d}");
        (d["state"] == "done").then_some(d)
    })
    .await;
    assert_eq!(
        (done["urn"].is_null(), done["fth"].as_str()),
        (true, Some(fth)),
        "{done}"
    );
    let path = done["path"].as_str().unwrap();
    assert!(path.ends_with("alpha by fth.ogg"), "{path}");
    assert_eq!(std::fs::read(path).unwrap(), pattern(100_000, 1));
    // (The queue's file is written just after the state changes.)
    until("the queue's file naming the FTH", async || {
        let saved: Value =
            serde_json::from_slice(&std::fs::read(data_b.join("downloads.json")).ok()?).ok()?;
        saved["downloads"]
            .as_array()?
            .iter()
            .any(|d| {
                d["id"] == ft_id && d["fth"] == fth && d["urn"].is_null() && d["state"] == "done"
            })
            .then_some(())
    })
    .await;
    // Paused, resumed, cancelled: a download nobody can serve.
    let (s, d) = api
        .call(
            Method::POST,
            "/api/v1/downloads",
            Some(serde_json::json!({ "url": "http://127.0.0.1:9/get/1/nothing.bin" })),
        )
        .await;
    assert_eq!(s, 201);
    let id2 = d["id"].as_u64().unwrap();
    let (s, d) = api
        .call(
            Method::POST,
            &format!("/api/v1/downloads/{id2}/pause"),
            None,
        )
        .await;
    assert_eq!((s, d["state"].as_str()), (200, Some("paused")));
    let (s, d) = api
        .call(
            Method::POST,
            &format!("/api/v1/downloads/{id2}/resume"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert!(d["state"] == "queued" || d["state"] == "running", "{d}");
    assert_eq!(
        api.call(Method::POST, &format!("/api/v1/downloads/{id}/pause"), None)
            .await
            .0,
        409
    );
    assert_eq!(
        api.call(
            Method::POST,
            &format!("/api/v1/downloads/{id}/resume"),
            None
        )
        .await
        .0,
        409
    );
    let (_, list) = api.call(Method::GET, "/api/v1/downloads", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3);
    assert_eq!(
        api.call(
            Method::DELETE,
            &format!("/api/v1/downloads/{id2}?delete_part=maybe"),
            None
        )
        .await
        .0,
        400
    );
    assert_eq!(
        api.call(
            Method::DELETE,
            &format!("/api/v1/downloads/{id2}?delete_part=true"),
            None
        )
        .await
        .0,
        204
    );
    for (m, p) in [
        (Method::GET, "/api/v1/downloads/{id}"),
        (Method::DELETE, "/api/v1/downloads/{id}"),
        (Method::POST, "/api/v1/downloads/{id}/pause"),
        (Method::POST, "/api/v1/downloads/{id}/resume"),
    ] {
        let p = p.replace("{id}", &id2.to_string());
        assert_eq!(api.call(m, &p, None).await.0, 404);
    }
    api.call(Method::GET, "/api/v1/openapi.json", None).await;

    // Metrics through the strict parser.
    let (s, m) = raw(&client, Method::GET, "/metrics", None).await;
    assert_eq!(s, 200);
    let families = parse_prometheus(&String::from_utf8(m).unwrap());
    for f in [
        "servent_messages_received_total",
        "servent_messages_sent_total",
        "servent_router_dropped_total",
        "servent_messages_dropped_total",
        "servent_links",
        "servent_queries_answered_total",
        "servent_hits_routed_total",
        "servent_bytes_total",
        "servent_upload_slots",
        "servent_dynamic_queries_total",
        "servent_qrp_table_slots",
        "servent_host_cache_hosts",
        "servent_fasttrack_users",
        "servent_fasttrack_own_files",
        "servent_fasttrack_events_total",
        "servent_webcache_events_total",
    ] {
        assert!(families.contains_key(f), "{f} missing");
    }
    let links = &families["servent_links"];
    assert_eq!(links[&r#"kind="mesh""#.to_string()], 1.0);
    let bytes = &families["servent_bytes_total"];
    assert!(bytes[&r#"kind="file",direction="in""#.to_string()] >= 100_000.0);
    api.seen
        .lock()
        .unwrap()
        .insert(("GET".into(), "/metrics".into()));

    // Errors: unknown path, wrong method, bad id, too large a body.
    assert_eq!(
        raw(&client, Method::GET, "/api/v1/nothing", None).await.0,
        404
    );
    assert_eq!(
        raw(&client, Method::PUT, "/api/v1/status", None).await.0,
        405
    );
    assert_eq!(
        raw(&client, Method::GET, "/api/v1/downloads/x", None)
            .await
            .0,
        400
    );
    let big = serde_json::json!({ "words": "x".repeat(api::MAX_BODY) });
    assert_eq!(
        raw(&client, Method::POST, "/api/v1/searches", Some(big))
            .await
            .0,
        413
    );

    // Every route was called.
    let seen = api.seen.lock().unwrap().clone();
    let missed: Vec<_> = routed.difference(&seen).collect();
    assert!(missed.is_empty(), "not exercised: {missed:?}");

    for n in [a, b] {
        tokio::time::timeout(WAIT, n.shutdown()).await.unwrap();
    }
    tasks.close();
    tokio::time::timeout(WAIT, tasks.wait()).await.unwrap();
}

use std::os::unix::fs::PermissionsExt;

// ------------------------------------------------------------ metrics

/// A strict reader of the Prometheus text format (0.0.4): every sample's
/// family has a HELP and a TYPE line first, names and labels are well
/// formed, label values quoted with only the three escapes, values are
/// numbers, no series twice, counters named `_total`. Returns each family's
/// samples by their label text.
fn parse_prometheus(text: &str) -> BTreeMap<String, BTreeMap<String, f64>> {
    fn name_ok(n: &str) -> bool {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }
    let mut families: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    let mut helped = HashSet::new();
    let mut typed: BTreeMap<String, String> = BTreeMap::new();
    assert!(text.ends_with('\n'), "no final line end");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut p = rest.splitn(3, ' ');
            let (kw, name, val) = (p.next().unwrap(), p.next().unwrap(), p.next().unwrap());
            assert!(name_ok(name), "{line}");
            match kw {
                "HELP" => assert!(helped.insert(name.to_string()), "HELP twice: {line}"),
                "TYPE" => {
                    assert!(helped.contains(name), "TYPE before HELP: {line}");
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&val),
                        "{line}"
                    );
                    if val == "counter" {
                        assert!(name.ends_with("_total"), "counter {name} not _total");
                    }
                    assert!(typed.insert(name.into(), val.into()).is_none(), "{line}");
                    families.insert(name.into(), BTreeMap::new());
                }
                _ => panic!("unknown comment {line}"),
            }
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "{line:?}");
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        assert!(value.is_finite() && value >= 0.0, "{line}");
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                // label="value",... with escapes \\ \" \n only
                let mut rest = l;
                let mut names = HashSet::new();
                while !rest.is_empty() {
                    let (k, after) = rest.split_once("=\"").unwrap_or_else(|| panic!("{line}"));
                    assert!(name_ok(k) && names.insert(k), "{line}");
                    let mut chars = after.char_indices();
                    let mut end = None;
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                let (_, e) = chars.next().unwrap();
                                assert!(['\\', '"', 'n'].contains(&e), "{line}");
                            }
                            '"' => {
                                end = Some(i);
                                break;
                            }
                            '\n' => panic!("{line}"),
                            _ => {}
                        }
                    }
                    let end = end.unwrap_or_else(|| panic!("unterminated: {line}"));
                    rest = &after[end + 1..];
                    if let Some(r) = rest.strip_prefix(',') {
                        rest = r;
                        assert!(!rest.is_empty(), "{line}");
                    } else {
                        assert!(rest.is_empty(), "{line}");
                    }
                }
                (n, l.to_string())
            }
            None => (series, String::new()),
        };
        assert!(name_ok(name), "{line}");
        let f = families
            .get_mut(name)
            .unwrap_or_else(|| panic!("sample before its TYPE: {line}"));
        assert!(f.insert(labels, value).is_none(), "series twice: {line}");
    }
    families
}

#[test]
fn the_parser_is_strict() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\\\"\"} 1\n";
    assert_eq!(parse_prometheus(ok)["a_total"].len(), 1);
    for bad in [
        "a_total 1\n",
        "# HELP a x\n# TYPE a counter\na 1\n",
        "# HELP a x\n# TYPE a gauge\na{k=v} 1\n",
        "# HELP a x\n# TYPE a gauge\na{k=\"v\"} x\n",
        "# HELP a x\n# TYPE a gauge\na 1\na 2\n",
        "# HELP a x\n# TYPE a gauge\na{k=\"\\t\"} 1\n",
    ] {
        assert!(
            std::panic::catch_unwind(|| parse_prometheus(bad)).is_err(),
            "{bad:?}"
        );
    }
}

// ------------------------------------------------------------ processes

/// Starts `servent` with `args` (and `--json`), reading its `listening`
/// records: returns the child and the addresses by role.
fn start(args: &[&str], cwd: &std::path::Path) -> (Child, BTreeMap<String, String>) {
    let mut child = servent_cmd(args, cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut roles = BTreeMap::new();
    while roles.len() < 2 {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let l: Versioned<Listening> = serde_json::from_str(line.trim_end()).unwrap();
        roles.insert(l.record.role, l.record.addr.unwrap_or_default());
    }
    (child, roles)
}

fn run_client(args: &[&str], cwd: &std::path::Path) -> (i32, String, String) {
    let o = servent_cmd(args, cwd).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// An HTTP server that sends `body` slowly (`per_chunk` bytes every 20 ms),
/// honouring ranges, naming its SHA-1; counts the requests and the lowest
/// range start asked for since `reset`.
struct Trickle {
    addr: SocketAddr,
    requests: Arc<AtomicU64>,
    lowest_start: Arc<AtomicU64>,
}

fn trickle(body: Vec<u8>, per_chunk: usize) -> Trickle {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let urn = servent::wire::huge::Sha1Urn::digest(&body).to_string();
    let body = Arc::new(body);
    let requests = Arc::new(AtomicU64::new(0));
    let lowest_start = Arc::new(AtomicU64::new(u64::MAX));
    let (r, l) = (requests.clone(), lowest_start.clone());
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let (body, urn, r, l) = (body.clone(), urn.clone(), r.clone(), l.clone());
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut reader = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(&line);
                    }
                    r.fetch_add(1, Ordering::SeqCst);
                    let len = body.len() as u64;
                    let (start, end) = head
                        .lines()
                        .find_map(|h| {
                            let v = h.to_ascii_lowercase();
                            let v = v.strip_prefix("range: bytes=")?.to_string();
                            let (a, b) = v.trim().split_once('-')?;
                            let a: u64 = a.parse().ok()?;
                            let b: u64 = b.parse().unwrap_or(len - 1).min(len - 1);
                            Some((a, b))
                        })
                        .unwrap_or((0, len - 1));
                    l.fetch_min(start, Ordering::SeqCst);
                    let head_only = head.starts_with("HEAD");
                    let reply = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{len}\r\nX-Gnutella-Content-URN: {urn}\r\nContent-Type: application/octet-stream\r\n\r\n",
                        end - start + 1
                    );
                    if s.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                    if head_only {
                        continue;
                    }
                    let mut at = start as usize;
                    while at <= end as usize {
                        let n = per_chunk.min(end as usize + 1 - at);
                        if s.write_all(&body[at..at + n]).is_err() {
                            return;
                        }
                        at += n;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            });
        }
    });
    Trickle {
        addr,
        requests,
        lowest_start,
    }
}

fn get_json(api: &str, data: &std::path::Path, cwd: &std::path::Path) -> Vec<Value> {
    let (code, out, err) = run_client(
        &[
            "downloads",
            "--json",
            "--api",
            api,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        cwd,
    );
    assert_eq!(code, 0, "{err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn the_queue_survives_a_kill_and_a_restart() {
    let dir = Dir::new("api-queue");
    let data = dir.sub("data");
    let got = dir.sub("got");
    let body = pattern(1 << 20, 7);
    let server = trickle(body.clone(), 4096);
    let urn = servent::wire::huge::Sha1Urn::digest(&body);
    let magnet = format!(
        "magnet:?xt={urn}&dn=slow.bin&xl={}&xs=http://{}/get/1/slow.bin",
        body.len(),
        server.addr
    );
    let node_args = [
        "run",
        "--json",
        "--listen",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
        "--download-dir",
        got.to_str().unwrap(),
    ];
    let (mut node, roles) = start(&node_args, &dir.0);
    let api = roles["api"].clone();
    // Handed over by `get --node`.
    let (code, out, err) = run_client(
        &[
            "get",
            "--node",
            "--json",
            "--api",
            &api,
            "--data-dir",
            data.to_str().unwrap(),
            &magnet,
        ],
        &dir.0,
    );
    assert_eq!(code, 0, "{err}");
    let queued: Versioned<servent::output::Download> =
        serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(queued.record.id, Some(1));
    // Killed (SIGKILL) once part of the file is on disk, as its state says.
    let state = got.join("slow.bin.part.state");
    let end = Instant::now() + WAIT;
    loop {
        let d = &get_json(&api, &data, &dir.0)[0];
        let on_disk = std::fs::read_to_string(&state).unwrap_or_default();
        if d["done"].as_u64().unwrap() >= 128 * 1024 && !on_disk.is_empty() {
            break;
        }
        assert_ne!(d["state"], "done", "finished before the kill");
        assert!(Instant::now() < end, "no progress: {d}");
        std::thread::sleep(Duration::from_millis(50));
    }
    node.kill().unwrap();
    node.wait().unwrap();
    let saved: Value =
        serde_json::from_slice(&std::fs::read(data.join("downloads.json")).unwrap()).unwrap();
    assert_eq!(saved["downloads"][0]["state"], "queued", "{saved}");
    assert!(!got.join("slow.bin").exists());
    // Restarted: the download goes on from its .part.
    server.lowest_start.store(u64::MAX, Ordering::SeqCst);
    let (mut node, roles) = start(&node_args, &dir.0);
    let api = roles["api"].clone();
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let d = &get_json(&api, &data, &dir.0)[0];
        if d["state"] == "done" {
            break;
        }
        assert_ne!(d["state"], "failed", "{d}");
        assert!(Instant::now() < end, "not done: {d}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read(got.join("slow.bin")).unwrap(), body);
    assert!(
        server.lowest_start.load(Ordering::SeqCst) >= 64 * 1024,
        "the restarted download fetched from the start again"
    );
    assert!(server.requests.load(Ordering::SeqCst) > 0);
    node.kill().unwrap();
    node.wait().unwrap();
}

#[test]
fn the_client_commands_talk_to_the_node() {
    let dir = Dir::new("api-cli");
    let data = dir.sub("data");
    let share = dir.sub("share");
    std::fs::write(share.join("x.txt"), b"x").unwrap();
    let (mut node, roles) = start(
        &[
            "run",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--data-dir",
            data.to_str().unwrap(),
            "--share",
            share.to_str().unwrap(),
        ],
        &dir.0,
    );
    let api = roles["api"].clone();
    let d = data.to_str().unwrap();
    let flags = ["--api", api.as_str(), "--data-dir", d];
    let with = |cmd: &[&str]| {
        let mut v: Vec<&str> = cmd.to_vec();
        v.extend_from_slice(&flags);
        run_client(&v, &dir.0)
    };
    let (code, out, err) = with(&["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let s: Versioned<servent::output::Status> = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(s.kind, "status");
    let (code, out, _) = with(&["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("role\t"), "{out}");
    let (code, out, _) = with(&["peers", "--json"]);
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, out, _) = with(&["peers"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("ID\t"), "{out}");
    let (code, out, err) = with(&[
        "downloads",
        "add",
        "http://127.0.0.1:9/get/1/a.bin",
        "--json",
    ]);
    assert_eq!(code, 0, "{err}");
    let rec: Versioned<servent::output::Download> = serde_json::from_str(out.trim_end()).unwrap();
    let id = rec.record.id.unwrap().to_string();
    let (code, out, err) = with(&["downloads", "pause", &id, "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"paused\""), "{out}");
    let (code, _, err) = with(&["downloads", "resume", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = with(&["downloads"]);
    assert_eq!(code, 0);
    assert!(out.contains("a.bin"), "{out}");
    let (code, _, err) = with(&["downloads", "cancel", &id]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = with(&["downloads", "cancel", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("404"), "{err}");
    let (code, _, _) = with(&["downloads", "pause"]);
    assert_eq!(code, 2);
    // A search through the node (it has no links: no hits, and it ends).
    let (code, out, err) = with(&["search", "--node", "--json", "--timeout", "1", "x"]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    // Without the token a change is refused.
    let (code, _, err) = run_client(
        &[
            "downloads",
            "add",
            "http://127.0.0.1:9/get/1/b.bin",
            "--api",
            &api,
            "--data-dir",
            dir.0.to_str().unwrap(),
        ],
        &dir.0,
    );
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");
    node.kill().unwrap();
    node.wait().unwrap();
    // No node: a clear error.
    let (code, _, err) = with(&["status"]);
    assert_eq!(code, 1);
    assert!(err.contains("no control API answers"), "{err}");
}

#[test]
fn a_chosen_api_address_that_is_taken_is_an_error_and_no_api_means_none() {
    let dir = Dir::new("api-taken");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap().to_string();
    let data = dir.sub("data");
    let o = servent_cmd(
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--api",
            &at,
            "--data-dir",
            data.to_str().unwrap(),
        ],
        &dir.0,
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("control API"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let (mut node, roles) = {
        let mut child = servent_cmd(
            &[
                "run",
                "--json",
                "--no-api",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                data.to_str().unwrap(),
            ],
            &dir.0,
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        let l: Versioned<Listening> = serde_json::from_str(line.trim_end()).unwrap();
        // Nothing more is printed: read what is there within a moment.
        child.kill().unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        (child, (l.record.role, rest))
    };
    node.wait().unwrap();
    assert_eq!(roles.0, "node");
    assert!(!roles.1.contains("\"api\""), "{}", roles.1);
    assert!(!data.join(api::TOKEN_FILE).exists());
    drop(taken);
}

#[test]
fn the_index_serves_metrics_and_status() {
    let dir = Dir::new("api-index");
    let (mut index, roles) = start(
        &[
            "index",
            "--json",
            "--listen",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
        ],
        &dir.0,
    );
    let api = roles["api"].clone();
    let get = |path: &str| -> (u16, String) {
        let mut s = TcpStream::connect(&api).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        (head[9..12].parse().unwrap(), body.to_string())
    };
    let (code, body) = get("/metrics");
    assert_eq!(code, 200);
    let f = parse_prometheus(&body);
    for name in [
        "servent_index_users",
        "servent_index_files",
        "servent_index_searches_total",
        "servent_index_messages_total",
    ] {
        assert!(f.contains_key(name), "{name}");
    }
    let (code, body) = get("/api/v1/status");
    assert_eq!(code, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    let (_, doc) = get("/api/v1/openapi.json");
    let doc: Value = serde_json::from_str(&doc).unwrap();
    let mut errors = Vec::new();
    let schema = &doc["paths"]["/api/v1/status"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    check(&doc, schema, &v, "body", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(get("/nothing").0, 404);
    index.kill().unwrap();
    index.wait().unwrap();
}
