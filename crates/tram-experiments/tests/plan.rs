//! `tram plan` kept honest: its extra memory per method equals what the step driver holds after a step
//! (`StepDriver::extra_memory_bytes`) on the fixture's tiny GPT-2, for every method and both base optimizers;
//! every profile of every experiment plans; Table 10's plan says that GPT-2 XL with TRAM does not fit 24 GiB; where the graph
//! is small (XLM-R's embeddings trained) the ascent's direction is the step's peak.

use std::path::{Path, PathBuf};

use tch::Device;
use tram_core::{BaseConfig, LrSchedule, MethodConfig, MethodName, OptimizerConfig, Precision, StepDriver};
use tram_experiments::experiment::{Experiment, Profile, TaskConfig, TaskSpec};
use tram_experiments::plan::{self, PlanTarget, ProfilePlan, GIB};
use tram_text::causal_lm::{CausalLm, LmBatch, ModelSource, PretrainedLm};
use tram_text::trainable::{NoiseAt, Trainable};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn profile(table: &str, name: &str, overrides: &[String]) -> Profile<TaskSpec> {
    let exp = Experiment::load(&root().join("experiments").join(format!("{table}.toml"))).unwrap();
    exp.profile(name, overrides).unwrap()
}

const CPU: PlanTarget = PlanTarget { cuda: false, precision: Precision::Fp32, throughput: Some(1e11), memory: None };

#[test]
fn extra_memory_equals_the_drivers_for_every_method() {
    let gpt2 = root().join("crates/tram-text/tests/fixtures/lm/gpt2-tiny");
    let lm = PretrainedLm::load(&ModelSource::Snapshot(gpt2.clone()), Device::Cpu).unwrap();
    let model = CausalLm::fork(&lm.decoder, Trainable::All, NoiseAt::Embeddings).unwrap();
    let batch = || LmBatch::from_blocks(&[&[1, 2, 3, 4, 5, 6], &[7, 8, 9]], 0, Device::Cpu);
    let sets = [
        format!("task.model={{snapshot=\"{}\"}}", gpt2.display()),
        "task.trainable=\"all\"".into(),
        "task.block_len=6".into(),
    ];
    for base in [
        BaseConfig::Adam { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.0 },
        BaseConfig::Sgd { momentum: 0.9, dampening: 0.0, nesterov: false, weight_decay: 0.0 },
        BaseConfig::Sgd { momentum: 0.0, dampening: 0.0, nesterov: false, weight_decay: 0.0 },
    ] {
        let mut p = profile("table4", "quick", &sets);
        p.optimizer = base.clone();
        let shape = TaskConfig::shape(&p.task).unwrap();
        for name in MethodName::ALL {
            let method = MethodConfig::new(name);
            let planned = plan::method_plan(&p, &method, &shape, &CPU).unwrap();
            let config = OptimizerConfig::new(method, base.clone(), LrSchedule::constant(1e-3));
            let mut driver = StepDriver::new(&model, config).unwrap();
            driver.step(&model, &[batch()]).unwrap();
            assert_eq!(planned.extra(), driver.extra_memory_bytes() as f64, "{name:?} with {base:?}");
            assert_eq!(planned.gradients, driver.param_bytes() as f64);
        }
    }
}

#[test]
fn every_profile_of_every_experiment_plans() {
    for table in ["table2", "table3", "table4", "table5"] {
        let exp = Experiment::load(&root().join("experiments").join(format!("{table}.toml"))).unwrap();
        for name in exp.profile_names() {
            let p: Profile<TaskSpec> = exp.profile(name, &[]).unwrap();
            let plan = ProfilePlan::new(&p, &CPU).unwrap_or_else(|e| panic!("{table} {name}: {e:#}"));
            assert_eq!(plan.methods.len(), p.methods.len());
            assert!(plan.shape.trained_params > 0 && plan.shape.trained_params <= plan.shape.total_params);
        }
    }
}

#[test]
fn table10_with_tram_does_not_fit_24_gib_even_one_block_at_a_time() {
    let p = profile("table4", "paper-xl", &[]);
    let target =
        PlanTarget { cuda: true, precision: Precision::Bf16, throughput: Some(4e14), memory: Some(24.0 * GIB) };
    let plan = ProfilePlan::new(&p, &target).unwrap();
    assert_eq!(plan.steps_per_run, Some(100_000));
    let tram = plan.methods.iter().find(|m| m.method == "tram-prev").unwrap();
    // Weights (float32 master and their bf16 cast), gradients, Adam's two moments, saved θ and θ_{t−1}: 1.56 B
    // parameters × 26 bytes before any activation.
    let fixed = tram.weights + tram.gradients + tram.optimizer + tram.copies;
    assert_eq!(fixed, 1_557_611_200.0 * 26.0);
    assert!(tram.total().unwrap() > 24.0 * GIB);
    assert_eq!(tram.total(), tram.tensors(), "on CUDA the total is the tensors'");
    let per_example = tram.activations.unwrap() / p.batch_size as f64;
    assert_eq!(plan::largest_micro_batch(tram, per_example, 24.0 * GIB), None);
    // An 80 GiB card fits it a few blocks at a time.
    assert!(plan::largest_micro_batch(tram, per_example, 80.0 * GIB).is_some_and(|b| (1..16).contains(&b)));
}

