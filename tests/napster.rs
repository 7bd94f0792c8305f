//! The Napster-style index and its clients on loopback, many in one process:
//! login rules, sharing, every search clause, transfers (full, resumed,
//! firewalled), hostile clients, and the command line. Every wait is bounded.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use servent::napster::client::{self, DataPort, GetConfig, ShareConfig};
use servent::napster::index::IndexConfig;
use servent::napster::server::{
    self, ACCOUNTS_FILE, BANS_FILE, LEVELS_FILE, ServerConfig, ServerHandle,
};
use servent::napster::transfer::{PartState, Timeouts};
use servent::napster::wire::{Frame, NapCodec, types as t};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);

mod common;
use common::Dir;

/// Content that is not all digits at the start and differs byte to byte.
fn content(n: usize, seed: u8) -> Vec<u8> {
    let mut x = seed as u32 | 1;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if i == 0 { b'X' } else { x as u8 }
        })
        .collect()
}

async fn start(index: IndexConfig, data_dir: Option<PathBuf>) -> ServerHandle {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        index,
        data_dir,
        ..ServerConfig::default()
    };
    server::start(config, CancellationToken::new())
        .await
        .expect("server starts")
}

/// A hand-driven client.
struct Raw {
    r: FramedRead<OwnedReadHalf, NapCodec>,
    w: OwnedWriteHalf,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let s = TcpStream::connect(addr).await.unwrap();
        let (r, w) = s.into_split();
        Raw {
            r: FramedRead::new(r, NapCodec::new(65535)),
            w,
        }
    }

    async fn send(&mut self, ty: u16, data: &str) {
        self.send_bytes(ty, data.as_bytes()).await;
    }

    async fn send_bytes(&mut self, ty: u16, data: &[u8]) {
        let mut b = bytes::BytesMut::new();
        Frame::new(ty, data.to_vec()).encode(&mut b);
        self.w.write_all(&b).await.unwrap();
    }

    /// The next frame; `None` when the server closed.
    async fn recv(&mut self) -> Option<Frame> {
        match tokio::time::timeout(WAIT, self.r.next()).await {
            Ok(Some(Ok(f))) => Some(f),
            Ok(_) => None,
            Err(_) => panic!("no frame within {WAIT:?}"),
        }
    }

    /// Frames up to and including the first of type `ty`.
    async fn until(&mut self, ty: u16) -> Vec<Frame> {
        let mut got = Vec::new();
        loop {
            let f = self.recv().await.expect("connection open");
            let done = f.ty == ty;
            got.push(f);
            if done {
                return got;
            }
        }
    }

    async fn expect(&mut self, ty: u16) -> String {
        let f = self.recv().await.expect("connection open");
        assert_eq!(f.ty, ty, "{}", f.text());
        f.text()
    }

    /// Whether the server closes the connection (skipping what it sends first).
    async fn closed(&mut self) -> bool {
        loop {
            match tokio::time::timeout(WAIT, self.r.next()).await {
                Ok(Some(Ok(_))) => continue,
                Ok(_) => return true,
                Err(_) => return false,
            }
        }
    }

    async fn login(addr: SocketAddr, nick: &str, port: u16) -> Raw {
        let mut c = Raw::connect(addr).await;
        c.send(t::LOGIN, &format!("{nick} pw {port} \"raw test\" 7"))
            .await;
        let frames = c.until(t::STATS).await;
        assert_eq!(frames[0].ty, t::LOGIN_ACK, "{}", frames[0].text());
        c
    }

    /// The 201 lines of a search (asserting one 202 ends it).
    async fn search(&mut self, query: &str) -> Vec<String> {
        self.send(t::SEARCH, query).await;
        let frames = self.until(t::SEARCH_END).await;
        frames
            .iter()
            .filter(|f| f.ty == t::SEARCH_RESULT)
            .map(Frame::text)
            .collect()
    }
}

/// Operators end to end: `--admin` makes a registered nick Elite; it
/// muzzles, bans and kills; the levels and bans are files in the data
/// directory and hold after a restart.
#[tokio::test]
async fn operators_muzzle_ban_and_kill_and_it_survives_a_restart() {
    let data = Dir::new("operators");
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: Some(data.0.clone()),
        admins: vec!["boss".into()],
        ..ServerConfig::default()
    };
    let srv = server::start(config.clone(), CancellationToken::new())
        .await
        .unwrap();
    let addr = srv.local_addr;
    let mut boss = Raw::connect(addr).await;
    boss.send(t::NEW_USER_LOGIN, "boss s3cret 0 \"x\" 7 boss@example.org")
        .await;
    boss.until(t::STATS).await;
    assert_eq!(
        boss.expect(t::NOSUCH).await,
        "Server servent set your user level to Elite (4)."
    );
    let mut alice = Raw::login(addr, "alice", 0).await;
    let mut bob = Raw::login(addr, "bob", 0).await;
    boss.send(t::MUZZLE, "alice \"quiet\"").await;
    assert_eq!(
        alice.expect(t::NOSUCH).await,
        "You have been muzzled by boss: quiet"
    );
    assert_eq!(
        boss.expect(t::NOSUCH).await,
        "boss has muzzled alice: quiet"
    );
    alice.send(t::PRIVATE_MESSAGE, "bob hi").await;
    assert_eq!(alice.expect(t::NOSUCH).await, "You are muzzled.");
    // Bob may not kill; boss may.
    bob.send(t::KILL, "alice").await;
    assert_eq!(
        bob.expect(t::NOSUCH).await,
        "kill failed: permission denied"
    );
    boss.send(t::BAN, "alice \"bye\"").await;
    assert_eq!(boss.expect(t::NOSUCH).await, "boss banned alice!*: bye");
    boss.send(t::KILL, "alice \"bye\"").await;
    assert_eq!(
        alice.expect(t::NOSUCH).await,
        "You have been killed by boss: bye"
    );
    assert_eq!(alice.expect(t::DISCONNECTING).await, "0");
    assert!(alice.closed().await);
    assert_eq!(boss.expect(t::NOSUCH).await, "boss killed alice: bye");
    let mut again = Raw::connect(addr).await;
    again.send(t::LOGIN, "alice pw 0 \"x\" 7").await;
    assert_eq!(again.expect(t::ERROR).await, "alice!* banned: bye");
    srv.shutdown().await;

    let levels = std::fs::read_to_string(data.0.join(LEVELS_FILE)).unwrap();
    assert_eq!(levels, "alice user muzzled\nboss elite\n");
    let bans = std::fs::read_to_string(data.0.join(BANS_FILE)).unwrap();
    assert!(bans.starts_with("alice!* boss "), "{bans}");

    // Without --admin, boss is still Elite; the ban still holds.
    let config = ServerConfig {
        admins: Vec::new(),
        ..config
    };
    let srv = server::start(config, CancellationToken::new())
        .await
        .unwrap();
    let addr = srv.local_addr;
    let mut boss = Raw::connect(addr).await;
    boss.send(t::LOGIN, "boss s3cret 0 \"x\" 7").await;
    boss.until(t::STATS).await;
    assert_eq!(
        boss.expect(t::NOSUCH).await,
        "Server servent set your user level to Elite (4)."
    );
    boss.send(t::BANLIST, "").await;
    let entry = boss.expect(t::BANLIST_ENTRY).await;
    assert!(entry.starts_with("alice!* boss \"bye\" "), "{entry}");
    assert_eq!(boss.expect(t::BANLIST).await, "");
    let mut again = Raw::connect(addr).await;
    again.send(t::LOGIN, "alice pw 0 \"x\" 7").await;
    assert_eq!(again.expect(t::ERROR).await, "alice!* banned: bye");
    srv.shutdown().await;
}

