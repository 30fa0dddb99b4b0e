//! Parity with the independent PyTorch reference (`reference/reference_step.py`): three steps of every method
//! (plus Adam / AdamW bases, gradient accumulation and m-sharpness) on a float64 Linear–BatchNorm–tanh–Linear
//! classifier must reproduce the reference's parameters and buffers after every step, and the reported pass-1
//! loss, divergence and ‖ε‖₂.
//!
//! Regenerate the fixture with `~/.cache/tram/venv/bin/python crates/tram-core/reference/reference_step.py`.

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{Mlp, Net};
use tch::{Kind, Tensor};
use tram_core::{BaseConfig, LrSchedule, MethodConfig, MethodName, OptimizerConfig, StepDriver};

/// Parameters and buffers after each step: largest allowed absolute difference (float64 gives ~1e-15).
const STATE_TOL: f64 = 1e-5;
/// Reported scalars: |rust − reference| ≤ SCALAR_ABS + SCALAR_REL·|reference| (inside 1e-5 for every value here;
/// relative because the divergences and TRAM's ‖ε‖ are only 1e-4–1e-3).
const SCALAR_ABS: f64 = 1e-10;
const SCALAR_REL: f64 = 1e-6;
const STEPS: i64 = 3;

fn fixture_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference.safetensors")
}

/// The reference's architecture (Linear(4, 8) – BatchNorm1d – tanh – Linear(8, 3), float64), with its initial
/// weights from the fixture.
fn net_from_fixture(fx: &HashMap<String, Tensor>) -> Net {
    let net = Mlp { hidden: 8, batch_norm: true, dropout: 0.0, unused: false }.build(0);
    let mut vars = net.vs.variables();
    let names: BTreeSet<String> = vars.keys().cloned().collect();
    let expected: BTreeSet<String> = fx.keys().filter_map(|k| k.strip_prefix("init.")).map(String::from).collect();
    assert_eq!(names, expected, "the Rust model's variables differ from the reference model's");
    tch::no_grad(|| {
        for (name, var) in vars.iter_mut() {
            let init = &fx[&format!("init.{name}")];
            assert_eq!(var.size(), init.size(), "shape of {name}");
            var.copy_(init);
        }
    });
    net
}

struct Case {
    name: &'static str,
    method: MethodConfig,
    base: BaseConfig,
    lr: f64,
    micro_batches: i64,
    m_sharpness: bool,
}

fn sgd() -> BaseConfig {
    BaseConfig::Sgd { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 1e-4 }
}

