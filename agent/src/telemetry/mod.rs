//! Exchanges and connection events → spans and metrics, named and shaped by
//! the OpenTelemetry semantic conventions (the version in [`semconv`]).

pub mod semconv;
