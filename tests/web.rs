//! The web page end to end, in headless Chromium driven over the DevTools
//! protocol: two `servent run` nodes on loopback (the page's node shares a
//! file, its peer has the file to find), the page loaded from the link that
//! `run` prints, a search typed in, the result clicked, the queue watched
//! until the download is done, and the file's bytes checked; shares added and
//! removed through the page; a hostile file name shown as text. Screenshots
//! go to `target/web-screenshots/`. Also the `Host` and `Origin` checks, over
//! plain HTTP.
//!
//! Without a Chromium (`chromium`, `chromium-browser`, or `SERVENT_CHROMIUM`)
//! the browser test says so and passes, unless `SERVENT_REQUIRE_BROWSER=1`
//! (which `.ci/run` sets once it has installed one). Loopback only, ports
//! chosen by the system, every wait bounded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{Dir, pattern, servent_cmd};

/// Longest wait for anything.
const WAIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------ nodes

/// A `servent run --json` process, killed when dropped.
struct Node {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    gnutella: SocketAddr,
    api: SocketAddr,
    data: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a node sharing `share`, its API on a free loopback port.
fn node(dir: &Dir, name: &str, share: &Path, extra: &[&str]) -> Node {
    let data = dir.sub(&format!("{name}-data"));
    let mut args = vec![
        "run",
        "--json",
        "--listen",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
        "--share",
        share.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let mut child = servent_cmd(&args, &dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut gnutella, mut api) = (None, None);
    while gnutella.is_none() || api.is_none() {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the node ended before it said where it listens"
        );
        let v: Value = serde_json::from_str(&line).unwrap();
        let addr = v["addr"].as_str().and_then(|a| a.parse().ok());
        match v["role"].as_str() {
            Some("node") => gnutella = addr,
            Some("api") => api = addr,
            _ => {}
        }
    }
    Node {
        child,
        _stdout: stdout,
        gnutella: gnutella.unwrap(),
        api: api.unwrap(),
        data,
    }
}

/// One HTTP/1.1 request on a fresh connection: the status and the body.
fn http(addr: SocketAddr, head: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let out = String::from_utf8_lossy(&out).into_owned();
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map_or("", |x| x.1).to_string();
    (status, body)
}

fn get_json(addr: SocketAddr, path: &str) -> Value {
    let (status, body) = http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// Polls `f` until it holds, for at most [`WAIT`].
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The page's node (sharing one file) and a peer of it sharing `wanted`.
struct Nodes {
    dir: Dir,
    page: Node,
    _peer: Node,
    downloads: PathBuf,
}

/// The file to find: a name that would be markup if put in as HTML.
const WANTED_NAME: &str = "<img src=x onerror=window.pwned=1> sunflower field.bin";

fn nodes(wanted: &[u8]) -> Nodes {
    let dir = Dir::new("web");
    let peer_share = dir.sub("peer-share");
    std::fs::write(peer_share.join(WANTED_NAME), wanted).unwrap();
    let peer = node(&dir, "peer", &peer_share, &[]);
    let page_share = dir.sub("page-share");
    std::fs::write(
        page_share.join("our own notes.txt"),
        b"shared by the page's node\n",
    )
    .unwrap();
    let downloads = dir.sub("downloads");
    let peer_addr = peer.gnutella.to_string();
    let page = node(
        &dir,
        "page",
        &page_share,
        &[
            "--peer",
            &peer_addr,
            "--download-dir",
            downloads.to_str().unwrap(),
        ],
    );
    until("the peer to hash its file", || {
        let s = get_json(peer.api, "/api/v1/status");
        s["library"]["files"] == 1 && s["library"]["hashing_pending"] == 0
    });
    until("the two nodes to link", || {
        get_json(page.api, "/api/v1/status")["links"]["total"] == 1
    });
    Nodes {
        dir,
        page,
        _peer: peer,
        downloads,
    }
}

// ------------------------------------------------------------ Host and Origin

#[test]
fn host_and_origin_are_checked() {
    let dir = Dir::new("web-host");
    let share = dir.sub("share");
    let n = node(&dir, "n", &share, &[]);
    let token = servent::api::read_token(&n.data).unwrap();
    let api = n.api;
    let req = |method: &str, path: &str, extra: &str| {
        http(
            api,
            &format!(
                "{method} {path} HTTP/1.1\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
            ),
        )
        .0
    };
    let auth = format!("Authorization: Bearer {token}\r\n");
    let at = format!("Host: {api}\r\n");
    // The page, by any loopback name; not for a foreign name (DNS rebinding).
    assert_eq!(req("GET", "/", &at), 200);
    assert_eq!(req("GET", "/", "Host: localhost\r\n"), 200);
    assert_eq!(req("GET", "/", "Host: evil.example\r\n"), 403);
    assert_eq!(req("GET", "/api/v1/status", &at), 200);
    assert_eq!(
        req("GET", "/api/v1/status", "Host: evil.example:6347\r\n"),
        403
    );
    let rescan = "/api/v1/shares/rescan";
    assert_eq!(req("POST", rescan, &format!("{at}{auth}")), 202);
    assert_eq!(req("POST", rescan, &at), 401, "no token");
    assert_eq!(
        req("POST", rescan, &format!("Host: evil.example\r\n{auth}")),
        403
    );
    // A change from another origin, token or not.
    assert_eq!(
        req(
            "POST",
            rescan,
            &format!("{at}{auth}Origin: http://evil.example\r\n")
        ),
        403
    );
    assert_eq!(
        req("POST", rescan, &format!("{at}{auth}Origin: null\r\n")),
        403
    );
    assert_eq!(
        req(
            "POST",
            rescan,
            &format!("{at}{auth}Origin: http://{api}\r\n")
        ),
        202
    );
    // The page's files: types, and no token in the page.
    let (_, html) = http(
        api,
        &format!("GET / HTTP/1.1\r\n{at}Connection: close\r\n\r\n"),
    );
    assert!(html.contains("<meta name=\"viewport\""));
    assert!(!html.contains(&token));
}

// ------------------------------------------------------------ the browser

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SERVENT_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for d in std::env::split_paths(&path) {
            let p = d.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A headless Chromium, killed (and its profile removed) when dropped.
struct Browser {
    child: Child,
    ws: String,
    _profile: Dir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn launch(bin: &Path) -> Browser {
    let profile = Dir::new("web-chromium");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless=new",
        "--remote-debugging-port=0",
        "--remote-debugging-address=127.0.0.1",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-pings",
        "--metrics-recording-only",
        // Nothing leaves the machine: every name but loopback fails.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--window-size=1200,900",
    ])
    .arg(format!("--user-data-dir={}", profile.0.display()));
    // Chromium's sandbox refuses to run as root.
    if unsafe { libc::geteuid() } == 0 {
        cmd.arg("--no-sandbox");
    }
    let mut child = cmd
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if !sent {
                if let Some(ws) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(ws.trim().to_string());
                    sent = true;
                }
            }
        }
    });
    let ws = rx
        .recv_timeout(WAIT)
        .expect("Chromium did not say where DevTools listens");
    Browser {
        child,
        ws,
        _profile: profile,
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A DevTools protocol connection.
struct Cdp {
    ws: Ws,
    next: u64,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("DevTools answers in time")
            .expect("DevTools connection");
        Cdp { ws, next: 1 }
    }

    async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let msg = json!({ "id": id, "method": method, "params": params });
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("DevTools connection open")
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    /// The value of a JavaScript expression (promises awaited).
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        assert!(
            r["exceptionDetails"].is_null(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// `expr` is true now; false if it throws or there is no page to ask.
    async fn holds(&mut self, expr: &str) -> bool {
        let id = self.next;
        self.next += 1;
        let msg = json!({ "id": id, "method": "Runtime.evaluate", "params": {
            "expression": format!("(() => {{ try {{ return !!({expr}); }} catch (_) {{ return false; }} }})()"),
            "returnByValue": true } });
        self.ws
            .send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("an answer to Runtime.evaluate")
                .expect("DevTools connection open")
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                return v["result"]["result"]["value"] == json!(true);
            }
        }
    }

    async fn screenshot(&mut self, name: &str) -> PathBuf {
        let r = self
            .call(
                "Page.captureScreenshot",
                json!({ "format": "png", "captureBeyondViewport": true }),
            )
            .await;
        let png = data_encoding::BASE64
            .decode(r["data"].as_str().unwrap().as_bytes())
            .unwrap();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .unwrap()
            .join("web-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{name}.png"));
        std::fs::write(&p, png).unwrap();
        p
    }

    /// Waits until `expr` is true; on timeout, a screenshot and the page's text.
    async fn wait_for(&mut self, what: &str, expr: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            // Errors count as false: the page may be between two documents.
            if self.holds(expr).await {
                return;
            }
            if Instant::now() > deadline {
                let shot = self
                    .screenshot(&format!("failed-{}", what.replace(' ', "-")))
                    .await;
                let text = self.eval("document.body.innerText").await;
                panic!(
                    "timed out waiting for {what} ({expr}); screenshot {}; page:\n{}",
                    shot.display(),
                    text.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A real mouse click on the element `expr` evaluates to.
    async fn click(&mut self, expr: &str) {
        let at = self
            .eval(&format!(
                "(() => {{ const e = {expr}; if (!e) return null; e.scrollIntoView({{block: 'center'}});
                   const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ))
            .await;
        let (x, y) = (
            at[0]
                .as_f64()
                .unwrap_or_else(|| panic!("no element {expr}")),
            at[1].as_f64().unwrap(),
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Clicks the input `selector` and types `text` into it.
    async fn type_into(&mut self, selector: &str, text: &str) {
        self.click(&format!("document.querySelector({selector:?})"))
            .await;
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    async fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_download_and_shares_in_chromium() {
    let Some(bin) = find_chromium() else {
        let required = std::env::var("SERVENT_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "SERVENT_REQUIRE_BROWSER=1 but no Chromium was found"
        );
        eprintln!(
            "SKIPPED: the web page's browser test needs Chromium (apt-get install chromium, or SERVENT_CHROMIUM=/path)"
        );
        return;
    };
    let wanted = pattern(300_000, 13);
    let n = tokio::task::spawn_blocking({
        let wanted = wanted.clone();
        move || nodes(&wanted)
    })
    .await
    .unwrap();
    let token = servent::api::read_token(&n.page.data).unwrap();
    let browser = launch(&bin);
    let mut b = Cdp::connect(&browser.ws).await;
    let target = b
        .call("Target.createTarget", json!({ "url": "about:blank" }))
        .await;
    let port = browser
        .ws
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let mut p = Cdp::connect(&format!(
        "ws://{port}/devtools/page/{}",
        target["targetId"].as_str().unwrap()
    ))
    .await;
    p.viewport(1200, 900, false).await;

    // The link `run` prints: the token in the fragment.
    let link = format!("http://{}/#token={token}", n.page.api);
    p.call("Page.navigate", json!({ "url": link })).await;
    p.wait_for(
        "the status",
        "document.getElementById('status').textContent.includes('1 files shared')",
    )
    .await;
    p.wait_for(
        "the peer",
        "document.querySelectorAll('#peers li .name').length === 1",
    )
    .await;
    assert_eq!(
        p.eval("location.hash").await,
        json!(""),
        "token left in the address bar"
    );
    assert_eq!(
        p.eval("localStorage.getItem('servent-token')").await,
        json!(token)
    );
    assert_eq!(
        p.eval("document.getElementById('login').hidden").await,
        json!(true)
    );
    p.screenshot("1-start").await;

    // Search, and watch the result arrive.
    p.type_into("#words", "sunflower").await;
    p.click("document.querySelector('#search button')").await;
    let row = "[...document.querySelectorAll('#hits li')].find(li => li.textContent.includes('sunflower'))";
    p.wait_for("a result", row).await;
    // The hostile name is text, not markup.
    assert_eq!(
        p.eval(&format!("{row}.querySelector('.name').textContent"))
            .await,
        json!(WANTED_NAME)
    );
    assert_eq!(
        p.eval("document.querySelectorAll('img').length").await,
        json!(0)
    );
    assert_eq!(p.eval("typeof window.pwned").await, json!("undefined"));
    p.screenshot("2-search").await;

    // One click, then the queue until done.
    p.click(&format!("{row}.querySelector('button')")).await;
    p.wait_for(
        "the download to finish",
        "document.querySelector('#downloads li[data-state=\"done\"]')",
    )
    .await;
    p.wait_for(
        "the queued button",
        &format!("{row}.querySelector('button').textContent === 'Queued'"),
    )
    .await;
    p.screenshot("3-downloaded").await;
    let got = std::fs::read(n.downloads.join(WANTED_NAME)).expect("the downloaded file");
    assert!(
        got == wanted,
        "the downloaded file differs from the shared one"
    );

    // Shares: add a directory, see it, remove it.
    let extra = n.dir.sub("more music");
    let extra_s = extra.to_str().unwrap().to_string();
    p.type_into("#share-path", &extra_s).await;
    p.click("document.querySelector('#share-add button')").await;
    let share_row = format!(
        "[...document.querySelectorAll('#shares li')].find(li => li.querySelector('.name')?.textContent === {extra_s:?})"
    );
    p.wait_for("the added share", &share_row).await;
    p.click("document.getElementById('rescan')").await;
    p.click(&format!("{share_row}.querySelector('button')"))
        .await;
    p.wait_for("the share removed", &format!("!{share_row}"))
        .await;
    let shares = get_json(n.page.api, "/api/v1/shares");
    assert_eq!(shares["items"].as_array().unwrap().len(), 1, "{shares}");

    // Pause, resume and cancel, on a download whose source accepts the
    // connection and never answers (so it stays running).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in silent.incoming().take(16).flatten() {
            held.push(s);
        }
    });
    let body = json!({ "url": format!("http://{silent_addr}/get/1/slow%20song.ogg") }).to_string();
    let (status, answer) = http(
        n.page.api,
        &format!(
            "POST /api/v1/downloads HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            n.page.api,
            body.len()
        ),
    );
    assert_eq!(status, 201, "{answer}");
    let slow = "[...document.querySelectorAll('#downloads li')].find(li => li.textContent.includes('slow song'))";
    p.wait_for("the slow download", slow).await;
    let button = |label: &str| {
        format!("[...{slow}.querySelectorAll('button')].find(b => b.textContent === '{label}')")
    };
    p.click(&button("Pause")).await;
    p.wait_for("paused", &format!("{slow}.dataset.state === 'paused'"))
        .await;
    p.screenshot("4-paused").await;
    p.click(&button("Resume")).await;
    p.wait_for("resumed", &format!("{slow}.dataset.state !== 'paused'"))
        .await;
    p.click(&button("Cancel")).await;
    p.wait_for("cancelled", &format!("!{slow}")).await;

    // A phone's screen: nothing wider than the viewport.
    p.viewport(390, 844, true).await;
    p.wait_for(
        "the narrow layout",
        "document.documentElement.scrollWidth <= 390",
    )
    .await;
    p.screenshot("5-phone").await;

    // A stale token brings the token field back on the next change.
    p.eval("localStorage.setItem('servent-token', 'wrong'); window.oldPage = true")
        .await;
    p.call("Page.reload", json!({})).await;
    p.wait_for(
        "the reloaded page",
        "!window.oldPage && document.readyState === 'complete' \
         && document.getElementById('status').textContent.includes('up ')",
    )
    .await;
    p.type_into("#words", "anything").await;
    p.click("document.querySelector('#search button')").await;
    p.wait_for(
        "the token field",
        "!document.getElementById('login').hidden && !document.getElementById('error').hidden",
    )
    .await;
    p.screenshot("6-token-refused").await;
}
