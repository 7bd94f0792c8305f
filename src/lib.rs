//! `servent`: a Gnutella 0.6 node.
//!
//! The crate is split into a wire layer that never does I/O ([`wire`]), a framing
//! layer that adapts it to byte streams ([`framing`]), and the command-line front
//! end in `main.rs`. See `ARCHITECTURE.md` for the map of the parts.

pub mod api;
pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod core;
pub mod fasttrack;
pub mod framing;
pub mod napster;
pub mod node;
pub mod output;
pub mod share;
pub mod wire;
