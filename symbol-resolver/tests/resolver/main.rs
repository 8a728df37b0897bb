//! symbol-resolver checked against independent tools and the running kernel, on inputs
//! built at test time (gcc, g++, rustc, objcopy).

#![expect(clippy::unwrap_used, reason = "tests fail loudly")]

mod elf;
mod fixtures;
mod kernel;
mod malformed;
mod process;
mod tools;
