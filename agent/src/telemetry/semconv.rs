//! The OpenTelemetry semantic conventions kscope follows: one version, one
//! place for every attribute and metric name.

/// The semantic conventions version the names below come from; sent as the
/// schema URL of every resource and scope.
pub const VERSION: &str = "1.27.0";
pub const SCHEMA_URL: &str = "https://opentelemetry.io/schemas/1.27.0";

/// The instrumentation scope of everything kscope produces.
pub const SCOPE_NAME: &str = "kscope";
