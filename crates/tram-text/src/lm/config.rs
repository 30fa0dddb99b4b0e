//! The causal-LM task's keys, as a profile's `task = { kind = "causal-lm", ... }` gives them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use tram_task::kit::weights::Init;

use crate::causal_lm::{smollm2_gguf, ModelSource};
use crate::data::brown;
use crate::error::{Error, Result};
use crate::trainable::{NoiseAt, Trainable};

/// The corpus whose domains the task uses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LmData {
    /// The Brown corpus in the assets cache (`bash tools/assets.sh lm`): its 15 genres are the domains.
    #[default]
    Brown,
    /// A `machelreid/m2d2` folder as downloaded from the Hub: its configurations are the domains.
    M2d2(PathBuf),
}

/// The task's keys (everything but `kind`). Defaults are the embedded, offline CPU profile's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CausalLmConfig {
    /// The pre-trained model: `"smollm2"` (default: SmolLM2-135M-Instruct, the Q4_1 GGUF in the assets cache,
    /// dequantized to float32), `{ gguf = "/path/model.gguf" }` (llama architecture), or
    /// `{ snapshot = "/path/gpt2" }` (a Hugging Face folder: GPT-2 or Llama).
    #[serde(default)]
    pub model: ModelSource,
    /// `"pretrained"` (default) or `"random"`: a snapshot's architecture with weights drawn from a fixed seed, its
    /// `model.safetensors` unread (for `tram plan` checks, `just rehearse` and `just gpu-check`).
    #[serde(default, skip_serializing_if = "Init::is_pretrained")]
    pub weights: Init,
    /// The corpus: `"brown"` (default) or `{ m2d2 = "/path/to/m2d2" }`.
    #[serde(default)]
    pub data: LmData,
    /// The training domain: a Brown genre (default `"learned"`, the largest: 204 k tokens, technical prose like
    /// S2ORC Math) or an M2D2 configuration (the paper: `"Society_and_social_sciences"`, `"math_l1"`).
    #[serde(default = "default_train_domain")]
    pub train_domain: String,
    /// Zero-shot domains in table order. Default: the other 14 Brown genres; for M2D2, the other ten L1 domains
    /// of the training domain's split (paper Table 4).
    #[serde(default)]
    pub zero_shot_domains: Option<Vec<String>>,
    /// Tokens per block, in training and evaluation (default 128; the paper: 1024).
    #[serde(default = "default_block_len")]
    pub block_len: usize,
    /// Blocks per test set, spread evenly over the set's text; 0: every block (default 16; the paper: 0).
    #[serde(default = "default_eval_blocks")]
    pub eval_blocks: usize,
    /// Blocks of the training domain's validation set (model selection); 0: every block (default 16).
    #[serde(default = "default_eval_blocks")]
    pub validation_blocks: usize,
    /// Blocks per evaluation forward pass (default 8).
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// `"all"` (the paper's full fine-tuning) or `{ top-layers = k }` (default: `{ top-layers = 2 }`: the top two
    /// layers and the final norm train; the lower layers and the tied embeddings/head stay frozen).
    #[serde(default = "default_trainable")]
    pub trainable: Trainable,
    /// Where TRAM-x / R3F / TRAM-Fisher add input noise with top-k: `"embeddings"` (default; the paper's place,
    /// the frozen layers then run again without gradient) or `"cached"` (on the frozen layers' output).
    #[serde(default)]
    pub noise_at: NoiseAt,
    /// Brown: fraction of each genre's files held out for validation (default 0.1), by a seeded hash of the file
    /// name.
    #[serde(default = "default_valid_fraction")]
    pub valid_fraction: f64,
    /// Brown: fraction of each genre's files held out for test (default 0.2). Zero-shot genres are evaluated on
    /// all their files (none is trained on).
    #[serde(default = "default_test_fraction")]
    pub test_fraction: f64,
    /// Seed of the document-level splits (default 0).
    #[serde(default)]
    pub split_seed: u64,
    /// Cap on the training domain's tokens (M2D2's train.txt is 0.4–1 GB); default: all of it.
    #[serde(default)]
    pub max_train_tokens: Option<usize>,
    /// With top-k: memory for cached prefix outputs, in MiB (default 4096). Blocks beyond it are recomputed
    /// whenever used (at paper scale every block of M2D2 would not fit: 3 MiB each for GPT-2 at 1024 tokens).
    #[serde(default = "default_cache_mb")]
    pub prefix_cache_mb: usize,
}

fn default_train_domain() -> String {
    "learned".into()
}
fn default_block_len() -> usize {
    128
}
fn default_eval_blocks() -> usize {
    16
}
fn default_eval_batch() -> usize {
    8
}
fn default_trainable() -> Trainable {
    Trainable::TopLayers(2)
}
fn default_cache_mb() -> usize {
    4096
}
fn default_valid_fraction() -> f64 {
    0.1
}
fn default_test_fraction() -> f64 {
    0.2
}

impl Default for CausalLmConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("every key has a default")
    }
}

impl CausalLmConfig {
    /// The configuration with what cannot change a result set to a fixed value, for a run's identity: the
    /// prefix cache's memory budget only decides which blocks are computed again.
    pub fn identity(&self) -> Self {
        Self { prefix_cache_mb: 0, ..self.clone() }
    }

    pub(super) fn validate(&self) -> Result<()> {
        let err = |m: String| Err(Error::Config(format!("causal-lm: {m}")));
        if self.block_len < 2 {
            return err(format!("block_len must be at least 2, got {}", self.block_len));
        }
        if self.eval_batch_size == 0 {
            return err("eval_batch_size must be at least 1".into());
        }
        let frac = |f: f64| f.is_finite() && (0.0..1.0).contains(&f);
        if !frac(self.valid_fraction) || !frac(self.test_fraction) || self.valid_fraction + self.test_fraction >= 1.0 {
            return err(format!(
                "valid_fraction ({}) and test_fraction ({}) must be in [0, 1) and leave files to train on",
                self.valid_fraction, self.test_fraction
            ));
        }
        if self.weights == Init::Random && !matches!(self.model, ModelSource::Snapshot(_)) {
            return err("weights = \"random\" draws a snapshot's architecture; give model = { snapshot = ... }".into());
        }
        if self.noise_at == NoiseAt::Cached && self.trainable == Trainable::All {
            return err("noise_at = \"cached\" needs trainable = { top-layers = k }".into());
        }
        Ok(())
    }

    /// Checks the files the runs will read against the checksums written when they were fetched, once per sweep:
    /// the cache's model and corpus always; one's own GGUF, snapshot or M2D2 folder when it has a `SHA256SUMS`.
    pub(super) fn verify_assets(&self) -> Result<()> {
        use tram_task::kit::assets::{verify_file, verify_folder};
        match &self.model {
            ModelSource::Smollm2 => verify_file(&smollm2_gguf()?, true)?,
            ModelSource::Gguf(path) => verify_file(path, false)?,
            ModelSource::Snapshot(dir) => verify_folder(dir, None, false)?,
        }
        match &self.data {
            LmData::Brown => verify_folder(&brown::default_dir()?, None, true)?,
            LmData::M2d2(root) => verify_folder(root, None, false)?,
        }
        Ok(())
    }
}
