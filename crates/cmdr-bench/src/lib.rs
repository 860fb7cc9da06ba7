//! Benchmark drivers behind `cmdr bench`: each runs a workload against the
//! real engine or server and prints figures (throughput, latency
//! percentiles) with the machine's own ceilings beside them, so the numbers
//! read as ratios.

pub mod http;
pub mod live;
pub mod log;
pub mod suite;
