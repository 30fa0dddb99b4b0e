//! What the cross-lingual task computes once per device and shares with every run: the frozen prefix (with
//! `trainable = { top-layers = k }`), its outputs for the training examples as they are first batched, the
//! evaluation batches with their prefix outputs, and Table 6's analysis batches.

use std::cell::{OnceCell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Instant;

use tch::{Device, Tensor};

use super::data::{length_order, Encoded, EvalSet, Pretrained};
use crate::classifier::{load_weights, FrozenPrefix, TextBatch};
use crate::error::Result;
use crate::prefix_cache::PrefixCache;

/// Micro-batches of each of several sets, shared.
pub(super) type SetBatches = Rc<Vec<Vec<TextBatch>>>;

/// The frozen prefix, its cached outputs, the evaluation batches, on one device.
pub(super) struct Prepared {
    pub device: Device,
    pub prefix: Option<Rc<FrozenPrefix>>,
    /// Pre-trained weights of the trainable part (for each run's fresh model).
    pub top_weights: HashMap<String, Tensor>,
    /// Per training example, the prefix's output `[T_i, H]`, computed the first time the example is batched (a
    /// run capped by `max_train_batches` computes only what it uses).
    train_cache: RefCell<PrefixCache<usize>>,
    /// Per evaluated set: batches (with cached prefix outputs) and the example index of each row.
    pub eval_batches: Vec<Vec<(TextBatch, Vec<usize>)>>,
    /// Table 6: every validation set's micro-batches with the prefix's outputs cached, for one batch size,
    /// computed when first analysed and shared by every run's analysis.
    analysis_batches: RefCell<Option<(usize, SetBatches)>>,
    /// RMS of the prefix outputs of the first training examples (padding left out), measured when first needed.
    cached_rms: OnceCell<f64>,
    /// Seconds [`Prepared::new`] took.
    seconds: f64,
}

/// Training examples whose prefix outputs give the RMS a relative σ on cached states is relative to.
const CACHED_RMS_EXAMPLES: usize = 64;

impl Prepared {
    /// With `frozen`, a frozen prefix of the embeddings and the layers below `first` (loaded from `model`), and
    /// `eval_sets`' batches of `eval_batch_size` examples (longest first) with its outputs.
    pub fn new(
        model: &Pretrained,
        frozen: bool,
        first: usize,
        eval_sets: &[EvalSet],
        eval_batch_size: usize,
        device: Device,
    ) -> Result<Self> {
        let start = Instant::now();
        let weights = model.weights.iter().map(|(k, v)| (k.clone(), v.shallow_clone()));
        let (prefix, top_weights) = if frozen {
            let prefix = FrozenPrefix::new(&model.config, first, model.word_rows(), device);
            let names: HashSet<String> = prefix.var_store().variables().into_keys().collect();
            let (mine, rest): (HashMap<_, _>, HashMap<_, _>) = weights.partition(|(k, _)| names.contains(k));
            load_weights(&mine, &model.origin, &[prefix.var_store()], false)?;
            (Some(Rc::new(prefix)), rest)
        } else {
            (None, weights.collect())
        };
        let mut eval_batches = vec![];
        for set in eval_sets {
            let order = length_order(&set.examples);
            let mut batches = vec![];
            for chunk in order.chunks(eval_batch_size) {
                let mut b = model.batch(&set.examples, chunk, device);
                if let Some(prefix) = &prefix {
                    b.prefix_out = Some(prefix.forward(&b.ids, &b.mask, None));
                }
                batches.push((b, chunk.to_vec()));
            }
            eval_batches.push(batches);
        }
        Ok(Self {
            device,
            prefix,
            top_weights,
            train_cache: RefCell::new(PrefixCache::new(None)),
            eval_batches,
            analysis_batches: RefCell::new(None),
            cached_rms: OnceCell::new(),
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// Training examples `idx` as a batch, with the frozen prefix's outputs (cached, or computed now together).
    pub fn train_batch(&self, model: &Pretrained, train: &[Encoded], idx: &[usize]) -> TextBatch {
        let mut b = model.batch(train, idx, self.device);
        if let Some(prefix) = &self.prefix {
            let rows = self.train_cache.borrow_mut().get_or_compute(idx, |missing| {
                let m = model.batch(train, missing, self.device);
                let h = prefix.forward(&m.ids, &m.mask, None);
                let real = |row: usize, i: usize| h.get(row as i64).narrow(0, 0, train[i].ids.len() as i64);
                missing.iter().enumerate().map(|(row, &i)| real(row, i)).collect()
            });
            b.prefix_out = Some(Tensor::pad_sequence(&rows, true, 0.0, "right"));
        }
        b
    }

    /// The RMS of the frozen prefix's outputs over the first training examples (the same for every seed; padding
    /// left out): the scale of what `noise_at = "cached"` noises, for a relative σ. `None` without a prefix.
    pub fn cached_rms(&self, model: &Pretrained, train: &[Encoded]) -> Option<f64> {
        let prefix = self.prefix.as_ref()?;
        Some(*self.cached_rms.get_or_init(|| {
            let idx: Vec<usize> = (0..train.len().min(CACHED_RMS_EXAMPLES)).collect();
            let b = model.batch(train, &idx, self.device);
            tram_core::masked_rms(&prefix.forward(&b.ids, &b.mask, None), &b.mask)
        }))
    }

    /// `sets`' micro-batches of `batch_size` (set order) with the frozen prefix's outputs, computed once per batch
    /// size.
    pub fn analysis_batches(&self, model: &Pretrained, sets: &[&EvalSet], batch_size: usize) -> SetBatches {
        if let Some((b, batches)) = self.analysis_batches.borrow().as_ref() {
            if *b == batch_size {
                return batches.clone();
            }
        }
        let batches: Vec<Vec<TextBatch>> = sets
            .iter()
            .map(|set| {
                let mut batches = model.batches(set, batch_size, self.device);
                if let Some(prefix) = &self.prefix {
                    for b in &mut batches {
                        b.prefix_out = Some(prefix.forward(&b.ids, &b.mask, None));
                    }
                }
                batches
            })
            .collect();
        let batches = Rc::new(batches);
        *self.analysis_batches.borrow_mut() = Some((batch_size, batches.clone()));
        batches
    }

    /// Seconds spent on the frozen prefix's outputs on this device so far.
    pub fn cache_seconds(&self) -> f64 {
        self.seconds + self.train_cache.borrow().seconds()
    }
}
