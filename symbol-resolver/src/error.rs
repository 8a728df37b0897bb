use std::io;
use std::path::PathBuf;

/// Errors of the calls that load one thing and have nothing to return without it
/// (symbolization itself reports failures per address, as [`crate::Reason`]s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The process does not exist (or is a zombie, whose mappings are gone).
    #[error("process {pid} is not running")]
    ProcessGone {
        /// Its PID.
        pid: u32,
    },
    /// No tracefs directory with `available_filter_functions` could be read.
    #[error("no readable available_filter_functions: {tried}")]
    NoTracefs {
        /// Each place tried, with its error.
        tried: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }
}
