//! Image data sets: a [`Source`] says how many images there are, their labels, and how to decode one; a
//! [`Dataset`] is a source, a subset of its indices and the class names; [`Loader`] streams transformed batches
//! from worker threads so the model never waits on decoding.
//!
//! Sources: [`emoji`] (the embedded default), [`image_folder`] (`root/<class>/<image>`), [`parquet`] (Hugging
//! Face image data sets: image bytes plus a label column).

pub mod emoji;
pub mod image_folder;
pub mod loader;
pub mod parquet;

pub mod transform;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use loader::{HostBatch, Loader, LoaderConfig};
pub use tram_task::SplitMix64;
pub use transform::{Augment, Normalization, Transform};

/// What to do with an image that does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnCorrupt {
    /// Report it (with its path) on stderr and in the batch, and leave it out.
    #[default]
    Skip,
    /// Stop the run with an error that names it.
    Fail,
}

/// Decoded RGB pixels, 8 bits per channel (alpha composited on white).
pub type Rgb = image::RgbImage;

/// Images with integer labels, addressed by index.
pub trait Source: Send + Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The class index of image `i`.
    fn label(&self, i: usize) -> i64;
    /// Where image `i` comes from, for error messages (a path, or a file and row).
    fn location(&self, i: usize) -> String;
    /// Decodes image `i`; the error is the reason it could not be read.
    fn load(&self, i: usize) -> std::result::Result<Rgb, String>;
}

/// A subset of a source, with its class names.
#[derive(Clone)]
pub struct Dataset {
    pub name: String,
    pub source: Arc<dyn Source>,
    pub indices: Vec<usize>,
    pub classes: Arc<Vec<String>>,
}

impl std::fmt::Debug for Dataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("len", &self.indices.len())
            .field("classes", &self.classes.len())
            .finish()
    }
}

impl Dataset {
    /// Every image of `source`.
    pub fn all(name: impl Into<String>, source: Arc<dyn Source>, classes: Arc<Vec<String>>) -> Self {
        let indices = (0..source.len()).collect();
        Self { name: name.into(), source, indices, classes }
    }

    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Images per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for &i in &self.indices {
            counts[self.source.label(i) as usize] += 1;
        }
        counts
    }

    /// A deterministic split by `key(i)` (a stable per-image string): images whose hash with `seed` falls below
    /// `fraction` go to the second set. Stable under reordering and across runs.
    pub fn split_by_key(&self, fraction: f64, seed: u64, key: impl Fn(usize) -> String) -> (Dataset, Dataset) {
        let (mut keep, mut held) = (vec![], vec![]);
        for &i in &self.indices {
            if tram_task::hash_unit(seed, key(i).as_bytes()) < fraction {
                held.push(i)
            } else {
                keep.push(i)
            }
        }
        let sub = |name: &str, indices| Dataset {
            name: format!("{}/{name}", self.name),
            source: self.source.clone(),
            indices,
            classes: self.classes.clone(),
        };
        (sub("train", keep), sub("test", held))
    }

    /// The first `n` images (for quick runs).
    pub fn take(mut self, n: usize) -> Self {
        self.indices.truncate(n);
        self
    }
}

/// Decodes an encoded image (PNG, JPEG) to RGB, compositing any alpha channel on white.
pub fn decode(bytes: &[u8]) -> std::result::Result<Rgb, String> {
    let img = image::load_from_memory(bytes).map_err(|e| e.to_string())?;
    Ok(to_rgb_on_white(img))
}

/// RGB with any transparency composited on white (emoji store arbitrary colours under alpha 0).
pub fn to_rgb_on_white(img: image::DynamicImage) -> Rgb {
    if !img.color().has_alpha() {
        return img.to_rgb8();
    }
    let rgba = img.to_rgba8();
    Rgb::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        let a = p[3] as u32;
        let mix = |c: u8| ((c as u32 * a + 255 * (255 - a) + 127) / 255) as u8;
        image::Rgb([mix(p[0]), mix(p[1]), mix(p[2])])
    })
}

/// The sources and splits of one transfer experiment: train on one domain, test in-domain and on others.
#[derive(Debug, Clone)]
pub struct TransferData {
    pub classes: Arc<Vec<String>>,
    pub train: Dataset,
    /// Held-out images of the training domain.
    pub test: Dataset,
    /// Out-of-domain test sets with the same labels, by name.
    pub ood: Vec<Dataset>,
}
