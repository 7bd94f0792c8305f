//! Server links: the part of OpenNap's server-to-server protocol that lets a
//! user of one `servent index` find, fetch from and talk to the users of
//! another (a child module of `index`, with access to its state; no I/O).
//!
//! Handshake (OpenNap's): each side sends `10010 <name> <nonce> <compression>`,
//! then `10011 <md5 hex of (peer's nonce, own nonce, password)>`; each checks
//! the other's answer against `md5(own nonce, peer's nonce, password)`. Then
//! each direction is a zlib stream: the shell starts deflating at
//! [`Action::CompressLink`], and its reader inflates what follows the peer's
//! 10011.
//!
//! Once linked:
//! - every local user is announced as `2 <nick> * <port> "<client>" <link>
//!   unknown <logged in at> <ip> <server> 0` (OpenNap's server form of a login),
//!   its file count as `10012 <nick> <files> 0`, and its leaving as `10000 <nick>`;
//!   the peer keeps it as a remote user, with a connection number of its own
//!   (a "pseudo connection") that never touches a socket;
//! - a local user's command about a remote user's files (203, 500, 211) goes to
//!   that user's server as `<type> :<sender> <data>`, which runs it as if the
//!   sender were local; anything a server sends a remote user (the answers,
//!   private messages, pings, 607s, 204s) travels encapsulated, in
//!   `10018 :<server> <nick> <frame>`, to that user's server, which delivers it;
//! - a search is also asked of every peer as `10015 <nick> <id> <query>`; each
//!   answers `10016 <id> <nick> "<file>" <md5> <size> <bitrate> <freq> <secs>`
//!   per match and `10017 <id>`; the user's 202 waits for every peer's 10017
//!   (or 10 seconds).
//!
//! Everything is bounded: links, remote users, pending searches; a link that
//! sends what it should not more than its error budget allows is dropped with
//! its reason logged.

use std::time::Instant;

use bytes::{BufMut, BytesMut};
use md5::{Digest, Md5};

use super::super::wire::{Fields, Frame, Line, SearchRequest, SearchResult, number, types as t};
use super::*;

/// A link's handshake or established state, kept on its connection.
pub(super) struct LinkState {
    /// The peer's name, once it said it.
    pub peer: Option<Box<str>>,
    pub my_nonce: String,
    pub peer_nonce: Option<String>,
    /// We sent our 10010.
    pub sent_login: bool,
    pub established: bool,
}

/// A search waiting for the peers' answers.
pub(super) struct RemoteSearch {
    pub conn: ConnId,
    /// Links that have not sent their 10017 yet.
    pub waiting: Vec<ConnId>,
    pub found: usize,
    pub limit: usize,
    pub deadline: Instant,
}

/// Types a local user may send about a remote user that only the remote
/// user's server can answer (it knows the files), forwarded there. Everything
/// else about a remote user (private messages, pings, whois, direct browses)
/// is answered here, and what goes to the remote user travels encapsulated.
const FORWARDED: [u16; 4] = [
    t::DOWNLOAD,
    t::FIREWALL_DOWNLOAD,
    t::BROWSE,
    t::BROWSE_DIRECT,
];

/// What opennap-ng also relays as its users' own messages (a private message,
/// a ping and its pong), taken from a link as if the user had sent it here;
/// ours go out encapsulated, after the local checks (muzzle, online).
const ALSO_ACCEPTED: [u16; 3] = [t::PRIVATE_MESSAGE, t::PING, t::PONG];

/// A server's name: 1-64 printable ASCII characters, no space, quote or
/// colon (a host name fits).
pub fn valid_server_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .iter()
            .all(|&c| (b'!'..=b'~').contains(&c) && c != b'"' && c != b':')
}

fn md5_hex(parts: &[&[u8]]) -> String {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    // Upper case, as opennap-ng writes it and compares it (with strcmp).
    h.finalize().iter().map(|b| format!("{b:02X}")).collect()
}

