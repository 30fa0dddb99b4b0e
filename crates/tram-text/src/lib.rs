//! # tram-text
//!
//! The language half of the TRAM paper (arXiv 2310.03646 v2, §4.2–4.3): models loaded from the files people
//! have (Hugging Face snapshot folders, GGUF), tokenizers through the `tokenizers` crate, text data sets, and
//! the two language tasks on the [`tram_task::Task`] contract:
//!
//! - cross-domain language modelling (Table 4): a causal LM fine-tuned on one domain, perplexity in-domain and
//!   zero-shot on the others;
//! - zero-shot cross-lingual transfer (Table 5): a multilingual encoder fine-tuned on English, accuracy on the
//!   other languages.

pub mod causal_lm;
pub mod classifier;
pub mod data;
pub mod e5s1;
pub mod encoder;
pub mod error;
pub mod gguf;
pub mod gpt2;
pub mod inventory;
pub mod layers;
pub mod llama;
pub mod lm;
pub mod prefix_cache;
pub mod shape;
pub mod tokenizer;
pub mod trainable;
pub mod xlingual;

pub use error::{Error, Result};
