//! Oracles for the step driver: cases whose right answer is known without a reference implementation.

mod common;

use common::*;
use tch::{Kind, Tensor};
use tram_core::*;

fn run(model: &Net, cfg: OptimizerConfig, data: &[Batch]) -> Vec<StepReport> {
    let mut d = StepDriver::new(model, cfg).unwrap();
    data.iter().map(|b| d.step(model, std::slice::from_ref(b)).unwrap()).collect()
}

#[test]
fn sam_with_rho_zero_equals_the_base_optimizer() {
    let _serial = serial();
    let data = batches(1, 4, 8);
    let (a, b) = (mlp(3, 0.2), mlp(3, 0.2));
    let mut sam = MethodConfig::new(MethodName::Sam);
    sam.rho = Some(0.0);
    run(&a, OptimizerConfig::new(sam, BaseConfig::sgd_momentum(0.9), LrSchedule::constant(0.1)), &data);
    run(&b, config(MethodName::Base, 0.1), &data);
    assert!(bit_equal(&a.state(), &b.state()), "max diff {}", max_abs_diff(&a.state(), &b.state()));
    assert!(max_abs_diff(&a.state(), &mlp(3, 0.2).state()) > 1e-3, "training must move the weights");
}

#[test]
fn tram_with_a_fixed_radius_equals_asam_with_that_rho() {
    let _serial = serial();
    // A cap below d fixes TRAM's radius: the whole step must then equal ASAM with ρ = cap.
    let data = batches(2, 3, 8);
    let cap = 1e-3;
    let (a, b) = (mlp(4, 0.2), mlp(4, 0.2));
    let mut tram = MethodConfig::new(MethodName::TramX);
    tram.sigma = Some(1.0);
    tram.max_radius = Some(cap);
    let reports = run(&a, OptimizerConfig::new(tram, BaseConfig::sgd_momentum(0.9), LrSchedule::constant(0.1)), &data);
    for r in &reports {
        assert!(r.divergence.unwrap() > cap, "the test needs d > cap, got {:?}", r.divergence);
        assert_eq!(r.radius, Some(cap));
    }
    let mut asam = MethodConfig::new(MethodName::Asam);
    asam.rho = Some(cap);
    run(&b, OptimizerConfig::new(asam, BaseConfig::sgd_momentum(0.9), LrSchedule::constant(0.1)), &data);
    assert!(bit_equal(&a.state(), &b.state()), "max diff {}", max_abs_diff(&a.state(), &b.state()));
}

#[test]
fn sam_eps_norm_is_rho() {
    let _serial = serial();
    let data = batches(3, 3, 8);
    let m = mlp(5, 0.0);
    for r in run(&m, config(MethodName::Sam, 0.1), &data) {
        assert!((r.eps_norm.unwrap() - 0.05).abs() < 1e-12, "{:?}", r.eps_norm);
        assert_eq!(r.radius, Some(0.05));
    }
}

#[test]
fn restore_is_bit_exact_and_buffers_end_as_pass_one_left_them() {
    let _serial = serial();
    // lr = 0: after any number of ascents and restores the parameters must be bit-identical to the start, and
    // the batch-norm buffers must equal those of one train-mode forward (pass 1) of the same batch.
    let data = batches(4, 1, 8);
    for name in MethodName::ALL {
        let m = mlp(6, 0.2);
        let start = m.state();
        let reference = mlp(6, 0.2);
        let r = run(&m, config(name, 0.0), &data).remove(0);
        let noise = |spec: NoiseSpec| InputNoise {
            spec,
            seed: forward_seed(0, 0, 0, 1),
            resume_seed: forward_seed(0, 0, 0, 0),
        };
        tch::manual_seed(forward_seed(0, 0, 0, 0));
        let method = MethodConfig::new(name).build().unwrap();
        let _ = tch::no_grad(|| reference.forward(&data[0], true, method.ascent_noise.map(noise).as_ref()));
        for ((n, after), (_, before)) in m.state().iter().zip(&start) {
            if n.starts_with("bn.running") {
                let want = reference.vs.variables()[n].shallow_clone();
                assert!(after.equal(&want), "{name}: buffer {n} is not as pass 1 left it");
                assert!(!after.equal(before), "{name}: buffer {n} should have moved in pass 1");
            } else {
                assert!(after.equal(before), "{name}: parameter {n} changed with lr = 0");
            }
        }
        // Parameter targets equal θ at step 0, so TRAM's first radius is 0 for them.
        if method.ascent.is_some()
            && ![MethodName::TramPrev, MethodName::TramPretrained, MethodName::TramEma].contains(&name)
        {
            assert!(r.eps_norm.unwrap() > 0.0, "{name}: the ascent must have moved θ");
        }
    }
}

