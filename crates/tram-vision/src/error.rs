//! Errors that say what to do: which file, which key, which command fetches a missing asset.

use std::path::PathBuf;

/// The command that fetches the embedded assets into the cache.
pub const ASSETS_COMMAND: &str = "bash tools/assets.sh";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("missing asset {what}: {path} does not exist; fetch it with `{command}` (run in the repository root)", command = ASSETS_COMMAND)]
    MissingAsset { what: String, path: PathBuf },
    #[error("weights {path}: {message}")]
    Weights { path: PathBuf, message: String },
    #[error("model config {path}: {message}")]
    ModelConfig { path: PathBuf, message: String },
    #[error("corrupt image {location}: {reason}")]
    CorruptImage { location: String, reason: String },
    #[error("data set {path}: {message}")]
    Data { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Core(#[from] tram_core::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}