#[tokio::test]
async fn login_rules_and_accounts_survive_a_restart() {
    let data = Dir::new("accounts");
    let srv = start(IndexConfig::default(), Some(data.0.clone())).await;
    let addr = srv.local_addr;

    let mut c = Raw::connect(addr).await;
    c.send(t::NICK_CHECK, "lefty").await;
    assert_eq!(c.expect(t::NICK_FREE).await, "");
    c.send(
        t::NEW_USER_LOGIN,
        "lefty s3cret 6699 \"nap v1.0\" 4 lefty@example.org",
    )
    .await;
    let frames = c.until(t::STATS).await;
    assert_eq!(frames[0].text(), "lefty@example.org");
    assert!(frames[1].ty == t::MOTD && frames[1].text().starts_with("VERSION opennap "));

    // The same nick twice, a bad port, a bad speed, a wrong password.
    for (msg, why) in [
        ("LEFTY s3cret 6699 \"x\" 4", "LEFTY is already active"),
        ("bob pw 99999 \"x\" 4", "invalid port"),
        ("bob pw 6699 \"x\" 12", "invalid speed"),
    ] {
        let mut d = Raw::connect(addr).await;
        d.send(t::LOGIN, msg).await;
        assert_eq!(d.expect(t::ERROR).await, why);
        assert!(d.closed().await);
    }
    // Not logged in: anything else is refused and the connection closed.
    let mut d = Raw::connect(addr).await;
    d.send(t::SEARCH, "FILENAME CONTAINS \"x\"").await;
    assert_eq!(d.expect(t::ERROR).await, "invalid command");
    assert!(d.closed().await);
    drop(c);

    // The account file holds a hash, not the password; a restart keeps it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let path = data.0.join(ACCOUNTS_FILE);
    while !path.exists() {
        assert!(tokio::time::Instant::now() < deadline, "accounts not saved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("lefty ") && !text.contains("s3cret"),
        "{text}"
    );
    srv.shutdown().await;

    let srv = start(IndexConfig::default(), Some(data.0.clone())).await;
    let mut c = Raw::connect(srv.local_addr).await;
    c.send(t::NICK_CHECK, "Lefty").await;
    assert_eq!(c.expect(t::NICK_REGISTERED).await, "");
    c.send(t::LOGIN, "lefty wrong 6699 \"x\" 4").await;
    assert_eq!(c.expect(t::ERROR).await, "Invalid Password");
    let mut c = Raw::connect(srv.local_addr).await;
    c.send(t::LOGIN, "lefty s3cret 6699 \"x\" 4").await;
    assert_eq!(c.expect(t::LOGIN_ACK).await, "lefty@example.org");
    srv.shutdown().await;
}

#[tokio::test]
async fn an_account_file_from_before_argon2_still_logs_in_and_is_upgraded() {
    use servent::napster::accounts::Secret;
    let data = Dir::new("legacy-accounts");
    let Secret::Legacy { salt, hash } = Secret::legacy(b"oldpw", [7; 16]) else {
        unreachable!()
    };
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let path = data.0.join(ACCOUNTS_FILE);
    std::fs::write(
        &path,
        format!("veteran {} {} v@example.org 1000\n", hex(&salt), hex(&hash)),
    )
    .unwrap();
    let srv = start(IndexConfig::default(), Some(data.0.clone())).await;
    let mut c = Raw::connect(srv.local_addr).await;
    c.send(t::LOGIN, "veteran wrong 0 \"x\" 4").await;
    assert_eq!(c.expect(t::ERROR).await, "Invalid Password");
    let mut c = Raw::connect(srv.local_addr).await;
    c.send(t::LOGIN, "veteran oldpw 0 \"x\" 4").await;
    assert_eq!(c.expect(t::LOGIN_ACK).await, "v@example.org");
    // The stored hash becomes an Argon2 one.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(&path).unwrap();
        if text.starts_with("veteran $argon2id$") {
            assert!(text.ends_with(" v@example.org 1000\n"), "{text}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not upgraded: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(c);
    srv.shutdown().await;
    let srv = start(IndexConfig::default(), Some(data.0.clone())).await;
    let mut c = Raw::connect(srv.local_addr).await;
    c.send(t::LOGIN, "veteran oldpw 0 \"x\" 4").await;
    assert_eq!(c.expect(t::LOGIN_ACK).await, "v@example.org");
    srv.shutdown().await;
}

#[tokio::test]
async fn idle_sockets_that_never_log_in_do_not_lock_logins_out() {
    let config = IndexConfig {
        max_unauthenticated: 16,
        ..IndexConfig::default()
    };
    let srv = start(config, None).await;
    let addr = srv.local_addr;
    // Forty sockets that connect and say nothing.
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    // A real client still logs in at once.
    let mut c = tokio::time::timeout(WAIT, Raw::login(addr, "latecomer", 0))
        .await
        .expect("logged in");
    c.send(t::STATS, "").await;
    assert_eq!(c.until(t::STATS).await.last().unwrap().text(), "1 0 0");
    drop(idle);
    srv.shutdown().await;
}

#[tokio::test]
async fn sharing_every_search_clause_and_leaving() {
    let srv = start(IndexConfig::default(), None).await;
    let addr = srv.local_addr;
    let mut a = Raw::login(addr, "alice", 6699).await;
    let mut b = Raw::login(addr, "bob", 6699).await;
    let mut s = Raw::login(addr, "searcher", 0).await;
    a.send(t::SHARE, "\"C:\\mp3\\Sneaker Pimps - Tesko Suicide.mp3\" 0123456789abcdef0123456789abcdef 4000000 128 44100 240").await;
    a.send(t::SHARE, "\"C:\\mp3\\Sneaker Pimps - Spin Spin Sugar.mp3\" fedcba9876543210fedcba9876543210 3000000 192 48000 200").await;
    a.send(
        t::SHARE_GENERIC,
        "\"C:\\video\\sneaker ad.avi\" 9000000 aaaa video",
    )
    .await;
    b.send(t::SHARE_DIR, "\"D:\\music\" \"Sneaker Pimps - 6 Underground.mp3\" bbbb 5000000 320 44100 300 \"other.mp3\" cccc 10 128 22050 1").await;
    // Every share of a connection is handled before its stats request.
    a.send(t::STATS, "").await;
    a.until(t::STATS).await;
    b.send(t::STATS, "").await;
    assert_eq!(b.until(t::STATS).await.last().unwrap().text(), "3 5 0");

    let q = |extra: &str| format!("FILENAME CONTAINS \"sneaker pimps\" {extra}");
    assert_eq!(s.search(&q("")).await.len(), 3);
    let r = s.search("FILENAME CONTAINS \"tesko\"").await;
    assert_eq!(r.len(), 1);
    assert!(
        r[0].starts_with("\"C:\\mp3\\Sneaker Pimps - Tesko Suicide.mp3\" 0123456789abcdef0123456789abcdef 4000000 128 44100 240 alice ")
            && r[0].ends_with(&format!(" {} 7", u32::from_le_bytes([127, 0, 0, 1]))),
        "{}",
        r[0]
    );
    // FILENAME CONTAINS is repeated and ANDed.
    assert_eq!(
        s.search(&q("FILENAME CONTAINS \"spin sugar\"")).await.len(),
        1
    );
    assert_eq!(s.search(&q("FILENAME CONTAINS \"nowhere\"")).await.len(), 0);
    assert_eq!(s.search(&q("MAX_RESULTS 2")).await.len(), 2);
    assert_eq!(s.search(&q("BITRATE \"AT LEAST\" \"192\"")).await.len(), 2);
    assert_eq!(s.search(&q("BITRATE \"AT BEST\" \"192\"")).await.len(), 2);
    assert_eq!(s.search(&q("BITRATE \"EQUAL TO\" \"320\"")).await.len(), 1);
    assert_eq!(s.search(&q("FREQ \"EQUAL TO\" \"44100\"")).await.len(), 2);
    assert_eq!(s.search(&q("FREQ \"AT LEAST\" \"48000\"")).await.len(), 1);
    assert_eq!(s.search(&q("FREQ \"AT BEST\" \"22050\"")).await.len(), 0);
    assert_eq!(s.search(&q("LINESPEED \"AT LEAST\" 7")).await.len(), 3);
    assert_eq!(s.search(&q("LINESPEED \"AT BEST\" 6")).await.len(), 0);
    assert_eq!(s.search(&q("LINESPEED \"EQUAL TO\" 7")).await.len(), 3);
    assert_eq!(
        s.search("FILENAME CONTAINS \"sneaker\" TYPE video")
            .await
            .len(),
        1
    );
    assert_eq!(
        s.search("FILENAME CONTAINS \"sneaker\" TYPE any")
            .await
            .len(),
        4
    );
    assert_eq!(
        s.search("FILENAME CONTAINS \"sneaker\" LOCAL").await.len(),
        3
    );
    // A bad clause: 404 and still exactly one 202.
    s.send(t::SEARCH, "FILENAME CONTAINS \"x\" SORTED").await;
    let frames = s.until(t::SEARCH_END).await;
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0].text(), "invalid search request");
    s.send(t::SEARCH, "BITRATE \"ABOUT\" \"1\"").await;
    assert_eq!(
        s.until(t::SEARCH_END).await[0].text(),
        "ABOUT: invalid comparison for search"
    );

    // Unshare one, unshare all, and a user leaving takes its files along.
    a.send(t::UNSHARE, "C:\\mp3\\Sneaker Pimps - Spin Spin Sugar.mp3")
        .await;
    a.send(t::STATS, "").await;
    a.until(t::STATS).await;
    assert_eq!(s.search(&q("")).await.len(), 2);
    b.send(t::UNSHARE_ALL, "").await;
    b.send(t::STATS, "").await;
    b.until(t::STATS).await;
    assert_eq!(s.search(&q("")).await.len(), 1);
    drop(a);
    let deadline = tokio::time::Instant::now() + WAIT;
    while !s
        .search("FILENAME CONTAINS \"sneaker\" TYPE any")
        .await
        .is_empty()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "files outlived their user"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Browse, whois and pings of users who are (not) there.
    b.send(t::SHARE, "\"x y.mp3\" dddd 1 128 44100 1").await;
    s.send(t::BROWSE, "bob").await;
    let frames = s.until(t::BROWSE_END).await;
    assert_eq!(frames[0].text(), "bob \"x y.mp3\" dddd 1 128 44100 1");
    s.send(t::BROWSE, "alice").await;
    assert_eq!(s.expect(t::SIGNOFF).await, "alice");
    s.send(t::WHOIS, "bob").await;
    assert!(s.expect(t::WHOIS_REPLY).await.starts_with("bob \"User\" "));
    s.send(t::PING, "bob").await;
    assert_eq!(b.expect(t::PING).await, "searcher");
    b.send(t::PONG, "searcher").await;
    assert_eq!(s.expect(t::PONG).await, "bob");
    s.send(t::PRIVATE_MESSAGE, "bob hi there").await;
    assert_eq!(b.expect(t::PRIVATE_MESSAGE).await, "searcher hi there");
    s.send(t::LINK_SPEED, "bob").await;
    assert_eq!(s.expect(t::LINK_SPEED_REPLY).await, "bob 7");
    s.send(t::SERVER_PING, "").await;
    assert_eq!(s.expect(t::SERVER_PING).await, "");
    s.send(12345, "").await;
    assert_eq!(s.expect(t::NOSUCH).await, "Unknown command code 12345");
    s.send(t::MOTD, "").await;
    assert!(s.expect(t::MOTD).await.starts_with("VERSION"));
    srv.shutdown().await;
}

async fn sharer(
    addr: SocketAddr,
    nick: &str,
    root: &Path,
    firewalled: bool,
    cancel: &CancellationToken,
) -> client::Sharer {
    let data = if firewalled {
        DataPort::Firewalled
    } else {
        DataPort::Listen(TcpListener::bind("127.0.0.1:0").await.unwrap())
    };
    let config = ShareConfig {
        server: addr.to_string(),
        nick: nick.into(),
        password: None,
        root: root.to_path_buf(),
        data,
        cache_file: None,
        max_uploads: 4,
        timeouts: Timeouts::default(),
    };
    client::start_share(config, cancel.child_token())
        .await
        .expect("sharer logs in")
}

/// The name a share directory is announced under.
fn top(d: &Dir) -> String {
    std::fs::canonicalize(&d.0)
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_string()
}

fn part_of(p: &Path) -> PathBuf {
    PathBuf::from(format!("{}.part", p.display()))
}

fn state_of(p: &Path) -> PathBuf {
    PathBuf::from(format!("{}.part.state", p.display()))
}

/// Leaves a `.part` holding `part` as an interrupted `napster get` of `name`
/// (whose content is `data`) from `nick` would.
fn write_part(dest: &Path, nick: &str, name: &str, data: &[u8], part: &[u8]) {
    std::fs::write(part_of(dest), part).unwrap();
    std::fs::write(
        state_of(dest),
        PartState {
            nick: nick.into(),
            name: name.as_bytes().to_vec(),
            size: data.len() as u64,
            md5: sha1_prefix(data),
        }
        .to_text(),
    )
    .unwrap();
}

fn sha1_prefix(data: &[u8]) -> String {
    use sha1::{Digest, Sha1};
    let h: [u8; 20] = Sha1::digest(data).into();
    h[..16].iter().map(|b| format!("{b:02x}")).collect()
}

fn get_config(addr: SocketAddr, from: &str, file: &str, out: &Path) -> GetConfig {
    GetConfig {
        server: addr.to_string(),
        from: from.into(),
        file: file.as_bytes().to_vec(),
        output: out.to_path_buf(),
        wait: WAIT,
        timeouts: Timeouts::default(),
    }
}

#[tokio::test]
async fn full_resumed_and_firewalled_transfers() {
    let srv = start(IndexConfig::default(), None).await;
    let addr = srv.local_addr;
    let open = Dir::new("open");
    let walled = Dir::new("walled");
    let out = Dir::new("out");
    let big = content(1_500_000, 7);
    open.file("albums/Big Track.mp3", &big);
    open.file("readme.txt", b"12345 starts with digits");
    walled.file("behind the wall.bin", &content(300_000, 9));
    let cancel = CancellationToken::new();
    let a = sharer(addr, "opener", &open.0, false, &cancel).await;
    assert_eq!(a.files, 2);
    assert!(a.data_addr.is_some());
    let w = sharer(addr, "walled", &walled.0, true, &cancel).await;
    assert!(w.data_addr.is_none());

    // Names are announced under the share directory's own name.
    let big_name = format!("{}\\albums\\Big Track.mp3", top(&open));
    let readme = format!("{}\\readme.txt", top(&open));
    let wall_name = format!("{}\\behind the wall.bin", top(&walled));

    // A full transfer: the .part and its state are gone once the file is there.
    let dest = out.0.join("big.mp3");
    let done = client::get(get_config(addr, "opener", &big_name, &dest))
        .await
        .unwrap();
    assert_eq!((done.offset, done.size), (0, big.len() as u64));
    assert_eq!(std::fs::read(&dest).unwrap(), big);
    assert!(!part_of(&dest).exists() && !state_of(&dest).exists());
    // A file whose data starts with digits (the size before it is cut exactly).
    let dest = out.0.join("readme.txt");
    client::get(get_config(addr, "opener", &readme, &dest))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"12345 starts with digits");

    // An existing file is never touched: not appended to, not counted as done.
    let dest = out.0.join("mine.mp3");
    std::fs::write(&dest, &big[..600_001]).unwrap();
    let err = client::get(get_config(addr, "opener", &big_name, &dest))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&dest).unwrap(), &big[..600_001]);
    assert!(!part_of(&dest).exists());
    // Nor a .part that is not ours (no state next to it).
    let dest = out.0.join("foreign.mp3");
    std::fs::write(part_of(&dest), b"someone else's").unwrap();
    let err = client::get(get_config(addr, "opener", &big_name, &dest))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not one of ours"), "{err}");
    assert_eq!(std::fs::read(part_of(&dest)).unwrap(), b"someone else's");
    // Nor one of ours for another file.
    let dest = out.0.join("other.mp3");
    std::fs::write(part_of(&dest), b"abc").unwrap();
    std::fs::write(
        state_of(&dest),
        PartState {
            nick: "opener".into(),
            name: readme.clone().into_bytes(),
            size: 24,
            md5: "x".into(),
        }
        .to_text(),
    )
    .unwrap();
    let err = client::get(get_config(addr, "opener", &big_name, &dest))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another download"), "{err}");
    assert_eq!(std::fs::read(part_of(&dest)).unwrap(), b"abc");

    // A resumed one: our .part is continued from its end, then renamed.
    let dest = out.0.join("resumed.mp3");
    write_part(&dest, "opener", &big_name, &big, &big[..600_001]);
    let done = client::get(get_config(addr, "opener", &big_name, &dest))
        .await
        .unwrap();
    assert_eq!(done.offset, 600_001);
    assert_eq!(std::fs::read(&dest).unwrap(), big);
    assert!(!part_of(&dest).exists() && !state_of(&dest).exists());
    // A resumed .part whose first bytes are wrong fails the SHA-1 check (the
    // uploader is a servent) and is discarded; the output never appears.
    let dest = out.0.join("damaged.mp3");
    let mut damaged = big.clone();
    damaged[10] ^= 1;
    write_part(&dest, "opener", &big_name, &big, &damaged[..500_000]);
    let err = client::get(get_config(addr, "opener", &big_name, &dest))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(!dest.exists() && !part_of(&dest).exists());

    // Firewalled uploader: it connects out and SENDs, resumable too.
    let dest = out.0.join("wall.bin");
    let wall = content(300_000, 9);
    write_part(&dest, "walled", &wall_name, &wall, &wall[..1000]);
    let done = client::get(get_config(addr, "walled", &wall_name, &dest))
        .await
        .unwrap();
    assert_eq!(done.offset, 1000);
    assert_eq!(std::fs::read(&dest).unwrap(), wall);

    // Errors: a file not shared, a user not online, both sides firewalled.
    let err = client::get(get_config(addr, "opener", "nothing.mp3", &out.0.join("x")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("does not share"), "{err}");
    let err = client::get(get_config(addr, "nobody", "x", &out.0.join("x")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("not online"), "{err}");
    let mut fw = Raw::login(addr, "alsowalled", 0).await;
    fw.send(t::FIREWALL_DOWNLOAD, &format!("walled \"{wall_name}\""))
        .await;
    let ack = fw.expect(t::DOWNLOAD_ACK).await;
    assert!(ack.contains(" firewallerror "), "{ack}");

    cancel.cancel();
    a.wait().await.unwrap();
    w.wait().await.unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn direct_browse_and_mp3_headers() {
    use servent::napster::mp3;
    let srv = start(IndexConfig::default(), None).await;
    let addr = srv.local_addr;
    let open = Dir::new("browse-open");
    let walled = Dir::new("browse-walled");
    // 1000 frames at 128 kbps after an ID3 tag: 26 seconds.
    open.file("Song.mp3", &mp3::synthetic(2000, 1000, 128, None));
    open.file("notes.txt", b"text");
    walled.file("other.mp3", &mp3::synthetic(0, 10, 64, None));
    let cancel = CancellationToken::new();
    let a = sharer(addr, "opener", &open.0, false, &cancel).await;
    let w = sharer(addr, "walled", &walled.0, true, &cancel).await;

    // The headers went into the share: BITRATE, FREQ and DURATION find it.
    let mut s = Raw::login(addr, "searcher", 0).await;
    let r = s
        .search("FILENAME CONTAINS \"song\" BITRATE \"EQUAL TO\" \"128\" FREQ \"EQUAL TO\" \"44100\" DURATION \"AT LEAST\" \"20\"")
        .await;
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].contains(" 128 44100 26 opener "), "{}", r[0]);

    // Our client browses our sharer directly (640 -> 641 -> GETLIST).
    let mut session = client::Session::login(&addr.to_string(), &client::Login::anonymous(0), WAIT)
        .await
        .unwrap();
    let mut files = session
        .browse_direct("opener", Timeouts::default(), WAIT)
        .await
        .unwrap();
    files.sort_by(|x, y| x.name.cmp(&y.name));
    let names: Vec<String> = files
        .iter()
        .map(|f| String::from_utf8_lossy(&f.name).into_owned())
        .collect();
    assert_eq!(
        names,
        [
            format!("{}\\Song.mp3", top(&open)),
            format!("{}\\notes.txt", top(&open))
        ]
    );
    assert_eq!(files[1].size, 4);

    // TekNap asks with a line end (`GETLIST\n`) and reads the nick, the files
    // and the empty line that ends them.
    let mut teknap = Raw::login(addr, "teknap", 0).await;
    teknap.send(t::BROWSE_DIRECT, "opener").await;
    let ok = teknap
        .until(t::BROWSE_DIRECT_OK)
        .await
        .pop()
        .unwrap()
        .text();
    let mut words = ok.split(' ');
    let (nick, ip, port) = (words.next(), words.next(), words.next());
    assert_eq!(nick, Some("opener"), "{ok}");
    let ip = servent::napster::wire::ip_from_decimal(ip.unwrap().parse().unwrap());
    let port: u16 = port.unwrap().parse().unwrap();
    let mut conn = TcpStream::connect((ip, port)).await.unwrap();
    let mut one = [0u8; 1];
    conn.read_exact(&mut one).await.unwrap();
    assert_eq!(&one, b"1");
    conn.write_all(b"GETLIST\n").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        text.starts_with("opener\n") && text.contains("Song.mp3") && text.ends_with("\n\n"),
        "{text:?}"
    );

    // A firewalled sharer pushes its list to the requester (SENDLIST).
    let data_port = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = data_port.local_addr().unwrap().port();
    let mut req = Raw::login(addr, "requester", port).await;
    req.send(t::BROWSE_DIRECT, "walled").await;
    let (mut conn, _) = tokio::time::timeout(WAIT, data_port.accept())
        .await
        .unwrap()
        .unwrap();
    conn.write_all(b"1").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(WAIT, conn.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        text.starts_with("SENDLIST walled\n")
            && text.contains(&format!("\"{}\\other.mp3\" ", top(&walled)))
            && text.ends_with("\n\n"),
        "{text:?}"
    );
    cancel.cancel();
    a.wait().await.unwrap();
    w.wait().await.unwrap();
    srv.shutdown().await;
}