#[test]
fn where_the_graph_is_small_the_ascents_direction_is_the_peak() {
    // XLM-R base trained in full (250,002 × 768 embeddings) at 8 examples of 128 tokens: the graph is smaller than
    // TRAM's direction (a copy of every trained parameter) with two embedding-sized tensors being formed.
    let sets =
        ["batch_size=8", "task.prune_vocab=false", "methods=[{name=\"base\"},{name=\"sam\"},{name=\"tram-prev\"}]"];
    let p = profile("table5", "paper", &sets.map(String::from));
    let plan = ProfilePlan::new(&p, &CPU).unwrap();
    let largest = 250_002.0 * 768.0 * 4.0;
    let trained = plan.shape.trained_params as f64 * 4.0;
    let [base, sam, tram] = [0, 1, 2].map(|i| &plan.methods[i]);
    let act = base.activations.unwrap();
    assert!(act < trained, "the graph at 8 × 128 tokens ({act}) is below a copy of θ ({trained})");
    assert_eq!(base.transient(act), largest, "Adam: one embedding-sized temporary beside the graph");
    assert_eq!(sam.transient(sam.activations.unwrap()), largest, "SAM's direction is the gradient itself");
    let tram_act = tram.activations.unwrap();
    assert_eq!(tram.transient(tram_act), trained + 2.0 * largest - tram_act);
    assert_eq!(tram.tensors().unwrap(), tram.fixed() + trained + 2.0 * largest);
    // On the CPU the total adds the heap beside the tensors and the runtime.
    let resident = tram.tensors().unwrap() * (1.0 + plan::CPU_HEAP_ALLOWANCE) + plan::CPU_RUNTIME_BYTES;
    assert_eq!(tram.total().unwrap(), resident);
    // A micro-batch that fits a budget is the largest whose total does.
    let budget = tram.total().unwrap() + 3.0 * act;
    let per_example = act / 8.0;
    let b = plan::largest_micro_batch(tram, per_example, budget).unwrap();
    let total = |b: f64| tram.resident(tram.fixed() + b * per_example + tram.transient(b * per_example));
    assert!(total(b as f64) <= budget && total(b as f64 + 1.0) > budget, "{b}");
}

#[test]
fn the_csv_gives_the_tensors_and_runtime_behind_the_total() {
    // Scripts compare a run's peak_tensor_bytes with tensor_bytes and its resident peak with total_bytes less
    // runtime_bytes: both columns must be what the total is made of, on the CPU and on CUDA.
    let p = profile("table4", "embedded", &[]);
    let cuda = PlanTarget { cuda: true, ..CPU };
    for target in [CPU, cuda] {
        let plan = ProfilePlan::new(&p, &target).unwrap();
        let text = tram_experiments::plan_report::csv_rows("table4", "embedded", &plan, &target, true);
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no {name}"));
        assert_eq!(&header[..3], ["experiment", "profile", "method"]);
        assert_eq!(col("seconds_per_run"), 23, "older columns keep their positions");
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        assert_eq!(rows.len(), p.methods.len());
        for (row, m) in rows.iter().zip(&plan.methods) {
            assert_eq!(row.len(), header.len());
            let num = |name: &str| row[col(name)].parse::<f64>().unwrap();
            let parts = ["weights_bytes", "gradient_bytes", "optimizer_bytes", "copies_bytes", "activation_bytes"];
            let sum: f64 = parts.iter().map(|c| num(c)).sum::<f64>() + num("transient_bytes");
            assert!((num("tensor_bytes") - sum).abs() <= 3.0, "{}: {} vs {sum}", m.method, num("tensor_bytes"));
            assert_eq!(num("tensor_bytes"), m.tensors().unwrap().round());
            let (runtime, heap) =
                if target.cuda { (0.0, 0.0) } else { (plan::CPU_RUNTIME_BYTES, plan::CPU_HEAP_ALLOWANCE) };
            assert_eq!(num("runtime_bytes"), runtime.round());
            let total = m.tensors().unwrap() * (1.0 + heap) + runtime;
            assert_eq!(num("total_bytes"), total.round(), "{}", m.method);
        }
    }
}
