//! Per-method step time on a small MLP and a small CNN (criterion), then a summary table measured in one
//! interleaved run: each method's median step time as a ratio to the base optimizer and to SAM, and the share
//! of the step spent in the optimizer's own work (everything outside the model's forward/loss/backward).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use tch::nn;
use tch::{Device, Kind, Tensor};
use tram_core::{BaseConfig, LrSchedule, MethodConfig, MethodName, Model, OptimizerConfig, StepDriver};
use tram_stats::median;
use tram_task::time_interleaved;

#[path = "../../tram-core/tests/common/mod.rs"]
mod common;
use common::{Batch, Net};

/// MLP 784-512-256-10, batch 128.
fn mlp() -> (Net, Batch) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let r = vs.root();
    let layers = nn::seq_t()
        .add(nn::linear(&r / "fc1", 784, 512, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&r / "fc2", 512, 256, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&r / "fc3", 256, 10, Default::default()));
    let b = Batch {
        x: Tensor::randn([128, 784], (Kind::Float, Device::Cpu)),
        y: Tensor::randint(10, [128], (Kind::Int64, Device::Cpu)),
    };
    (Net::new(vs, layers), b)
}

/// CNN on 3×32×32: conv16-bn-relu-pool, conv32-bn-relu-pool, linear; batch 32.
fn cnn() -> (Net, Batch) {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let r = vs.root();
    let conv = |c| nn::ConvConfig { padding: 1, ..c };
    let layers = nn::seq_t()
        .add(nn::conv2d(&r / "c1", 3, 16, 3, conv(Default::default())))
        .add(nn::batch_norm2d(&r / "bn1", 16, Default::default()))
        .add_fn(|x| x.relu().max_pool2d_default(2))
        .add(nn::conv2d(&r / "c2", 16, 32, 3, conv(Default::default())))
        .add(nn::batch_norm2d(&r / "bn2", 32, Default::default()))
        .add_fn(|x| x.relu().max_pool2d_default(2).flatten(1, -1))
        .add(nn::linear(&r / "fc", 32 * 8 * 8, 10, Default::default()));
    let b = Batch {
        x: Tensor::randn([32, 3, 32, 32], (Kind::Float, Device::Cpu)),
        y: Tensor::randint(10, [32], (Kind::Int64, Device::Cpu)),
    };
    (Net::new(vs, layers), b)
}

/// Every method but the ASAM+regulariser combinations.
fn methods() -> Vec<MethodName> {
    MethodName::ALL.into_iter().filter(|m| !m.is_combination()).collect()
}

fn config(m: MethodName) -> OptimizerConfig {
    OptimizerConfig::new(MethodConfig::new(m), BaseConfig::sgd_momentum(0.9), LrSchedule::constant(1e-3))
}

fn driver(net: &Net, m: MethodName) -> StepDriver {
    StepDriver::new(net, config(m)).unwrap()
}

fn bench_steps(c: &mut Criterion) {
    tch::set_num_threads(1);
    for (name, (net, batch)) in [("mlp", mlp()), ("cnn", cnn())] {
        let mut group = c.benchmark_group(format!("step/{name}"));
        group.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(300));
        for m in methods() {
            let mut d = driver(&net, m);
            group.bench_function(m.as_str(), |b| b.iter(|| d.step(&net, std::slice::from_ref(&batch)).unwrap()));
        }
        group.finish();
    }
}

/// Interleaved rounds (every method once per round), so machine noise hits all methods alike.
fn summary(_: &mut Criterion) {
    tch::set_num_threads(1);
    let rounds = 60;
    for (name, (net, batch)) in [("mlp", mlp()), ("cnn", cnn())] {
        let configs: Vec<OptimizerConfig> = methods().into_iter().map(config).collect();
        let timings = time_interleaved(&net, std::slice::from_ref(&batch), &configs, 5, rounds, || {}).unwrap();
        let (base, sam) = (timings[0].median_ms, timings[1].median_ms);
        // The model's own costs: a forward without gradient (what TRAM's target pass runs) and a forward with
        // gradient plus its backward (what every other pass runs). They bound TRAM/SAM from below.
        let time = |f: &mut dyn FnMut()| {
            let v: Vec<f64> = (0..rounds)
                .map(|_| {
                    let t = std::time::Instant::now();
                    f();
                    t.elapsed().as_secs_f64()
                })
                .collect();
            median(&v)
        };
        let fwd = time(&mut || {
            let _ = tch::no_grad(|| net.forward(&batch, true, None));
        });
        let fwd_bwd = time(&mut || {
            let out = net.forward(&batch, true, None);
            net.loss(&out, &batch).backward();
        });
        println!(
            "\n{name}: no-grad forward {:.3} ms, forward+backward {:.3} ms; pass-count bound TRAM/SAM = (2(F+B) + F)/(2(F+B)) = {:.2}",
            fwd * 1e3,
            fwd_bwd * 1e3,
            (2.0 * fwd_bwd + fwd) / (2.0 * fwd_bwd)
        );
        println!("{name}: median step time over {rounds} interleaved rounds (1 thread)");
        println!("{:<16} {:>10} {:>8} {:>8} {:>10}", "method", "step ms", "/base", "/SAM", "opt share");
        for t in &timings {
            println!(
                "{:<16} {:>10.3} {:>8.2} {:>8.2} {:>9.1}%",
                t.method.name.as_str(),
                t.median_ms,
                t.median_ms / base,
                t.median_ms / sam,
                100.0 * t.optimizer_share
            );
        }
    }
}

criterion_group!(benches, bench_steps, summary);
criterion_main!(benches);
