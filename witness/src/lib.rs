//! The witness service as a library: everything `witness serve` runs, so tests and benchmarks
//! can start a real witness in-process on port 0 (see [`server::start`] and [`server::run`]).
//!
//! The protocol lives in `proto`; this crate is the shell around `proto::arbiter::Arbiter`:
//! mutual TLS, durable records in sled (flushed before any reply that depends on them), signed
//! lease proofs, status, metrics and the operator commands.

pub mod api;
pub mod audit;
pub mod certs;
pub mod client;
pub mod clusters;
pub mod config;
pub mod history;
pub mod metrics;
pub mod page;
pub mod proof;
pub mod ratelimit;
pub mod server;
pub mod shortlock;
pub mod status;
pub mod store;
pub mod tls;

pub use config::Config;
pub use server::{run, start, Listeners, RunningServer, ServerError};
