//! `/metrics` in the Prometheus text exposition format (version 0.0.4): each
//! family a `# HELP` and a `# TYPE` line, then its samples; label values
//! escaped (`\\`, `\"`, `\n`).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::node::MESSAGE_TYPES;
use crate::node::control::Control;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metrics page being written.
#[derive(Default)]
pub struct Page {
    out: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Page {
    /// Starts a family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// A sample of the family just started.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family of one sample without labels.
    pub fn one(&mut self, name: &str, kind: &str, help: &str, value: u64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// The node's metrics.
pub fn node(c: &Control) -> String {
    let (s, slots_used, slots, extra) = c.metrics_input();
    let types = c.message_types();
    let mut p = Page::default();

    let name = "servent_messages_received_total";
    p.family(name, "counter", "Gnutella messages received, by type.");
    for (i, t) in MESSAGE_TYPES.iter().enumerate() {
        p.sample(
            name,
            &[("type", t)],
            types.received[i].load(Ordering::Relaxed),
        );
    }
    let name = "servent_messages_sent_total";
    p.family(
        name,
        "counter",
        "Gnutella messages queued for sending, by type.",
    );
    for (i, t) in MESSAGE_TYPES.iter().enumerate() {
        p.sample(name, &[("type", t)], types.sent[i].load(Ordering::Relaxed));
    }
    let name = "servent_messages_relayed_total";
    p.family(
        name,
        "counter",
        "Messages relayed (one per target), by type.",
    );
    for (t, v) in [
        ("ping", s.relayed.pings),
        ("pong", s.relayed.pongs),
        ("query", s.relayed.queries),
        ("query_hit", s.relayed.query_hits),
        ("push", s.relayed.pushes),
    ] {
        p.sample(name, &[("type", t)], v);
    }
    let name = "servent_router_dropped_total";
    p.family(
        name,
        "counter",
        "Messages the router dropped, by class and reason.",
    );
    for (class, reason, v) in s.router.drops() {
        p.sample(name, &[("class", class), ("reason", reason)], v);
    }
    let name = "servent_router_forwarded_total";
    p.family(name, "counter", "Messages sent on, by class.");
    for (class, fwd, _) in s.router.classes() {
        p.sample(name, &[("class", class)], fwd);
    }
    let name = "servent_router_delivered_total";
    p.family(name, "counter", "Messages handled here, by class.");
    for (class, _, dl) in s.router.classes() {
        p.sample(name, &[("class", class)], dl);
    }
    let name = "servent_messages_dropped_total";
    p.family(
        name,
        "counter",
        "Messages dropped before routing or sending, by reason.",
    );
    p.sample(name, &[("reason", "malformed")], s.malformed);
    p.sample(name, &[("reason", "unknown_function")], s.unknown);
    p.sample(name, &[("reason", "send_queue_full")], s.shed);
    p.sample(
        name,
        &[("reason", "over_budget")],
        s.over_budget.iter().sum(),
    );
    let name = "servent_udp_datagrams_total";
    p.family(
        name,
        "counter",
        "Datagrams on the Gnutella UDP port, by direction.",
    );
    p.sample(name, &[("direction", "received")], s.udp.received);
    p.sample(name, &[("direction", "sent")], s.udp.sent);
    p.sample(name, &[("direction", "send_refused")], s.udp.send_refused);
    let name = "servent_udp_bytes_total";
    p.family(name, "counter", "Bytes of datagrams, by direction.");
    p.sample(name, &[("direction", "received")], s.udp.bytes_in);
    p.sample(name, &[("direction", "sent")], s.udp.bytes_out);
    let name = "servent_udp_taken_total";
    p.family(
        name,
        "counter",
        "Datagrams read and taken for handling, by message kind.",
    );
    for (kind, v) in &s.udp.taken {
        p.sample(name, &[("kind", kind)], *v);
    }
    let name = "servent_udp_dropped_total";
    p.family(name, "counter", "Datagrams dropped, by reason.");
    for (reason, v) in &s.udp.dropped {
        p.sample(name, &[("reason", reason)], *v);
    }
    let name = "servent_uhc_client_total";
    p.family(
        name,
        "counter",
        "UDP host caches asked by us: pings, answers, answers with hosts, timeouts, names not resolved, caches learned and forgotten, times the HTTP caches were due, cache addresses skipped for being our own.",
    );
    let u = &s.uhc;
    for (event, v) in [
        ("ping", u.pings),
        ("answer", u.answers),
        ("useful", u.useful),
        ("timeout", u.timeouts),
        ("unresolved", u.unresolved),
        ("learned", u.learned),
        ("forgotten", u.forgotten),
        ("fallback", u.fallbacks),
        ("self_skipped", u.self_skipped),
    ] {
        p.sample(name, &[("event", event)], v);
    }
    let name = "servent_uhc_served_total";
    p.family(
        name,
        "counter",
        "Pings by UDP answered as a host cache, hosts packed in the answers, addresses echoed, pings throttled.",
    );
    for (event, v) in [
        ("answered", u.served),
        ("packed_host", u.packed),
        ("echoed", u.echoed),
        ("throttled", u.throttled),
    ] {
        p.sample(name, &[("event", event)], v);
    }
    oob(&mut p, &s.oob);
    let name = "servent_reachable";
    p.family(
        name,
        "gauge",
        "Reachability as learned (tcp, udp unsolicited, udp solicited): 1 for the state it is in (unknown, yes, no).",
    );
    for (what, v) in [
        ("tcp", s.reach.tcp),
        ("udp", s.reach.udp),
        ("udp_solicited", s.reach.solicited),
    ] {
        let now = v.unwrap_or("unknown");
        for state in ["unknown", "yes", "no"] {
            p.sample(
                name,
                &[("what", what), ("state", state)],
                u64::from(now == state),
            );
        }
    }
    let name = "servent_connect_backs_total";
    p.family(
        name,
        "counter",
        "Connect-back requests: asked of peers, answered for peers, refused, by kind or reason.",
    );
    for (kind, v) in &s.reach.asked {
        p.sample(name, &[("direction", "asked"), ("kind", kind)], *v);
    }
    for (kind, v) in &s.reach.answered {
        p.sample(name, &[("direction", "answered"), ("kind", kind)], *v);
    }
    for (reason, v) in &s.reach.refused {
        p.sample(name, &[("direction", "refused"), ("kind", reason)], *v);
    }
    let name = "servent_guess_server_total";
    p.family(
        name,
        "counter",
        "GUESS as a server: keys handed out, queries answered, hits sent, refusals by reason.",
    );
    let gs = &s.guess;
    for (what, v) in [
        ("keys_sent", gs.keys_sent),
        ("queries_answered", gs.queries_answered),
        ("hits_sent", gs.hits_sent),
        ("to_leaves", gs.to_leaves),
        ("leaf_hits_relayed", gs.leaf_hits_relayed),
        ("bad_key", gs.bad_keys),
        ("no_key", gs.no_keys),
        ("not_served", gs.refused),
        ("throttled", gs.throttled),
        ("repeated", gs.repeated),
    ] {
        p.sample(name, &[("event", what)], v);
    }
    let name = "servent_guess_client_total";
    p.family(
        name,
        "counter",
        "GUESS as a client: searches gone on by GUESS, key requests, queries, answers.",
    );
    let gc = &s.guess.client;
    for (what, v) in [
        ("searches", gc.started),
        ("key_requests", gc.key_requests),
        ("keys", gc.keys),
        ("queries", gc.queries),
        ("acks", gc.acks),
        ("hits", gc.hits),
        ("results", gc.results),
        ("timeouts", gc.timeouts),
    ] {
        p.sample(name, &[("event", what)], v);
    }
    p.one(
        "servent_guess_hosts",
        "gauge",
        "GUESS ultrapeers known.",
        s.guess.hosts as u64,
    );
    let name = "servent_links";
    p.family(name, "gauge", "Open Gnutella links, by kind.");
    p.sample(name, &[("kind", "to_ultrapeer")], s.to_ultrapeers as u64);
    p.sample(name, &[("kind", "leaf")], s.leaves as u64);
    p.sample(name, &[("kind", "mesh")], s.mesh_links as u64);
    p.one(
        "servent_ultrapeer",
        "gauge",
        "1 while the node is an ultrapeer.",
        s.ultrapeer as u64,
    );
    p.one(
        "servent_queries_answered_total",
        "counter",
        "QueryHit messages sent in answer to queries.",
        s.hits_sent,
    );
    p.one(
        "servent_hits_routed_total",
        "counter",
        "QueryHit messages routed for others.",
        s.relayed.query_hits,
    );
    let name = "servent_bytes_total";
    p.family(name, "counter", "Bytes moved, by kind and direction.");
    p.sample(
        name,
        &[("kind", "gnutella"), ("direction", "in")],
        extra["gnutella_in"],
    );
    p.sample(
        name,
        &[("kind", "gnutella"), ("direction", "out")],
        extra["gnutella_out"],
    );
    p.sample(
        name,
        &[("kind", "file"), ("direction", "out")],
        extra["upload"],
    );
    p.sample(
        name,
        &[("kind", "file"), ("direction", "in")],
        extra["download"],
    );
    let name = "servent_hsep_horizon";
    p.family(
        name,
        "gauge",
        "What HSEP links report we reach within so many hops, ourselves not counted.",
    );
    for (i, t) in s.horizon.iter().enumerate() {
        let hops = (i + 1).to_string();
        p.sample(name, &[("hops", &hops), ("kind", "hosts")], t.hosts);
        p.sample(name, &[("hops", &hops), ("kind", "files")], t.files);
        p.sample(name, &[("hops", &hops), ("kind", "kib")], t.kib);
    }
    let name = "servent_hsep_messages_total";
    p.family(name, "counter", "HSEP messages, by direction.");
    p.sample(name, &[("direction", "in")], s.hsep_received);
    p.sample(name, &[("direction", "out")], s.hsep_sent);
    p.one(
        "servent_hsep_dropped_total",
        "counter",
        "HSEP messages dropped: from a link that did not announce HSEP, too soon, or a leaf's with more than its own triple.",
        s.hsep_dropped,
    );
    let name = "servent_leaf_guidance_total";
    p.family(
        name,
        "counter",
        "Leaf-guided dynamic querying: status requests (BEAR/11) sent to leaves, answers (BEAR/12) taken from them, requests answered as a leaf, and either dropped.",
    );
    p.sample(name, &[("event", "asked")], s.guidance_asked);
    p.sample(name, &[("event", "received")], s.guidance_received);
    p.sample(name, &[("event", "answered")], s.guidance_answered);
    p.sample(name, &[("event", "dropped")], s.guidance_dropped);
    let name = "servent_browses_total";
    p.family(name, "counter", "Browses of our shared files, by outcome.");
    let (served, too_often, busy) = c.browse_counts();
    p.sample(name, &[("outcome", "served")], served);
    p.sample(name, &[("outcome", "too_often")], too_often);
    p.sample(name, &[("outcome", "busy")], busy);
    let name = "servent_upload_slots";
    p.family(name, "gauge", "Upload slots, in use and in all.");
    p.sample(name, &[("state", "used")], slots_used as u64);
    p.sample(name, &[("state", "total")], slots as u64);
    p.one(
        "servent_dynamic_queries_total",
        "counter",
        "Dynamic queries started for leaves.",
        s.dynamic_queries,
    );
    p.one(
        "servent_dynamic_queries_running",
        "gauge",
        "Dynamic queries running now.",
        s.dynamic_running as u64,
    );
    let name = "servent_qrp_table_slots";
    p.family(name, "gauge", "Our QRP table: slots present, and in all.");
    p.sample(name, &[("state", "present")], extra["qrp_present"]);
    p.sample(name, &[("state", "total")], extra["qrp_slots"]);
    p.one(
        "servent_host_cache_hosts",
        "gauge",
        "Hosts in the host cache.",
        s.hosts as u64,
    );
    let ft = c.fasttrack().status();
    p.one(
        "servent_fasttrack_users",
        "gauge",
        "FastTrack users logged in to the supernode.",
        ft.users as u64,
    );
    p.one(
        "servent_fasttrack_files",
        "gauge",
        "Files FastTrack users share with the supernode.",
        ft.files as u64,
    );
    p.one(
        "servent_fasttrack_own_files",
        "gauge",
        "The node's own files offered to FastTrack users (none while no user is logged in).",
        ft.own_files as u64,
    );
    let name = "servent_fasttrack_events_total";
    p.family(
        name,
        "counter",
        "FastTrack supernode events: sessions, shares, searches, pushes, and every drop by reason.",
    );
    for (event, v) in &ft.counters {
        p.sample(name, &[("event", event)], *v);
    }
    let name = "servent_webcache_events_total";
    p.family(
        name,
        "counter",
        "HTTP bootstrap: requests to host caches and how they went, hosts and caches learned or dropped by reason, updates.",
    );
    for (event, v) in c.webcache_stats().counters() {
        p.sample(name, &[("event", event)], v);
    }
    p.finish()
}

/// Out-of-band hits, as responder, querier and proxy.
fn oob(p: &mut Page, o: &crate::core::oob::OobStats) {
    let name = "servent_oob_total";
    p.family(
        name,
        "counter",
        "Out-of-band hits: offers, claims, hits and results, by event.",
    );
    for (event, v) in [
        ("offered", o.offered),
        ("claimed", o.claimed),
        ("hits_sent", o.hits_sent),
        ("results_sent", o.results_sent),
        ("unclaimed", o.unclaimed),
        ("hold_refused", o.hold_refused),
        ("marked", o.marked),
        ("proxied", o.proxied),
        ("relayed", o.relayed),
        ("acks_sent", o.acks_sent),
        ("hits_received", o.hits_received),
        ("results_received", o.results_received),
        ("forged", o.forged),
        ("to_leaves", o.to_leaves),
    ] {
        p.sample(name, &[("event", event)], v);
    }
}
