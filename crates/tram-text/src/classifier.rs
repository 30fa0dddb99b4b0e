//! The sequence classifier the cross-lingual task fine-tunes (arXiv 2310.03646 v2 §4.3: XLM-R with a new
//! classification head), as a [`tram_core::Model`]: an encoder ([`crate::encoder`]), a pooled representation and
//! Hugging Face's `XLMRobertaClassificationHead` (dropout, `classifier.dense`, tanh, dropout,
//! `classifier.out_proj`).
//!
//! The encoder can be cut in two. A [`FrozenPrefix`] (the embeddings and the lower layers) lives in its own var
//! store, outside the step driver's view, runs in eval mode without gradient, and is shared by every run of a task;
//! its output can be cached once per example ([`TextBatch::prefix_out`]). The top layers and the head are the
//! model's variables, all trainable. Input noise (TRAM-x, R3F, TRAM-Fisher) goes on the word embeddings and runs
//! through the frozen prefix ([`NoiseAt::Embeddings`], as the paper and its code do), or on the cached prefix
//! output ([`NoiseAt::Cached`], cheaper).

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Tensor};
use tram_core::{InputNoise, Model};

use crate::encoder::{mean_pool, EncoderConfig, EncoderStack};
use crate::error::{Error, Result};
use crate::trainable::NoiseAt;

/// Which vector of the last layer the head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// The first token (`<s>` / `[CLS]`), as Hugging Face's sequence classifiers do.
    #[default]
    First,
    /// The mean over real tokens (specials included), as multilingual-e5 was trained to embed sentences.
    Mean,
}

/// `classifier.dense` → tanh → `classifier.out_proj` on the pooled vector, with dropout before each.
#[derive(Debug)]
pub struct ClassificationHead {
    dense: nn::Linear,
    out_proj: nn::Linear,
    dropout: f64,
}

impl ClassificationHead {
    /// New weights ~ N(0, `config.initializer_range`), zero biases (Hugging Face's `_init_weights`), drawn from
    /// torch's generator.
    pub fn new(p: &nn::Path, config: &EncoderConfig, num_labels: i64) -> Self {
        let lin = nn::LinearConfig {
            ws_init: nn::Init::Randn { mean: 0.0, stdev: config.initializer_range },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        };
        let h = config.hidden_size;
        Self {
            dense: nn::linear(p / "dense", h, h, lin),
            out_proj: nn::linear(p / "out_proj", h, num_labels, lin),
            dropout: config.head_dropout(),
        }
    }

    pub fn forward(&self, pooled: &Tensor, train: bool) -> Tensor {
        let x = self.dense.forward(&pooled.dropout(self.dropout, train)).tanh();
        self.out_proj.forward(&x.dropout(self.dropout, train))
    }
}

/// Sentences (or sentence pairs) as padded token ids on the model's device.
#[derive(Debug)]
pub struct TextBatch {
    /// `[N, T]` int64 ids (in the model's vocabulary, pruned or not).
    pub ids: Tensor,
    /// `[N, T]` int64, 1 for tokens, 0 for padding.
    pub mask: Tensor,
    /// `[N]` int64 class indices.
    pub labels: Tensor,
    /// `[N, T, H]` output of the model's frozen prefix for these ids (eval mode), if cached.
    pub prefix_out: Option<Tensor>,
}

impl TextBatch {
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pads `rows` of ids to the longest (with `pad`) into a batch on `device`, without a cached prefix.
    pub fn from_ids(rows: &[&[i64]], labels: &[i64], pad: i64, device: Device) -> Self {
        let t = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(rows.len() * t);
        let mut mask = Vec::with_capacity(rows.len() * t);
        for r in rows {
            ids.extend_from_slice(r);
            ids.extend(std::iter::repeat_n(pad, t - r.len()));
            mask.extend(std::iter::repeat_n(1i64, r.len()));
            mask.extend(std::iter::repeat_n(0i64, t - r.len()));
        }
        let shape = [rows.len() as i64, t as i64];
        Self {
            ids: Tensor::from_slice(&ids).view(shape).to_device(device),
            mask: Tensor::from_slice(&mask).view(shape).to_device(device),
            labels: Tensor::from_slice(labels).to_device(device),
            prefix_out: None,
        }
    }
}

