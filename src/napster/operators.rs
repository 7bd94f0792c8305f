//! Operators: user levels, muzzles and bans, as OpenNap keeps them, and the
//! text form of the two files that hold them. No I/O: the server reads and
//! writes the text.
//!
//! `napster-levels.txt`, one nick a line: `<nick> <level> [muzzled]`, where
//! `<level>` is `leech`, `user`, `moderator`, `admin` or `elite`. A nick with
//! level `user` and no muzzle has no line.
//!
//! `napster-bans.txt`, one ban a line: `<target> <set-by> <set-at unix> <seconds
//! or 0 for ever> <reason to the end of the line>`. A target is an OpenNap mask
//! `<nick>!<ip>` where `*` matches any run and `?` one character, ignoring ASCII
//! case.
//!
//! Lines that do not parse are skipped and counted, so a damaged line costs one
//! entry, never the file.

use std::collections::HashMap;

/// A user's level, as OpenNap orders them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// May log in and talk; may not share, search, browse or download.
    Leech = 0,
    User = 1,
    Moderator = 2,
    Admin = 3,
    /// The server's owner.
    Elite = 4,
}

impl Level {
    /// The name OpenNap shows (whois, level changes).
    pub fn name(self) -> &'static str {
        match self {
            Level::Leech => "Leech",
            Level::User => "User",
            Level::Moderator => "Moderator",
            Level::Admin => "Admin",
            Level::Elite => "Elite",
        }
    }

    /// Reads a level as OpenNap does: by its first three letters, any case
    /// (`mod`, `Moderator`, `admin`).
    pub fn parse(s: &[u8]) -> Option<Level> {
        let p = s.get(..3)?.to_ascii_lowercase();
        Some(match &p[..] {
            b"lee" => Level::Leech,
            b"use" => Level::User,
            b"mod" => Level::Moderator,
            b"adm" => Level::Admin,
            b"eli" => Level::Elite,
            _ => return None,
        })
    }

    pub fn number(self) -> u8 {
        self as u8
    }
}

/// What is kept about a nick beyond its account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub level: Level,
    pub muzzled: bool,
}

impl Default for Record {
    fn default() -> Record {
        Record {
            level: Level::User,
            muzzled: false,
        }
    }
}

/// A ban on a `nick!ip` mask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ban {
    /// The normalized mask (see [`normalize_ban`]).
    pub target: String,
    pub set_by: String,
    pub reason: String,
    /// Unix seconds when it was set.
    pub when: u64,
    /// Seconds it lasts; 0 for ever.
    pub timeout: u64,
}

impl Ban {
    /// Whether the ban still holds at `now` (Unix seconds).
    pub fn active(&self, now: u64) -> bool {
        self.timeout == 0 || self.when.saturating_add(self.timeout) > now
    }
}

/// Longest ban mask, reason, or nick of a setter kept.
pub const MAX_BAN_TARGET: usize = 64;
pub const MAX_REASON: usize = 128;

/// Turns what an operator typed into a mask, as OpenNap does: a `nick!ip`
/// mask is kept; digits and dots are an address (`10.0.0.` meaning the whole
/// prefix: `*!10.0.0.*`); anything else is a nick (`nick!*`). `None` for an
/// empty or overlong target, or one with spaces, quotes or control characters.
pub fn normalize_ban(src: &[u8]) -> Option<String> {
    if src.is_empty()
        || src.len() > MAX_BAN_TARGET - 3
        || !src.iter().all(|&c| (b'!'..=b'~').contains(&c) && c != b'"')
    {
        return None;
    }
    let s = std::str::from_utf8(src).ok()?;
    let out = if s.contains('!') {
        s.to_string()
    } else if s.bytes().all(|c| c.is_ascii_digit() || c == b'.') {
        let star = if s.ends_with('.') { "*" } else { "" };
        format!("*!{s}{star}")
    } else {
        format!("{s}!*")
    };
    Some(out.to_ascii_lowercase())
}

/// Glob match ignoring ASCII case: `*` any run (possibly empty), `?` one
/// byte. Linear in practice, at worst `pattern.len() * text.len()` steps; no
/// recursion.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p].eq_ignore_ascii_case(&text[t])) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while p < pattern.len() && pattern[p] == b'*' {
        p += 1;
    }
    p == pattern.len()
}