fn cases() -> Vec<Case> {
    let plain = |name: MethodName| Case {
        name: name.as_str(),
        method: MethodConfig::new(name),
        base: sgd(),
        lr: 0.1,
        micro_batches: 1,
        m_sharpness: false,
    };
    let mut v: Vec<Case> = MethodName::ALL.iter().map(|&m| plain(m)).collect();
    // TRAM-EMA with decay 0.5, so that the EMA moves visibly in three steps.
    v.iter_mut().find(|c| c.name == "tram-ema").unwrap().method.decay = Some(0.5);
    v.push(Case {
        name: "tram-prev-adam",
        method: MethodConfig::new(MethodName::TramPrev),
        base: BaseConfig::Adam { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 1e-4 },
        lr: 0.01,
        micro_batches: 1,
        m_sharpness: false,
    });
    v.push(Case {
        name: "sam-adamw",
        method: MethodConfig::new(MethodName::Sam),
        base: BaseConfig::AdamW { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.01 },
        lr: 0.01,
        micro_batches: 1,
        m_sharpness: false,
    });
    v.push(Case { name: "sam-accum", micro_batches: 2, ..plain(MethodName::Sam) });
    v.push(Case { name: "sam-msharp", micro_batches: 2, m_sharpness: true, ..plain(MethodName::Sam) });
    v.push(Case { name: "tram-prev-msharp", micro_batches: 2, m_sharpness: true, ..plain(MethodName::TramPrev) });
    v
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// Compares a reported scalar with the reference's (NaN there = the driver must report nothing).
fn check_scalar(what: &str, got: Option<f64>, want: f64, failures: &mut Vec<String>) -> f64 {
    match (got, want.is_nan()) {
        (None, true) => 0.0,
        (Some(g), false) => {
            let diff = (g - want).abs();
            if diff.is_nan() || diff > SCALAR_ABS + SCALAR_REL * want.abs() {
                failures.push(format!("{what}: rust {g:.15e} reference {want:.15e} (diff {diff:.3e})"));
            }
            diff
        }
        (g, _) => {
            failures.push(format!("{what}: rust {g:?} reference {want} (reported vs not reported)"));
            f64::INFINITY
        }
    }
}

#[test]
fn step_driver_matches_the_pytorch_reference() {
    let fx: HashMap<String, Tensor> = Tensor::read_safetensors(fixture_path())
        .expect("read tests/fixtures/reference.safetensors (regenerate it with reference/reference_step.py)")
        .into_iter()
        .collect();
    let cases = cases();
    let var_names: Vec<String> = fx.keys().filter_map(|k| k.strip_prefix("init.")).map(String::from).collect();

    // The fixture holds exactly these cases.
    let in_fixture: BTreeSet<String> = fx
        .keys()
        .filter(|k| !k.starts_with("init.") && !k.starts_with("data."))
        .filter_map(|k| k.strip_suffix(".loss"))
        .map(String::from)
        .collect();
    let tested: BTreeSet<String> = cases.iter().map(|c| c.name.to_string()).collect();
    assert_eq!(in_fixture, tested, "the fixture's cases differ from the ones this test runs");

    let xs = &fx["data.x"];
    let ys = &fx["data.y"];
    assert_eq!(xs.kind(), Kind::Double);
    assert_eq!(ys.kind(), Kind::Int64);
    let reference = |case: &str, var: &str, step: i64| -> Tensor {
        fx.get(&format!("{case}.{var}")).unwrap_or_else(|| panic!("fixture lacks {case}.{var}")).get(step)
    };

    let mut failures = Vec::new();
    let mut overall = 0.0f64;
    println!("{:<18} {:>12} {:>12} {:>12} {:>12} {:>12}", "case", "state", "loss", "divergence", "eps_norm", "moved");
    for case in &cases {
        let model = net_from_fixture(&fx);
        let init = model.state();
        let mut config = OptimizerConfig::new(case.method.clone(), case.base.clone(), LrSchedule::constant(case.lr));
        config.m_sharpness = case.m_sharpness;
        config.seed = 0;
        let mut driver = StepDriver::new(&model, config).expect("driver");
        let (mut d_state, mut d_loss, mut d_div, mut d_eps) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        for t in 0..STEPS {
            let (x, y) = (xs.get(t), ys.get(t));
            let micro = common::Batch { x, y }.split(case.micro_batches);
            let report = driver.step(&model, &micro).expect("step");
            assert!(!report.skipped, "{} step {t} was skipped", case.name);
            for (name, value) in model.state() {
                let diff = max_abs(&value, &reference(case.name, &name, t));
                if diff.is_nan() || diff > STATE_TOL {
                    failures.push(format!("{} step {t} {name}: max abs diff {diff:.3e}", case.name));
                }
                d_state = d_state.max(diff);
            }
            let scalar = |key: &str| reference(case.name, key, t).double_value(&[]);
            let tag = |key: &str| format!("{} step {t} {key}", case.name);
            d_loss = d_loss.max(check_scalar(&tag("loss"), Some(report.loss), scalar("loss"), &mut failures));
            d_div = d_div.max(check_scalar(&tag("divergence"), report.divergence, scalar("divergence"), &mut failures));
            d_eps = d_eps.max(check_scalar(&tag("eps_norm"), report.eps_norm, scalar("eps_norm"), &mut failures));
        }
        // The case must train: its parameters move (so a driver that does nothing fails above).
        let moved = model.state().iter().zip(&init).map(|((_, a), (_, b))| max_abs(a, b)).fold(0.0, f64::max);
        assert!(moved > 1e-3, "{}: parameters barely moved ({moved:.3e})", case.name);
        println!("{:<18} {d_state:>12.3e} {d_loss:>12.3e} {d_div:>12.3e} {d_eps:>12.3e} {moved:>12.3e}", case.name);
        overall = overall.max(d_state);
    }

    // Each method must leave a trace the tolerance can see: its reference differs from the plain base
    // optimizer's (same micro-batching) by more than STATE_TOL, so a driver that ignored the method would fail.
    for case in &cases {
        let baseline = match (case.name, case.micro_batches) {
            ("base", _) | ("sam-accum", _) => continue,
            ("tram-prev-adam", _) => "sam-adamw",
            (_, 1) => "base",
            _ => "sam-accum",
        };
        let distinct = var_names
            .iter()
            .map(|v| max_abs(&reference(case.name, v, STEPS - 1), &reference(baseline, v, STEPS - 1)))
            .fold(0.0, f64::max);
        assert!(
            distinct > STATE_TOL,
            "{}: the reference is indistinguishable from {baseline} ({distinct:.3e})",
            case.name
        );
    }

    println!("overall max abs state difference: {overall:.3e}");
    assert!(failures.is_empty(), "{} mismatches with the PyTorch reference:\n{}", failures.len(), failures.join("\n"));
}