#[test]
fn frozen_and_gradient_free_parameters_are_untouched() {
    let _serial = serial();
    let data = batches(5, 3, 8);
    for name in MethodName::ALL {
        let m = mlp(7, 0.2);
        let frozen = m.vs.variables()["fc1.weight"].set_requires_grad(false);
        let unused = m.vs.variables()["unused"].shallow_clone();
        let (w0, u0) = (frozen.copy(), unused.copy());
        let cfg = OptimizerConfig::new(
            MethodConfig::new(name),
            BaseConfig::Sgd { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.1 },
            LrSchedule::constant(0.1),
        );
        run(&m, cfg, &data);
        assert!(frozen.equal(&w0), "{name}: frozen weight moved");
        assert!(unused.equal(&u0), "{name}: a parameter without gradient moved");
        assert!(
            !m.vs.variables()["fc2.weight"].equal(&mlp(7, 0.2).vs.variables()["fc2.weight"]),
            "{name}: nothing trained"
        );
    }
}

/// Methods whose pass counts the paper does not state (TRAM-EMA is in no table; App. C.3 gives none for the
/// ASAM combinations), with the counts the driver measures, pinned so that a change shows: TRAM-EMA costs what
/// the other parameter targets cost; ASAM+TRPO and ASAM+MESA add one target forward to ASAM's 2/2 (its output
/// serves both passes); ASAM+R3F adds a noised forward to each pass.
const STATED_NOWHERE: [(MethodName, (u32, u32)); 4] = [
    (MethodName::TramEma, (3, 2)),
    (MethodName::AsamTrpo, (3, 2)),
    (MethodName::AsamR3f, (4, 2)),
    (MethodName::AsamMesa, (3, 2)),
];

#[test]
fn pass_counts_are_the_papers_tables_1_and_2() {
    let _serial = serial();
    let data = batches(6, 1, 8);
    let unstated: Vec<MethodName> = MethodName::ALL.into_iter().filter(|m| m.paper_passes().is_none()).collect();
    assert_eq!(unstated, STATED_NOWHERE.map(|(m, _)| m), "the registry's paper counts changed");
    for name in MethodName::ALL {
        let m = mlp(8, 0.2);
        let r = run(&m, config(name, 0.1), &data).remove(0);
        let measured = (r.forward_passes, r.backward_passes);
        let expected = match name.paper_passes() {
            Some(stated) => stated,
            None => STATED_NOWHERE.iter().find(|(m, _)| *m == name).expect("listed above").1,
        };
        assert_eq!(measured, expected, "{name}");
    }
}

#[test]
fn tram_prev_has_zero_radius_on_the_first_step_only() {
    let _serial = serial();
    // θ_{−1} = θ_0 and the target forward reuses pass 1's dropout masks, so d is exactly 0 at step 0.
    let data = batches(7, 3, 8);
    let m = mlp(9, 0.3);
    let r = run(&m, config(MethodName::TramPrev, 0.1), &data);
    assert_eq!(r[0].divergence, Some(0.0));
    assert_eq!(r[0].eps_norm, Some(0.0));
    assert!(r[1].divergence.unwrap() > 0.0 && r[2].divergence.unwrap() > 0.0);
}