#[tokio::test]
async fn an_uploader_that_claims_another_size_is_refused() {
    let srv = start(IndexConfig::default(), None).await;
    let addr = srv.local_addr;
    let out = Dir::new("rogue-out");
    let data_port = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = data_port.local_addr().unwrap().port();
    let mut rogue = Raw::login(addr, "rogue", port).await;
    rogue.send(t::SHARE, "\"music\\x.mp3\" aa 10 0 0 0").await;
    rogue.send(t::STATS, "").await;
    rogue.until(t::STATS).await;
    let dest = out.0.join("x.mp3");
    let getter = tokio::spawn(client::get(get_config(
        addr,
        "rogue",
        "music\\x.mp3",
        &dest,
    )));
    // Accept the request, then answer a GET with twice the listed size.
    let req = rogue.expect(t::UPLOAD_REQUEST).await;
    assert!(req.contains("\"music\\x.mp3\""), "{req}");
    let nick = req.split(' ').next().unwrap().to_string();
    rogue
        .send(t::UPLOAD_ACCEPT, &format!("{nick} \"music\\x.mp3\""))
        .await;
    let (mut s, _) = tokio::time::timeout(WAIT, data_port.accept())
        .await
        .unwrap()
        .unwrap();
    s.write_all(b"1").await.unwrap();
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(WAIT, s.read(&mut buf)).await;
    let _ = s.write_all(b"20XXXXXXXXXXXXXXXXXXXX").await;
    let err = tokio::time::timeout(WAIT, getter)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(err.to_string().contains("listed as 10"), "{err}");
    assert!(!dest.exists());
    assert_eq!(std::fs::metadata(part_of(&dest)).unwrap().len(), 0);
    srv.shutdown().await;
}

