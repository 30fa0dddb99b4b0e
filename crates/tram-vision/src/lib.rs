//! # tram-vision
//!
//! Image models, image data sets and the cross-dataset transfer task of the TRAM paper (§3.2, Table 3), at two
//! scales: ViT-B/16 on the user's Hugging Face snapshots and parquet/ImageFolder data sets (GPU), and an offline,
//! CPU-sized analogue: ImageNet EfficientNet-Lite0 fine-tuned on emoji of one vendor style and tested on the others.
//!
//! - [`efficientnet_lite`], [`vit`]: the networks, loaded by their published key names;
//! - [`data`]: image sources (emoji, ImageFolder, parquet), preprocessing and batches streamed by a worker thread;
//! - [`task`]: a [`tram_core::Model`] over either network and the fine-tune/evaluate loop, which trains with
//!   [`tram_core::StepDriver`] and nothing else;
//! - [`assets`]: where `bash tools/assets.sh` puts the offline weights and images.

pub mod assets;
pub mod data;
pub mod efficientnet_lite;
pub mod error;
pub mod task;
pub mod vit;
mod weights;
pub mod zero_shot;

pub use error::{Error, Result};
