//! The cross-lingual task: data and weights loaded once, the per-device preparation shared by every run, and
//! [`Task::run`] once per (method, seed).

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use tch::{Device, Kind, Tensor};
use tram_core::{Model, OptimizerConfig};
use tram_task::{
    AnalysisSettings, EpochBatches, Evaluation, Metric, RunContext, RunResult, RunSettings, Selection, SetAnalysis,
    Split, SplitMix64, Task, Timing, TrainData,
};

use super::config::CrossLingualConfig;
use super::data::{Encoded, EncoderFiles, EvalSet, Examples, Pretrained, RawData};
use super::prepared::Prepared;
use crate::classifier::{load_weights, SequenceClassifier, TextBatch, VocabPruning};
use crate::encoder::EncoderConfig;
use crate::error::Result;
use crate::trainable::Trainable;

/// The cross-lingual task, data and weights loaded; see the module documentation.
pub struct CrossLingualTask {
    config: CrossLingualConfig,
    model: Pretrained,
    classes: Vec<String>,
    train: Vec<Encoded>,
    /// Evaluated after every epoch: English validation, then every test set (English first).
    eval_sets: Vec<EvalSet>,
    /// Validation sets of the other languages (Table 6), not evaluated during training.
    other_validation: Vec<EvalSet>,
    skipped: Vec<String>,
    summary: String,
    prepared: RefCell<Option<Rc<Prepared>>>,
}

impl std::fmt::Debug for CrossLingualTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrossLingualTask").field("config", &self.config).field("summary", &self.summary).finish()
    }
}

impl CrossLingualConfig {
    /// Loads the data and the pre-trained weights (errors name the file), tokenizes, prunes the vocabulary.
    pub fn build(&self) -> Result<CrossLingualTask> {
        CrossLingualTask::new(self.clone())
    }
}

impl CrossLingualTask {
    fn new(config: CrossLingualConfig) -> Result<Self> {
        config.validate()?;
        config.verify_assets()?;
        let files = EncoderFiles::open(&config)?;
        config.trainable.first_trained_layer(files.config.num_hidden_layers)?;
        let raw = RawData::read(&config.data)?;
        let mut examples = Examples::encode(&raw, &files)?;
        let (pruning, pad) = examples.prune(config.prune_vocab, &files)?;
        let (weights, origin) = files.weights(pruning.as_ref())?;
        let model = Pretrained { config: files.config, weights, origin, pruning, pad };
        let summary = summary(&config, &model, &raw);
        let Examples { train, eval_sets, other_validation } = examples;
        let RawData { classes, skipped, .. } = raw;
        Ok(Self {
            config,
            model,
            classes,
            train,
            eval_sets,
            other_validation,
            skipped,
            summary,
            prepared: RefCell::new(None),
        })
    }

    pub fn config(&self) -> &CrossLingualConfig {
        &self.config
    }

    pub fn encoder_config(&self) -> &EncoderConfig {
        &self.model.config
    }

    /// Class names, in label order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The English training examples.
    pub fn train_examples(&self) -> &[Encoded] {
        &self.train
    }

    /// The sets evaluated after every epoch (English validation, then the test sets, English first).
    pub fn eval_sets(&self) -> &[EvalSet] {
        &self.eval_sets
    }

    /// Every language's validation set, English first (Table 6 measures ε-sharpness and CKA on these,
    /// arXiv 2310.03646 v2 §4.3).
    pub fn validation_sets(&self) -> Vec<&EvalSet> {
        self.eval_sets.iter().filter(|s| s.split == Split::Validation).chain(&self.other_validation).collect()
    }

    /// The pruned vocabulary, if pruned.
    pub fn pruning(&self) -> Option<&VocabPruning> {
        self.model.pruning.as_ref()
    }

    /// Seconds spent computing the frozen prefix's cache on the last device prepared (0 before
    /// [`CrossLingualTask::prepare`]).
    pub fn cache_seconds(&self) -> f64 {
        self.prepared.borrow().as_ref().map_or(0.0, |p| p.cache_seconds())
    }

    fn num_labels(&self) -> i64 {
        self.classes.len() as i64
    }

    fn first_trained_layer(&self) -> usize {
        self.config.trainable.first_trained_layer(self.model.config.num_hidden_layers).expect("checked in build")
    }

