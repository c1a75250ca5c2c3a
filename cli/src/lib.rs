//! What Cairn's three binaries (`cairn-agent`, `cairn-hub`, `cairn-installer`) share on the
//! command line, so that none of them depends on another's library for it.

pub mod docs;
