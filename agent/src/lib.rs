//! kscope's stages, one module each, in the order an event travels:
//! kernel programs (`sensors`, `loader`, `kernel`) → per-CPU buffers
//! (`transport`) → `decode` → kernel stacks symbolized (`stacks`) →
//! connection table (`conntrack`) → protocol parsers (the
//! `kscope-protocols` crate) → spans and metrics (`telemetry`, `export`) →
//! `output`; `stats` keeps the loss ledger across them. Packet drops take a
//! shorter way: counted in the kernel, read by `drops`. `profile` and
//! `symbolize` are commands of their own. The `kscope` binary (main.rs) is
//! the command line over these; benches and fuzz targets use them directly.

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests fail loudly"))]

pub mod conntrack;
pub mod decode;
pub mod drops;
pub mod export;
pub mod kernel;
pub mod loader;
pub mod output;
pub mod preflight;
pub mod profile;
pub mod recording;
pub mod run;
pub mod sensors;
pub mod stacks;
pub mod stats;
pub mod symbolize;
pub mod telemetry;
pub mod transport;
