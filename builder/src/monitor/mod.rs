//! Watching the fleet: health and freshness (`status`), the traffic report, Prometheus exports.

pub mod health;
pub mod prometheus;
pub mod report;
pub mod status;