#[test]
fn accumulation_equals_the_full_batch() {
    let _serial = serial();
    // Two micro-batches of 4 must give the step of one batch of 8 (no batch norm, so the slices are exact).
    let full = batches(8, 3, 8);
    let halves: Vec<Vec<Batch>> = full.iter().map(|b| b.split(2)).collect();
    for name in [
        MethodName::Base,
        MethodName::Sam,
        MethodName::Fsam,
        MethodName::Trpo,
        MethodName::TramPrev,
        MethodName::AsamMesa,
    ] {
        let (a, b) = (mlp_without_bn(10), mlp_without_bn(10));
        let ra = run(&a, config(name, 0.1), &full);
        let mut d = StepDriver::new(&b, config(name, 0.1)).unwrap();
        let rb: Vec<StepReport> = halves.iter().map(|h| d.step(&b, h).unwrap()).collect();
        let diff = max_abs_diff(&a.state(), &b.state());
        assert!(diff < 1e-12, "{name}: max diff {diff}");
        for (x, y) in ra.iter().zip(&rb) {
            assert!((x.loss - y.loss).abs() < 1e-12, "{name}: loss {} vs {}", x.loss, y.loss);
            if let (Some(p), Some(q)) = (x.divergence, y.divergence) {
                assert!((p - q).abs() < 1e-12, "{name}: d {p} vs {q}");
            }
            assert_eq!((y.forward_passes, y.backward_passes), (2 * x.forward_passes, 2 * x.backward_passes), "{name}");
        }
    }
}

#[test]
fn m_sharpness_takes_one_ascent_per_micro_batch() {
    let _serial = serial();
    // With one micro-batch, m-sharpness is the ordinary step; with two it differs from the global ascent.
    let full = batches(14, 2, 8);
    let halves: Vec<Vec<Batch>> = full.iter().map(|b| b.split(2)).collect();
    let msharp = |name| OptimizerConfig { m_sharpness: true, ..config(name, 0.1) };
    let (a, b, c) = (mlp_without_bn(18), mlp_without_bn(18), mlp_without_bn(18));
    run(&a, msharp(MethodName::Sam), &full);
    run(&b, config(MethodName::Sam, 0.1), &full);
    assert!(bit_equal(&a.state(), &b.state()));
    let mut d = StepDriver::new(&c, msharp(MethodName::Sam)).unwrap();
    for h in &halves {
        let r = d.step(&c, h).unwrap();
        assert_eq!((r.forward_passes, r.backward_passes), (4, 4));
        assert!((r.eps_norm.unwrap() - 0.05).abs() < 1e-12, "each ascent has radius ρ");
    }
    assert!(max_abs_diff(&b.state(), &c.state()) > 1e-6, "per-micro-batch ascents must differ from one global ascent");
}

#[test]
fn clipping_applies_to_the_descent_only() {
    let _serial = serial();
    let data = batches(9, 1, 8);
    let m = mlp(11, 0.0);
    let start = m.state();
    let mut cfg =
        OptimizerConfig::new(MethodConfig::new(MethodName::Sam), BaseConfig::sgd(), LrSchedule::constant(0.5));
    cfg.clip_grad_norm = Some(1e-3);
    let r = run(&m, cfg, &data).remove(0);
    assert!((r.eps_norm.unwrap() - 0.05).abs() < 1e-12, "the ascent is not clipped");
    assert!(r.descent_grad_norm > 1e-3);
    // Plain SGD: ‖Δθ‖ = lr · ‖clipped gradient‖ = 0.5 · 1e-3 (torch's clip coefficient max/(norm + 1e-6)).
    let step: f64 = m
        .state()
        .iter()
        .zip(&start)
        .filter(|((n, _), _)| !n.starts_with("bn.running"))
        .map(|((_, a), (_, b))| (a - b).square().sum(Kind::Double).double_value(&[]))
        .sum::<f64>()
        .sqrt();
    let expect = 0.5 * 1e-3 * r.descent_grad_norm / (r.descent_grad_norm + 1e-6);
    assert!((step - expect).abs() < 1e-12, "{step} vs {expect}");
}

