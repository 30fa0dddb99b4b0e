//! Mixed precision in the step driver: every method's first steps in bf16 against float32, ρ = 0 still the base
//! optimizer, and fp16's loss scale across the passes of a step (overflow forced on the CPU).

mod common;

use std::cell::Cell;

use common::*;
use tch::{nn, Kind, Tensor};
use tram_core::method::METHODS;
use tram_core::*;

/// float32 (the type autocast casts), batch norm, no dropout: the two precisions draw no random masks.
fn mlp32(seed: i64) -> Net {
    Mlp { hidden: 16, batch_norm: true, dropout: 0.0, unused: true }.build_as(seed, Kind::Float)
}

fn with_precision(mut cfg: OptimizerConfig, precision: Precision) -> OptimizerConfig {
    cfg.precision = precision;
    cfg
}

fn run(model: &impl Model<Batch = Batch>, cfg: OptimizerConfig, data: &[Batch]) -> Vec<StepReport> {
    let mut d = StepDriver::new(model, cfg).unwrap();
    data.iter().map(|b| d.step(model, std::slice::from_ref(b)).unwrap()).collect()
}

/// |a − b| ≤ rel·|b| + abs.
fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= rel * b.abs() + abs
}

/// bf16 keeps 8 significant bits (relative rounding 2⁻⁹ ≈ 0.2%). Measured over every method's first three steps:
/// losses and ‖g‖ within 2.1e-3 of float32, the weights' change within 3.2e-3 of its size; held to 1e-2.
const REL: f64 = 1e-2;

#[test]
fn every_method_in_bf16_tracks_float32() {
    let _serial = serial();
    let data = batches_as(21, 3, 16, Kind::Float);
    let start = mlp32(7).state();
    for info in METHODS {
        let (full, half) = (mlp32(7), mlp32(7));
        let cfg = config(info.name, 0.05);
        let a = run(&full, cfg.clone(), &data);
        let b = run(&half, with_precision(cfg, Precision::Bf16), &data);
        let mut worst = 0f64;
        for (ra, rb) in a.iter().zip(&b) {
            worst = worst
                .max(((rb.loss - ra.loss) / ra.loss).abs())
                .max(((rb.grad_norm - ra.grad_norm) / ra.grad_norm).abs());
            let what = format!("{:?} step {}", info.name, ra.step);
            assert!(!rb.skipped, "{what}: skipped in bf16");
            assert_eq!((ra.forward_passes, ra.backward_passes), (rb.forward_passes, rb.backward_passes), "{what}");
            assert!(close(rb.loss, ra.loss, REL, 0.0), "{what}: loss {} vs {}", rb.loss, ra.loss);
            assert!(close(rb.grad_norm, ra.grad_norm, REL, 0.0), "{what}: ‖g‖ {} vs {}", rb.grad_norm, ra.grad_norm);
            let pairs = [
                ("loss at θ+ε", ra.perturbed_loss, rb.perturbed_loss),
                ("‖ε‖", ra.eps_norm, rb.eps_norm),
                // d is 0 at TRAM-θ_{t−1}'s first step and tiny after: absolute slack for bf16's rounding of it.
                ("d", ra.divergence, rb.divergence),
            ];
            for (name, x, y) in pairs {
                assert_eq!(x.is_some(), y.is_some(), "{what}: {name}");
                if let (Some(x), Some(y)) = (x, y) {
                    assert!(close(y, x, REL, 1e-3), "{what}: {name} {y} vs {x}");
                }
            }
            assert_eq!(rb.loss_scale, None, "bf16 needs no loss scale");
        }
        let moved: f64 = full.state().iter().zip(&start).map(|((_, t), (_, s))| sq_dist(t, s)).sum::<f64>().sqrt();
        let apart: f64 =
            full.state().iter().zip(&half.state()).map(|((_, t), (_, h))| sq_dist(t, h)).sum::<f64>().sqrt();
        println!(
            "{:?}: largest relative gap in loss and ‖g‖ {worst:.2e}; weights {:.2e} of their change",
            info.name,
            apart / moved
        );
        assert!(moved > 1e-3, "{:?}: training must move the weights", info.name);
        assert!(apart <= REL * moved, "{:?}: bf16 and float32 weights {apart} apart after moving {moved}", info.name);
        for (_, t) in half.state() {
            assert_eq!(t.kind(), Kind::Float, "master weights and buffers stay float32");
        }
    }
}

fn sq_dist(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).square().sum(Kind::Double).double_value(&[])
}

#[test]
fn sam_with_rho_zero_equals_the_base_optimizer_in_bf16() {
    let _serial = serial();
    let data = batches_as(1, 4, 8, Kind::Float);
    let (a, b) = (mlp32(3), mlp32(3));
    let mut sam = MethodConfig::new(MethodName::Sam);
    sam.rho = Some(0.0);
    let sam = OptimizerConfig::new(sam, BaseConfig::sgd_momentum(0.9), LrSchedule::constant(0.1));
    run(&a, with_precision(sam, Precision::Bf16), &data);
    run(&b, with_precision(config(MethodName::Base, 0.1), Precision::Bf16), &data);
    assert!(bit_equal(&a.state(), &b.state()), "max diff {}", max_abs_diff(&a.state(), &b.state()));
    assert!(max_abs_diff(&a.state(), &mlp32(3).state()) > 1e-3, "training must move the weights");
    let c = mlp32(3);
    run(&c, config(MethodName::Base, 0.1), &data);
    assert!(!bit_equal(&a.state(), &c.state()), "bf16 must differ from float32 (else autocast did not run)");
}

