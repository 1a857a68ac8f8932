//! The witness service as a library: everything `witness serve` runs, so tests and benchmarks
//! can start a real witness in-process on port 0 (see [`server::start`] and [`server::run`]).
//!
//! The protocol lives in `proto`; this crate is the shell around `proto::arbiter::Arbiter`:
//! mutual TLS, durable records in sled (flushed before any reply that depends on them), signed
//! lease proofs, status, metrics and the operator commands.

// The public surface: what the `witness` binary, the integration tests, the fuzz targets and
// the benchmarks use. Everything else is the service's inside.
pub mod api;
pub mod certs;
pub mod client;
pub mod config;
pub mod page;
pub mod proof;
pub mod server;
pub mod shortlock;
pub mod store;
pub mod tls;

mod app;
mod audit;
mod clusters;
mod history;
mod metrics;
mod ratelimit;
mod sharded;
mod status;
mod view;

pub use config::Config;
pub use server::{run, start, Listeners, RunningServer, ServerError};
