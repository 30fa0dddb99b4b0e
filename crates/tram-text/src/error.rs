//! Errors that say what to do: which file, which key, which command fetches a missing asset.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model or tokenizer file that does not read or does not fit (names, shapes, format).
    #[error("model file {path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error("model config {path}: {message}")]
    ModelConfig { path: PathBuf, message: String },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
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
            other => tram_task::Error::Task(Box::new(other)),
        }
    }
}
