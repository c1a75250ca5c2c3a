//! Cairn's reference hub: the management server edge hosts register with.
//!
//! * [`store`] — everything the hub keeps, behind the [`store::Store`] trait; [`store::SqlStore`]
//!   implements it for SQLite (default, one file, WAL) and PostgreSQL.
//! * [`http`] — the `/v1` API of docs/protocol.md (axum), for agents and for operators.
//! * [`server`] — serving that API over TLS (rustls) or, for local tests only, plain HTTP.
//! * [`pki`] — the hub's own CA and server certificate, made on first start, and what
//!   devices pin (the join string).
//! * [`mirror`] — the fleet's artifact mirror: pack and profile files, content-addressed,
//!   fetched from upstream once and served to agents with `Range`.
//! * [`cli`] — `cairn-hub serve` and the admin commands, which act directly on the database.
//!
//! Profile documents are read and checked by `cairn_userdata::profile`, the same reader the
//! agent uses.

pub mod cli;
pub mod error;
pub mod http;
pub mod mirror;
pub mod pki;
pub mod registry;
pub mod secret;
pub mod server;
pub mod store;

pub use error::StoreError;
pub use store::{SqlStore, Store};
