//! FastTrack (KaZaA, Grokster, iMesh): the supernode that giFT-FastTrack users
//! log in to.

pub mod supernode;
