//! The training loop on a tiny linear classifier: steps per epoch, accumulation, evaluation points, selection,
//! the schedule's length, and the saved weights.

use std::sync::{Mutex, MutexGuard};

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use tram_core::{BaseConfig, Decay, InputNoise, LrSchedule, MethodConfig, MethodName, Model, OptimizerConfig};
use tram_task::{train, Domain, EpochBatches, Evaluation, RunContext, RunSettings, Selection, Split, TrainData};

fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

struct Linear {
    vs: nn::VarStore,
    fc: nn::Linear,
}

struct Batch {
    x: Tensor,
    y: Tensor,
}

impl Model for Linear {
    type Batch = Batch;
    fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }
    fn forward(&self, b: &Batch, _train: bool, noise: Option<&InputNoise>) -> Tensor {
        let x = noise.map_or_else(|| b.x.shallow_clone(), |n| n.apply(&b.x));
        self.fc.forward(&x)
    }
    fn loss(&self, logits: &Tensor, b: &Batch) -> Tensor {
        logits.cross_entropy_for_logits(&b.y)
    }
    fn batch_size(&self, b: &Batch) -> usize {
        b.y.size()[0] as usize
    }
}

fn model() -> Linear {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let fc = nn::linear(vs.root() / "fc", 4, 3, Default::default());
    Linear { vs, fc }
}

/// 10 batches of 8 examples; the validation loss is scripted per evaluation to test selection.
struct Data {
    batches: Vec<(Tensor, Tensor)>,
    scripted_val_loss: Vec<f64>,
    evaluations: usize,
    epochs_started: Vec<(usize, usize)>,
}

impl Data {
    fn new(val: Vec<f64>) -> Self {
        tch::manual_seed(1);
        let batches = (0..10)
            .map(|_| {
                let x = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
                let y = x.narrow(1, 0, 3).argmax(-1, false);
                (x, y)
            })
            .collect();
        Self { batches, scripted_val_loss: val, evaluations: 0, epochs_started: vec![] }
    }
}

impl TrainData<Linear> for Data {
    fn epoch(&mut self, epoch: usize, start: usize) -> tram_task::Result<EpochBatches<'_, Batch>> {
        self.epochs_started.push((epoch, start));
        Ok(Box::new(
            self.batches[start..].iter().map(|(x, y)| Ok(Batch { x: x.shallow_clone(), y: y.shallow_clone() })),
        ))
    }

    fn evaluate(&mut self, model: &Linear) -> tram_task::Result<Vec<Evaluation>> {
        let (x, y) = (&self.batches[0].0, &self.batches[0].1);
        let logits = tch::no_grad(|| model.fc.forward(x));
        let correct: Vec<f64> =
            Vec::<f64>::try_from(logits.argmax(-1, false).eq_tensor(y).to_kind(Kind::Double)).unwrap();
        let val = self.scripted_val_loss.get(self.evaluations).copied().unwrap_or(1.0);
        self.evaluations += 1;
        Ok(vec![
            Evaluation::accuracy("test", Domain::InDomain, Split::Test, correct, 0.0),
            Evaluation {
                loss: val,
                ..Evaluation::accuracy("val", Domain::InDomain, Split::Validation, vec![1.0], 0.0)
            },
        ])
    }
}

fn settings(name: MethodName) -> RunSettings {
    let schedule = LrSchedule { decay: Decay::Linear, ..LrSchedule::constant(0.1) };
    RunSettings::new(OptimizerConfig::new(MethodConfig::new(name), BaseConfig::sgd(), schedule), 3, 8)
}

#[test]
fn epochs_steps_accumulation_and_schedule_length() {
    let _g = serial();
    let m = model();
    let mut data = Data::new(vec![]);
    let mut run = settings(MethodName::Sam);
    run.accumulate = 2;
    run.eval_before_training = true;
    let steps = run.steps_per_epoch(80).unwrap();
    assert_eq!(steps, 5, "10 batches of 8, two per step");
    let mut seen = 0;
    let mut on_step = |_: &tram_core::StepReport| seen += 1;
    let result = train(&m, &run, steps, &mut data, &mut RunContext::new(&mut on_step)).unwrap();
    assert_eq!(seen, 15);
    assert_eq!(result.steps.len(), 15);
    assert!(result.steps.iter().all(|s| s.micro_batches == 2));
    assert_eq!(
        result.epochs.iter().map(|e| (e.epoch, e.steps)).collect::<Vec<_>>(),
        [(0, 0), (1, 5), (2, 10), (3, 15)]
    );
    assert_eq!(data.epochs_started, [(1, 0), (2, 0), (3, 0)]);
    // The linear decay spans the run's 15 steps: the last step's rate is (1 − 14/15)·0.1.
    let last = result.steps.last().unwrap();
    assert!((last.lr - 0.1 / 15.0).abs() < 1e-12, "{}", last.lr);
    assert_eq!(result.selected, 3);
    assert!(result.epochs[1].train_loss.is_finite() && result.epochs[0].train_loss.is_nan());
}

#[test]
fn best_validation_selects_and_saves_that_epoch() {
    let _g = serial();
    let m = model();
    // Evaluations after epochs 1, 2, 3 report validation losses 3, 1, 2: epoch 2 is reported and saved.
    let mut data = Data::new(vec![3.0, 1.0, 2.0]);
    let mut run = settings(MethodName::Base);
    run.selection = Selection::BestValidation;
    let dir = std::env::temp_dir().join(format!("tram-task-train-{}", std::process::id()));
    let path = dir.join("model.safetensors");
    let mut on_step = |_: &tram_core::StepReport| {};
    let mut ctx = RunContext::new(&mut on_step);
    ctx.save_model = Some(path.clone());
    let result = train(&m, &run, 4, &mut data, &mut ctx).unwrap();
    assert_eq!(result.selected, 1);
    assert_eq!(result.selected_epoch().unwrap().epoch, 2);
    let saved: Vec<(String, Tensor)> = Tensor::read_safetensors(&path).unwrap();
    let w = saved.iter().find(|(n, _)| n == "fc.weight").unwrap();
    assert!(!w.1.equal(&m.fc.ws), "the saved weights are epoch 2's, not the final ones");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn settings_that_cannot_train_are_errors() {
    let run = settings(MethodName::Base);
    assert!(run.steps_per_epoch(7).unwrap_err().to_string().contains("smaller than one step"));
    let mut zero = run.clone();
    zero.max_train_batches = Some(0);
    assert!(zero.validate().unwrap_err().to_string().contains("max_train_batches = 0"));
    let mut capped = run.clone();
    capped.max_train_batches = Some(3);
    assert_eq!(capped.steps_per_epoch(80).unwrap(), 3);
}
