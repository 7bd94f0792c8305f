//! Registered nicks: passwords kept as Argon2id hashes (PHC strings), and the
//! text form of the accounts file. No I/O: the server writes the text out, and
//! hashing runs wherever the caller puts it (the server on a blocking thread,
//! never on the index task).
//!
//! File format, one account per line, fields separated by one space:
//! `<nick> <argon2 PHC string> <email> <registered unix seconds>`. Files written
//! before Argon2 hold `<nick> <salt hex> <hash hex> <email> <registered>` (1024
//! rounds of salted SHA-1); such an account still logs in, and its hash is
//! replaced by an Argon2 one at its first successful login. Lines that do not
//! parse are skipped (and counted), so a damaged line costs one account, never
//! the file.

use std::collections::HashMap;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha1::{Digest, Sha1};

/// Rounds of the legacy hash (only ever verified, never written).
const LEGACY_ROUNDS: u32 = 1024;

/// Argon2id cost: 19 MiB and two passes (the OWASP minimum for Argon2id). A
/// guess against a stolen file costs that much memory and time; a login costs
/// one hash on a blocking thread.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
pub const ARGON2_PASSES: u32 = 2;

fn argon2() -> Argon2<'static> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_PASSES, 1, None)
        .expect("constant Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// How a password is stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Secret {
    /// An Argon2 PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    Argon2(String),
    /// The pre-Argon2 form: SHA-1 of salt and password, rehashed 1023 times.
    Legacy { salt: [u8; 16], hash: [u8; 20] },
}

fn legacy_digest(salt: &[u8; 16], password: &[u8]) -> [u8; 20] {
    let mut h: [u8; 20] = Sha1::new()
        .chain_update(salt)
        .chain_update(password)
        .finalize()
        .into();
    for _ in 1..LEGACY_ROUNDS {
        h = Sha1::new()
            .chain_update(h)
            .chain_update(salt)
            .finalize()
            .into();
    }
    h
}

/// Hashes `password` with a fresh `salt` (expensive: run it off the index task).
pub fn hash_password(password: &[u8], salt: [u8; 16]) -> Secret {
    let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt length");
    let phc = argon2()
        .hash_password(password, &salt)
        .expect("Argon2 hashing of a bounded password cannot fail")
        .to_string();
    Secret::Argon2(phc)
}

/// What checking a password found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub ok: bool,
    /// A new Argon2 secret to store instead of a legacy one (only when `ok`).
    pub upgrade: Option<Secret>,
}

impl Secret {
    /// Checks `password` (expensive for Argon2: run it off the index task). A
    /// correct password against a legacy hash comes back with the Argon2 hash
    /// that should replace it, salted with `fresh_salt`.
    pub fn check(&self, password: &[u8], fresh_salt: [u8; 16]) -> Checked {
        match self {
            Secret::Argon2(phc) => {
                let ok = PasswordHash::new(phc)
                    .map(|h| argon2().verify_password(password, &h).is_ok())
                    .unwrap_or(false);
                Checked { ok, upgrade: None }
            }
            Secret::Legacy { salt, hash } => {
                let h = legacy_digest(salt, password);
                let ok = h.iter().zip(hash.iter()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0;
                Checked {
                    ok,
                    upgrade: ok.then(|| hash_password(password, fresh_salt)),
                }
            }
        }
    }

    /// The legacy form of `password` (for tests of old files).
    pub fn legacy(password: &[u8], salt: [u8; 16]) -> Secret {
        Secret::Legacy {
            salt,
            hash: legacy_digest(&salt, password),
        }
    }

    fn to_field(&self) -> String {
        match self {
            Secret::Argon2(phc) => phc.clone(),
            Secret::Legacy { salt, hash } => format!("{} {}", hex(salt), hex(hash)),
        }
    }
}

/// A registered nick.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The nick as registered (the map key is its lower-case form).
    pub nick: String,
    pub secret: Secret,
    pub email: String,
    pub registered: u64,
}

impl Account {
    /// A new account with an already computed secret.
    pub fn new(nick: &str, secret: Secret, email: &str, now: u64) -> Account {
        Account {
            nick: nick.to_string(),
            secret,
            email: email.to_string(),
            registered: now,
        }
    }
}

