//! Shared pieces of the benchmarks and the demo.
#![forbid(unsafe_code)]
