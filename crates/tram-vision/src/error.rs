//! Errors that say what to do: which file, which key, which command fetches a missing asset.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model config {path}: {message}")]
    ModelConfig { path: PathBuf, message: String },
    #[error("corrupt image {location}: {reason}")]
    CorruptImage { location: String, reason: String },
    #[error("data set {path}: {message}")]
    Data { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A loader thread could not start or stopped.
    #[error("image loader: {0}")]
    Loader(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Core(#[from] tram_core::Error),
    /// Missing assets, weights that do not fit, and the training loop's errors.
    #[error(transparent)]
    Task(#[from] tram_task::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

impl From<Error> for tram_task::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Task(t) => t,
            Error::Core(c) => tram_task::Error::Core(c),
            other => tram_task::Error::Task(Box::new(other)),
        }
    }
}

/// Adds what to do to an error about a cached asset that exists but does not read: fetch it again.
pub fn corrupt_hint(e: Error) -> Error {
    let (path, message) = match e {
        Error::Task(tram_task::Error::Weights { origin, message }) => (PathBuf::from(origin), message),
        Error::Data { path, message } => (path, message),
        other => return other,
    };
    let dir = path.parent().map_or_else(|| path.display().to_string(), |d| d.display().to_string());
    let command = tram_task::kit::assets::ASSETS_COMMAND;
    let message = format!("{message}; the cached asset looks corrupt: delete {dir} and run `{command}`");
    Error::Data { path, message }
}
