//! An image classifier over either network, with a head for the task's classes: the [`Model`] the step driver
//! trains (logits `[N, C]`, cross-entropy, input noise on the pixels after normalisation).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};
use tram_core::{InputNoise, Model};
use tram_task::{Domain, Evaluation, Split};

use crate::data::{Dataset, Loader, LoaderConfig, Normalization, Transform};
use crate::efficientnet_lite::{EfficientNetLite, EfficientNetLiteConfig};
use crate::error::{Error, Result};
use crate::vit::{self, Vit, VitConfig};

/// Which network, and where its weights come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ModelSpec {
    /// EfficientNet-Lite0 (`kind = "efficientnet-lite0"`); `weights`: a safetensors file (default: the assets cache), unless `pretrained` is false.
    #[serde(rename = "efficientnet-lite0")]
    EfficientNetLite0 {
        #[serde(default)]
        weights: Option<PathBuf>,
        #[serde(default = "yes")]
        pretrained: bool,
        /// Batch-norm momentum (PyTorch convention); default: 0.01, as the weights were trained.
        #[serde(default)]
        bn_momentum: Option<f64>,
    },
    /// A ViT from a Hugging Face snapshot folder (its config.json always; model.safetensors when pretrained).
    Vit {
        dir: PathBuf,
        #[serde(default = "yes")]
        pretrained: bool,
    },
}

fn yes() -> bool {
    true
}

impl ModelSpec {
    pub fn efficientnet_lite0() -> Self {
        Self::EfficientNetLite0 { weights: None, pretrained: true, bn_momentum: None }
    }

    pub fn pretrained(&self) -> bool {
        match self {
            Self::EfficientNetLite0 { pretrained, .. } | Self::Vit { pretrained, .. } => *pretrained,
        }
    }
}

/// The network inside an [`ImageClassifier`].
#[derive(Debug)]
pub enum Network {
    EfficientNetLite(EfficientNetLite),
    Vit(Vit),
}

impl Network {
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        match self {
            Network::EfficientNetLite(n) => n.forward_t(x, train),
            Network::Vit(n) => n.forward_t(x, train),
        }
    }
}

/// A batch on the model's device.
#[derive(Debug)]
pub struct ImageBatch {
    /// `[N, 3, H, W]`, normalised.
    pub images: Tensor,
    /// `[N]` class indices.
    pub labels: Tensor,
}

/// An image classifier with a head for the task's classes: what the step driver trains.
#[derive(Debug)]
pub struct ImageClassifier {
    vs: nn::VarStore,
    net: Network,
    num_classes: i64,
    normalization: Normalization,
}

impl ImageClassifier {
    /// Builds the network on `device` (the new head is initialised from torch's generator: seed it first) and
    /// loads its pre-trained weights, unless the spec says not to.
    pub fn build(spec: &ModelSpec, num_classes: i64, device: Device) -> Result<Self> {
        let vs = nn::VarStore::new(device);
        let (net, normalization) = match spec {
            ModelSpec::EfficientNetLite0 { weights, pretrained, bn_momentum } => {
                let mut config = EfficientNetLiteConfig::lite0(num_classes);
                config.bn_momentum = bn_momentum.unwrap_or(config.bn_momentum);
                let net = EfficientNetLite::new(&vs.root(), config);
                if *pretrained {
                    match weights {
                        Some(p) => net.load_pretrained(&vs, p)?,
                        None => net
                            .load_pretrained(&vs, &crate::assets::efficientnet_lite0_weights()?)
                            .map_err(crate::error::corrupt_hint)?,
                    }
                }
                (Network::EfficientNetLite(net), Normalization::MINUS_ONE_ONE)
            }
            ModelSpec::Vit { dir, pretrained } => {
                let config = VitConfig::from_dir(dir)?;
                let net = Vit::new(&vs.root(), config, num_classes);
                if *pretrained {
                    net.load_pretrained(&vs, dir)?;
                }
                (Network::Vit(net), vit::normalization(dir)?)
            }
        };
        Ok(Self { vs, net, num_classes, normalization })
    }

    pub fn network(&self) -> &Network {
        &self.net
    }

    pub fn num_classes(&self) -> i64 {
        self.num_classes
    }

    /// The input normalisation the network was trained with.
    pub fn normalization(&self) -> Normalization {
        self.normalization
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Top-1 accuracy (with each image's correctness) and mean cross-entropy on `dataset`, in eval mode. Images
    /// that do not decode are left out (the loader warns with their path).
    pub fn evaluate(
        &self,
        dataset: &Dataset,
        transform: Transform,
        loader: &LoaderConfig,
        domain: Domain,
        split: Split,
    ) -> Result<Evaluation> {
        let (mut correct, mut loss_sum) = (Vec::with_capacity(dataset.len()), 0.0);
        for batch in Loader::new(dataset, transform, loader, 0)? {
            let batch = batch?;
            if batch.is_empty() {
                continue;
            }
            let (images, labels) = batch.to_tensors(self.device());
            let logits = tch::no_grad(|| self.net.forward_t(&images, false));
            let loss = logits.cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Sum, -100, 0.0);
            loss_sum += loss.double_value(&[]);
            let hits = logits.argmax(-1, false).eq_tensor(&labels).to_kind(Kind::Double).to_device(tch::Device::Cpu);
            correct.extend(Vec::<f64>::try_from(hits)?);
        }
        if correct.is_empty() {
            return Err(Error::Config(format!("evaluation set `{}` holds no image", dataset.name)));
        }
        Ok(Evaluation::accuracy(dataset.name.clone(), domain, split, correct, loss_sum))
    }
}

impl Model for ImageClassifier {
    type Batch = ImageBatch;

    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    /// Noise goes on the pixels (after normalisation).
    fn forward(&self, batch: &ImageBatch, train: bool, noise: Option<&InputNoise>) -> Tensor {
        match noise {
            Some(z) => self.net.forward_t(&z.apply(&batch.images), train),
            None => self.net.forward_t(&batch.images, train),
        }
    }

    fn loss(&self, logits: &Tensor, batch: &ImageBatch) -> Tensor {
        logits.cross_entropy_for_logits(&batch.labels)
    }

    fn batch_size(&self, batch: &ImageBatch) -> usize {
        batch.labels.size()[0] as usize
    }
}
