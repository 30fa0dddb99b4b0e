//! The cross-dataset transfer task (the paper's §4.1, Table 3; its variants in Table 2): fine-tune a pre-trained
//! image classifier on one domain with any tram-core method, then measure top-1 accuracy on the held-out images
//! of that domain and zero-shot on every other domain. Training is [`tram_task::train`]; this module adds data,
//! the model and its evaluation, no optimizer logic.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tch::Device;
use tram_core::OptimizerConfig;
use tram_task::{
    time_interleaved, Domain, EpochBatches, Evaluation, Metric, RunContext, RunResult, RunSettings, Split, Task,
    Timing, TrainData,
};

use crate::assets;
use crate::classifier::{ImageBatch, ImageClassifier, ModelSpec};
use crate::data::emoji::{self, EmojiConfig};
use crate::data::parquet::ParquetColumns;
use crate::data::{image_folder, Augment, Loader, LoaderConfig, OnCorrupt, TransferData, Transform};
use crate::error::{Error, Result};

/// Where the images come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum DataSpec {
    /// The embedded default: emoji in four vendor styles (fetched by `bash tools/assets.sh vision`).
    Emoji(EmojiConfig),
    /// A Hugging Face image data set folder as the Hub stores it (parquet shards of `train` and `test`, image bytes
    /// plus a label column): CIFAR-100 (`columns = { image = "img", label = "fine_label" }`), Stanford Cars,
    /// Oxford Flowers. Fine-tune on `train_split`, test on `test_split`; no zero-shot sets.
    Parquet {
        dir: PathBuf,
        #[serde(default)]
        columns: ParquetColumns,
        #[serde(default = "train_split")]
        train_split: String,
        #[serde(default = "test_split")]
        test_split: String,
    },
    /// ImageFolder layouts (`<root>/<class>/<image>`): a training folder, an in-domain test folder, and any number
    /// of named zero-shot test folders with the same class names.
    ImageFolder {
        train: PathBuf,
        test: PathBuf,
        #[serde(default)]
        ood: BTreeMap<String, PathBuf>,
    },
}

fn train_split() -> String {
    "train".into()
}

fn test_split() -> String {
    "test".into()
}

impl DataSpec {
    pub fn load(&self) -> Result<TransferData> {
        match self {
            DataSpec::Emoji(cfg) => crate::data::emoji::load(cfg),
            DataSpec::Parquet { dir, columns, train_split, test_split } => {
                crate::data::parquet::transfer_data(dir, columns, train_split, test_split)
            }
            DataSpec::ImageFolder { train, test, ood } => {
                let ood: Vec<(&str, &std::path::Path)> = ood.iter().map(|(n, p)| (n.as_str(), p.as_path())).collect();
                image_folder::transfer_data(train, test, &ood)
            }
        }
    }
}

/// The task's own keys (`task = { kind = "image-transfer", ... }` in an experiment profile); the generic keys
/// (optimizer, schedule, epochs, batch size, seeds) are [`RunSettings`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferConfig {
    pub data: DataSpec,
    pub model: ModelSpec,
    /// Input side in pixels.
    pub image_size: u32,
    pub eval_batch_size: usize,
    /// Training augmentation; `None`: plain resize.
    #[serde(default)]
    pub augment: Option<Augment>,
    /// Decoding threads per loader (the batches do not depend on it).
    #[serde(default = "one")]
    pub workers: usize,
    #[serde(default)]
    pub on_corrupt: OnCorrupt,
    /// Initialize the new head from this seed in every run, so that the run's seed varies the data order and
    /// augmentation only (a measurement of where the variance over seeds comes from); default: the run's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_seed: Option<u64>,
}

fn one() -> usize {
    1
}

