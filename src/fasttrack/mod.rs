//! FastTrack (KaZaA): what servent speaks of it.

pub mod hash;
