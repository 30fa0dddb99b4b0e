//! # tram-vision
//!
//! Image models, image data sets and the cross-dataset transfer task of the TRAM paper (§3.2, Table 3), at two
//! scales: ViT-B/16 on the user's Hugging Face snapshots and parquet/ImageFolder data sets (GPU), and an offline,
//! CPU-sized analogue: ImageNet EfficientNet-Lite0 fine-tuned on emoji of one vendor style and tested on the others.
//!
//! - [`efficientnet_lite`], [`vit`]: the networks, loaded by their published key names;
//! - [`data`]: image sources (emoji, ImageFolder, parquet), preprocessing and batches streamed by a worker thread;
//! - [`classifier`]: a [`tram_core::Model`] over either network, with a head for the task's classes;
//! - [`transfer`]: the task on the [`tram_task::Task`] contract (data, model and evaluation; training is
//!   [`tram_task::train`]);
//! - [`assets`]: where `bash tools/assets.sh` puts the offline weights and images.

pub mod assets;
pub mod classifier;
pub mod data;
pub mod efficientnet_lite;
pub mod error;
pub mod shape;
pub mod transfer;
pub mod vit;
pub mod zero_shot;

pub use error::{Error, Result};
