//! Registered nicks: passwords kept as salted, iterated SHA-1, and the text form
//! of the accounts file. No I/O: the server writes the text out.
//!
//! File format, one account per line, fields separated by one space:
//! `<nick> <salt hex> <hash hex> <email> <registered unix seconds>`. Lines that do
//! not parse are skipped (and counted), so a damaged line costs one account, never
//! the file.

use std::collections::HashMap;

use sha1::{Digest, Sha1};

/// How many times the salted password is hashed. Makes each guess against a stolen
/// file cost this many SHA-1s, while a login check stays well under a millisecond.
const ROUNDS: u32 = 1024;

/// A registered nick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The nick as registered (the map key is its lower-case form).
    pub nick: String,
    pub salt: [u8; 16],
    pub hash: [u8; 20],
    pub email: String,
    pub registered: u64,
}

fn digest(salt: &[u8; 16], password: &[u8]) -> [u8; 20] {
    let mut h: [u8; 20] = Sha1::new()
        .chain_update(salt)
        .chain_update(password)
        .finalize()
        .into();
    for _ in 1..ROUNDS {
        h = Sha1::new()
            .chain_update(h)
            .chain_update(salt)
            .finalize()
            .into();
    }
    h
}

impl Account {
    /// A new account; `salt` must be fresh random bytes.
    pub fn new(nick: &str, password: &[u8], email: &str, salt: [u8; 16], now: u64) -> Account {
        Account {
            nick: nick.to_string(),
            salt,
            hash: digest(&salt, password),
            email: email.to_string(),
            registered: now,
        }
    }

    /// Whether `password` is this account's, compared in constant time.
    pub fn check(&self, password: &[u8]) -> bool {
        let h = digest(&self.salt, password);
        h.iter()
            .zip(self.hash.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b))
            == 0
    }
}

/// Every registered nick, keyed by lower-case nick.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    map: HashMap<String, Account>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Accounts {
    pub fn get(&self, nick: &str) -> Option<&Account> {
        self.map.get(&nick.to_ascii_lowercase())
    }

    /// Adds an account unless the nick is taken; returns whether it was added.
    pub fn insert(&mut self, account: Account) -> bool {
        let key = account.nick.to_ascii_lowercase();
        if self.map.contains_key(&key) {
            return false;
        }
        self.map.insert(key, account);
        true
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The file text, sorted by nick.
    pub fn to_text(&self) -> String {
        let mut rows: Vec<&Account> = self.map.values().collect();
        rows.sort_by(|a, b| a.nick.cmp(&b.nick));
        let mut out = String::new();
        for a in rows {
            out.push_str(&format!(
                "{} {} {} {} {}\n",
                a.nick,
                hex(&a.salt),
                hex(&a.hash),
                a.email,
                a.registered
            ));
        }
        out
    }

    /// Reads the file text; returns the accounts and the number of lines skipped.
    pub fn from_text(text: &str) -> (Accounts, usize) {
        let mut accounts = Accounts::default();
        let mut skipped = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let parsed = (|| {
                let mut parts = line.split(' ');
                let nick = parts.next()?;
                let salt = unhex::<16>(parts.next()?)?;
                let hash = unhex::<20>(parts.next()?)?;
                let email = parts.next()?;
                let registered = parts.next()?.parse().ok()?;
                if parts.next().is_some() || nick.is_empty() || email.is_empty() {
                    return None;
                }
                Some(Account {
                    nick: nick.to_string(),
                    salt,
                    hash,
                    email: email.to_string(),
                    registered,
                })
            })();
            match parsed {
                Some(a) if accounts.insert(a.clone()) => {}
                _ => skipped += 1,
            }
        }
        (accounts, skipped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_salted_and_checked() {
        let a = Account::new("Lefty", b"secret", "l@example.org", [1; 16], 7);
        let b = Account::new("other", b"secret", "o@example.org", [2; 16], 7);
        assert!(a.check(b"secret"));
        assert!(!a.check(b"Secret"));
        assert!(!a.check(b""));
        // Same password, different salt: different hash; and never the plain text.
        assert_ne!(a.hash, b.hash);
        assert!(!a.to_owned().hash.windows(6).any(|w| w == b"secret"));
    }

    #[test]
    fn file_text_round_trips_and_skips_damage() {
        let mut accounts = Accounts::default();
        assert!(accounts.insert(Account::new("Lefty", b"pw", "l@x", [3; 16], 1)));
        assert!(!accounts.insert(Account::new("lefty", b"pw2", "l@y", [4; 16], 2)));
        assert!(accounts.insert(Account::new("bob", b"pw", "b@x", [5; 16], 3)));
        let text = accounts.to_text();
        assert!(!text.contains("pw "));
        let damaged = format!("{text}garbage line\nx 00 00 e 1\n");
        let (again, skipped) = Accounts::from_text(&damaged);
        assert_eq!(skipped, 2);
        assert_eq!(again.len(), 2);
        assert!(again.get("LEFTY").unwrap().check(b"pw"));
        assert_eq!(again.to_text(), text);
    }
}
