// The node's web page: plain DOM, no framework. Every string that came from
// the network (file names, vendors, paths, errors) goes in with textContent,
// never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "servent-token";

// The token: from the link the node printed (#token=...), which is then taken
// out of the address bar, or from localStorage, or pasted by the user.
let token = "";
try { token = localStorage.getItem(KEY) || ""; } catch (_) { /* storage off */ }
{
  const m = /(?:^#|&)token=([A-Za-z0-9_-]+)/.exec(location.hash);
  if (m) {
    saveToken(m[1]);
    history.replaceState(null, "", location.pathname + location.search);
  }
}

function saveToken(t) {
  token = t;
  try { localStorage.setItem(KEY, t); } catch (_) { /* kept for this page only */ }
}

function headers(json) {
  const h = {};
  if (token) h.Authorization = "Bearer " + token;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

class ApiError extends Error {}

async function api(method, path, body) {
  const r = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  if (r.status === 401) {
    $("login").hidden = false;
    throw new ApiError(token ? "the node refused the token (it changes at each start)" : "this needs the token");
  }
  const text = await r.text();
  const v = text ? JSON.parse(text) : null;
  if (!r.ok) throw new ApiError((v && v.error) || r.status + " " + r.statusText);
  return v;
}

// An element with a class and text, and children.
function el(tag, cls, text, ...kids) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  for (const k of kids) if (k) e.append(k);
  return e;
}

function button(label, onClick, cls) {
  const b = el("button", cls || "small", label);
  b.type = "button";
  b.addEventListener("click", () => {
    b.disabled = true;
    Promise.resolve(onClick(b)).catch(showError).finally(() => { if (b.isConnected) b.disabled = false; });
  });
  return b;
}

let errorTimer = 0;
function showError(e) {
  const p = $("error");
  p.textContent = e instanceof ApiError ? e.message : "cannot reach the node (" + e.message + ")";
  p.hidden = false;
  clearTimeout(errorTimer);
  errorTimer = setTimeout(() => { p.hidden = true; }, 6000);
}

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const u = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + u[i];
}

function age(s) {
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor((s % 86400) / 3600) + "h";
}

// Replaces a list's rows only when its data changed (buttons keep working
// between polls).
const shown = new Map();
function fill(list, items, row, empty) {
  const key = JSON.stringify(items);
  if (shown.get(list.id) === key) return;
  shown.set(list.id, key);
  list.replaceChildren(...(items.length ? items.map(row) : [el("li", "muted", empty)]));
}

// ---------------------------------------------------------------- status

async function status() {
  const s = await api("GET", "/api/v1/status");
  const l = s.links;
  const parts = [
    s.role + (s.firewalled ? " (firewalled)" : ""),
    "up " + age(s.uptime_secs),
    l.total + (l.total === 1 ? " link" : " links"),
    s.library.files + " files shared (" + bytes(s.library.bytes) + ")" +
      (s.library.hashing_pending ? ", " + s.library.hashing_pending + " hashing" : ""),
    "↓ " + bytes(s.bandwidth.download) + " ↑ " + bytes(s.bandwidth.upload),
    "uploads " + s.uploads.active + "/" + s.uploads.slots,
    s.hosts + " hosts known",
  ];
  $("status").textContent = parts.join(" · ");
}

// ---------------------------------------------------------------- peers

async function peers() {
  const p = await api("GET", "/api/v1/peers");
  fill($("peers"), p.items, (x) => el("li", "",
    undefined,
    el("span", "name", x.addr),
    el("span", "meta", [
      x.user_agent || "?", x.kind, x.inbound ? "in" : "out", age(x.age_secs),
      x.msgs_in + "/" + x.msgs_out + " msgs", bytes(x.bytes_in) + "/" + bytes(x.bytes_out),
    ].join(" · "))), "no links yet");
}

// ---------------------------------------------------------------- shares

async function shares() {
  const s = await api("GET", "/api/v1/shares");
  fill($("shares"), s.items, (x) => el("li", "split", undefined,
    el("span", "name", x.path),
    button("Remove", async () => {
      await api("DELETE", "/api/v1/shares?path=" + encodeURIComponent(x.path));
      await shares();
    })), "nothing shared");
}

$("share-add").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const path = $("share-path").value.trim();
  if (!path) return;
  try {
    await api("POST", "/api/v1/shares", { path });
    $("share-path").value = "";
    await shares();
  } catch (e) { showError(e); }
});

$("rescan").addEventListener("click", () => {
  api("POST", "/api/v1/shares/rescan").then(status).catch(showError);
});

// ---------------------------------------------------------------- search

let search = null; // { id, abort, seen, count }

$("search").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const words = $("words").value.trim();
  if (!words) return;
  stopSearch();
  $("hits").replaceChildren();
  $("search-info").textContent = "searching…";
  try {
    const s = await api("POST", "/api/v1/searches", { words });
    search = { id: s.id, abort: new AbortController(), seen: new Set(), count: 0 };
    events(search).catch((e) => { if (e.name !== "AbortError") showError(e); });
  } catch (e) {
    $("search-info").textContent = "";
    showError(e);
  }
});