impl Index {
    /// Whether `conn` is a remote user's pseudo connection.
    pub(super) fn is_remote(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.remote.is_some())
    }

    /// Whether `conn` is a server link (established or in its handshake).
    pub fn is_link(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.link.is_some())
    }

    /// Established links, for status output and tests.
    pub fn links(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .conns
            .values()
            .filter_map(|c| c.link.as_ref())
            .filter(|l| l.established)
            .filter_map(|l| l.peer.as_deref().map(str::to_string))
            .collect();
        v.sort();
        v
    }

    /// The established links' connections (kept as a short list: asked on
    /// every login and every change of a user's shares).
    fn link_conns(&self) -> Vec<ConnId> {
        self.link_list.clone()
    }

    /// The shell opened a connection to a peer server (`--link`): we speak first.
    pub fn start_link(&mut self, conn: ConnId, out: &mut Vec<Action>) {
        let nonce = self.nonce();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.link = Some(Box::new(LinkState {
            peer: None,
            my_nonce: nonce.clone(),
            peer_nonce: None,
            sent_login: true,
            established: false,
        }));
        let line = Line::new().word(&self.cfg.server_name).word(&nonce).num(0);
        out.push(Action::Send(conn, line.frame(t::SERVER_LOGIN)));
    }

    fn nonce(&mut self) -> String {
        self.next_salt()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Refuses a link with a logged reason.
    fn refuse_link(&mut self, conn: ConnId, why: &str, out: &mut Vec<Action>) {
        tracing::warn!(conn, reason = why, "server link refused or dropped");
        self.drop_conn(conn, why, out);
    }

    /// 10010 on a connection that has not logged in.
    pub(super) fn link_login(&mut self, conn: ConnId, data: &[u8], out: &mut Vec<Action>) {
        let Some(pass) = self.cfg.link_password.clone() else {
            return self.refuse_link(conn, "link failed: linking is not enabled", out);
        };
        let Some([name, nonce, compress]) = Fields::exactly::<3>(data) else {
            return self.refuse_link(conn, "link failed: invalid parameters", out);
        };
        let name = String::from_utf8_lossy(name).into_owned();
        if !valid_server_name(name.as_bytes()) || nonce.is_empty() || nonce.len() > 64 {
            return self.refuse_link(conn, "link failed: invalid parameters", out);
        }
        if number::<u8>(compress).is_none_or(|c| c > 9) {
            return self.refuse_link(conn, "link failed: invalid compression level", out);
        }
        if name.eq_ignore_ascii_case(&self.cfg.server_name) {
            return self.refuse_link(conn, "link failed: that is my own name", out);
        }
        if self.links().iter().any(|l| l.eq_ignore_ascii_case(&name)) {
            return self.refuse_link(conn, "link failed: already linked", out);
        }
        if self.link_conns().len() >= self.cfg.max_links {
            return self.refuse_link(conn, "link failed: too many links", out);
        }
        let fresh = self.nonce();
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let state = c.link.get_or_insert_with(|| {
            Box::new(LinkState {
                peer: None,
                my_nonce: fresh,
                peer_nonce: None,
                sent_login: false,
                established: false,
            })
        });
        if state.peer_nonce.is_some() {
            return self.refuse_link(conn, "reregistration is not supported", out);
        }
        state.peer = Some(name.into_boxed_str());
        let peer_nonce = String::from_utf8_lossy(nonce).into_owned();
        state.peer_nonce = Some(peer_nonce.clone());
        let my_nonce = state.my_nonce.clone();
        if !state.sent_login {
            state.sent_login = true;
            let line = Line::new()
                .word(&self.cfg.server_name)
                .word(&my_nonce)
                .num(0);
            out.push(Action::Send(conn, line.frame(t::SERVER_LOGIN)));
        }
        let answer = md5_hex(&[peer_nonce.as_bytes(), my_nonce.as_bytes(), pass.as_bytes()]);
        out.push(Action::Send(conn, Frame::new(t::SERVER_LOGIN_ACK, answer)));
    }

    /// 10011 on a connection that has not logged in: the peer's proof.
    pub(super) fn link_login_ack(
        &mut self,
        conn: ConnId,
        data: &[u8],
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let Some(pass) = self.cfg.link_password.clone() else {
            return self.refuse_link(conn, "link failed: linking is not enabled", out);
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let Some(state) = c.link.as_mut() else {
            return self.refuse_link(conn, "You must login first", out);
        };
        let Some(peer_nonce) = state.peer_nonce.clone() else {
            return self.refuse_link(conn, "You must login first", out);
        };
        let want = md5_hex(&[
            state.my_nonce.as_bytes(),
            peer_nonce.as_bytes(),
            pass.as_bytes(),
        ]);
        if !want.as_bytes().eq_ignore_ascii_case(data) {
            return self.refuse_link(conn, "link failed: bad password", out);
        }
        state.established = true;
        let peer = state.peer.clone().unwrap_or_default();
        self.link_list.push(conn);
        let ip = c.ip;
        // A link is not a user: it no longer counts as waiting to log in.
        self.forget_unauth(conn, ip);
        let c = self.conns.get_mut(&conn).expect("checked above");
        c.errors = Bucket::full(self.cfg.error_burst, now.mono);
        tracing::info!(conn, peer = %peer, "server linked");
        out.push(Action::CompressLink(conn));
        // Tell it about every local user.
        let slots: Vec<u32> = self
            .users
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u.as_ref().filter(|u| !u.remote).map(|_| i as u32))
            .collect();
        for slot in slots {
            self.announce_user(conn, slot, now, out);
        }
    }

    /// Tells one link about a local user (its login and its file count).
    fn announce_user(&self, link: ConnId, slot: u32, now: Now, out: &mut Vec<Action>) {
        let u = self.user(slot);
        let line = Line::new()
            .word(&*u.nick)
            .word("*")
            .num(u.port)
            .quoted(&u.client)
            .num(u.link)
            .word("unknown")
            // When it logged in (Unix seconds), as OpenNap's `connected`.
            .num(
                now.unix
                    .saturating_sub(now.mono.saturating_duration_since(u.since).as_secs()),
            )
            .num(ip_to_decimal(u.ip))
            .word(&self.cfg.server_name)
            .num(0);
        out.push(Action::Send(link, line.frame(t::LOGIN)));
        let files = u.files.len();
        if files > 0 {
            let line = Line::new().word(&*u.nick).num(files).num(0);
            out.push(Action::Send(link, line.frame(t::SERVER_USER_SHARING)));
        }
    }

    /// A local user logged in: every link hears of it.
    pub(super) fn link_user_joined(&self, slot: u32, now: Now, out: &mut Vec<Action>) {
        for link in self.link_conns() {
            self.announce_user(link, slot, now, out);
        }
    }

    /// A local user's file count changed: the links hear of it at the next tick.
    pub(super) fn mark_shares_dirty(&mut self, slot: u32) {
        if !self.link_list.is_empty() {
            let u = self.user_mut(slot);
            if !u.remote && !u.shares_dirty {
                u.shares_dirty = true;
                self.shares_dirty.push(slot);
            }
        }
    }

    /// Sends the file counts that changed since the last tick (`10012`).
    pub(super) fn send_share_counts(&mut self, out: &mut Vec<Action>) {
        if self.shares_dirty.is_empty() {
            return;
        }
        let links = self.link_conns();
        for slot in std::mem::take(&mut self.shares_dirty) {
            let Some(u) = self.users.get_mut(slot as usize).and_then(Option::as_mut) else {
                continue;
            };
            if u.remote || !u.shares_dirty {
                continue;
            }
            u.shares_dirty = false;
            let line = Line::new().word(&*u.nick).num(u.files.len()).num(0);
            let frame = line.frame(t::SERVER_USER_SHARING);
            for &l in &links {
                out.push(Action::Send(l, frame.clone()));
            }
        }
    }

    /// A local user left: every link hears of it.
    pub(super) fn link_user_left(&self, nick: &str, out: &mut Vec<Action>) {
        for link in self.link_conns() {
            out.push(Action::Send(link, Frame::new(t::QUIT, nick.to_string())));
        }
    }

    /// A link is gone: its users leave, searches stop waiting for it.
    pub(super) fn link_closed(&mut self, link: ConnId, out: &mut Vec<Action>) {
        self.link_list.retain(|&l| l != link);
        let pseudo: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.remote == Some(link))
            .map(|(&id, _)| id)
            .collect();
        for p in pseudo {
            self.disconnect(p, out);
        }
        let mut done = Vec::new();
        for (&id, s) in self.remote_searches.iter_mut() {
            s.waiting.retain(|&l| l != link);
            if s.waiting.is_empty() {
                done.push(id);
            }
        }
        for id in done {
            self.finish_remote_search(id, out);
        }
    }

    /// Charges a link for a message it should not have sent; drops it past
    /// its error budget.
    fn link_error(&mut self, link: ConnId, what: &str, now: Now, out: &mut Vec<Action>) {
        tracing::debug!(link, what, "ignored a bad message from a linked server");
        let (burst, rate) = (self.cfg.error_burst, self.cfg.error_rate);
        let Some(c) = self.conns.get_mut(&link) else {
            return;
        };
        if !c.errors.take(burst, rate, now.mono) {
            let why = format!("too many bad messages (the last: {what})");
            self.refuse_link(link, &why, out);
        }
    }

    /// A message on an established link.
    pub(super) fn receive_link(
        &mut self,
        link: ConnId,
        frame: &Frame,
        now: Now,
        out: &mut Vec<Action>,
    ) {
        let data = &frame.data[..];
        match frame.ty {
            t::LOGIN => self.remote_login(link, data, now, out),
            t::QUIT => {
                let nick = first_word(data);
                // A user we did not take (past the cap, or a nick online
                // here) may leave too: nothing to do.
                if let Some(slot) = self.remote_slot(link, nick) {
                    let conn = self.user(slot).conn;
                    self.disconnect(conn, out);
                }
            }
            t::SERVER_USER_SHARING => {
                let mut f = Fields::new(data);
                let nick = f.next_field().unwrap_or_default();
                let files = f.next_field().and_then(number::<u32>);
                match (self.remote_slot(link, nick), files) {
                    (Some(slot), Some(n)) => self.user_mut(slot).remote_files = n,
                    (None, Some(_)) => {}
                    _ => self.link_error(link, "bad 10012", now, out),
                }
            }
            t::REMOTE_SEARCH => self.remote_search(link, data, out),
            t::REMOTE_SEARCH_RESULT => self.remote_search_result(link, data, now, out),
            t::REMOTE_SEARCH_END => {
                let id = first_word(data);
                let Some(id) = number::<u64>(id) else {
                    return self.link_error(link, "bad 10017", now, out);
                };
                let done = match self.remote_searches.get_mut(&id) {
                    Some(s) => {
                        s.waiting.retain(|&l| l != link);
                        s.waiting.is_empty()
                    }
                    None => false,
                };
                if done {
                    self.finish_remote_search(id, out);
                }
            }
            t::ENCAPSULATED => self.encapsulated(link, data, now, out),
            // opennap-ng asks a user behind us for a file with the uploader's
            // 607 (`:<requester> <uploader> "<file>"`): the requester's 203.
            t::UPLOAD_REQUEST => {
                let frame = Frame::new(t::DOWNLOAD, data.to_vec());
                self.receive_link(link, &frame, now, out)
            }
            ty if FORWARDED.contains(&ty) || ALSO_ACCEPTED.contains(&ty) => {
                // `:<sender> <data>` from a user behind this link.
                let Some(rest) = data.strip_prefix(b":") else {
                    return self.link_error(
                        link,
                        "a forwarded message without its sender",
                        now,
                        out,
                    );
                };
                let mut f = Fields::new(rest);
                let sender = f.next_field().unwrap_or_default();
                let rest = f.rest();
                let Some(slot) = self.remote_slot(link, sender) else {
                    // A user we did not take: its request goes unanswered.
                    return;
                };
                let conn = self.user(slot).conn;
                self.receive(conn, &Frame::new(ty, rest.to_vec()), now, out);
            }
            // What OpenNap also sends that we do not need (link info, time
            // check, levels, sync end, server pongs): ignored.
            10019 | 10020..=10024 | 10262 | 10263 | t::SET_LEVEL | t::MUZZLE | t::BAN => {}
            // opennap-ng's server ping, transfer counters (218-221) and kills
            // of users on its side: nothing for us to do, and no fault.
            t::SERVER_PING | 218..=221 | t::KILL => {
                tracing::debug!(link, ty = frame.ty, "ignored a link message");
            }
            other => self.link_error(link, &format!("unexpected type {other}"), now, out),
        }
    }

    /// The slot of the remote user `nick` behind `link`.
    fn remote_slot(&self, link: ConnId, nick: &[u8]) -> Option<u32> {
        let slot = self.slot_by_nick(nick)?;
        let conn = self.user(slot).conn;
        (self.conns.get(&conn)?.remote == Some(link)).then_some(slot)
    }

    /// `2 <nick> <pass> <port> "<client>" <link> <email> <connected> <ip>
    /// <server> <server port>`: a user of the peer's side.
    fn remote_login(&mut self, link: ConnId, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let Some((
            [
                nick,
                _pass,
                port,
                client,
                speed,
                _email,
                _since,
                ip,
                _server,
                _cport,
            ],
            _,
        )) = Fields::at_least::<10>(data)
        else {
            return self.link_error(link, "bad login", now, out);
        };
        let (Some(port), Some(speed), Some(ip)) = (
            number::<u16>(port),
            number::<u8>(speed).filter(|&s| s <= 10),
            number::<u32>(ip),
        ) else {
            return self.link_error(link, "bad login", now, out);
        };
        if !valid_nick(nick, self.cfg.max_nick_len) || client.len() > 256 {
            return self.link_error(link, "bad login", now, out);
        }
        let nick = String::from_utf8_lossy(nick).into_owned();
        if self.is_online(&nick) {
            // The same nick on both sides: ours stays, theirs is not seen here.
            tracing::info!(nick, "a linked server announced a nick that is online here");
            return;
        }
        if self.remote_users >= self.cfg.max_remote_users {
            tracing::warn!(nick, "too many remote users; not tracking this one");
            return;
        }
        self.next_pseudo += 1;
        let conn = self.next_pseudo;
        let ip = super::super::wire::ip_from_decimal(ip);
        self.conns.insert(
            conn,
            Conn {
                ip,
                opened: now.mono,
                last_heard: now.mono,
                pinged: false,
                user: None,
                requests: Bucket::full(self.cfg.request_burst, now.mono),
                errors: Bucket::full(self.cfg.error_burst, now.mono),
                login: None,
                remote: Some(link),
                link: None,
            },
        );
        let mut user = User::new(conn, &nick, ip, port, speed, client.into(), now.mono);
        user.remote = true;
        let slot = self.place_user(user);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.user = Some(slot);
        }
        self.remote_users += 1;
        self.nicks.insert(nick.to_ascii_lowercase(), slot);
        if let Some(w) = self.watchers.get(nick.to_ascii_lowercase().as_str()) {
            let line = Line::new().word(&nick).num(speed).frame(t::USER_SIGNON);
            for &c in w {
                out.push(Action::Send(c, line.clone()));
            }
        }
    }

    /// `10018 :<server> <nick> <frame>`: a message for a local user.
    fn encapsulated(&mut self, link: ConnId, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let parsed = (|| {
            let rest = data.strip_prefix(b":")?;
            let sp = rest.iter().position(|&b| b == b' ')?;
            let rest = &rest[sp + 1..];
            let sp = rest.iter().position(|&b| b == b' ')?;
            let (nick, inner) = (&rest[..sp], &rest[sp + 1..]);
            if inner.len() < 4 {
                return None;
            }
            let len = u16::from_le_bytes([inner[0], inner[1]]) as usize;
            let ty = u16::from_le_bytes([inner[2], inner[3]]);
            (inner.len() == 4 + len).then(|| (nick, Frame::new(ty, inner[4..].to_vec())))
        })();
        let Some((nick, inner)) = parsed else {
            return self.link_error(link, "bad 10018", now, out);
        };
        match self.slot_by_nick(nick).map(|s| self.user(s).conn) {
            Some(conn) if !self.is_remote(conn) => out.push(Action::Send(conn, inner)),
            // Gone meanwhile, or not ours.
            _ => {}
        }
    }

    /// Whether a local user's message is about a remote user; if so it went
    /// to that user's server.
    pub(super) fn forward(
        &mut self,
        conn: ConnId,
        slot: u32,
        frame: &Frame,
        out: &mut Vec<Action>,
    ) -> bool {
        if !FORWARDED.contains(&frame.ty) || self.is_remote(conn) {
            return false;
        }
        let mut f = Fields::new(&frame.data);
        let target = f.next_field().unwrap_or_default();
        let Some(tslot) = self.slot_by_nick(target) else {
            return false;
        };
        let Some(link) = self
            .conns
            .get(&self.user(tslot).conn)
            .and_then(|c| c.remote)
        else {
            return false;
        };
        let mut line = BytesMut::with_capacity(frame.data.len() + 40);
        line.put_u8(b':');
        line.put_slice(self.user(slot).nick.as_bytes());
        line.put_u8(b' ');
        line.put_slice(&frame.data);
        out.push(Action::Send(link, Frame::new(frame.ty, line.freeze())));
        true
    }

    /// Rewrites frames queued for remote users' pseudo connections into
    /// encapsulated frames on their links, and drops closes of pseudo
    /// connections. The shell calls it on every batch of actions.
    pub fn route(&self, out: &mut Vec<Action>) {
        if self.remote_users == 0
            && !out
                .iter()
                .any(|a| matches!(a, Action::Send(c, _) | Action::Close(c) if *c > PSEUDO_BASE))
        {
            return;
        }
        out.retain_mut(|a| match a {
            Action::Send(conn, frame) if *conn > PSEUDO_BASE => {
                let Some((link, nick)) = self.conns.get(conn).and_then(|c| {
                    let link = c.remote?;
                    let nick = self.users.get(c.user? as usize)?.as_ref()?.nick.clone();
                    Some((link, nick))
                }) else {
                    return false;
                };
                let mut data = BytesMut::new();
                data.put_u8(b':');
                data.put_slice(self.cfg.server_name.as_bytes());
                data.put_u8(b' ');
                data.put_slice(nick.as_bytes());
                data.put_u8(b' ');
                frame.encode(&mut data);
                *a = Action::Send(link, Frame::new(t::ENCAPSULATED, data.freeze()));
                true
            }
            Action::Close(conn) => *conn <= PSEUDO_BASE,
            _ => true,
        });
    }

    /// A local user's search, after the local results: asked of every link
    /// when more results are wanted. Returns whether the 202 now waits.
    pub(super) fn search_links(
        &mut self,
        conn: ConnId,
        data: &[u8],
        found: usize,
        limit: usize,
        now: Now,
        out: &mut Vec<Action>,
    ) -> bool {
        if self.is_remote(conn) || found >= limit {
            return false;
        }
        let links = self.link_conns();
        if links.is_empty() || self.remote_searches.len() >= self.cfg.max_remote_searches {
            return false;
        }
        let Some(slot) = self.conns.get(&conn).and_then(|c| c.user) else {
            return false;
        };
        self.next_search += 1;
        let id = self.next_search;
        let nick = self.user(slot).nick.clone();
        let mut line = BytesMut::new();
        line.put_slice(format!("{nick} {id} ").as_bytes());
        line.put_slice(data);
        let frame = Frame::new(t::REMOTE_SEARCH, line.freeze());
        for &l in &links {
            out.push(Action::Send(l, frame.clone()));
        }
        self.remote_searches.insert(
            id,
            RemoteSearch {
                conn,
                waiting: links,
                found,
                limit,
                deadline: now.mono + self.cfg.remote_search_timeout,
            },
        );
        true
    }

    /// 10015 `<nick> <id> <query>`: a peer's user searches our files.
    fn remote_search(&mut self, link: ConnId, data: &[u8], out: &mut Vec<Action>) {
        let mut f = Fields::new(data);
        let nick = f.next_field().unwrap_or_default();
        let id = f.next_field().unwrap_or_default();
        let query = f.rest();
        if id.is_empty() || id.len() > 32 {
            return;
        }
        let id = String::from_utf8_lossy(id).into_owned();
        let end = Frame::new(t::REMOTE_SEARCH_END, id.clone());
        let (Some(slot), Ok(req)) = (self.remote_slot(link, nick), SearchRequest::parse(query))
        else {
            out.push(Action::Send(link, end));
            return;
        };
        let conn = self.user(slot).conn;
        self.stats.searches += 1;
        let mut found = Vec::new();
        self.run_search(conn, &req, &mut found);
        for a in found {
            let Action::Send(_, f) = a else { continue };
            let Some(r) = SearchResult::parse(&f.data) else {
                continue;
            };
            let line = Line::new()
                .word(&id)
                .word(&r.nick)
                .quoted(&r.name)
                .word(&r.md5)
                .num(r.size)
                .num(r.bitrate)
                .num(r.freq)
                .num(r.seconds);
            out.push(Action::Send(link, line.frame(t::REMOTE_SEARCH_RESULT)));
        }
        out.push(Action::Send(link, end));
    }

    /// 10016 `<id> <nick> "<file>" <md5> <size> <bitrate> <freq> <secs>`.
    fn remote_search_result(&mut self, link: ConnId, data: &[u8], now: Now, out: &mut Vec<Action>) {
        let Some([id, nick, name, md5, size, bitrate, freq, secs]) = Fields::exactly::<8>(data)
        else {
            return self.link_error(link, "bad 10016", now, out);
        };
        let Some(id) = number::<u64>(id) else {
            return self.link_error(link, "bad 10016", now, out);
        };
        let Some(slot) = self.remote_slot(link, nick) else {
            return;
        };
        let Some(s) = self.remote_searches.get_mut(&id) else {
            return;
        };
        if s.found >= s.limit || !s.waiting.contains(&link) {
            return;
        }
        let nums = [size, bitrate, freq, secs];
        if nums.iter().any(|n| number::<u64>(n).is_none()) || md5.is_empty() || md5.len() > 64 {
            return self.link_error(link, "bad 10016", now, out);
        }
        s.found += 1;
        let to = s.conn;
        let u = self.user(slot);
        let line = Line::new()
            .quoted(name)
            .word(md5)
            .word(size)
            .word(bitrate)
            .word(freq)
            .word(secs)
            .word(&*u.nick)
            .num(ip_to_decimal(u.ip))
            .num(u.link);
        self.stats.results += 1;
        out.push(Action::Send(to, line.frame(t::SEARCH_RESULT)));
    }

    /// Ends a search that waited for the links: its 202.
    pub(super) fn finish_remote_search(&mut self, id: u64, out: &mut Vec<Action>) {
        if let Some(s) = self.remote_searches.remove(&id)
            && self.conns.contains_key(&s.conn)
        {
            out.push(Action::Send(s.conn, Frame::empty(t::SEARCH_END)));
        }
    }

    /// Searches whose links took too long get their 202.
    pub(super) fn expire_remote_searches(&mut self, now: Now, out: &mut Vec<Action>) {
        let late: Vec<u64> = self
            .remote_searches
            .iter()
            .filter(|(_, s)| s.deadline <= now.mono)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            self.finish_remote_search(id, out);
        }
    }
}

/// Pseudo connections (remote users) are numbered above this; the shell's
/// connection numbers count up from 1 and never get there.
pub(super) const PSEUDO_BASE: ConnId = 1 << 62;
