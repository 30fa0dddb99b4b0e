//! Cross-domain language modelling (arXiv 2310.03646 v2 §4.2, Table 4; Tables 9–11 from the same runs): fine-tune
//! a pre-trained causal LM on one domain, then report perplexity on that domain's held-out text and zero-shot on
//! every other domain. The runner embeds [`CausalLmConfig`] as `task = { kind = "causal-lm", ... }`.
//!
//! Perplexity is exp of the token-weighted mean next-token NLL over fixed, non-overlapping blocks of `block_len`
//! tokens of each domain's text (documents joined by `<|endoftext|>`), each block scored from a cold start
//! (`block_len − 1` predicted tokens). Each evaluation keeps its per-block mean NLL (`per_example`) for the
//! paper's Kolmogorov–Smirnov test and paired comparisons. The model is selected on the training domain's
//! validation blocks only (App. B.1), which the runner asks for with `selection = "best-validation"`.
//!
//! With `trainable = { top-layers = k }`, the frozen lower layers' output for every block is computed once per
//! task (in eval mode, without gradient) and cached: the frozen weights are the pre-trained ones in every run, so
//! the cache serves every method and seed, and a step costs k layers and the head.
//!
//! - `config.rs`: the task's keys, their checks, the files they name;
//! - `data.rs`: the domains' token streams, cut into training and evaluation blocks;
//! - `task.rs`: [`CausalLmTask`], built from the config once per sweep, and its [`tram_task::Task`] impl.

mod config;
mod data;
mod task;

pub use config::{CausalLmConfig, LmData};
pub use task::{CausalLmTask, SetSummary};