/// The embeddings and the lower `layers` layers of an encoder, frozen: their own var store (no variable requires
/// a gradient), eval mode, no gradient.
#[derive(Debug)]
pub struct FrozenPrefix {
    vs: nn::VarStore,
    stack: EncoderStack,
}

impl FrozenPrefix {
    /// Variables named as the full model's (`<base prefix>.embeddings.*`, `<base prefix>.encoder.layer.{i}.*`),
    /// to be loaded with [`load_weights`].
    pub fn new(config: &EncoderConfig, layers: usize, word_rows: i64, device: Device) -> Self {
        let mut vs = nn::VarStore::new(device);
        let stack = EncoderStack::new(&(vs.root() / config.base_prefix()), config, true, 0..layers, word_rows);
        vs.freeze();
        Self { vs, stack }
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Layers it holds (the first trainable layer's index).
    pub fn layers(&self) -> usize {
        self.stack.layers.len()
    }

    /// The word-embedding table the prefix starts from.
    pub fn word_table(&self) -> &Tensor {
        self.stack.embeddings.as_ref().expect("a prefix holds the embeddings").word_table()
    }

    /// `[N, T, H]` hidden states after the prefix, eval mode, no gradient; `noise` on the word embeddings.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, noise: Option<&InputNoise>) -> Tensor {
        tch::no_grad(|| self.stack.forward(ids, mask, noise, false))
    }
}

/// An encoder with a classification head; with a [`FrozenPrefix`], only the layers above it and the head train.
#[derive(Debug)]
pub struct SequenceClassifier {
    vs: nn::VarStore,
    config: EncoderConfig,
    prefix: Option<Rc<FrozenPrefix>>,
    top: EncoderStack,
    head: ClassificationHead,
    pooling: Pooling,
    noise_at: NoiseAt,
    cached_noise_scale: f64,
    /// RMS of the cached prefix outputs, measured by the task, with `noise_at = "cached"`.
    cached_rms: Option<f64>,
    num_labels: i64,
}

impl SequenceClassifier {
    /// A classifier on `device` whose head is drawn with torch's generator seeded with `head_seed`; the encoder's
    /// variables (the layers above `prefix`, or all of it with the embeddings) are to be loaded with
    /// [`load_weights`]. `word_rows`: rows of the word embedding (a pruned vocabulary has fewer), used without
    /// a prefix.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: &EncoderConfig,
        num_labels: i64,
        pooling: Pooling,
        noise_at: NoiseAt,
        prefix: Option<Rc<FrozenPrefix>>,
        word_rows: i64,
        head_seed: i64,
        device: Device,
    ) -> Self {
        let vs = nn::VarStore::new(device);
        tch::manual_seed(head_seed);
        let head = ClassificationHead::new(&(vs.root() / "classifier"), config, num_labels);
        let first = prefix.as_ref().map_or(0, |p| p.layers());
        let top = EncoderStack::new(
            &(vs.root() / config.base_prefix()),
            config,
            prefix.is_none(),
            first..config.num_hidden_layers,
            word_rows,
        );
        Self {
            vs,
            config: config.clone(),
            prefix,
            top,
            head,
            pooling,
            noise_at,
            cached_noise_scale: 1.0,
            cached_rms: None,
            num_labels,
        }
    }

    /// Multiplies σ of noise put on the cached prefix output ([`NoiseAt::Cached`]), so that a method's σ, meant
    /// for word embeddings, gives a comparable neighbourhood on the (larger) hidden states.
    pub fn with_cached_noise_scale(mut self, scale: f64) -> Self {
        self.cached_noise_scale = scale;
        self
    }

    /// The RMS of the frozen prefix's outputs (measured by the task on training examples, padding left out): the
    /// scale of what `noise_at = "cached"` noises, for a relative σ.
    pub fn with_cached_rms(mut self, rms: f64) -> Self {
        self.cached_rms = Some(rms);
        self
    }

