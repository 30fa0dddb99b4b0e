//! One error type for the contract; task crates convert theirs into [`Error::Task`].

/// The command that fetches the embedded assets into the cache (`tools/assets.sh <group>` fetches one group).
pub const ASSETS_COMMAND: &str = "bash tools/assets.sh";

/// What can go wrong in a task or the training loop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] tram_core::Error),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A setting that cannot work (zero epochs, an unknown device, ...).
    #[error("{0}")]
    Config(String),
    #[error("missing asset {what}: {path} does not exist; fetch it with `{command}` (run in the repository root)", command = ASSETS_COMMAND)]
    MissingAsset { what: String, path: std::path::PathBuf },
    /// A cached asset that is not what was fetched (see `kit::assets::verify`).
    #[error("asset {path}: {message}; delete its folder and fetch it again with `{command}` (run in the repository root)", path = path.display(), command = ASSETS_COMMAND)]
    CorruptAsset { path: std::path::PathBuf, message: String },
    /// A file a run wrote (saved weights, a checkpoint) that is not what was written; the message ends with what
    /// to do.
    #[error("{path}: {message}", path = path.display())]
    Changed { path: std::path::PathBuf, message: String },
    /// Weights that do not fit the model (names, shapes), from a file or another source.
    #[error("weights {origin}: {message}")]
    Weights { origin: String, message: String },
    /// A task crate's own error (data, model files, assets).
    #[error(transparent)]
    Task(Box<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn config_err(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}