    /// Builds, once per device, the frozen prefix (when the lower layers are frozen) and the cache of its outputs
    /// for the training examples and every evaluated set, and the evaluation batches. Runs call it; call it
    /// yourself to time it.
    pub fn prepare(&self, device: Device) -> Result<()> {
        self.prepared(device).map(|_| ())
    }

    fn prepared(&self, device: Device) -> Result<Rc<Prepared>> {
        if let Some(p) = self.prepared.borrow().as_ref() {
            if p.device == device {
                return Ok(p.clone());
            }
        }
        let frozen = matches!(self.config.trainable, Trainable::TopLayers(_));
        let first = self.first_trained_layer();
        let (sets, batch_size) = (&self.eval_sets, self.config.eval_batch_size);
        let prepared = Rc::new(Prepared::new(&self.model, frozen, first, sets, batch_size, device)?);
        *self.prepared.borrow_mut() = Some(prepared.clone());
        Ok(prepared)
    }

    /// A fresh model for a run: the pre-trained encoder and a new head drawn from `seed`, on `device`.
    pub fn model(&self, seed: u64, device: Device) -> Result<SequenceClassifier> {
        let prep = self.prepared(device)?;
        self.model_from(&prep, seed, device)
    }

    fn model_from(&self, prep: &Prepared, seed: u64, device: Device) -> Result<SequenceClassifier> {
        let model = SequenceClassifier::new(
            &self.model.config,
            self.num_labels(),
            self.config.pooling,
            self.config.noise_at,
            prep.prefix.clone(),
            self.model.word_rows(),
            head_seed(seed),
            device,
        )
        .with_cached_noise_scale(self.config.cached_noise_scale);
        let cached_rms = if model.noises_cached() { prep.cached_rms(&self.model, &self.train) } else { None };
        let model = match cached_rms {
            Some(rms) => model.with_cached_rms(rms),
            None => model,
        };
        load_weights(&prep.top_weights, &self.model.origin, &[model.var_store()], false)?;
        Ok(model)
    }

    /// The fine-tuned model of a finished run: the pre-trained encoder plus the trained parameters the runner
    /// saved (`RunContext::save_model`), for Table 6's sharpness and CKA (no retraining).
    pub fn load_finetuned(&self, trained: &Path, device: Device) -> Result<SequenceClassifier> {
        let model = self.model(0, device)?;
        model.load_trained(trained)?;
        Ok(model)
    }

    /// Batches of `set` on `device` (eval order, `batch_size` examples, no cached prefix: the model runs its
    /// prefix itself): e.g. the per-language validation sets for Table 6.
    pub fn batches(&self, set: &EvalSet, batch_size: usize, device: Device) -> Vec<TextBatch> {
        self.model.batches(set, batch_size, device)
    }

    /// The representation before the head (`[N, H]`) of every example of `set`, in order: Table 6's CKA input.
    pub fn representations(&self, model: &SequenceClassifier, set: &EvalSet) -> Tensor {
        let device = model.var_store().device();
        let reps: Vec<Tensor> =
            self.batches(set, self.config.eval_batch_size, device).iter().map(|b| model.representation(b)).collect();
        Tensor::cat(&reps, 0)
    }

    /// Accuracy of `model` on each evaluated set (eval mode, no gradient), per-example correctness in set order.
    pub fn evaluate(&self, model: &SequenceClassifier) -> Result<Vec<Evaluation>> {
        let prep = self.prepared(model.var_store().device())?;
        Ok(self.evaluate_with(&prep, model))
    }

    fn evaluate_with(&self, prep: &Prepared, model: &SequenceClassifier) -> Vec<Evaluation> {
        self.evaluate_sets(prep, model, |_| true)
    }

    /// The sets `which` keeps, in order.
    fn evaluate_sets(
        &self,
        prep: &Prepared,
        model: &SequenceClassifier,
        which: impl Fn(&EvalSet) -> bool,
    ) -> Vec<Evaluation> {
        self.eval_sets
            .iter()
            .zip(&prep.eval_batches)
            .filter(|(set, _)| which(set))
            .map(|(set, batches)| {
                let mut correct = vec![0.0; set.examples.len()];
                let mut loss_sum = 0.0;
                for (b, idx) in batches {
                    let logits = tch::no_grad(|| model.forward(b, false, None));
                    let loss = logits.cross_entropy_loss::<Tensor>(&b.labels, None, tch::Reduction::Sum, -100, 0.0);
                    loss_sum += loss.double_value(&[]);
                    let hits = Vec::<i64>::try_from(logits.argmax(-1, false).eq_tensor(&b.labels).to_kind(Kind::Int64))
                        .expect("a vector of hits");
                    for (&i, h) in idx.iter().zip(hits) {
                        correct[i] = h as f64;
                    }
                }
                Evaluation::accuracy(set.name.clone(), set.domain, set.split, correct, loss_sum)
            })
            .collect()
    }
}

