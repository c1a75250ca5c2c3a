//! What Cairn's three binaries (`cairn-agent`, `cairn-hub`, `cairn-installer`) share to talk
//! to people: completions and man pages from their command lines, error chains on one line,
//! URLs with their credentials hidden. Small on purpose, so that none of them depends on
//! another's library for it.

pub mod docs;
pub mod report;
