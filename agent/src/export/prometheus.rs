//! Prometheus exposition (placeholder; being written).
