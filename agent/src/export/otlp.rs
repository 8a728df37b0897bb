//! OTLP export (placeholder; being written).
