//! Where the embedded assets live: `${TRAM_CACHE:-$HOME/.cache/tram}/assets`, filled by `bash tools/assets.sh`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The command that fetches the embedded assets into the cache.
pub const ASSETS_COMMAND: &str = "bash tools/assets.sh";

/// The cache folder (`TRAM_CACHE`, else `~/.cache/tram`).
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("TRAM_CACHE") {
        Some(c) if !c.is_empty() => PathBuf::from(c),
        _ => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".cache/tram"),
    }
}

/// The cache folder's `assets` directory.
pub fn assets_dir() -> PathBuf {
    cache_dir().join("assets")
}

/// `path` if it exists, else an error naming the command that fetches it.
pub fn require(what: &str, path: impl AsRef<Path>) -> Result<PathBuf> {
    let path = path.as_ref();
    if path.exists() {
        Ok(path.to_path_buf())
    } else {
        Err(Error::MissingAsset { what: what.to_string(), path: path.to_path_buf() })
    }
}
