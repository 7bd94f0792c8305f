//! The OpenAPI 3.1 documents of the node's API and of the index's, written
//! by hand. `tests/api.rs` holds them to the routes (`node::ROUTES`) and to
//! what the endpoints answer (every required field, every field's type).

use serde_json::{Value, json};

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A single record: the envelope and the record's fields.
fn one(name: &str) -> Value {
    json!({ "allOf": [r("Envelope"), r(name)] })
}

/// A list of records.
fn list(name: &str) -> Value {
    json!({ "allOf": [r("Envelope"), {
        "type": "object",
        "required": ["items"],
        "properties": { "items": { "type": "array", "items": r(name) } }
    }]})
}

fn body(schema: Value, description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

fn err(description: &str) -> Value {
    body(one("Error"), description)
}

fn nullable(t: &str) -> Value {
    json!({ "type": [t, "null"] })
}

fn int() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn boolean() -> Value {
    json!({ "type": "boolean" })
}

fn id_param() -> Value {
    json!({ "name": "id", "in": "path", "required": true, "schema": int() })
}

fn auth() -> Value {
    json!([{ "bearer": [] }])
}

/// The schemas shared by the node's and the index's documents.
fn schemas() -> Value {
    json!({
        "Envelope": {
            "type": "object",
            "description": "Every record carries the shape's version and its kind.",
            "required": ["v", "type"],
            "properties": { "v": { "type": "integer", "const": 1 }, "type": string() }
        },
        "Error": {
            "type": "object",
            "required": ["status", "error"],
            "properties": { "status": int(), "error": string() }
        },
        "Status": {
            "type": "object",
            "required": ["role", "uptime_secs", "guid", "listen", "firewalled", "links", "library",
                         "bandwidth", "uploads", "downloads", "hosts", "horizon"],
            "properties": {
                "role": { "type": "string", "enum": ["leaf", "ultrapeer"] },
                "uptime_secs": int(),
                "guid": string(),
                "listen": nullable("string"),
                "firewalled": boolean(),
                "links": r("LinkCounts"),
                "library": r("LibraryCounts"),
                "bandwidth": r("Bandwidth"),
                "uploads": r("SlotCounts"),
                "downloads": r("QueueCounts"),
                "hosts": int(),
                "reach": r("Reachability"),
                "horizon": r("Horizon")
            }
        },
        "Reachability": {
            "type": "object",
            "description": "What the node learned of its reachability: unknown (not tested yet), yes or no.",
            "required": ["tcp", "udp", "udp_solicited", "external_ip"],
            "properties": {
                "tcp": { "type": "string", "enum": ["unknown", "yes", "no"] },
                "udp": { "type": "string", "enum": ["unknown", "yes", "no"] },
                "udp_solicited": { "type": "string", "enum": ["unknown", "yes", "no"] },
                "external_ip": nullable("string")
            }
        },
        "Horizon": {
            "type": "object",
            "description": "What the node reaches within HSEP's ten hops, itself not counted.",
            "required": ["hosts", "files", "kib"],
            "properties": { "hosts": int(), "files": int(), "kib": int() }
        },
        "LinkCounts": {
            "type": "object",
            "required": ["to_ultrapeers", "leaves", "mesh", "total"],
            "properties": { "to_ultrapeers": int(), "leaves": int(), "mesh": int(), "total": int() }
        },
        "LibraryCounts": {
            "type": "object",
            "required": ["files", "bytes", "hashing_pending"],
            "properties": { "files": int(), "bytes": int(), "hashing_pending": int() }
        },
        "Bandwidth": {
            "type": "object",
            "description": "Bytes since the start: Gnutella frames in and out, file bytes uploaded and downloaded by the queue.",
            "required": ["gnutella_in", "gnutella_out", "upload", "download"],
            "properties": { "gnutella_in": int(), "gnutella_out": int(), "upload": int(), "download": int() }
        },
        "SlotCounts": {
            "type": "object",
            "required": ["active", "slots"],
            "properties": { "active": int(), "slots": int() }
        },
        "QueueCounts": {
            "type": "object",
            "required": ["running", "queued", "paused", "max_running"],
            "properties": { "running": int(), "queued": int(), "paused": int(), "max_running": int() }
        },
        "Peer": {
            "type": "object",
            "required": ["id", "addr", "listen", "user_agent", "kind", "inbound", "age_secs",
                         "msgs_in", "msgs_out", "bytes_in", "bytes_out", "drops"],
            "properties": {
                "id": int(),
                "addr": string(),
                "listen": nullable("string"),
                "user_agent": nullable("string"),
                "kind": { "type": "string", "enum": ["to_ultrapeer", "leaf", "ultrapeer", "flat"] },
                "inbound": boolean(),
                "age_secs": int(),
                "msgs_in": int(), "msgs_out": int(), "bytes_in": int(), "bytes_out": int(),
                "drops": { "type": "object", "additionalProperties": int(),
                           "description": "Messages from this peer dropped, by reason." }
            }
        },
        "SharedFile": {
            "type": "object",
            "required": ["index", "name", "path", "size", "urn"],
            "properties": { "index": int(), "name": string(), "path": string(), "size": int(),
                            "urn": nullable("string") }
        },
        "Host": {
            "type": "object",
            "required": ["addr", "seen", "ultrapeer", "leaf", "failures"],
            "properties": { "addr": string(), "seen": int(), "ultrapeer": boolean(),
                            "leaf": boolean(), "failures": int() }
        },
        "Upload": {
            "type": "object",
            "required": ["addr", "name", "urn", "start", "length", "sent", "age_secs"],
            "properties": { "addr": string(), "name": string(), "urn": nullable("string"),
                            "start": int(), "length": int(), "sent": int(), "age_secs": int() }
        },
        "Share": {
            "type": "object",
            "required": ["path"],
            "properties": { "path": string() }
        },
        "Search": {
            "type": "object",
            "required": ["id", "query", "active", "age_secs", "sent_to", "hits"],
            "properties": { "id": int(), "query": string(), "active": boolean(),
                            "age_secs": int(), "sent_to": int(), "hits": int() }
        },
        "SearchResults": {
            "type": "object",
            "required": ["search", "items"],
            "properties": { "search": r("Search"), "items": { "type": "array", "items": r("Hit") } }
        },
        "Hit": {
            "type": "object",
            "description": "A search result, the same record `servent search --json` prints (without v and type inside lists).",
            "required": ["network", "name", "size", "urn", "host", "port"],
            "properties": {
                "network": { "type": "string", "enum": ["gnutella", "napster"] },
                "name": string(), "size": int(), "urn": nullable("string"),
                "fth": { "type": "string", "pattern": "^[0-9a-fA-F]{40}$" },
                "host": string(), "port": nullable("integer"),
                "gnutella": r("GnutellaHit")
            }
        },
        "GnutellaHit": {
            "type": "object",
            "required": ["index", "servent_guid", "push", "busy"],
            "properties": { "index": int(), "servent_guid": string(), "push": boolean(), "busy": boolean() }
        },
        "Download": {
            "type": "object",
            "description": "A download, the same record `servent get --json` prints.",
            "required": ["state", "name", "path", "urn", "size", "done", "bytes_per_sec",
                         "sources_active", "sources_known", "sources", "error"],
            "properties": {
                "id": int(),
                "state": { "type": "string",
                           "enum": ["queued", "paused", "running", "done", "failed", "interrupted"] },
                "name": nullable("string"), "path": nullable("string"), "urn": nullable("string"),
                "fth": { "type": "string", "pattern": "^[0-9a-f]{40}$" },
                "size": nullable("integer"), "done": int(), "bytes_per_sec": int(),
                "sources_active": int(), "sources_known": int(),
                "sources": { "type": "array", "items": r("SourceBytes") },
                "error": nullable("string")
            }
        },
        "SourceBytes": {
            "type": "object",
            "required": ["source", "bytes"],
            "properties": { "source": string(), "bytes": int() }
        },
        "NewSearch": {
            "type": "object",
            "description": "Exactly one of words and urn.",
            "properties": { "words": string(), "urn": { "type": "string", "pattern": "^urn:sha1:" } },
            "additionalProperties": false
        },
        "NewDownload": {
            "type": "object",
            "description": "Exactly one of hit (a Hit from a search), magnet and url; name: the file's name in the download directory (default: the hit's, the magnet's dn, the URL's).",
            "properties": { "hit": r("Hit"), "magnet": string(), "url": string(), "name": string() },
            "additionalProperties": false
        },
        "ShareBody": {
            "type": "object",
            "required": ["path"],
            "properties": { "path": string() },
            "additionalProperties": false
        },
        "IndexStatus": {
            "type": "object",
            "required": ["uptime_secs", "users", "files", "searches", "messages"],
            "properties": { "uptime_secs": int(), "users": int(), "files": int(),
                            "searches": int(), "messages": int() }
        }
    })
}

fn metrics_path() -> Value {
    json!({ "get": {
        "summary": "Metrics in the Prometheus text format (0.0.4).",
        "responses": { "200": { "description": "The metrics.",
            "content": { "text/plain": { "schema": string() } } } }
    }})
}

fn info(title: &str) -> Value {
    json!({ "title": title, "version": "1",
            "description": "JSON records as `servent ... --json` prints them ({\"v\":1,\"type\":...}). Changes (POST, PUT, DELETE) need `Authorization: Bearer <token>`, the token being in `api-token` in the data directory; GETs are open on a loopback address. On a loopback address a request whose Host is not a loopback name or IP is refused (403, DNS rebinding), and so is a change whose Origin is not the API's own (403, cross-site requests). The node's web page is at `/`. See protocol-spec/control-api.md." })
}

fn components() -> Value {
    json!({
        "schemas": schemas(),
        "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } }
    })
}

/// The node's document.
pub fn node_document() -> Value {
    let unauthorized = err("No or a wrong token.");
    json!({
        "openapi": "3.1.0",
        "info": info("servent node control API"),
        "components": components(),
        "paths": {
            "/api/v1/openapi.json": { "get": {
                "summary": "This document.",
                "responses": { "200": { "description": "The document.",
                    "content": { "application/json": { "schema": { "type": "object" } } } } }
            }},
            "/api/v1/status": { "get": {
                "summary": "Role, uptime, addresses, links by kind, library size and hashing progress, bandwidth, slots, queue.",
                "responses": { "200": body(one("Status"), "The status.") }
            }},
            "/api/v1/peers": { "get": {
                "summary": "Every Gnutella link with its traffic and drops.",
                "responses": { "200": body(list("Peer"), "The links.") }
            }},
            "/api/v1/library": { "get": {
                "summary": "The shared files, in index order.",
                "parameters": [
                    { "name": "offset", "in": "query", "schema": int() },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 10000, "default": 1000 } }
                ],
                "responses": { "200": body(list("SharedFile"), "The files."),
                               "400": err("A bad offset or limit.") }
            }},
            "/api/v1/hosts": { "get": {
                "summary": "The host cache, most recently heard of first.",
                "responses": { "200": body(list("Host"), "The hosts.") }
            }},
            "/api/v1/uploads": { "get": {
                "summary": "Uploads in progress.",
                "responses": { "200": body(list("Upload"), "The uploads.") }
            }},
            "/api/v1/shares": {
                "get": { "summary": "The shared directories.",
                         "responses": { "200": body(list("Share"), "The directories.") } },
                "post": { "summary": "Shares a directory (scanned at once).",
                          "security": auth(),
                          "requestBody": { "required": true, "content": { "application/json": { "schema": r("ShareBody") } } },
                          "responses": { "201": body(one("Share"), "Shared."),
                                         "400": err("Not a directory, or shared already."),
                                         "401": unauthorized.clone() } },
                "delete": { "summary": "Stops sharing a directory (its files leave the library at once).",
                            "security": auth(),
                            "parameters": [ { "name": "path", "in": "query", "required": true, "schema": string() } ],
                            "responses": { "204": { "description": "No longer shared." },
                                           "400": err("No path given."),
                                           "404": err("Not shared."),
                                           "401": unauthorized.clone() } }
            },
            "/api/v1/shares/rescan": { "post": {
                "summary": "Rescans the shares now.",
                "security": auth(),
                "responses": { "202": { "description": "Rescan started." }, "401": unauthorized.clone() }
            }},
            "/api/v1/searches": {
                "get": { "summary": "The searches kept (32 at most, the oldest dropped first).",
                         "responses": { "200": body(list("Search"), "The searches.") } },
                "post": { "summary": "Starts a search by words or by URN; it takes hits for ten minutes (1000 at most).",
                          "security": auth(),
                          "requestBody": { "required": true, "content": { "application/json": { "schema": r("NewSearch") } } },
                          "responses": { "201": body(one("Search"), "Started; Location names it."),
                                         "400": err("Bad words or URN."),
                                         "401": unauthorized.clone() } }
            },
            "/api/v1/searches/{id}": {
                "parameters": [id_param()],
                "get": { "summary": "A search and its hits.",
                         "responses": { "200": body(one("SearchResults"), "The hits."),
                                        "404": err("No such search.") } },
                "delete": { "summary": "Stops a search and forgets it.",
                            "security": auth(),
                            "responses": { "204": { "description": "Stopped." },
                                           "404": err("No such search."),
                                           "401": unauthorized.clone() } }
            },
            "/api/v1/searches/{id}/events": {
                "parameters": [id_param()],
                "get": { "summary": "Server-sent events: `event: hit` (data: a Hit record line) for every hit so far and each new one, `event: end` when the search ends, `: alive` comments every 15 s.",
                         "responses": { "200": { "description": "The event stream.",
                                                 "content": { "text/event-stream": { "schema": string() } } },
                                        "404": err("No such search.") } }
            },
            "/api/v1/downloads": {
                "get": { "summary": "The download queue, oldest first.",
                         "responses": { "200": body(list("Download"), "The downloads.") } },
                "post": { "summary": "Queues a download of a hit, a magnet link or an http:// URL.",
                          "security": auth(),
                          "requestBody": { "required": true, "content": { "application/json": { "schema": r("NewDownload") } } },
                          "responses": { "201": body(one("Download"), "Queued; Location names it."),
                                         "400": err("Nothing to download, or a bad hit, magnet or URL."),
                                         "409": err("The same file is being downloaded already."),
                                         "503": err("The queue is full."),
                                         "401": unauthorized.clone() } }
            },
            "/api/v1/downloads/{id}": {
                "parameters": [id_param()],
                "get": { "summary": "One download.",
                         "responses": { "200": body(one("Download"), "The download."),
                                        "404": err("No such download.") } },
                "delete": { "summary": "Cancels a download and removes it from the queue. Its .part and .part.state are kept (adding the same download again resumes from them) unless delete_part=true; a finished file is never removed.",
                            "security": auth(),
                            "parameters": [ { "name": "delete_part", "in": "query", "schema": boolean() } ],
                            "responses": { "204": { "description": "Cancelled." },
                                           "400": err("A bad delete_part."),
                                           "404": err("No such download."),
                                           "401": unauthorized.clone() } }
            },
            "/api/v1/downloads/{id}/pause": {
                "parameters": [id_param()],
                "post": { "summary": "Stops a download (or holds a failed one) until resumed, keeping its .part.",
                          "security": auth(),
                          "responses": { "200": body(one("Download"), "Paused."),
                                         "404": err("No such download."),
                                         "409": err("It is done."),
                                         "401": unauthorized.clone() } }
            },
            "/api/v1/downloads/{id}/resume": {
                "parameters": [id_param()],
                "post": { "summary": "Queues a paused or failed download again.",
                          "security": auth(),
                          "responses": { "200": body(one("Download"), "Queued again."),
                                         "404": err("No such download."),
                                         "409": err("It is done."),
                                         "401": unauthorized } }
            },
            "/metrics": metrics_path()
        }
    })
}

/// The Napster index's document (`servent index --api`).
pub fn index_document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": info("servent index control API"),
        "components": components(),
        "paths": {
            "/api/v1/openapi.json": { "get": {
                "summary": "This document.",
                "responses": { "200": { "description": "The document.",
                    "content": { "application/json": { "schema": { "type": "object" } } } } }
            }},
            "/api/v1/status": { "get": {
                "summary": "Users online, files shared, searches and messages since the start.",
                "responses": { "200": body(one("IndexStatus"), "The status.") }
            }},
            "/metrics": metrics_path()
        }
    })
}
