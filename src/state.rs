//! The state directory: where a node keeps its key, trust store, messages and socket, the lock
//! that makes one daemon its owner, and the owner-only atomic writer every file goes through.

pub mod files;
pub mod lock;
pub mod paths;