    /// Whether the input noise goes on the cached prefix outputs rather than the word embeddings.
    pub fn noises_cached(&self) -> bool {
        self.prefix.is_some() && self.noise_at == NoiseAt::Cached
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    pub fn num_labels(&self) -> i64 {
        self.num_labels
    }

    pub fn prefix(&self) -> Option<&Rc<FrozenPrefix>> {
        self.prefix.as_ref()
    }

    /// Index of the first layer that trains (0 when everything trains).
    pub fn first_trainable_layer(&self) -> usize {
        self.top.first
    }

    /// The input of the trainable layers: the embeddings' output (nothing frozen) or the frozen prefix's (cached
    /// when the batch carries it), with `noise` where [`NoiseAt`] says.
    fn trainable_input(&self, batch: &TextBatch, train: bool, noise: Option<&InputNoise>) -> Tensor {
        match &self.prefix {
            None => {
                let emb = self.top.embeddings.as_ref().expect("a model without a prefix has its embeddings");
                emb.forward(&batch.ids, &batch.mask, noise, train)
            }
            Some(prefix) => match (noise, &batch.prefix_out, self.noise_at) {
                (None, Some(cached), _) => cached.shallow_clone(),
                (None, None, _) => prefix.forward(&batch.ids, &batch.mask, None),
                (Some(n), Some(cached), NoiseAt::Cached) => tch::no_grad(|| self.scaled(n).apply(cached)),
                (Some(n), None, NoiseAt::Cached) => {
                    let clean = prefix.forward(&batch.ids, &batch.mask, None);
                    tch::no_grad(|| self.scaled(n).apply(&clean))
                }
                (Some(n), _, NoiseAt::Embeddings) => prefix.forward(&batch.ids, &batch.mask, Some(n)),
            },
        }
    }

    fn scaled(&self, n: &InputNoise) -> InputNoise {
        let mut n = *n;
        n.spec.sigma *= self.cached_noise_scale;
        n
    }

    /// Last-layer hidden states `[N, T, H]`.
    pub fn hidden(&self, batch: &TextBatch, train: bool, noise: Option<&InputNoise>) -> Tensor {
        self.top.run_layers(&self.trainable_input(batch, train, noise), &batch.mask, train)
    }

    /// The vector the head reads, `[N, H]`. With first-token pooling the last layer computes that token alone
    /// (exact, and about six times cheaper for that layer).
    pub fn pooled(&self, batch: &TextBatch, train: bool, noise: Option<&InputNoise>) -> Tensor {
        let x = self.trainable_input(batch, train, noise);
        match self.pooling {
            Pooling::First => self.top.run_layers_first_token(&x, &batch.mask, train),
            Pooling::Mean => mean_pool(&self.top.run_layers(&x, &batch.mask, train), &batch.mask),
        }
    }

    /// The representation before the classification head (`[N, H]`, eval mode, no gradient): what Table 6's
    /// CKA compares between the fine-tuned and the pre-trained model (arXiv 2310.03646 v2 §4.3).
    pub fn representation(&self, batch: &TextBatch) -> Tensor {
        tch::no_grad(|| self.pooled(batch, false, None))
    }

    /// Loads trained parameters saved by the runner (`RunContext::save_model`: the trainable variables as
    /// safetensors under these names) over the current ones: pre-trained encoder + that file = the fine-tuned
    /// model. Every trainable variable must be in the file, and nothing else.
    pub fn load_trained(&self, file: &Path) -> Result<()> {
        tram_task::kit::weights::load_safetensors(&self.vs, file, &tram_task::kit::weights::LoadRules::STRICT)?;
        Ok(())
    }
}

impl Model for SequenceClassifier {
    type Batch = TextBatch;

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn forward(&self, batch: &TextBatch, train: bool, noise: Option<&InputNoise>) -> Tensor {
        self.head.forward(&self.pooled(batch, train, noise), train)
    }

    fn loss(&self, logits: &Tensor, batch: &TextBatch) -> Tensor {
        logits.cross_entropy_for_logits(&batch.labels)
    }