#[tokio::test]
async fn hostile_clients_do_not_disturb_a_well_behaved_one() {
    let srv = start(IndexConfig::default(), None).await;
    let addr = srv.local_addr;
    let mut good = Raw::login(addr, "good", 6699).await;
    good.send(t::SHARE, "\"steady song.mp3\" aaaa 1 128 44100 1")
        .await;

    // Garbage before login: a 0 and a close.
    let mut g = TcpStream::connect(addr).await.unwrap();
    g.write_all(&content(3000, 3)).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, g.read_to_end(&mut buf)).await;
    assert!(buf.len() >= 4 && buf[2..4] == [0, 0], "{buf:?}");

    // A 64 KiB frame after login: a 404 and a close.
    let mut big = Raw::login(addr, "big", 0).await;
    big.send_bytes(t::SEARCH, &vec![b'a'; 65535]).await;
    let f = big.recv().await.expect("an error first");
    assert_eq!(f.ty, t::NOSUCH);
    assert!(f.text().contains("too long"), "{}", f.text());
    assert!(big.closed().await);

    // 10,000 searches in a burst: throttled, then dropped.
    let mut flood = Raw::login(addr, "flood", 0).await;
    let mut burst = bytes::BytesMut::new();
    for _ in 0..10_000 {
        Frame::new(t::SEARCH, &b"FILENAME CONTAINS \"song\""[..]).encode(&mut burst);
    }
    let flooder = tokio::spawn(async move {
        let _ = flood.w.write_all(&burst).await;
        let mut results = 0;
        let mut errors = 0;
        loop {
            match tokio::time::timeout(WAIT, flood.r.next()).await {
                Ok(Some(Ok(f))) if f.ty == t::SEARCH_RESULT => results += 1,
                Ok(Some(Ok(f))) if f.ty == t::NOSUCH => errors += 1,
                Ok(Some(Ok(_))) => {}
                Ok(_) => return Some((results, errors)),
                Err(_) => return None,
            }
        }
    });
    // Meanwhile the well-behaved client is answered, promptly and correctly.
    let mut client = Raw::login(addr, "client", 0).await;
    for _ in 0..20 {
        let r = tokio::time::timeout(
            Duration::from_secs(2),
            client.search("FILENAME CONTAINS \"steady\""),
        )
        .await
        .expect("answered within 2 s");
        assert_eq!(r.len(), 1);
    }
    let (results, errors) = flooder.await.unwrap().expect("the flooder was dropped");
    assert!(results <= 100, "{results} searches answered");
    assert!(errors >= 1);
    good.send(t::STATS, "").await;
    // good, client online; big and flood gone.
    assert_eq!(good.until(t::STATS).await.last().unwrap().text(), "2 1 0");
    srv.shutdown().await;
}

