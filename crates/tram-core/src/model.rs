//! What the step driver needs from a model: its variables, a forward pass (train or eval mode, optionally
//! on noised inputs) and its loss.

use tch::{nn, Tensor};

use crate::error::{Error, Result};
use crate::noise::InputNoise;

/// A model the step driver can train. Implement it over your own tch modules.
pub trait Model {
    /// One micro-batch of inputs and labels.
    type Batch;

    /// The variables: every tensor that requires a gradient is a trainable parameter; every other tensor
    /// (batch-norm running statistics, frozen weights) is a buffer.
    fn var_store(&self) -> &nn::VarStore;

    /// Logits `[..., classes]` (each row a distribution over classes; `[N, T, V]` for language models).
    /// `train` switches dropout and batch statistics. When `noise` is given, add it to the inputs
    /// (pixels, patch or token embeddings) with [`InputNoise::apply`].
    fn forward(&self, batch: &Self::Batch, train: bool, noise: Option<&InputNoise>) -> Tensor;

    /// The mean training loss of `batch` from its logits.
    fn loss(&self, logits: &Tensor, batch: &Self::Batch) -> Tensor;

    /// Number of examples in `batch`; micro-batches are weighted by it.
    fn batch_size(&self, batch: &Self::Batch) -> usize;

    /// Optional per-row mask for divergences (`[N]` or `[N, T]`, non-zero = counts), e.g. to drop padding tokens.
    fn divergence_mask(&self, _batch: &Self::Batch) -> Option<Tensor> {
        None
    }

    /// The scale (RMS) of the tensor [`InputNoise::apply`] is applied to, in units of the σ this model is given,
    /// measured once (from pre-trained weights or cached states): `sigma_relative` multiplies it. `None`: the
    /// model does not measure one, and only an absolute `sigma` can be used with it.
    fn noise_scale(&self) -> Option<f64> {
        None
    }
}

/// The model's variables split into trainable parameters and buffers, in name order.
#[derive(Debug)]
pub(crate) struct Variables {
    pub param_names: Vec<String>,
    pub params: Vec<Tensor>,
    pub buffer_names: Vec<String>,
    pub buffers: Vec<Tensor>,
}

impl Variables {
    pub fn of(vs: &nn::VarStore) -> Result<Self> {
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut vars = Self { param_names: vec![], params: vec![], buffer_names: vec![], buffers: vec![] };
        for (name, t) in named {
            if t.requires_grad() {
                vars.param_names.push(name);
                vars.params.push(t);
            } else {
                vars.buffer_names.push(name);
                vars.buffers.push(t);
            }
        }
        if vars.params.is_empty() {
            return Err(Error::Model(
                "the model has no trainable parameters (every variable is frozen or the var store is empty)".into(),
            ));
        }
        Ok(vars)
    }

    pub fn param_bytes(&self) -> usize {
        self.params.iter().map(crate::base::tensor_bytes).sum()
    }
}

/// Deep copies of tensors (for snapshots).
pub(crate) fn snapshot(ts: &[Tensor]) -> Vec<Tensor> {
    tch::no_grad(|| ts.iter().map(|t| t.detach().copy()).collect())
}

/// Copies `src` into `dst` element by element (bit-exact), without recording gradients.
pub(crate) fn copy_into(dst: &mut [Tensor], src: &[Tensor]) {
    tch::no_grad(|| {
        for (d, s) in dst.iter_mut().zip(src) {
            d.copy_(s);
        }
    })
}