impl TransferConfig {
    /// The embedded CPU-sized default: pre-trained EfficientNet-Lite0 at 64 px on Google-style emoji, tested on the
    /// other three styles. Batch-norm momentum 0.1 instead of the trained 0.01: with a few hundred steps the
    /// running statistics would otherwise still be mostly ImageNet's at evaluation (measured: 0.66 vs 0.46
    /// in-domain top-1 after the first epoch with Adam, 0.74 vs 0.70 after the third).
    pub fn embedded() -> Self {
        Self {
            data: DataSpec::Emoji(EmojiConfig::default()),
            model: ModelSpec::EfficientNetLite0 { weights: None, pretrained: true, bn_momentum: Some(0.1) },
            image_size: 64,
            eval_batch_size: 128,
            augment: Some(Augment::default()),
            workers: 1,
            on_corrupt: OnCorrupt::Skip,
            init_seed: None,
        }
    }

    /// The configuration with what cannot change a result set to a fixed value, for a run's identity: decoding
    /// threads do not change the batches.
    pub fn identity(&self) -> Self {
        Self { workers: 1, ..self.clone() }
    }

    /// Loads the data set (the model is built per run), after checking the assets it and the model read.
    pub fn build(&self) -> Result<TransferTask> {
        if self.image_size == 0 || self.eval_batch_size == 0 || self.workers == 0 {
            return Err(Error::Config("image_size, eval_batch_size and workers must be at least 1".into()));
        }
        if let Some(augment) = &self.augment {
            augment.validate().map_err(|e| Error::Config(format!("task.{e}")))?;
        }
        if let ModelSpec::EfficientNetLite0 { bn_momentum: Some(m), .. } = self.model {
            // The running statistics move by this share of the batch's (PyTorch's convention): outside [0, 1] they
            // leave the data's range and the evaluations turn to NaN.
            if !(0.0..=1.0).contains(&m) {
                return Err(Error::Config(format!("task.model.bn_momentum = {m}: a share, in [0, 1]")));
            }
        }
        self.verify_assets()?;
        let data = self.data.load()?;
        for set in std::iter::once(&data.test).chain(&data.ood) {
            if set.is_empty() {
                return Err(Error::Config(format!("evaluation set `{}` holds no image", set.name)));
            }
        }
        Ok(TransferTask { config: self.clone(), data })
    }

    /// Checks what the runs will read against the checksums written when it was fetched, once for the sweep: the
    /// pre-trained weights and, for the embedded emoji, every image of every style (own downloads: the folders
    /// that have a `SHA256SUMS`).
    fn verify_assets(&self) -> Result<()> {
        use tram_task::kit::assets::{verify_file, verify_folder};
        match &self.model {
            ModelSpec::EfficientNetLite0 { pretrained: false, .. } | ModelSpec::Vit { pretrained: false, .. } => {}
            ModelSpec::EfficientNetLite0 { weights: None, .. } => {
                let path = assets::efficientnet_lite0_weights()?;
                verify_file(&path, true)?;
            }
            ModelSpec::EfficientNetLite0 { weights: Some(path), .. } => verify_file(path, false)?,
            ModelSpec::Vit { dir, .. } => verify_folder(dir, None, false)?,
        }
        match &self.data {
            DataSpec::Emoji(cfg) => {
                let (root, cached) = match &cfg.root {
                    Some(r) => (r.clone(), false),
                    None => (emoji::default_dir()?, true),
                };
                for style in crate::data::emoji::Style::ALL {
                    verify_folder(&root.join(style.as_str()), None, cached)?;
                }
            }
            DataSpec::Parquet { dir, .. } => verify_folder(dir, None, false)?,
            DataSpec::ImageFolder { train, test, ood } => {
                for dir in [train, test].into_iter().chain(ood.values()) {
                    verify_folder(dir, None, false)?;
                }
            }
        }
        Ok(())
    }
}

/// The loaded task: data once, a model per run.
pub struct TransferTask {
    pub config: TransferConfig,
    pub data: TransferData,
}

impl TransferTask {
    fn loader(&self, batch_size: usize, seed: u64, train: bool) -> LoaderConfig {
        let base = if train { LoaderConfig::train(batch_size, seed) } else { LoaderConfig::eval(batch_size) };
        LoaderConfig { workers: self.config.workers, on_corrupt: self.config.on_corrupt, ..base }
    }