/// The seed of a run's new head (kept apart from the driver's dropout and noise seeds).
fn head_seed(seed: u64) -> i64 {
    (tram_task::fnv1a(seed, b"classification head") >> 1) as i64
}

/// One line for logs: the model, how it trains, the vocabulary kept, the data.
fn summary(config: &CrossLingualConfig, model: &Pretrained, raw: &RawData) -> String {
    let encoder = &model.config;
    let word_rows = model.word_rows();
    format!(
        "cross-lingual: {} ({} layers × {}, trainable {}, pooling {:?}, noise at {:?}); vocabulary {} of {} rows \
         ({:.1} M embedding parameters instead of {:.1} M); {}; max {} tokens; classes {}",
        model.origin,
        encoder.num_hidden_layers,
        encoder.hidden_size,
        config.trainable,
        config.pooling,
        config.noise_at,
        word_rows,
        encoder.vocab_size,
        (word_rows * encoder.hidden_size) as f64 / 1e6,
        (encoder.vocab_size * encoder.hidden_size) as f64 / 1e6,
        raw.summary,
        config.max_seq_len,
        raw.classes.len()
    )
}

/// The training batches of a run: a seeded shuffle per epoch, each batch with its cached prefix outputs.
struct RunData<'a> {
    task: &'a CrossLingualTask,
    prep: Rc<Prepared>,
    seed: u64,
    batch_size: usize,
    /// When to evaluate the test sets besides the validation set (see [`CrossLingualConfig::test_every_epoch`]).
    tests: TestSchedule,
    /// Evaluations so far, and the lowest validation loss among them.
    evaluations: usize,
    best_validation: f64,
}

/// Which evaluations include the test sets.
#[derive(Debug, Clone, Copy)]
enum TestSchedule {
    Always,
    /// The last of this many evaluations (`selection = "last"`).
    Last(usize),
    /// When the validation loss is the lowest so far (`selection = "best-validation"`).
    BestValidation,
}

impl RunData<'_> {
    fn new<'a>(task: &'a CrossLingualTask, prep: Rc<Prepared>, run: &RunSettings) -> RunData<'a> {
        let tests = if task.config.test_every_epoch {
            TestSchedule::Always
        } else {
            match run.selection {
                Selection::Last => TestSchedule::Last(run.epochs + usize::from(run.eval_before_training)),
                Selection::BestValidation => TestSchedule::BestValidation,
            }
        };
        RunData {
            task,
            prep,
            seed: run.seed(),
            batch_size: run.batch_size,
            tests,
            evaluations: 0,
            best_validation: f64::INFINITY,
        }
    }

    fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.task.train.len()).collect();
        SplitMix64(tram_task::fnv1a(self.seed, format!("epoch {epoch}").as_bytes())).shuffle(&mut order);
        order
    }

    fn batch(&self, idx: &[usize]) -> TextBatch {
        self.prep.train_batch(&self.task.model, &self.task.train, idx)
    }
}

impl TrainData<SequenceClassifier> for RunData<'_> {
    fn epoch(&mut self, epoch: usize, start: usize) -> tram_task::Result<EpochBatches<'_, TextBatch>> {
        let order = self.order(epoch);
        let n = order.len() / self.batch_size;
        let bs = self.batch_size;
        Ok(Box::new((start..n).map(move |k| Ok(self.batch(&order[k * bs..(k + 1) * bs])))))
    }

    fn evaluate(&mut self, model: &SequenceClassifier) -> tram_task::Result<Vec<Evaluation>> {
        self.evaluations += 1;
        let mut evals = self.task.evaluate_sets(&self.prep, model, |s| s.split == Split::Validation);
        let val = evals.iter().map(|e| e.loss).sum::<f64>() / evals.len().max(1) as f64;
        let tests = match self.tests {
            TestSchedule::Always => true,
            TestSchedule::Last(n) => self.evaluations >= n,
            // Selection can only report an epoch whose validation loss was the lowest so far when it ran.
            TestSchedule::BestValidation => val.is_nan() || val < self.best_validation,
        };
        self.best_validation = self.best_validation.min(val);
        if tests {
            evals.extend(self.task.evaluate_sets(&self.prep, model, |s| s.split != Split::Validation));
        }
        Ok(evals)
    }
}

