//! The embedded default: emoji drawn in four vendor styles (npm `emoji-datasource-<vendor>` 16.0.0, 64×64 PNG),
//! labelled by `category` from `emoji.json` ("Component", the skin-tone swatches, excluded): 9 classes. Train
//! on one style with a deterministic held-out split; every other style is an out-of-domain test set with the
//! same labels. Fetched by `bash tools/assets.sh`; never committed (Apple's images are not licensed for
//! commercial use).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tram_task::kit::assets::{assets_dir, require};

use super::{Dataset, Rgb, Source, TransferData};
use crate::error::{corrupt_hint, io_err, Error, Result};

/// A vendor's drawing style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Style {
    Google,
    Twitter,
    Facebook,
    Apple,
}

impl Style {
    pub const ALL: [Style; 4] = [Style::Google, Style::Twitter, Style::Facebook, Style::Apple];

    pub fn as_str(&self) -> &'static str {
        match self {
            Style::Google => "google",
            Style::Twitter => "twitter",
            Style::Facebook => "facebook",
            Style::Apple => "apple",
        }
    }

    pub fn parse(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            Error::Config(format!("unknown emoji style `{s}`; expected google, twitter, facebook or apple"))
        })
    }
}

/// Which emoji the out-of-domain sets hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OodSubset {
    /// The held-out emoji only: in-domain and OOD accuracy are measured on the same emoji, so their gap is
    /// the style shift alone.
    #[default]
    HeldOut,
    /// Every emoji the style has.
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmojiConfig {
    /// The folder with one sub-folder per style; default: the assets cache.
    #[serde(default)]
    pub root: Option<PathBuf>,
    pub train_style: Style,
    /// Fraction of emoji held out for testing.
    pub test_fraction: f64,
    pub split_seed: u64,
    pub ood_subset: OodSubset,
}

impl Default for EmojiConfig {
    fn default() -> Self {
        Self {
            root: None,
            train_style: Style::Google,
            test_fraction: 0.2,
            split_seed: 0,
            ood_subset: OodSubset::HeldOut,
        }
    }
}

/// One emoji of `emoji.json`.
#[derive(Debug, Clone, Deserialize)]
pub struct EmojiEntry {
    pub unified: String,
    pub short_name: String,
    pub image: String,
    pub category: String,
    #[serde(default)]
    pub has_img_google: bool,
    #[serde(default)]
    pub has_img_twitter: bool,
    #[serde(default)]
    pub has_img_facebook: bool,
    #[serde(default)]
    pub has_img_apple: bool,
}

impl EmojiEntry {
    pub fn has_image(&self, style: Style) -> bool {
        match style {
            Style::Google => self.has_img_google,
            Style::Twitter => self.has_img_twitter,
            Style::Facebook => self.has_img_facebook,
            Style::Apple => self.has_img_apple,
        }
    }
}

/// The emoji of one style, with category labels.
#[derive(Debug)]
pub struct EmojiSource {
    pub style: Style,
    /// `(entry index in emoji.json, path, label)`.
    items: Vec<(usize, PathBuf, i64)>,
}

impl Source for EmojiSource {
    fn len(&self) -> usize {
        self.items.len()
    }
    fn label(&self, i: usize) -> i64 {
        self.items[i].2
    }
    fn location(&self, i: usize) -> String {
        self.items[i].1.display().to_string()
    }
    fn load(&self, i: usize) -> std::result::Result<Rgb, String> {
        let bytes = std::fs::read(&self.items[i].1).map_err(|e| e.to_string())?;
        super::decode(&bytes)
    }
}

impl EmojiSource {
    /// Index into `emoji.json` of image `i`.
    pub fn entry_index(&self, i: usize) -> usize {
        self.items[i].0
    }
}

/// The emoji folder of the assets cache (one sub-folder per vendor style).
pub fn default_dir() -> Result<PathBuf> {
    Ok(require("emoji images (npm emoji-datasource-*)", assets_dir().join("emoji"))?)
}

/// `emoji.json` of a style folder.
pub fn read_entries(style_dir: &Path) -> Result<Vec<EmojiEntry>> {
    let path = style_dir.join("emoji.json");
    let path = require("emoji.json (npm emoji-datasource-*)", &path)?;
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    serde_json::from_str(&text).map_err(|e| corrupt_hint(Error::Data { path, message: e.to_string() }))
}

/// The category names, sorted (the class order), "Component" excluded.
pub fn categories(entries: &[EmojiEntry]) -> Vec<String> {
    let set: BTreeSet<&str> = entries.iter().map(|e| e.category.as_str()).filter(|c| *c != "Component").collect();
    set.into_iter().map(str::to_string).collect()
}

/// The images of `style` under `root` (`root/<style>/img/<style>/64/<image>`), labelled by `classes`.
pub fn source(root: &Path, style: Style, entries: &[EmojiEntry], classes: &[String]) -> Result<EmojiSource> {
    let dir = root.join(style.as_str()).join("img").join(style.as_str()).join("64");
    require(&format!("emoji images, {} style", style.as_str()), &dir)?;
    let items = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.has_image(style))
        .filter_map(|(k, e)| {
            classes.iter().position(|c| *c == e.category).map(|label| (k, dir.join(&e.image), label as i64))
        })
        .collect();
    Ok(EmojiSource { style, items })
}

/// The transfer splits: train/test of `train_style`, and every other style as an OOD set.
pub fn load(config: &EmojiConfig) -> Result<TransferData> {
    if !(0.0..1.0).contains(&config.test_fraction) {
        return Err(Error::Config(format!("emoji test_fraction must be in [0, 1), got {}", config.test_fraction)));
    }
    let root = match &config.root {
        Some(r) => require("emoji folder", r)?,
        None => default_dir()?,
    };
    let entries = Arc::new(read_entries(&root.join(config.train_style.as_str()))?);
    let classes = Arc::new(categories(&entries));
    let held_out = |unified: &str| tram_task::hash_unit(config.split_seed, unified.as_bytes()) < config.test_fraction;
    let train_src = Arc::new(source(&root, config.train_style, &entries, &classes)?);
    let (mut train_idx, mut test_idx) = (vec![], vec![]);
    for i in 0..train_src.len() {
        if held_out(&entries[train_src.entry_index(i)].unified) {
            test_idx.push(i)
        } else {
            train_idx.push(i)
        }
    }
    let name = config.train_style.as_str();
    let train = Dataset {
        name: format!("{name}/train"),
        source: train_src.clone(),
        indices: train_idx,
        classes: classes.clone(),
    };
    let test = Dataset { name: name.to_string(), source: train_src, indices: test_idx, classes: classes.clone() };
    let mut ood = vec![];
    for style in Style::ALL.into_iter().filter(|s| *s != config.train_style) {
        let src = Arc::new(source(&root, style, &entries, &classes)?);
        let indices = (0..src.len())
            .filter(|&i| config.ood_subset == OodSubset::All || held_out(&entries[src.entry_index(i)].unified))
            .collect();
        ood.push(Dataset { name: style.as_str().to_string(), source: src, indices, classes: classes.clone() });
    }
    Ok(TransferData { classes, train, test, ood })
}
