//! The model shared by tram-core's tests, bench and example (the bench and the example include this file with
//! `#[path]`): a classifier over any stack of tch layers, its `Model` implementation, the small MLP the tests
//! train, and the lock that keeps tests that seed torch's generator apart.
#![allow(dead_code)]

use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};
use tram_core::{BaseConfig, InputNoise, LrSchedule, MethodConfig, MethodName, Model, OptimizerConfig};

/// torch's random generator is global to the process: tests that seed it must not interleave.
#[allow(unused_imports)]
pub use tram_core::testing::serial;

/// Inputs `[N, features]` and class labels `[N]`.
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
}

impl Batch {
    /// `parts` micro-batches of equal size, in order.
    pub fn split(&self, parts: i64) -> Vec<Batch> {
        let rows = self.x.size()[0] / parts;
        (0..parts).map(|k| Batch { x: self.x.narrow(0, k * rows, rows), y: self.y.narrow(0, k * rows, rows) }).collect()
    }
}

/// A classifier: layers over one var store, input noise added to the inputs, mean cross-entropy computed in
/// the logits' dtype (tch's `cross_entropy_for_logits` would take the log-softmax in float32).
pub struct Net {
    pub vs: nn::VarStore,
    layers: nn::SequentialT,
}

impl Net {
    pub fn new(vs: nn::VarStore, layers: nn::SequentialT) -> Self {
        Self { vs, layers }
    }

    /// Copies of every variable, sorted by name.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut v: Vec<(String, Tensor)> =
            self.vs.variables().into_iter().map(|(k, t)| (k, t.detach().copy())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

impl Model for Net {
    type Batch = Batch;

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn forward(&self, b: &Batch, train: bool, noise: Option<&InputNoise>) -> Tensor {
        let x = noise.map_or_else(|| b.x.shallow_clone(), |n| n.apply(&b.x));
        self.layers.forward_t(&x, train)
    }

    fn loss(&self, logits: &Tensor, b: &Batch) -> Tensor {
        logits.log_softmax(-1, logits.kind()).nll_loss(&b.y)
    }

    fn batch_size(&self, b: &Batch) -> usize {
        b.x.size()[0] as usize
    }
}

/// Linear(4 → hidden) – BatchNorm1d (optional) – tanh – dropout – Linear(hidden → 3), float64 on the CPU.
pub struct Mlp {
    pub hidden: i64,
    pub batch_norm: bool,
    pub dropout: f64,
    /// Adds a variable `unused` that the forward never reads: it must never receive a gradient or an update.
    pub unused: bool,
}

impl Mlp {
    /// The model, initialised by torch's default initialisers from `seed`.
    pub fn build(&self, seed: i64) -> Net {
        self.build_as(seed, Kind::Double)
    }

    /// [`Mlp::build`] in another dtype (float32 for mixed precision, which casts float32 tensors only).
    pub fn build_as(&self, seed: i64, kind: Kind) -> Net {
        tch::manual_seed(seed);
        let mut vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let mut layers = nn::seq_t().add(nn::linear(&root / "fc1", 4, self.hidden, Default::default()));
        if self.batch_norm {
            layers = layers.add(nn::batch_norm1d(&root / "bn", self.hidden, Default::default()));
        }
        let dropout = self.dropout;
        layers = layers.add_fn(|h| h.tanh()).add_fn_t(move |h, train| h.dropout(dropout, train)).add(nn::linear(
            &root / "fc2",
            self.hidden,
            3,
            Default::default(),
        ));
        if self.unused {
            let _ = root.randn("unused", &[5], 0.0, 1.0);
        }
        vs.set_kind(kind);
        Net::new(vs, layers)
    }
}

/// The tests' model: 16 hidden units with batch norm, dropout `dropout`, and an unused variable.
pub fn mlp(seed: i64, dropout: f64) -> Net {
    Mlp { hidden: 16, batch_norm: true, dropout, unused: true }.build(seed)
}

/// Without batch norm, micro-batches are exact slices of a batch (for accumulation tests).
pub fn mlp_without_bn(seed: i64) -> Net {
    Mlp { hidden: 16, batch_norm: false, dropout: 0.0, unused: true }.build(seed)
}

pub fn batches(seed: i64, n: usize, rows: i64) -> Vec<Batch> {
    batches_as(seed, n, rows, Kind::Double)
}

pub fn batches_as(seed: i64, n: usize, rows: i64, kind: Kind) -> Vec<Batch> {
    tch::manual_seed(seed);
    (0..n)
        .map(|_| {
            let x = Tensor::randn([rows, 4], (kind, Device::Cpu));
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
