//! Bootstrapping over HTTP: the client a node uses when it has no host to
//! connect to (gtk-gnutella's GHC, LimeWire-style bootstrap URLs, GWebCaches),
//! and `servent webcache`, a small host cache of our own. The decisions are in
//! [`crate::core::webcache`], the formats in [`crate::wire::webcache`].

pub mod client;
pub mod server;

pub use client::{DEFAULT_CACHES, WebCaches, http_round, http_updates};
