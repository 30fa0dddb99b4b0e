//! The training loop on a tiny linear classifier (with dropout, so that resuming must reproduce the random masks):
//! steps per epoch, accumulation, evaluation points, selection, the schedule's length, the saved weights, and a run
//! interrupted in the middle of an epoch and resumed from its checkpoint.

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use tram_core::{BaseConfig, Decay, InputNoise, LrSchedule, MethodConfig, MethodName, Model, OptimizerConfig};
use tram_task::{train, Domain, EpochBatches, Evaluation, RunContext, RunSettings, Selection, Split, TrainData};

use tram_core::testing::serial;

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
    fn forward(&self, b: &Batch, train: bool, noise: Option<&InputNoise>) -> Tensor {
        let x = noise.map_or_else(|| b.x.shallow_clone(), |n| n.apply(&b.x));
        self.fc.forward(&x.dropout(0.25, train))
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
    /// `(epoch, batch)`: the batch at which the epoch's iterator fails, as a killed process would stop.
    fail_at: Option<(usize, usize)>,
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
        Self { batches, scripted_val_loss: val, evaluations: 0, epochs_started: vec![], fail_at: None }
    }
}

impl TrainData<Linear> for Data {
    fn epoch(&mut self, epoch: usize, start: usize) -> tram_task::Result<EpochBatches<'_, Batch>> {
        self.epochs_started.push((epoch, start));
        let fail = self.fail_at.filter(|f| f.0 == epoch).map(|f| f.1);
        Ok(Box::new(self.batches.iter().enumerate().skip(start).map(move |(k, (x, y))| {
            if fail == Some(k) {
                return Err(tram_task::Error::Config("interrupted".into()));
            }
            Ok(Batch { x: x.shallow_clone(), y: y.shallow_clone() })
        })))
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
    assert!(tram_task::kit::checksum::verify_sidecar(&path).unwrap(), "written with their checksum");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn evaluating_the_last_epoch_only_trains_the_same_and_reports_the_same_model() {
    let _g = serial();
    let run = settings(MethodName::TramPrev);
    let every = train(&model(), &run, 5, &mut Data::new(vec![]), &mut RunContext::new(&mut |_| {})).unwrap();
    let mut last_only = run.clone();
    last_only.eval_every_epoch = false;
    let mut data = Data::new(vec![]);
    let once = train(&model(), &last_only, 5, &mut data, &mut RunContext::new(&mut |_| {})).unwrap();
    assert_eq!(data.evaluations, 1);
    assert_eq!(once.steps, every.steps, "the evaluations do not touch training");
    assert_eq!((once.epochs.len(), once.selected), (1, 0));
    let (a, b) = (once.selected_epoch().unwrap(), every.selected_epoch().unwrap());
    assert_eq!((a.epoch, a.steps, a.train_loss, &a.evals), (3, 15, b.train_loss, &b.evals), "epoch 3's, as before");
    // Selection by validation loss needs every epoch's.
    last_only.selection = Selection::BestValidation;
    assert!(last_only.validate().unwrap_err().to_string().contains("every epoch"));
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

/// A run stopped in the middle of its second epoch and resumed from its checkpoint, with a new model whose
/// parameters are not the initial ones, ends exactly as an uninterrupted run: every step report, every
/// evaluation, the epochs' mean losses, the final parameters. TRAM-θ_{t−1} with momentum SGD, accumulation and
/// dropout: the target copy, the momentum, the position in the data and the random masks must all carry over.
#[test]
fn a_run_resumed_from_a_checkpoint_equals_an_uninterrupted_run_bit_for_bit() {
    let _g = serial();
    let mut run = settings(MethodName::TramPrev);
    run.optimizer.base = BaseConfig::Sgd { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.0 };
    run.optimizer.seed = 3;
    run.accumulate = 2;
    run.eval_before_training = true;
    run.selection = Selection::BestValidation;
    let steps = run.steps_per_epoch(80).unwrap();
    let dir = std::env::temp_dir().join(format!("tram-task-resume-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let train_with = |m: &Linear, data: &mut Data, ckpt: Option<tram_task::Checkpoints>| {
        let mut on_step = |_: &tram_core::StepReport| {};
        let mut ctx = RunContext::new(&mut on_step);
        ctx.checkpoints = ckpt;
        train(m, &run, steps, data, &mut ctx)
    };
    let scripted = vec![5.0, 3.0, 1.0, 2.0];

    let whole_model = model();
    let whole = train_with(&whole_model, &mut Data::new(scripted.clone()), None).unwrap();

    // Checkpoints after steps 3, 5 (end of epoch 1), 6 and 9; the iterator fails at batch 8 of epoch 2, after 4
    // of its 5 steps.
    let ckpt = tram_task::Checkpoints::new(dir.join("checkpoint"), 3);
    let mut first = Data::new(scripted.clone());
    first.fail_at = Some((2, 8));
    let err = train_with(&model(), &mut first, Some(ckpt.clone())).unwrap_err();
    assert!(err.to_string().contains("interrupted"), "{err}");
    let (step, folder) = ckpt.latest().unwrap().expect("a checkpoint was written");
    assert_eq!(step, 9, "the latest checkpoint is inside epoch 2");
    let left: Vec<String> =
        std::fs::read_dir(&ckpt.dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(left, [folder.file_name().unwrap().to_string_lossy()], "older checkpoints are pruned");

    let resumed_model = model();
    let _ = tch::no_grad(|| resumed_model.fc.ws.shallow_clone().fill_(7.0));
    // The evaluations of epochs 0 and 1 come from the checkpoint: the validation losses continue from there.
    let mut second = Data::new(scripted[2..].to_vec());
    let resumed = train_with(&resumed_model, &mut second, Some(ckpt.clone())).unwrap();
    assert_eq!(second.epochs_started, [(2, 8), (3, 0)], "epoch 2 resumes at its ninth batch");

    assert_eq!(resumed.steps.len(), whole.steps.len());
    for (a, b) in resumed.steps.iter().zip(&whole.steps) {
        assert_eq!(a, b, "step {} differs after the resume", b.step);
    }
    let outcome = |r: &tram_task::RunResult| -> Vec<(usize, u64, u64, Vec<Evaluation>)> {
        r.epochs.iter().map(|e| (e.epoch, e.steps, e.train_loss.to_bits(), e.evals.clone())).collect()
    };
    assert_eq!(outcome(&resumed), outcome(&whole), "evaluations and epoch losses");
    assert_eq!((resumed.selected, whole.selected), (2, 2), "best validation (loss 1.0 after epoch 2)");
    assert!(
        resumed_model.fc.ws.equal(&whole_model.fc.ws)
            && resumed_model.fc.bs.as_ref().unwrap().equal(whole_model.fc.bs.as_ref().unwrap())
    );
    assert!(!whole_model.fc.ws.equal(&model().fc.ws), "training changed the parameters");
    std::fs::remove_dir_all(&dir).ok();
}

/// A checkpoint is resumed only as it was written (its checksums) and only by the run it was trained for (the
/// identity stored with it); either refusal names the file or the keys.
#[test]
fn a_damaged_or_foreign_checkpoint_is_refused_by_name() {
    let _g = serial();
    let run = settings(MethodName::Sam);
    let dir = std::env::temp_dir().join(format!("tram-task-damaged-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    let identity = |style: &str| {
        toml::Value::try_from([("train_style", style)].into_iter().collect::<std::collections::BTreeMap<_, _>>())
            .unwrap()
    };
    let ckpt = tram_task::Checkpoints::new(dir.join("checkpoint"), 2).with_identity(identity("google"));
    let attempt = |ckpt: tram_task::Checkpoints, fail_at| {
        let mut data = Data::new(vec![]);
        data.fail_at = fail_at;
        let mut on_step = |_: &tram_core::StepReport| {};
        let mut ctx = RunContext::new(&mut on_step);
        ctx.checkpoints = Some(ckpt);
        train(&model(), &run, 10, &mut data, &mut ctx)
    };
    assert!(attempt(ckpt.clone(), Some((1, 5))).is_err(), "interrupted after 4 steps");
    let latest = ckpt.check().unwrap().expect("checked");
    assert_eq!((latest.step, latest.identity), (4, Some(identity("google"))));

    let foreign = ckpt.clone().with_identity(identity("apple"));
    let err = attempt(foreign, None).unwrap_err().to_string();
    assert!(
        err.contains("was trained for another run") && err.contains("train_style: \"google\" → \"apple\""),
        "{err}"
    );

    let state = latest.folder.join("state.safetensors");
    let mut bytes = std::fs::read(&state).unwrap();
    let len = bytes.len();
    bytes[len / 2..].fill(0);
    std::fs::write(&state, bytes).unwrap();
    let err = attempt(ckpt.clone(), None).unwrap_err().to_string();
    assert!(err.contains("state.safetensors") && err.contains("the file changed since"), "{err}");
    assert!(err.contains("delete") && err.contains("to start the run over"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// A run whose training steps or evaluation stop being finite stops there and says where, instead of training on
/// NaN (or failing without a result).
#[test]
fn a_run_whose_numbers_stop_being_finite_stops_there_and_says_so() {
    let _g = serial();
    let mut run = settings(MethodName::Base);
    run.optimizer.schedule = LrSchedule::constant(1e300);
    let mut seen = 0;
    let mut on_step = |_: &tram_core::StepReport| seen += 1;
    let result = train(&model(), &run, 10, &mut Data::new(vec![]), &mut RunContext::new(&mut on_step)).unwrap();
    let diverged = result.diverged.clone().expect("a learning rate of 1e300 diverges");
    let last = result.steps.last().unwrap();
    // The driver skips a non-finite step (changing nothing) up to its limit of 5 in a row: 4 reported, the fifth
    // is the driver's error, and the run stops there.
    let skipped = result.steps.iter().rev().take_while(|s| s.skipped).count();
    assert!(!last.loss.is_finite() && seen == result.steps.len() && result.steps.len() < 30, "stopped at once");
    assert_eq!(skipped, 4, "the driver's limit");
    let fifth = last.step + 1;
    assert_eq!(diverged.what, format!("5 steps in a row had a non-finite loss or gradient (the last: step {fifth})"));
    assert!(diverged.to_string().starts_with(&format!("diverged after {} steps", diverged.steps)));

    // Finite training, but an evaluation that is not (a model whose buffers broke): the run stops after it.
    let mut data = Data::new(vec![1.0, f64::NAN, 1.0]);
    let result =
        train(&model(), &settings(MethodName::Base), 10, &mut data, &mut RunContext::new(&mut |_| {})).unwrap();
    let diverged = result.diverged.expect("a NaN validation loss");
    assert!(
        diverged.what.contains("the evaluation of val (validation) after epoch 2 gives loss NaN"),
        "{}",
        diverged.what
    );
    assert_eq!((diverged.steps, result.epochs.len(), data.evaluations), (20, 2, 2), "no third epoch");
}