#[test]
fn the_schedule_drives_the_base_optimizer() {
    let _serial = serial();
    // Plain SGD without momentum or decay: every step moves θ by lr_t · ‖∇‖ exactly, so the base optimizer
    // must have received the scheduled rate (warmup, then cosine), not the base rate.
    let data = batches(10, 6, 8);
    let m = mlp(12, 0.0);
    let schedule = LrSchedule::cosine(0.2).with_total_steps(6).with_warmup(2);
    let mut d =
        StepDriver::new(&m, OptimizerConfig::new(MethodConfig::new(MethodName::TramX), BaseConfig::sgd(), schedule))
            .unwrap();
    let params = |m: &Net| -> Vec<(String, Tensor)> {
        m.state().into_iter().filter(|(n, _)| !n.starts_with("bn.running")).collect()
    };
    let mut off_base = 0;
    for (t, b) in data.iter().enumerate() {
        let before = params(&m);
        let r = d.step(&m, std::slice::from_ref(b)).unwrap();
        let lr = d.config().schedule.lr(t as u64);
        assert_eq!(r.lr, lr);
        let moved: f64 = params(&m)
            .iter()
            .zip(&before)
            .map(|((_, a), (_, b))| (a - b).square().sum(Kind::Double).double_value(&[]))
            .sum::<f64>()
            .sqrt();
        let expect = lr * r.descent_grad_norm;
        assert!((moved - expect).abs() < 1e-12 * expect, "step {t}: ‖Δθ‖ {moved} vs lr_t·‖∇‖ {expect}");
        if (lr - 0.2).abs() > 1e-3 {
            off_base += 1;
        }
    }
    assert_eq!(off_base, 4, "the test needs steps whose scheduled rate differs from the base rate");
}

#[test]
fn non_finite_steps_are_skipped_then_fail() {
    let _serial = serial();
    let m = mlp(13, 0.0);
    let mut cfg = config(MethodName::TramPrev, 0.1);
    cfg.max_consecutive_skips = 3;
    let mut d = StepDriver::new(&m, cfg).unwrap();
    let good = batches(11, 1, 8).remove(0);
    d.step(&m, std::slice::from_ref(&good)).unwrap();
    let before = m.state();
    let bad = Batch { x: good.x.fill(f64::NAN), y: good.y.shallow_clone() };
    for k in 0..2 {
        let r = d.step(&m, std::slice::from_ref(&bad)).unwrap();
        assert!(r.skipped, "step {k} must be skipped");
        assert!(bit_equal(&m.state(), &before), "a skipped step changed the model");
    }
    // A good step resets the count.
    assert!(!d.step(&m, std::slice::from_ref(&good)).unwrap().skipped);
    for _ in 0..2 {
        d.step(&m, std::slice::from_ref(&bad)).unwrap();
    }
    let err = d.step(&m, std::slice::from_ref(&bad)).unwrap_err();
    assert!(matches!(err, Error::NonFinite { count: 3, .. }), "{err}");
    assert_eq!(d.skipped_total(), 5);
}