    fn model(&self, seed: u64, device: Device) -> Result<ImageClassifier> {
        tch::manual_seed(seed as i64);
        ImageClassifier::build(&self.config.model, self.data.classes.len() as i64, device)
    }
}

/// One run's view of the task: the training loader, the evaluation sets, what was skipped.
struct RunData<'a> {
    task: &'a TransferTask,
    train: LoaderConfig,
    eval: LoaderConfig,
    train_tf: Transform,
    eval_tf: Transform,
    device: Device,
    skipped: Vec<String>,
}

impl TrainData<ImageClassifier> for RunData<'_> {
    fn epoch(&mut self, epoch: usize, start: usize) -> tram_task::Result<EpochBatches<'_, ImageBatch>> {
        let loader = Loader::starting_at(&self.task.data.train, self.train_tf, &self.train, epoch as u64, start)?;
        let (device, skipped) = (self.device, &mut self.skipped);
        Ok(Box::new(loader.filter_map(move |batch| match batch {
            Err(e) => Some(Err(e.into())),
            Ok(b) => {
                skipped.extend(b.skipped.iter().cloned());
                (!b.is_empty()).then(|| {
                    let (images, labels) = b.to_tensors(device);
                    Ok(ImageBatch { images, labels })
                })
            }
        })))
    }

    fn evaluate(&mut self, model: &ImageClassifier) -> tram_task::Result<Vec<Evaluation>> {
        let data = &self.task.data;
        let mut evals = vec![model.evaluate(&data.test, self.eval_tf, &self.eval, Domain::InDomain, Split::Test)?];
        for set in &data.ood {
            evals.push(model.evaluate(set, self.eval_tf, &self.eval, Domain::ZeroShot, Split::Test)?);
        }
        Ok(evals)
    }
}

impl Task for TransferTask {
    fn describe(&self) -> String {
        let d = &self.data;
        format!(
            "{} training images, in-domain test {} ({}), zero-shot {}, {} classes",
            d.train.len(),
            d.test.name,
            d.test.len(),
            d.ood.iter().map(|s| format!("{} ({})", s.name, s.len())).collect::<Vec<_>>().join(", "),
            d.classes.len()
        )
    }

    fn metric(&self) -> Metric {
        Metric::Accuracy
    }

    fn steps_per_epoch(&self, run: &RunSettings) -> tram_task::Result<usize> {
        run.steps_per_epoch(self.data.train.len())
    }

    fn run(&self, run: &RunSettings, ctx: &mut RunContext<'_>) -> tram_task::Result<RunResult> {
        let device = run.device.resolve()?;
        let model = self.model(self.config.init_seed.unwrap_or(run.seed()), device)?;
        let norm = model.normalization();
        let size = self.config.image_size;
        let mut data = RunData {
            task: self,
            train: self.loader(run.batch_size, run.seed(), true),
            eval: self.loader(self.config.eval_batch_size, 0, false),
            train_tf: match self.config.augment {
                Some(a) => Transform::train(size, norm, a),
                None => Transform::eval(size, norm),
            },
            eval_tf: Transform::eval(size, norm),
            device,
            skipped: vec![],
        };
        let steps = self.steps_per_epoch(run)?;
        let mut result = tram_task::train(&model, run, steps, &mut data, ctx)?;
        result.skipped_examples = data.skipped;
        Ok(result)
    }

    /// Every method on one model (seed 0), on the first training batch without augmentation.
    fn time_steps(
        &self,
        run: &RunSettings,
        methods: &[OptimizerConfig],
        rounds: usize,
    ) -> tram_task::Result<Vec<Timing>> {
        let device = run.device.resolve()?;
        let model = self.model(0, device)?;
        let tf = Transform::eval(self.config.image_size, model.normalization());
        let host = Loader::new(&self.data.train, tf, &LoaderConfig::train(run.batch_size, 0), 0)?
            .next()
            .ok_or_else(|| Error::Config("the training set yields no batch".into()))??;
        let (images, labels) = host.to_tensors(device);
        time_interleaved(&model, &[ImageBatch { images, labels }], methods, 1, rounds, || {})
    }
}
