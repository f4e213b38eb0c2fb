//! A did:plc directory.
//!
//! [`Directory`] keeps every DID's operation log in SQLite and accepts an
//! operation only after [`atcr_plc::validate_next`] (genesis derivation,
//! rotation-key signatures, `prev` chain, nullification window, tombstones);
//! acceptance and the nullification it causes are one transaction.
//! [`router`] serves the directory API (`GET /{did}`, `/{did}/log`,
//! `/{did}/log/audit`, `/{did}/log/last`, `/{did}/data`, `POST /{did}`).
//! [`RemotePlc`] talks to another directory over HTTP; both implement
//! [`atcr_plc::PlcDirectory`].

mod directory;
mod remote;
mod routes;

pub use directory::{Directory, DirectoryError};
pub use remote::RemotePlc;
pub use routes::router;