#[test]
fn resume_is_bit_exact() {
    let _serial = serial();
    let data = batches(12, 6, 8);
    let dir = std::env::temp_dir().join(format!("tram-resume-{}", std::process::id()));
    for (name, base) in [
        (MethodName::TramPrev, BaseConfig::sgd_momentum(0.9)),
        (MethodName::TramEma, BaseConfig::sgd_momentum(0.9)),
        (MethodName::TramX, BaseConfig::adam()),
        (MethodName::Sam, BaseConfig::adamw()),
        (MethodName::Mesa, BaseConfig::adam()),
        (MethodName::TramFisher, BaseConfig::sgd_momentum(0.9)),
    ] {
        let mut method = MethodConfig::new(name);
        if name == MethodName::TramEma {
            method.decay = Some(0.5);
        }
        let cfg = OptimizerConfig {
            seed: 17,
            ..OptimizerConfig::new(method, base, LrSchedule::cosine(0.05).with_total_steps(6))
        };
        let straight = mlp(14, 0.2);
        let reports = run(&straight, cfg.clone(), &data);

        let first = mlp(14, 0.2);
        let mut d = StepDriver::new(&first, cfg.clone()).unwrap();
        for b in &data[..3] {
            d.step(&first, std::slice::from_ref(b)).unwrap();
        }
        d.save_checkpoint(&dir).unwrap();
        let second = mlp(99, 0.2); // different weights: everything must come from the checkpoint
        let mut d2 = StepDriver::resume(&second, &dir).unwrap();
        assert_eq!(d2.steps_done(), 3);
        let resumed: Vec<StepReport> =
            data[3..].iter().map(|b| d2.step(&second, std::slice::from_ref(b)).unwrap()).collect();
        assert!(
            bit_equal(&straight.state(), &second.state()),
            "{name}: max diff {}",
            max_abs_diff(&straight.state(), &second.state())
        );
        assert_eq!(&reports[3..], &resumed[..], "{name}: reports differ after resume");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn checkpoints_carry_the_callers_metadata() {
    let _serial = serial();
    let root = std::env::temp_dir().join(format!("tram-extra-{}", std::process::id()));
    let dir = root.join("ckpt");
    let m = mlp(19, 0.0);
    let mut d = StepDriver::new(&m, config(MethodName::TramPrev, 0.1)).unwrap();
    d.step(&m, &batches(15, 1, 8)).unwrap();
    let meta = r#"{"epoch": 2, "next_batch": 17}"#;
    d.save_checkpoint_with(&dir, meta).unwrap();
    let (resumed, extra) = StepDriver::resume_with(&m, &dir).unwrap();
    assert_eq!(extra.as_deref(), Some(meta));
    assert_eq!(resumed.steps_done(), 1);
    // Metadata that is not JSON is refused before anything is written: the checkpoint stays as it was.
    let err = d.save_checkpoint_with(&dir, "epoch 3").unwrap_err().to_string();
    assert!(err.contains("not JSON"), "{err}");
    assert_eq!(StepDriver::resume_with(&m, &dir).unwrap().1.as_deref(), Some(meta));
    // A plain save replaces the whole folder, metadata included, and leaves nothing temporary beside it.
    d.save_checkpoint(&dir).unwrap();
    assert_eq!(StepDriver::resume_with(&m, &dir).unwrap().1, None);
    let beside: Vec<String> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(beside, ["ckpt"]);
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn resume_rejects_a_different_model() {
    let _serial = serial();
    let dir = std::env::temp_dir().join(format!("tram-resume-bad-{}", std::process::id()));
    let m = mlp(15, 0.0);
    let d = StepDriver::new(&m, config(MethodName::Sam, 0.1)).unwrap();
    d.save_checkpoint(&dir).unwrap();
    let other = mlp(15, 0.0);
    let _ = other.vs.variables()["fc1.bias"].set_requires_grad(false);
    let err = StepDriver::resume(&other, &dir).unwrap_err().to_string();
    assert!(err.contains("differ"), "{err}");
    let err = StepDriver::resume(&m, dir.join("nowhere")).unwrap_err().to_string();
    assert!(err.contains("manifest.json"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_model_without_trainable_parameters_is_an_error() {
    let _serial = serial();
    let mut m = mlp(16, 0.0);
    m.vs.freeze();
    let err = StepDriver::new(&m, config(MethodName::Sam, 0.1)).unwrap_err();
    assert!(err.to_string().contains("no trainable parameters"), "{err}");
    let m = mlp(16, 0.0);
    let mut d = StepDriver::new(&m, config(MethodName::Sam, 0.1)).unwrap();
    assert!(d.step(&m, &[]).unwrap_err().to_string().contains("at least one micro-batch"));
}

#[test]
fn regulariser_divergences_are_reported_and_positive() {
    let _serial = serial();
    let data = batches(13, 2, 8);
    for name in [MethodName::R3f, MethodName::Mesa, MethodName::TramX, MethodName::TramPretrained] {
        let m = mlp(17, 0.2);
        let r = run(&m, config(name, 0.1), &data);
        assert!(
            r.iter().all(|r| r.divergence.unwrap() > 0.0
                || ([MethodName::TramPretrained, MethodName::Mesa].contains(&name) && r.step == 0)),
            "{name}: {r:?}"
        );
    }
}

#[test]
fn the_released_codes_target_is_the_current_model_in_eval_mode() {
    let _serial = serial();
    let data = batches(14, 4, 8);
    let mut released = MethodConfig::new(MethodName::TramPrev);
    released.target_mode = Some(TargetMode::ReleasedCode);
    let cfg =
        |m: &MethodConfig| OptimizerConfig::new(m.clone(), BaseConfig::sgd_momentum(0.9), LrSchedule::constant(0.1));
    // Without dropout or batch norm, eval and train forwards agree: the target is the current model, so d = 0
    // at every step (θ_{t−1} in train mode gives d > 0 from the second step on).
    let plain = mlp_without_bn(15);
    for r in run(&plain, cfg(&released), &data) {
        assert_eq!(r.divergence, Some(0.0), "step {}", r.step);
    }
    let train_mode = mlp_without_bn(15);
    let d: Vec<f64> = run(&train_mode, cfg(&MethodConfig::new(MethodName::TramPrev)), &data)
        .iter()
        .map(|r| r.divergence.unwrap())
        .collect();
    assert!(d[0] == 0.0 && d[1..].iter().all(|&x| x > 0.0), "{d:?}");
    // With dropout, the released code's d is the dropout disagreement, already at the first step.
    let dropped = mlp(16, 0.3);
    let reports = run(&dropped, cfg(&released), &data);
    assert!(
        reports.iter().all(|r| r.divergence.unwrap() > 1e-3),
        "{:?}",
        reports.iter().map(|r| r.divergence).collect::<Vec<_>>()
    );
}

/// The tests' classifier reporting a fixed scale for its noised inputs.
struct Scaled(Net, f64);

impl Model for Scaled {
    type Batch = Batch;
    fn var_store(&self) -> &tch::nn::VarStore {
        self.0.var_store()
    }
    fn forward(&self, b: &Batch, train: bool, noise: Option<&InputNoise>) -> Tensor {
        self.0.forward(b, train, noise)
    }
    fn loss(&self, logits: &Tensor, b: &Batch) -> Tensor {
        self.0.loss(logits, b)
    }
    fn batch_size(&self, b: &Batch) -> usize {
        self.0.batch_size(b)
    }
    fn noise_scale(&self) -> Option<f64> {
        Some(self.1)
    }
}

#[test]
fn sigma_relative_is_sigma_times_the_models_scale() {
    let _serial = serial();
    let data = batches(17, 3, 8);
    let with = |m: MethodConfig| OptimizerConfig::new(m, BaseConfig::sgd_momentum(0.9), LrSchedule::constant(0.1));
    let mut relative = MethodConfig::new(MethodName::TramX);
    relative.sigma_relative = Some(0.05);
    let mut absolute = MethodConfig::new(MethodName::TramX);
    absolute.sigma = Some(0.2);
    let (a, b) = (Scaled(mlp(18, 0.1), 4.0), Scaled(mlp(18, 0.1), 4.0));
    let ra = run_model(&a, with(relative.clone()), &data);
    let rb = run_model(&b, with(absolute), &data);
    assert_eq!(ra, rb, "σ_rel 0.05 × scale 4 = σ 0.2");
    assert!(bit_equal(&a.0.state(), &b.0.state()));
    let err = StepDriver::new(&mlp(18, 0.1), with(relative)).unwrap_err().to_string();
    assert!(err.contains("sigma_relative needs the scale"), "{err}");
}

fn run_model<M: Model>(model: &M, cfg: OptimizerConfig, data: &[M::Batch]) -> Vec<StepReport> {
    let mut d = StepDriver::new(model, cfg).unwrap();
    data.iter().map(|b| d.step(model, std::slice::from_ref(b)).unwrap()).collect()
}