    fn batch_size(&self, batch: &TextBatch) -> usize {
        batch.len()
    }

    /// In units of the σ this model is given: the word-embedding table's RMS, or with `noise_at = "cached"` the
    /// cached outputs' RMS over `cached_noise_scale` (which multiplies σ there), so that a relative σ is relative
    /// to the tensor the noise is added to in either place.
    fn noise_scale(&self) -> Option<f64> {
        match &self.prefix {
            _ if self.noises_cached() => {
                self.cached_rms.filter(|_| self.cached_noise_scale > 0.0).map(|r| r / self.cached_noise_scale)
            }
            Some(prefix) => Some(tram_core::rms(prefix.word_table())),
            None => {
                let emb = self.top.embeddings.as_ref().expect("a model without a prefix has its embeddings");
                Some(tram_core::rms(emb.word_table()))
            }
        }
    }
}

/// Copies `tensors` (Hugging Face names, as [`crate::encoder::read_snapshot_weights`] or
/// [`crate::e5s1::E5s1::bert_weights`] give them) into the variables of `stores`, each variable from the key of
/// its name. Every variable must be found with its shape, except the head's (`classifier.*`) when `head` is
/// false; every key must land in some store, except `classifier.*` keys when `head` is false (a checkpoint's own
/// head, replaced by the task's new one). `origin` names the source in errors.
pub fn load_weights(
    tensors: &HashMap<String, Tensor>,
    origin: &str,
    stores: &[&nn::VarStore],
    head: bool,
) -> Result<()> {
    let names: Vec<std::collections::BTreeSet<String>> =
        stores.iter().map(|vs| vs.variables().into_keys().collect()).collect();
    let is_head = |k: &str| k.starts_with("classifier.");
    let mut stray: Vec<&String> =
        tensors.keys().filter(|k| !(names.iter().any(|n| n.contains(*k)) || (!head && is_head(k)))).collect();
    if !stray.is_empty() {
        stray.sort();
        return Err(Error::Model {
            path: origin.into(),
            message: format!(
                "{} keys fit no variable of the model, e.g. {:?}",
                stray.len(),
                &stray[..stray.len().min(5)]
            ),
        });
    }
    let skip: &[&str] = if head { &[] } else { &["classifier."] };
    for (vs, own) in stores.iter().zip(&names) {
        let own_keys = |k: &str| !own.contains(k);
        let rules = tram_task::kit::weights::LoadRules { skip_prefixes: skip, ignore_extra: &own_keys };
        tram_task::kit::weights::load_tensors(vs, origin, tensors, &rules)?;
    }
    Ok(())
}

/// Ids of the rows a pruned vocabulary keeps, and the map from original ids to rows.
#[derive(Debug, Clone, PartialEq)]
pub struct VocabPruning {
    /// Original id of each kept row, ascending.
    pub kept: Vec<i64>,
    map: HashMap<i64, i64>,
}

impl VocabPruning {
    /// Keeps the ids in `used` plus `always` (specials), sorted and deduplicated.
    pub fn new(used: impl IntoIterator<Item = i64>, always: &[i64]) -> Self {
        let mut kept: Vec<i64> = used.into_iter().chain(always.iter().copied()).collect();
        kept.sort_unstable();
        kept.dedup();
        let map = kept.iter().enumerate().map(|(row, &id)| (id, row as i64)).collect();
        Self { kept, map }
    }

    pub fn rows(&self) -> i64 {
        self.kept.len() as i64
    }

    /// The row of original id `id`, if kept.
    pub fn row(&self, id: i64) -> Option<i64> {
        self.map.get(&id).copied()
    }

    /// Rewrites original ids into rows; an id that was not kept is an error (the data changed since pruning).
    pub fn remap(&self, ids: &mut [i64]) -> Result<()> {
        for id in ids.iter_mut() {
            *id = self.row(*id).ok_or_else(|| {
                Error::Config(format!("token id {id} is not in the pruned vocabulary (built from other data)"))
            })?;
        }
        Ok(())
    }
}