impl Task for CrossLingualTask {
    fn describe(&self) -> String {
        let sets: Vec<String> = self
            .eval_sets
            .iter()
            .map(|s| format!("{} {} {} ({})", s.name, s.split.as_str(), s.domain.as_str(), s.examples.len()))
            .collect();
        format!("{}; train {} examples; evaluated: {}", self.summary, self.train.len(), sets.join(", "))
    }

    fn metric(&self) -> Metric {
        Metric::Accuracy
    }

    fn steps_per_epoch(&self, run: &RunSettings) -> tram_task::Result<usize> {
        run.steps_per_epoch(self.train.len())
    }

    fn run(&self, run: &RunSettings, ctx: &mut RunContext<'_>) -> tram_task::Result<RunResult> {
        let device = run.device.resolve()?;
        let steps = self.steps_per_epoch(run)?;
        let prep = self.prepared(device)?;
        let model = self.model_from(&prep, run.seed(), device)?;
        let mut data = RunData::new(self, prep, run);
        let mut result = tram_task::train(&model, run, steps, &mut data, ctx)?;
        result.skipped_examples.extend(self.skipped.iter().cloned());
        Ok(result)
    }

    fn time_steps(
        &self,
        run: &RunSettings,
        methods: &[OptimizerConfig],
        rounds: usize,
    ) -> tram_task::Result<Vec<Timing>> {
        let device = run.device.resolve()?;
        run.validate()?;
        let prep = self.prepared(device)?;
        let model = self.model_from(&prep, run.seed(), device)?;
        let data = RunData::new(self, prep, run);
        let order = data.order(1);
        if order.len() < run.batch_size {
            return Err(tram_task::Error::Config(format!(
                "{} training examples do not fill a batch of {}",
                order.len(),
                run.batch_size
            )));
        }
        let batch = data.batch(&order[..run.batch_size]);
        tram_task::time_interleaved(&model, std::slice::from_ref(&batch), methods, 1, rounds, || {})
    }

    /// Table 6 (arXiv 2310.03646 v2 §4.3): on every language's validation set (English first), the fine-tuned
    /// model's ε-sharpness over its trainable parameters (with a frozen prefix: the trained top layers and the
    /// head; with `trainable = "all"`: the whole model) and the linear CKA between the pre-trained and the
    /// fine-tuned representation before the head. The frozen prefix's outputs are computed once per task.
    fn analyse(
        &self,
        run: &RunSettings,
        trained: &Path,
        with: &AnalysisSettings,
    ) -> tram_task::Result<Option<Vec<SetAnalysis>>> {
        let device = with.device.resolve()?;
        let prep = self.prepared(device)?;
        let finetuned = self.model_from(&prep, run.seed(), device)?;
        finetuned.load_trained(trained)?;
        let pretrained = self.model_from(&prep, run.seed(), device)?;
        let batches = prep.analysis_batches(&self.model, &self.validation_sets(), with.batch_size);
        let mut out = vec![];
        for (set, batches) in self.validation_sets().into_iter().zip(batches.iter()) {
            let sharpness = tram_task::kit::analysis::epsilon_sharpness(&finetuned, batches, &with.sharpness).map_err(
                |e| match e {
                    tram_task::Error::Config(m) => tram_task::Error::Config(format!("{} validation: {m}", set.name)),
                    other => other,
                },
            )?;
            let reps = |m: &SequenceClassifier| {
                Tensor::cat(&batches.iter().map(|b| m.representation(b)).collect::<Vec<_>>(), 0)
            };
            let cka = tram_task::kit::analysis::linear_cka(&reps(&pretrained), &reps(&finetuned))?;
            out.push(SetAnalysis {
                set: set.name.clone(),
                domain: set.domain,
                examples: set.examples.len(),
                sharpness,
                cka,
            });
        }
        Ok(Some(out))
    }
}
