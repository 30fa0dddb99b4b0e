//! The causal-LM task: the model and the data loaded once, the frozen prefix's outputs cached per device, and
//! [`Task::run`] once per (method, seed).

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};
use tram_core::OptimizerConfig;
use tram_task::{
    fnv1a, DeviceChoice, Domain, EpochBatches, Evaluation, Metric, RunContext, RunResult, RunSettings, Split,
    SplitMix64, Task, TrainData,
};

use super::config::CausalLmConfig;
use super::data::{self, Corpus, EvalSet};
use crate::causal_lm::{CausalLm, Decoder, LmBatch, PretrainedLm};
use crate::error::{Error, Result};
use crate::prefix_cache::PrefixCache;

/// What lives on the run's device: the pre-trained model and the frozen prefix's outputs.
struct DeviceState {
    device: Device,
    decoder: Decoder,
    split: usize,
    /// Training blocks and evaluation blocks under one memory budget.
    cache: PrefixCache<Block>,
    /// RMS of the prefix outputs of the first training blocks, measured when a run first needs it.
    cached_rms: Option<f64>,
}

/// Training blocks whose prefix outputs give the RMS a relative σ on cached states is relative to.
const CACHED_RMS_BLOCKS: usize = 8;

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
    /// Loads the model and the data once (errors name the file or key).
    pub fn build(&self) -> Result<CausalLmTask> {
        self.validate()?;
        self.verify_assets()?;
        let lm = PretrainedLm::load_as(&self.model, self.weights, Device::Cpu)?;
        self.trainable.first_trained_layer(lm.decoder.num_layers())?;
        if self.block_len as i64 > lm.decoder.max_positions() {
            return Err(Error::Config(format!(
                "causal-lm: block_len {} exceeds the model's {} positions",
                self.block_len,
                lm.decoder.max_positions()
            )));
        }
        let Corpus { train, sets } = data::load(self, &lm)?;
        Ok(CausalLmTask { config: self.clone(), lm, train, sets, state: Mutex::new(None) })
    }
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
            *guard = Some(DeviceState { device, decoder, split, cache, cached_rms: None });
        }
        let state = guard.as_mut().expect("just set");
        let model = CausalLm::fork(&state.decoder, self.config.trainable, self.config.noise_at)?;
        if !model.noises_cached() {
            return Ok(model);
        }
        if state.cached_rms.is_none() {
            // The scale of what `noise_at = "cached"` noises, for a relative σ: the prefix outputs of the first
            // training blocks (the same for every seed), which the runs cache anyway.
            let n = self.train_blocks().min(CACHED_RMS_BLOCKS);
            let l = self.config.block_len;
            let blocks: Vec<&[u32]> = (0..n).map(|i| &self.train[i * l..(i + 1) * l]).collect();
            let keys: Vec<Block> = (0..n).map(Block::Train).collect();
            state.cached_rms = Some(tram_core::rms(&state.prefix(&keys, &blocks, self.lm.separator)));
        }
        Ok(model.with_cached_rms(state.cached_rms.expect("just measured")))
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
    use crate::causal_lm::ModelSource;
    use crate::lm::LmData;
    use crate::trainable::Trainable;

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