function stopSearch() {
  if (!search) return;
  search.abort.abort();
  api("DELETE", "/api/v1/searches/" + encodeURIComponent(search.id)).catch(() => {});
  search = null;
}

function info(s, ended) {
  $("search-info").textContent = s.count + (s.count === 1 ? " result" : " results") +
    (ended ? " (search ended)" : ", listening for more…");
}

// The server-sent events of a search, read with fetch so that the token can
// go in a header when the node asks for one.
async function events(s) {
  const r = await fetch("/api/v1/searches/" + encodeURIComponent(s.id) + "/events", {
    headers: headers(false), signal: s.abort.signal, cache: "no-store",
  });
  if (!r.ok) throw new ApiError("the result stream failed: " + r.status);
  info(s, false);
  const reader = r.body.getReader();
  const dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      let type = "message";
      let data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) type = line.slice(6).trim();
        else if (line.startsWith("data:")) data += line.slice(5).trim();
      }
      if (type === "hit") addHit(s, JSON.parse(data));
      else if (type === "end") { info(s, true); return; }
    }
  }
  info(s, true);
}

const MAX_HITS = 500;

function addHit(s, hit) {
  const g = hit.gnutella || {};
  const key = [hit.host, hit.port, g.index, hit.urn, hit.name].join("\u0000");
  if (s.seen.has(key) || s.count >= MAX_HITS) return;
  s.seen.add(key);
  s.count++;
  info(s, false);
  delete hit.v;
  delete hit.type;
  let action;
  if (hit.network !== "gnutella") action = el("span", "muted", "napster");
  else if (g.push) action = el("span", "muted", "firewalled");
  else {
    action = button("Download", async (b) => {
      await api("POST", "/api/v1/downloads", { hit });
      b.textContent = "Queued";
      b.classList.add("done");
      await downloads();
    });
  }
  const li = el("li", "split hit", undefined,
    el("div", "", undefined,
      el("span", "name", hit.name),
      el("span", "meta", [bytes(hit.size), hit.host + (hit.port ? ":" + hit.port : ""),
        g.busy ? "busy" : ""].filter(Boolean).join(" · "))),
    action);
  $("hits").append(li);
}

// ---------------------------------------------------------------- downloads

async function downloads() {
  const d = await api("GET", "/api/v1/downloads");
  fill($("downloads"), d.items, download, "none");
  return d.items;
}

function download(d) {
  const pct = d.size ? Math.min(100, Math.floor((100 * d.done) / d.size)) : 0;
  const bar = el("progress");
  bar.max = d.size || 1;
  bar.value = d.state === "done" ? bar.max : d.done;
  const meta = [d.state, d.size ? pct + "%" : "", bytes(d.done) + " / " + bytes(d.size)];
  if (d.state === "running") meta.push(bytes(d.bytes_per_sec) + "/s", d.sources_active + " sources");
  if (d.error) meta.push(d.error);
  const acts = el("span", "acts");
  const url = "/api/v1/downloads/" + encodeURIComponent(d.id);
  if (d.state === "running" || d.state === "queued") {
    acts.append(button("Pause", () => api("POST", url + "/pause").then(downloads)));
  }
  if (d.state === "paused" || d.state === "failed" || d.state === "interrupted") {
    acts.append(button("Resume", () => api("POST", url + "/resume").then(downloads)));
  }
  acts.append(d.state === "done"
    ? button("Remove", () => api("DELETE", url).then(downloads))
    : button("Cancel", () => api("DELETE", url + "?delete_part=true").then(downloads), "small danger"));
  const li = el("li", "dl", undefined,
    el("div", "split", undefined, el("span", "name", d.name || d.urn || "?"), acts),
    bar,
    el("span", "meta", meta.filter(Boolean).join(" · ")));
  li.dataset.id = d.id;
  li.dataset.state = d.state;
  return li;
}

// ---------------------------------------------------------------- login

$("login").hidden = !!token;
$("login").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const t = $("token").value.trim();
  if (!t) return;
  saveToken(t);
  $("token").value = "";
  $("login").hidden = true;
  tick();
});

// ---------------------------------------------------------------- polling

let slow = 0;
async function tick() {
  if (document.hidden) return;
  const jobs = [downloads()];
  if (slow++ % 3 === 0) jobs.push(status(), peers(), shares());
  const r = await Promise.allSettled(jobs);
  const bad = r.find((x) => x.status === "rejected");
  if (bad && !(bad.reason instanceof ApiError && !token)) showError(bad.reason);
}

document.addEventListener("visibilitychange", () => { if (!document.hidden) { slow = 0; tick(); } });
addEventListener("pagehide", stopSearch);
setInterval(tick, 1000);
tick();