/// The tests' classifier, whose logits are multiplied by 10⁴ on chosen forward calls: under fp16 autocast the
/// scaled gradient through that factor overflows fp16's range (65,504) while the loss stays finite.
struct Blowup {
    net: Net,
    calls: Cell<u32>,
    at: Vec<u32>,
}

impl Model for Blowup {
    type Batch = Batch;

    fn var_store(&self) -> &nn::VarStore {
        &self.net.vs
    }

    fn forward(&self, b: &Batch, train: bool, noise: Option<&InputNoise>) -> Tensor {
        let call = self.calls.get();
        self.calls.set(call + 1);
        let logits = self.net.forward(b, train, noise);
        if self.at.contains(&call) {
            logits * 1e4
        } else {
            logits
        }
    }

    fn loss(&self, logits: &Tensor, b: &Batch) -> Tensor {
        self.net.loss(logits, b)
    }

    fn batch_size(&self, b: &Batch) -> usize {
        self.net.batch_size(b)
    }
}

#[test]
fn an_fp16_overflow_in_either_pass_skips_the_step_and_halves_the_scale() {
    let _serial = serial();
    let data = batches_as(5, 4, 8, Kind::Float);
    // SAM's forward calls: step 0 = 0 (pass 1), 1 (pass 2); step 1 = 2, 3; step 2 = 4, 5; step 3 = 6, 7.
    let model = Blowup { net: mlp32(9), calls: Cell::new(0), at: vec![1, 4] };
    let mut d = StepDriver::new(&model, with_precision(config(MethodName::Sam, 0.05), Precision::Fp16)).unwrap();
    let mut states = vec![model.net.state()];
    let mut reports = vec![];
    for b in &data {
        reports.push(d.step(&model, std::slice::from_ref(b)).unwrap());
        states.push(model.net.state());
    }
    let skipped: Vec<bool> = reports.iter().map(|r| r.skipped).collect();
    assert_eq!(skipped, [true, false, true, false], "pass 2 of step 0 and pass 1 of step 2 overflowed");
    let scales: Vec<Option<f64>> = reports.iter().map(|r| r.loss_scale).collect();
    assert_eq!(scales, [Some(65536.0), Some(32768.0), Some(32768.0), Some(16384.0)]);
    for k in [0, 2] {
        assert!(reports[k].loss.is_finite(), "an overflow of the gradients, not of the loss");
        assert!(bit_equal(&states[k + 1], &states[k]), "skipped step {k} changed the model or its buffers");
    }
    for k in [1, 3] {
        assert!(max_abs_diff(&states[k + 1], &states[k]) > 1e-4, "step {k} must train");
        assert!(reports[k].grad_norm.is_finite() && reports[k].descent_grad_norm.is_finite());
    }
    assert_eq!(d.skipped_total(), 2);

    // Unscaled gradients: without overflow an fp16 step is a float32 step up to fp16's rounding.
    let (a, b) = (mlp32(9), mlp32(9));
    let ra = run(&a, config(MethodName::Sam, 0.05), &data[..1]);
    let rb = run(&b, with_precision(config(MethodName::Sam, 0.05), Precision::Fp16), &data[..1]);
    assert!(close(rb[0].grad_norm, ra[0].grad_norm, 1e-2, 0.0), "{} vs {}", rb[0].grad_norm, ra[0].grad_norm);
    assert!(close(rb[0].descent_grad_norm, ra[0].descent_grad_norm, 1e-2, 0.0));
}

#[test]
fn the_loss_scale_survives_a_checkpoint() {
    let _serial = serial();
    let data = batches_as(6, 3, 8, Kind::Float);
    let dir = std::env::temp_dir().join(format!("tram-precision-ckpt-{}", std::process::id()));
    let model = Blowup { net: mlp32(10), calls: Cell::new(0), at: vec![0] };
    let cfg = with_precision(config(MethodName::TramPrev, 0.05), Precision::Fp16);
    let mut d = StepDriver::new(&model, cfg).unwrap();
    assert!(d.step(&model, std::slice::from_ref(&data[0])).unwrap().skipped);
    d.save_checkpoint(&dir).unwrap();
    let next = d.step(&model, std::slice::from_ref(&data[1])).unwrap();
    let mut resumed = StepDriver::resume(&model, &dir).unwrap();
    model.calls.set(100);
    let again = resumed.step(&model, std::slice::from_ref(&data[1])).unwrap();
    assert_eq!((next.loss_scale, again.loss_scale), (Some(32768.0), Some(32768.0)));
    std::fs::remove_dir_all(&dir).ok();
}
