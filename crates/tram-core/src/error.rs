//! One error type for the crate: every failure a user can cause says what to change.

use std::path::Path;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    /// A configuration value is out of range or does not apply to the chosen method.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The model handed to the step driver cannot be trained.
    #[error("invalid model: {0}")]
    Model(String),
    /// Too many consecutive steps produced a non-finite loss or gradient.
    #[error("{count} consecutive steps had a non-finite loss or gradient (last at step {step}); lower the learning rate or the radius, or enable gradient clipping")]
    NonFinite { count: u32, step: u64 },
    /// A checkpoint could not be written or read, or does not fit this model and method.
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn config_err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

pub(crate) fn checkpoint_err(path: &Path, reason: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.display().to_string(), reason: reason.into() }
}
