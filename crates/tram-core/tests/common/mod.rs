//! A tiny classifier with batch norm and dropout, for driver tests.
#![allow(dead_code)]

use std::sync::{Mutex, MutexGuard};

/// torch's random generator is global to the process: tests that seed it must not interleave.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use tram_core::{BaseConfig, InputNoise, LrSchedule, MethodConfig, MethodName, Model, OptimizerConfig};

pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
}

pub struct Mlp {
    pub vs: nn::VarStore,
    fc1: nn::Linear,
    bn: Option<nn::BatchNorm>,
    fc2: nn::Linear,
    /// Present but never used in the forward: it must never receive a gradient or an update.
    pub unused: Tensor,
    dropout: f64,
}

impl Mlp {
    pub fn new(seed: i64, dropout: f64) -> Self {
        Self::build(seed, dropout, true)
    }

    /// Without batch norm, micro-batches are exact slices of a batch (for accumulation tests).
    pub fn without_bn(seed: i64) -> Self {
        Self::build(seed, 0.0, false)
    }

    fn build(seed: i64, dropout: f64, with_bn: bool) -> Self {
        tch::manual_seed(seed);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let fc1 = nn::linear(&root / "fc1", 4, 16, Default::default());
        let bn = with_bn.then(|| nn::batch_norm1d(&root / "bn", 16, Default::default()));
        let fc2 = nn::linear(&root / "fc2", 16, 3, Default::default());
        let unused = root.randn("unused", &[5], 0.0, 1.0);
        vs.set_kind(Kind::Double);
        Self { vs, fc1, bn, fc2, unused, dropout }
    }

    /// Same architecture with the weights of `other`.
    pub fn clone_of(other: &Mlp) -> Self {
        let mut m = Mlp::build(0, other.dropout, other.bn.is_some());
        m.vs.copy(&other.vs).unwrap();
        m
    }

    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> =
            self.vs.variables().into_iter().map(|(k, t)| (k, t.detach().copy())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl Model for Mlp {
    type Batch = Batch;
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn forward(&self, b: &Batch, train: bool, noise: Option<&InputNoise>) -> Tensor {
        let x = match noise {
            Some(n) => n.apply(&b.x),
            None => b.x.shallow_clone(),
        };
        let h = self.fc1.forward_t(&x, train);
        let h = match &self.bn {
            Some(bn) => bn.forward_t(&h, train),
            None => h,
        };
        let h = h.tanh().dropout(self.dropout, train);
        self.fc2.forward_t(&h, train)
    }
    fn loss(&self, logits: &Tensor, b: &Batch) -> Tensor {
        // Not `cross_entropy_for_logits`, which computes in float32.
        logits.cross_entropy_loss::<Tensor>(&b.y, None, tch::Reduction::Mean, -100, 0.0)
    }
    fn batch_size(&self, b: &Batch) -> usize {
        b.x.size()[0] as usize
    }
}

pub fn batches(seed: i64, n: usize, rows: i64) -> Vec<Batch> {
    tch::manual_seed(seed);
    (0..n)
        .map(|_| {
            let x = Tensor::randn([rows, 4], (Kind::Double, Device::Cpu));
            // A learnable rule: the class is the argmax of the first three features.
            let y = x.narrow(1, 0, 3).argmax(1, false);
            Batch { x, y }
        })
        .collect()
}

pub fn config(name: MethodName, lr: f64) -> OptimizerConfig {
    OptimizerConfig::new(MethodConfig::new(name), BaseConfig::sgd_momentum(0.9), LrSchedule::constant(lr))
}

pub fn max_abs_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    a.iter()
        .zip(b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

pub fn bit_equal(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> bool {
    a.iter().zip(b).all(|((na, ta), (nb, tb))| na == nb && ta.equal(tb))
}
