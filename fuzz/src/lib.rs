//! The checks behind upslot's fuzz targets, one module per target. Each `check`
//! panics when an invariant the code promises does not hold for `data`.
//!
//! Only crates upslot itself depends on are used here, so that
//! `tests/fuzz_regressions.rs` compiles these same files into `cargo test` and
//! replays crashes and the committed corpus without a nightly toolchain.

pub mod client_ip;
pub mod conditional;
pub mod config;
pub mod disposition;
pub mod input;
pub mod jwt;
pub mod path;
pub mod query_token;
pub mod range;