#[tokio::test]
async fn a_client_that_does_not_read_is_dropped() {
    // No request limit here: only the output queue can stop this client.
    let config = IndexConfig {
        request_burst: 1e9,
        request_rate: 1e9,
        ..IndexConfig::default()
    };
    let srv = start(config, None).await;
    let addr = srv.local_addr;
    let mut sh = Raw::login(addr, "sharer", 6699).await;
    let long = "x".repeat(200);
    for i in 0..100 {
        sh.send(
            t::SHARE,
            &format!("\"word {i} {long}.mp3\" aaaa 1 128 44100 1"),
        )
        .await;
    }
    // Searches that each return 100 long results (about 50 MB in all), never
    // read: more than the socket buffers hold, so the queue fills.
    let mut lazy = Raw::login(addr, "lazy", 0).await;
    for _ in 0..2000 {
        lazy.send(t::SEARCH, "FILENAME CONTAINS \"word\"").await;
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        sh.send(t::STATS, "").await;
        if sh.until(t::STATS).await.last().unwrap().text() == "1 100 0" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "lazy client kept");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    srv.shutdown().await;
}

// ---- the command line ----

fn servent() -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_servent"));
    for (k, _) in std::env::vars() {
        if k.starts_with("SERVENT_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("SERVENT_CONFIG", common::NO_CONFIG);
    cmd
}

/// Reads lines from a child's stdout until one starts with `prefix`.
fn line_starting(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    prefix: &str,
) -> String {
    for line in lines {
        let line = line.unwrap();
        if line.starts_with(prefix) {
            return line;
        }
    }
    panic!("no line starting with {prefix:?}");
}

fn interrupt(child: &mut std::process::Child) -> std::process::ExitStatus {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not stop on SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn index_share_and_search_from_the_command_line() {
    use std::io::BufRead;
    use std::process::Stdio;
    let home = Dir::new("cli-home");
    let shared = Dir::new("cli-share");
    shared.file("Holiday Photos/beach day.jpg", &content(5000, 1));
    shared.file("notes.txt", b"nothing to see");
    shared.file(".hidden holiday.txt", b"not shared");

    let mut index = servent()
        .args(["index", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut index_out = std::io::BufReader::new(index.stdout.take().unwrap()).lines();
    let addr = line_starting(&mut index_out, "listening on ")["listening on ".len()..].to_string();

    let mut share = servent()
        .args(["napster", "share", "--server", &addr, "--nick", "cliuser"])
        .args(["--data-port", "0", "--share"])
        .arg(&shared.0)
        .env("HOME", &home.0)
        .env_remove("XDG_DATA_HOME")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut share_out = std::io::BufReader::new(share.stdout.take().unwrap()).lines();
    let line = line_starting(&mut share_out, "sharing ");
    assert!(line.starts_with("sharing 2 files as cliuser"), "{line}");

    let out = servent()
        .args(["napster", "search", "--server", &addr, "--json", "holiday"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let hit: servent::output::Versioned<servent::output::Hit> =
        serde_json::from_str(lines[0]).unwrap();
    assert_eq!((hit.v, hit.kind.as_str()), (1, "hit"));
    let hit = hit.record;
    assert_eq!(hit.network, servent::output::Network::Napster);
    assert_eq!(
        (hit.name.as_str(), hit.size),
        (
            format!("{}\\Holiday Photos\\beach day.jpg", top(&shared)).as_str(),
            5000
        )
    );
    assert_eq!(hit.napster.unwrap().nick, "cliuser");

    // And fetched by that name (pushed: the sharer is firewalled), the result
    // a download record.
    let out_dir = Dir::new("cli-get");
    let out = servent()
        .args(["napster", "get", "--server", &addr, "--from", "cliuser"])
        .args(["--file", &hit.name, "-o", "beach.jpg", "--json"])
        .current_dir(&out_dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let done: servent::output::Versioned<servent::output::Download> =
        serde_json::from_str(text.trim_end()).unwrap();
    assert_eq!((done.v, done.kind.as_str()), (1, "download"));
    let done = done.record;
    assert_eq!(done.state, servent::output::DownloadState::Done);
    assert_eq!((done.size, done.done), (Some(5000), 5000));
    assert_eq!(done.sources[0].source, "cliuser");
    assert_eq!(
        std::fs::read(out_dir.0.join("beach.jpg")).unwrap(),
        content(5000, 1)
    );
    // The hash cache went to the data directory under $HOME.
    assert!(home.0.join(".local/share/servent/sha1-cache.txt").exists());

    // Not reachable: a clear error and a failure status.
    let out = servent()
        .args(["napster", "search", "--server", "127.0.0.1:1", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));

    assert!(interrupt(&mut share).success());
    assert!(interrupt(&mut index).success());
}

/// A non-servent uploader driven by hand: logs in with `client` as its client
/// info, shares `name` listed with `md5` and `listed` bytes, and serves
/// `served` to the first GET. Returns its task (which ends after serving).
async fn hand_uploader(
    addr: SocketAddr,
    nick: &str,
    client: &str,
    name: &str,
    md5: &str,
    listed: usize,
    served: Vec<u8>,
) -> tokio::task::JoinHandle<()> {
    let data_port = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = data_port.local_addr().unwrap().port();
    let mut up = Raw::connect(addr).await;
    up.send(t::LOGIN, &format!("{nick} pw {port} \"{client}\" 7"))
        .await;
    up.until(t::STATS).await;
    up.send(t::SHARE, &format!("\"{name}\" {md5} {listed} 128 44100 60"))
        .await;
    up.send(t::STATS, "").await;
    up.until(t::STATS).await;
    let name = name.to_string();
    tokio::spawn(async move {
        let req = up.expect(t::UPLOAD_REQUEST).await;
        let who = req.split(' ').next().unwrap().to_string();
        up.send(t::UPLOAD_ACCEPT, &format!("{who} \"{name}\""))
            .await;
        let (mut s, _) = tokio::time::timeout(WAIT, data_port.accept())
            .await
            .unwrap()
            .unwrap();
        s.write_all(b"1").await.unwrap();
        // GET, then `<nick> "<name>" <offset>`, in one piece or several.
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !(got.iter().filter(|&&b| b == b'"').count() == 2
            && got.last().is_some_and(u8::is_ascii_digit))
        {
            let n = tokio::time::timeout(WAIT, s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the downloader closed");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        assert!(text.starts_with("GET") && text.ends_with(" 0"), "{text}");
        s.write_all(listed.to_string().as_bytes()).await.unwrap();
        s.write_all(&served).await.unwrap();
        let _ = s.shutdown().await;
        drop(up);
    })
}

/// An MP3-like body behind a 1010-byte ID3v2 tag.
fn tagged_mp3(n: usize) -> (Vec<u8>, Vec<u8>) {
    let body = content(n, 9);
    let mut file = b"ID3\x03\x00\x00\x00\x00\x07\x68".to_vec();
    file.extend(std::iter::repeat_n(0u8, 1000));
    file.extend(&body);
    (file, body)
}

fn md5_hex(b: &[u8]) -> String {
    use md5::{Digest, Md5};
    Md5::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// Issue 12, bug 6: a non-servent's md5 field is checked when it is a real
/// MD5 — TekNap's, the MD5 of 299,008 bytes after the ID3v2 tag, written
/// `<md5>-<size>` — and a mismatch discards the `.part`; other users listing
/// the same size and md5 field are counted.
#[tokio::test]
async fn a_teknap_md5_is_checked_and_agreeing_sources_counted() {
    use servent::napster::transfer::Verified;
    let srv = start(IndexConfig::default(), None).await;
    let addr = srv.local_addr;
    let out = Dir::new("md5-out");
    let (file, body) = tagged_mp3(400_000);
    let field = format!("{}-{}", md5_hex(&body[..299_008]), file.len());
    let name = "C:\\mp3\\Tagged Song.mp3";

    // Two more users list the same file (same size, same md5 field).
    let mut twins = Vec::new();
    for twin in ["twin1", "twin2"] {
        let mut c = Raw::login(addr, twin, 0).await;
        c.send(
            t::SHARE,
            &format!(
                "\"D:\\{twin}\\Tagged Song.mp3\" {field} {} 128 44100 60",
                file.len()
            ),
        )
        .await;
        c.send(t::STATS, "").await;
        c.until(t::STATS).await;
        twins.push(c);
    }
    let up = hand_uploader(
        addr,
        "tek",
        "TekNap 1.3g",
        name,
        &field,
        file.len(),
        file.clone(),
    )
    .await;
    let dest = out.0.join("good.mp3");
    let done = client::get(get_config(addr, "tek", name, &dest))
        .await
        .unwrap();
    up.await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), file);
    assert_eq!(
        done.verified,
        Verified::HeadMd5 {
            start: 1010,
            len: 299_008
        }
    );
    assert_eq!(done.agreeing, 2);

    // The same listing, damaged content: the .part and its state go.
    let mut bad = file.clone();
    bad[5000] ^= 0xff;
    let up = hand_uploader(addr, "tek2", "TekNap 1.3g", name, &field, file.len(), bad).await;
    let dest = out.0.join("bad.mp3");
    let err = client::get(get_config(addr, "tek2", name, &dest))
        .await
        .unwrap_err();
    up.await.unwrap();
    assert!(err.to_string().contains("does not match"), "{err}");
    assert!(!dest.exists() && !part_of(&dest).exists() && !state_of(&dest).exists());

    // A client whose convention we do not know: a mismatch is reported, the
    // file kept.
    let other = md5_hex(b"something else");
    let up = hand_uploader(
        addr,
        "mx",
        "WinMX v3.31",
        name,
        &other,
        file.len(),
        file.clone(),
    )
    .await;
    let dest = out.0.join("unknown.mp3");
    let done = client::get(get_config(addr, "mx", name, &dest))
        .await
        .unwrap();
    up.await.unwrap();
    assert_eq!(done.verified, Verified::Unmatched);
    assert_eq!(done.agreeing, 0);
    assert_eq!(std::fs::read(&dest).unwrap(), file);
    drop(twins);
    srv.shutdown().await;
}

async fn start_linked(name: &str, links: Vec<String>) -> ServerHandle {
    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        index: IndexConfig {
            server_name: name.into(),
            link_password: Some("shared secret".into()),
            ..IndexConfig::default()
        },
        links,
        link_retry: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    server::start(config, CancellationToken::new())
        .await
        .expect("server starts")
}

/// Asks `c` for a whois of `nick` until it is answered with a 604 (the link
/// is up and has told of `nick`), within WAIT.
async fn wait_for_user(c: &mut Raw, nick: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        c.send(t::WHOIS, nick).await;
        let f = c.recv().await.expect("open");
        if f.ty == t::WHOIS_REPLY {
            return f.text();
        }
        assert!(tokio::time::Instant::now() < deadline, "{nick} never seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 12, server linking: two indexes linked on loopback (OpenNap's
/// handshake and messages). A user of one finds, fetches (direct and
/// firewalled) and writes to the users of the other; the link going away
/// takes the other side's users with it.
#[tokio::test]
async fn two_linked_indexes_share_users_searches_and_transfers() {
    let east = start_linked("east", Vec::new()).await;
    let west = start_linked("west.example.org", vec![east.local_addr.to_string()]).await;
    let (ea, wa) = (east.local_addr, west.local_addr);
    let cancel = CancellationToken::new();
    let share = Dir::new("linked-share");
    let data = content(70_000, 5);
    std::fs::write(share.0.join("Far Away.mp3"), &data).unwrap();
    let walled = Dir::new("linked-walled");
    let data2 = content(5000, 6);
    std::fs::write(walled.0.join("Behind Wall.txt"), &data2).unwrap();
    let bob = sharer(wa, "bob", &share.0, false, &cancel).await;
    let wally = sharer(wa, "wally", &walled.0, true, &cancel).await;
    let mut carol = Raw::login(wa, "carol", 0).await;

    // Alice, on east, sees bob (on west) once the link is up.
    let mut alice = Raw::login(ea, "alice", 0).await;
    let who = wait_for_user(&mut alice, "bob").await;
    assert!(who.contains("\"Remote\""), "{who}");
    // She finds his file (searches go to the linked server; one 202).
    let name = format!("{}\\Far Away.mp3", top(&share));
    let deadline = tokio::time::Instant::now() + WAIT;
    let hit = loop {
        let r = alice
            .search("FILENAME CONTAINS \"far away\" TYPE any")
            .await;
        if let Some(hit) = r.into_iter().find(|l| l.contains(" bob ")) {
            break hit;
        }
        assert!(tokio::time::Instant::now() < deadline, "never found");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(hit.starts_with(&format!("\"{name}\" ")), "{hit}");
    // `<md5> <size> <bitrate> <freq> <secs> <nick> <ip> <link>`, bob's address
    // as west saw it.
    assert!(
        hit.ends_with(&format!(" {} 0 0 0 bob 16777343 0", data.len())),
        "{hit}"
    );
    // A 203 for his file is answered with his address (204), via west.
    alice.send(t::DOWNLOAD, &format!("bob \"{name}\"")).await;
    let ack = alice.expect(t::DOWNLOAD_ACK).await;
    assert!(
        ack.starts_with("bob 16777343 ") && !ack.contains(" 0 \""),
        "{ack}"
    );

    // Our client on east downloads from bob on west, checked end to end.
    let out = Dir::new("linked-out");
    let dest = out.0.join("far.mp3");
    let done = client::get(get_config(ea, "bob", &name, &dest))
        .await
        .unwrap();
    assert_eq!(done.size, data.len() as u64);
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    // And from a firewalled sharer on west (204 port 0, 500, 501 push).
    let name2 = format!("{}\\Behind Wall.txt", top(&walled));
    let dest2 = out.0.join("wall.txt");
    client::get(get_config(ea, "wally", &name2, &dest2))
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest2).unwrap(), data2);

    // Private messages both ways, and a whois of a local user from afar.
    wait_for_user(&mut carol, "alice").await;
    alice.send(t::PRIVATE_MESSAGE, "carol hello west").await;
    assert_eq!(carol.expect(t::PRIVATE_MESSAGE).await, "alice hello west");
    carol.send(t::PRIVATE_MESSAGE, "alice hello east").await;
    assert_eq!(alice.expect(t::PRIVATE_MESSAGE).await, "carol hello east");

    // West goes away: east forgets its users.
    cancel.cancel();
    bob.wait().await.unwrap();
    wally.wait().await.unwrap();
    drop(carol);
    west.shutdown().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        alice.send(t::WHOIS, "bob").await;
        if alice.recv().await.unwrap().ty == t::NOSUCH {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "bob is still seen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    east.shutdown().await;
}

/// A link spoken by hand, byte for byte as opennap-ng's server_login.c does
/// it: 10010 both ways, 10011 with the MD5 of the nonces and the password,
/// then one zlib stream each way (flushed with Z_SYNC_FLUSH). The index
/// announces its users in OpenNap's server form of a login and answers a
/// search of ours.
#[tokio::test]
async fn a_link_spoken_by_hand_as_opennap_does() {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    use md5::{Digest, Md5};
    let srv = start_linked("east", Vec::new()).await;
    let addr = srv.local_addr;
    let mut alice = Raw::login(addr, "alice", 6699).await;
    alice
        .send(
            t::SHARE,
            "\"c:\\mp3\\Hand Made.mp3\" 0123456789abcdef0123456789abcdef 1000 128 44100 60",
        )
        .await;
    alice.send(t::STATS, "").await;
    alice.until(t::STATS).await;

    let mut peer = Raw::connect(addr).await;
    peer.send(t::SERVER_LOGIN, "opennap.example.org peernonce 0")
        .await;
    let theirs = peer.expect(t::SERVER_LOGIN).await;
    let mut f = theirs.split(' ');
    assert_eq!(f.next(), Some("east"));
    let their_nonce = f.next().unwrap().to_string();
    assert_eq!(f.next(), Some("0"));
    let hex = |parts: &[&str]| -> String {
        let mut h = Md5::new();
        for p in parts {
            h.update(p.as_bytes());
        }
        // Upper case, as opennap-ng writes it and compares it (strcmp).
        h.finalize().iter().map(|b| format!("{b:02X}")).collect()
    };
    // Theirs: MD5(our nonce, their nonce, password).
    assert_eq!(
        peer.expect(t::SERVER_LOGIN_ACK).await,
        hex(&["peernonce", &their_nonce, "shared secret"])
    );
    peer.send(
        t::SERVER_LOGIN_ACK,
        &hex(&[&their_nonce, "peernonce", "shared secret"]),
    )
    .await;

    // From here on both ways are zlib streams.
    let mut z_out = Compress::new(Compression::new(6), true);
    let mut z_in = Decompress::new(true);
    let mut raw = peer.r.into_inner();
    let mut w = peer.w;
    let mut plain = bytes::BytesMut::new();
    let mut codec = NapCodec::new(65535);
    async fn next_frame(
        raw: &mut OwnedReadHalf,
        z: &mut Decompress,
        plain: &mut bytes::BytesMut,
        codec: &mut NapCodec,
    ) -> Frame {
        use tokio_util::codec::Decoder;
        loop {
            if let Some(f) = codec.decode(plain).unwrap() {
                return f;
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
                .await
                .expect("the link speaks")
                .unwrap();
            assert!(n > 0, "the link closed");
            let mut out = Vec::with_capacity(64 * 1024);
            z.decompress_vec(&buf[..n], &mut out, FlushDecompress::Sync)
                .unwrap();
            plain.extend_from_slice(&out);
        }
    }
    async fn send_z(w: &mut OwnedWriteHalf, z: &mut Compress, ty: u16, data: &str) {
        let mut framed = bytes::BytesMut::new();
        Frame::new(ty, data.as_bytes().to_vec()).encode(&mut framed);
        let mut out = Vec::with_capacity(framed.len() + 1024);
        z.compress_vec(&framed, &mut out, FlushCompress::Sync)
            .unwrap();
        w.write_all(&out).await.unwrap();
    }
    // Alice, in OpenNap's server form of a login, then her file count.
    let login = next_frame(&mut raw, &mut z_in, &mut plain, &mut codec).await;
    assert_eq!(login.ty, t::LOGIN);
    let text = login.text();
    assert!(
        text.starts_with("alice * 6699 \"raw test\" 7 unknown ")
            && text.ends_with(" 16777343 east 0"),
        "{text}"
    );
    let sharing = next_frame(&mut raw, &mut z_in, &mut plain, &mut codec).await;
    assert_eq!(
        (sharing.ty, sharing.text()),
        (t::SERVER_USER_SHARING, "alice 1 0".into())
    );
    // Our user bob searches east's files.
    send_z(
        &mut w,
        &mut z_out,
        t::LOGIN,
        "bob * 0 \"nap v1.5.4\" 4 unknown 10 16777343 opennap.example.org 8888",
    )
    .await;
    send_z(
        &mut w,
        &mut z_out,
        t::REMOTE_SEARCH,
        "bob 7 FILENAME CONTAINS \"hand made\"",
    )
    .await;
    let hit = next_frame(&mut raw, &mut z_in, &mut plain, &mut codec).await;
    assert_eq!(
        (hit.ty, hit.text()),
        (
            t::REMOTE_SEARCH_RESULT,
            "7 alice \"c:\\mp3\\Hand Made.mp3\" 0123456789abcdef0123456789abcdef 1000 128 44100 60"
                .into()
        )
    );
    let end = next_frame(&mut raw, &mut z_in, &mut plain, &mut codec).await;
    assert_eq!((end.ty, end.text()), (t::REMOTE_SEARCH_END, "7".into()));
    // Alice writes to bob: it reaches the link encapsulated.
    alice.send(t::PRIVATE_MESSAGE, "bob hi there").await;
    let enc = next_frame(&mut raw, &mut z_in, &mut plain, &mut codec).await;
    assert_eq!(enc.ty, t::ENCAPSULATED);
    let mut inner = bytes::BytesMut::new();
    Frame::new(t::PRIVATE_MESSAGE, &b"alice hi there"[..]).encode(&mut inner);
    let mut want = b":east bob ".to_vec();
    want.extend_from_slice(&inner);
    assert_eq!(&enc.data[..], &want[..]);
    srv.shutdown().await;
}
