//! The Napster-style central index and its client side.
//!
//! One server knows every file its users share, so a search is answered from one
//! place at once; the files still move between the users themselves. We speak the
//! protocol of the Napster clients and OpenNap servers (see
//! `protocol-spec/napster.md`):
//!
//! - [`wire`]: frames, fields, the search grammar, the decimal IP form; no I/O;
//! - [`accounts`]: registered nicks with salted password hashes; no I/O;
//! - [`operators`]: user levels, muzzles and bans (OpenNap's operators); no I/O;
//! - [`index`]: the deciding core (users, files, the inverted keyword index,
//!   searches, transfer brokering), fed events with the time passed in;
//! - [`server`]: the async shell of `servent index`;
//! - [`mp3`]: bit rate, sample rate and length from an MP3's headers;
//! - [`client`]: a logged-in session, used by `servent napster ...`;
//! - [`transfer`]: the client-to-client data port (`GET` and the firewalled
//!   `SEND`), resumable by offset.

pub mod accounts;
pub mod client;
pub mod index;
pub mod mp3;
pub mod operators;
pub mod server;
pub mod transfer;
pub mod wire;