/// Cuts a reason to [`MAX_REASON`] bytes (at a character boundary) and
/// replaces what would break a line or a quoted field.
pub fn clean_reason(reason: &[u8]) -> String {
    let mut s: String = String::from_utf8_lossy(reason)
        .chars()
        .map(|c| match c {
            '"' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect();
    if s.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Why a change to the operator data was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    Full,
    AlreadyBanned,
    NoSuchBan,
}

/// Levels, muzzles and bans, each bounded.
#[derive(Clone, Debug)]
pub struct Operators {
    /// By lower-case nick; only nicks that differ from the default.
    records: HashMap<String, Record>,
    bans: Vec<Ban>,
    max_records: usize,
    max_bans: usize,
}

impl Default for Operators {
    fn default() -> Operators {
        Operators::new(100_000, 1024)
    }
}

impl Operators {
    pub fn new(max_records: usize, max_bans: usize) -> Operators {
        Operators {
            records: HashMap::new(),
            bans: Vec::new(),
            max_records,
            max_bans,
        }
    }

    pub fn max_bans(&self) -> usize {
        self.max_bans
    }

    /// What is kept about `nick` (the default when nothing is).
    pub fn record(&self, nick: &str) -> Record {
        self.records
            .get(&nick.to_ascii_lowercase())
            .copied()
            .unwrap_or_default()
    }

    /// Whether anything is kept about `nick`.
    pub fn knows(&self, nick: &str) -> bool {
        self.records.contains_key(&nick.to_ascii_lowercase())
    }

    /// Stores `record` for `nick`; the default removes the line. Refused when
    /// the table is full and `nick` has no line yet.
    pub fn set(&mut self, nick: &str, record: Record) -> Result<(), Refused> {
        let key = nick.to_ascii_lowercase();
        if record == Record::default() {
            self.records.remove(&key);
            return Ok(());
        }
        if !self.records.contains_key(&key) && self.records.len() >= self.max_records {
            return Err(Refused::Full);
        }
        self.records.insert(key, record);
        Ok(())
    }

    /// Nicks with a level other than `user`, with it, sorted (for tests and logs).
    pub fn levels(&self) -> Vec<(String, Level)> {
        let mut v: Vec<_> = self
            .records
            .iter()
            .filter(|(_, r)| r.level != Level::User)
            .map(|(n, r)| (n.clone(), r.level))
            .collect();
        v.sort();
        v
    }

    /// Every ban, in the order they were set.
    pub fn bans(&self) -> &[Ban] {
        &self.bans
    }

    /// Adds a ban (expired ones are dropped first to make room).
    pub fn ban(&mut self, ban: Ban, now: u64) -> Result<(), Refused> {
        self.bans.retain(|b| b.active(now));
        if self.bans.iter().any(|b| b.target == ban.target) {
            return Err(Refused::AlreadyBanned);
        }
        if self.bans.len() >= self.max_bans {
            return Err(Refused::Full);
        }
        self.bans.push(ban);
        Ok(())
    }

    /// Removes the ban on a normalized `target`.
    pub fn unban(&mut self, target: &str) -> Result<Ban, Refused> {
        let i = self
            .bans
            .iter()
            .position(|b| b.target == target)
            .ok_or(Refused::NoSuchBan)?;
        Ok(self.bans.remove(i))
    }

    /// Drops the bans that have run out; whether any was.
    pub fn expire(&mut self, now: u64) -> bool {
        let before = self.bans.len();
        self.bans.retain(|b| b.active(now));
        self.bans.len() != before
    }

    /// The first ban that holds for `nick` logging in from `ip` (dotted).
    pub fn banned(&self, nick: &str, ip: &str, now: u64) -> Option<&Ban> {
        let mask = format!("{nick}!{ip}");
        self.bans
            .iter()
            .find(|b| b.active(now) && glob_match(b.target.as_bytes(), mask.as_bytes()))
    }

    /// The levels file.
    pub fn levels_to_text(&self) -> String {
        let mut keys: Vec<&String> = self.records.keys().collect();
        keys.sort();
        let mut out = String::new();
        for k in keys {
            let r = self.records[k];
            out.push_str(k);
            out.push(' ');
            out.push_str(&r.level.name().to_ascii_lowercase());
            if r.muzzled {
                out.push_str(" muzzled");
            }
            out.push('\n');
        }
        out
    }

    /// The bans file.
    pub fn bans_to_text(&self) -> String {
        let mut out = String::new();
        for b in &self.bans {
            out.push_str(&format!(
                "{} {} {} {} {}\n",
                b.target, b.set_by, b.when, b.timeout, b.reason
            ));
        }
        out
    }

    /// Reads a levels file; returns how many lines were skipped.
    pub fn load_levels(&mut self, text: &str) -> usize {
        let mut skipped = 0;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.split(' ');
            let (Some(nick), Some(level)) = (f.next(), f.next()) else {
                skipped += 1;
                continue;
            };
            let muzzled = match f.next() {
                None => false,
                Some("muzzled") => true,
                Some(_) => {
                    skipped += 1;
                    continue;
                }
            };
            let Some(level) = Level::parse(level.as_bytes()) else {
                skipped += 1;
                continue;
            };
            if nick.is_empty() || self.set(nick, Record { level, muzzled }).is_err() {
                skipped += 1;
            }
        }
        skipped
    }

    /// Reads a bans file; returns how many lines were skipped.
    pub fn load_bans(&mut self, text: &str) -> usize {
        let mut skipped = 0;
        for line in text.lines() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.splitn(5, ' ');
            let parsed = (|| {
                let target = normalize_ban(f.next()?.as_bytes())?;
                let set_by = f.next()?.to_string();
                let when = f.next()?.parse().ok()?;
                let timeout = f.next()?.parse().ok()?;
                let reason = clean_reason(f.next().unwrap_or("").as_bytes());
                Some(Ban {
                    target,
                    set_by,
                    reason,
                    when,
                    timeout,
                })
            })();
            match parsed {
                Some(b) if self.bans.len() < self.max_bans => self.bans.push(b),
                _ => skipped += 1,
            }
        }
        skipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_as_opennap_reads_them() {
        assert_eq!(Level::parse(b"mod"), Some(Level::Moderator));
        assert_eq!(Level::parse(b"Moderator"), Some(Level::Moderator));
        assert_eq!(Level::parse(b"ADMIN"), Some(Level::Admin));
        assert_eq!(Level::parse(b"elite"), Some(Level::Elite));
        assert_eq!(Level::parse(b"leech"), Some(Level::Leech));
        assert_eq!(Level::parse(b"us"), None);
        assert_eq!(Level::parse(b"god"), None);
        assert!(Level::Leech < Level::User && Level::Admin < Level::Elite);
    }

    #[test]
    fn ban_masks_and_globs() {
        assert_eq!(normalize_ban(b"Bob").as_deref(), Some("bob!*"));
        assert_eq!(normalize_ban(b"10.0.0.5").as_deref(), Some("*!10.0.0.5"));
        assert_eq!(normalize_ban(b"10.0.").as_deref(), Some("*!10.0.*"));
        assert_eq!(normalize_ban(b"b*!1.2.3.4").as_deref(), Some("b*!1.2.3.4"));
        assert_eq!(normalize_ban(b""), None);
        assert_eq!(normalize_ban(b"a b"), None);
        assert_eq!(normalize_ban(&[b'a'; 80]), None);
        assert!(glob_match(b"bob!*", b"BOB!10.0.0.1"));
        assert!(!glob_match(b"bob!*", b"bobby!10.0.0.1"));
        assert!(glob_match(b"*!10.0.*", b"x!10.0.7.1"));
        assert!(!glob_match(b"*!10.0.*", b"x!10.1.0.1"));
        assert!(glob_match(b"b?b!*", b"bib!1"));
        assert!(glob_match(b"*a*a*a*", b"xaxaxa"));
        assert!(!glob_match(
            b"*a*a*a*b",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ));
    }

    #[test]
    fn files_round_trip_and_damage_costs_one_line() {
        let mut ops = Operators::new(10, 2);
        ops.set(
            "Boss",
            Record {
                level: Level::Elite,
                muzzled: false,
            },
        )
        .unwrap();
        ops.set(
            "noisy",
            Record {
                level: Level::User,
                muzzled: true,
            },
        )
        .unwrap();
        let ban = Ban {
            target: normalize_ban(b"10.0.").unwrap(),
            set_by: "Boss".into(),
            reason: clean_reason(b"flood \"x\"\nmore"),
            when: 100,
            timeout: 0,
        };
        ops.ban(ban.clone(), 100).unwrap();
        assert_eq!(ops.ban(ban.clone(), 100), Err(Refused::AlreadyBanned));
        let levels = ops.levels_to_text();
        let bans = ops.bans_to_text();
        assert_eq!(levels, "boss elite\nnoisy user muzzled\n");
        let mut back = Operators::new(10, 2);
        assert_eq!(back.load_levels(&format!("{levels}bad\nx god\n")), 2);
        assert_eq!(back.load_bans(&format!("{bans}oops\n")), 1);
        assert_eq!(back.record("BOSS").level, Level::Elite);
        assert!(back.record("Noisy").muzzled);
        assert_eq!(back.bans(), &[ban][..]);
        assert!(back.banned("anyone", "10.0.3.4", 200).is_some());
        assert!(back.banned("anyone", "10.1.3.4", 200).is_none());
        // Back to the default: the line goes.
        back.set("noisy", Record::default()).unwrap();
        assert!(!back.knows("noisy"));
    }

    #[test]
    fn bounded_and_expiring() {
        let mut ops = Operators::new(1, 1);
        let muzzled = Record {
            level: Level::User,
            muzzled: true,
        };
        ops.set("a", muzzled).unwrap();
        assert_eq!(ops.set("b", muzzled), Err(Refused::Full));
        ops.set("a", Record::default()).unwrap();
        ops.set("b", muzzled).unwrap();
        let ban = |t: &str, timeout| Ban {
            target: t.into(),
            set_by: "x".into(),
            reason: String::new(),
            when: 1000,
            timeout,
        };
        ops.ban(ban("a!*", 60), 1000).unwrap();
        assert_eq!(ops.ban(ban("b!*", 0), 1000), Err(Refused::Full));
        assert!(ops.banned("a", "1.2.3.4", 1059).is_some());
        assert!(ops.banned("a", "1.2.3.4", 1060).is_none());
        // The expired one makes room.
        ops.ban(ban("b!*", 0), 1060).unwrap();
        assert_eq!(ops.bans().len(), 1);
        assert_eq!(ops.unban("b!*").map(|b| b.target), Ok("b!*".to_string()));
        assert_eq!(ops.unban("b!*"), Err(Refused::NoSuchBan));
    }
}