/// Whether `email` looks like an address: one `@` with something before it, a
/// domain after it (a host name alone will do: TekNap registers with
/// `blah@opennap`, which OpenNap takes), printable ASCII without spaces or
/// quotes.
pub fn valid_email(email: &[u8]) -> bool {
    if email.is_empty() || email.len() > 254 {
        return false;
    }
    if !email
        .iter()
        .all(|&c| (b'!'..=b'~').contains(&c) && !b"\"\\,<>()[];:".contains(&c))
    {
        return false;
    }
    let mut parts = email.split(|&c| c == b'@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.starts_with(b".")
        && !domain.ends_with(b".")
        && !domain.windows(2).any(|w| w == b"..")
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

    /// Replaces the secret of a registered nick; false if there is none.
    pub fn set_secret(&mut self, nick: &str, secret: Secret) -> bool {
        match self.map.get_mut(&nick.to_ascii_lowercase()) {
            Some(a) => {
                a.secret = secret;
                true
            }
            None => false,
        }
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
                "{} {} {} {}\n",
                a.nick,
                a.secret.to_field(),
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
                let parts: Vec<&str> = line.split(' ').collect();
                let (nick, secret, email, registered) = match parts[..] {
                    [nick, phc, email, registered] if phc.starts_with("$argon2") => {
                        PasswordHash::new(phc).ok()?.hash?;
                        (nick, Secret::Argon2(phc.to_string()), email, registered)
                    }
                    [nick, salt, hash, email, registered] => (
                        nick,
                        Secret::Legacy {
                            salt: unhex::<16>(salt)?,
                            hash: unhex::<20>(hash)?,
                        },
                        email,
                        registered,
                    ),
                    _ => return None,
                };
                if nick.is_empty() || email.is_empty() {
                    return None;
                }
                Some(Account {
                    nick: nick.to_string(),
                    secret,
                    email: email.to_string(),
                    registered: registered.parse().ok()?,
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
        let a = hash_password(b"secret", [1; 16]);
        let b = hash_password(b"secret", [2; 16]);
        assert!(
            matches!(&a, Secret::Argon2(p) if p.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"))
        );
        assert!(a.check(b"secret", [0; 16]).ok);
        assert!(!a.check(b"Secret", [0; 16]).ok);
        assert!(!a.check(b"", [0; 16]).ok);
        assert_eq!(a.check(b"secret", [0; 16]).upgrade, None);
        // Same password, different salt: different hash; and never the plain text.
        assert_ne!(a, b);
        assert!(!a.to_field().contains("secret"));
    }

    #[test]
    fn legacy_hashes_still_log_in_and_are_upgraded() {
        let old = Secret::legacy(b"pw", [3; 16]);
        assert_eq!(
            old.check(b"wrong", [9; 16]),
            Checked {
                ok: false,
                upgrade: None
            }
        );
        let c = old.check(b"pw", [9; 16]);
        assert!(c.ok);
        let new = c.upgrade.expect("upgraded");
        assert!(new.check(b"pw", [0; 16]).ok);
        // An old file line reads, and writes back in the old form until upgraded.
        let line = format!("Lefty {} l@x.org 5\n", old.to_field());
        let (mut accounts, skipped) = Accounts::from_text(&line);
        assert_eq!(skipped, 0);
        assert_eq!(accounts.to_text(), line);
        assert!(accounts.set_secret("lefty", new.clone()));
        let text = accounts.to_text();
        assert!(text.starts_with("Lefty $argon2id$"), "{text}");
        let (again, skipped) = Accounts::from_text(&text);
        assert_eq!(skipped, 0);
        assert_eq!(again.get("LEFTY").unwrap().secret, new);
    }

    #[test]
    fn file_text_round_trips_and_skips_damage() {
        let mut accounts = Accounts::default();
        let s = |p: &[u8], n| hash_password(p, [n; 16]);
        assert!(accounts.insert(Account::new("Lefty", s(b"pw", 3), "l@x.org", 1)));
        assert!(!accounts.insert(Account::new("lefty", s(b"pw2", 4), "l@y.org", 2)));
        assert!(accounts.insert(Account::new("bob", s(b"pw", 5), "b@x.org", 3)));
        let text = accounts.to_text();
        assert!(!text.contains("pw "));
        let damaged = format!("{text}garbage line\nx 00 00 e 1\ny $argon2id$broken e@x.org 1\n");
        let (again, skipped) = Accounts::from_text(&damaged);
        assert_eq!(skipped, 3);
        assert_eq!(again.len(), 2);
        assert!(again.get("LEFTY").unwrap().secret.check(b"pw", [0; 16]).ok);
        assert_eq!(again.to_text(), text);
    }

    #[test]
    fn emails() {
        // TekNap registers with `blah@opennap` unless told otherwise.
        for good in [
            "a@b.co",
            "first.last+tag@example.org",
            "x@sub.domain.net",
            "blah@opennap",
        ] {
            assert!(valid_email(good.as_bytes()), "{good}");
        }
        for bad in [
            "notanemail",
            "@example.org",
            "a@",
            "a@@b.org",
            "a b@c.org",
            "a@.org",
            "a@org.",
            "a@b..org",
            "a\"@b.org",
            "",
        ] {
            assert!(!valid_email(bad.as_bytes()), "{bad}");
        }
    }
}
