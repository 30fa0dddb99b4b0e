//! Fine-tune a small tch model with TRAM in your own training loop.
//!
//! The model is pre-trained on one input distribution, then fine-tuned with TRAM-θ_{t−1} on a shifted one;
//! accuracy is reported on both. Run with `just example` (or `cargo run --release -p tram-core --example finetune`).

use tch::nn;
use tch::{Device, Kind, Tensor};
use tram_core::{BaseConfig, LrSchedule, MethodConfig, MethodName, Model, OptimizerConfig, StepDriver};

// `Net` implements `tram_core::Model` for any stack of tch layers; it is shared with the tests.
#[path = "../tests/common/mod.rs"]
mod common;
use common::{Batch, Net};

/// Points in 8 dimensions, labelled by which of 4 fixed directions they lean to most; `shift` moves the inputs.
fn batch(n: i64, shift: f64, device: Device) -> Batch {
    let x = Tensor::randn([n, 8], (Kind::Float, device)) + shift;
    let directions = Tensor::eye(8, (Kind::Float, device)).narrow(0, 0, 4);
    let y = (&x - shift).matmul(&directions.tr()).argmax(1, false);
    Batch { x, y }
}

fn accuracy(net: &Net, b: &Batch) -> f64 {
    let logits = tch::no_grad(|| net.forward(b, false, None));
    logits.argmax(-1, false).eq_tensor(&b.y).to_kind(Kind::Float).mean(Kind::Float).double_value(&[])
}

fn train(net: &Net, method: MethodName, steps: u64, lr: f64, shift: f64) -> tram_core::Result<()> {
    let config = OptimizerConfig::new(
        MethodConfig::new(method),
        BaseConfig::sgd_momentum(0.9),
        LrSchedule::cosine(lr).with_total_steps(steps),
    );
    let mut driver = StepDriver::new(net, config)?;
    for step in 0..steps {
        let report = driver.step(net, &[batch(64, shift, net.vs.device())])?;
        if step % 50 == 0 || step + 1 == steps {
            println!(
                "{method:>10} step {step:>4}  loss {:.4}  d {:>9}  |eps| {:>9}  passes {}/{}",
                report.loss,
                report.divergence.map_or("-".into(), |d| format!("{d:.2e}")),
                report.eps_norm.map_or("-".into(), |e| format!("{e:.2e}")),
                report.forward_passes,
                report.backward_passes,
            );
        }
    }
    Ok(())
}

fn main() -> tram_core::Result<()> {
    tch::manual_seed(0);
    let device = Device::cuda_if_available();
    let vs = nn::VarStore::new(device);
    let root = vs.root();
    let layers = nn::seq_t()
        .add(nn::linear(&root / "fc1", 8, 64, Default::default()))
        .add(nn::batch_norm1d(&root / "bn1", 64, Default::default()))
        .add_fn(|x| x.relu())
        .add_fn_t(|x, train| x.dropout(0.1, train))
        .add(nn::linear(&root / "fc2", 64, 4, Default::default()));
    let net = Net::new(vs, layers);

    train(&net, MethodName::Base, 200, 0.1, 0.0)?; // "pre-training" on the source distribution
    let (source, target) = (batch(2000, 0.0, device), batch(2000, 1.5, device));
    println!("pre-trained: source acc {:.3}, shifted acc {:.3}", accuracy(&net, &source), accuracy(&net, &target));

    train(&net, MethodName::TramPrev, 200, 0.02, 1.5)?; // fine-tune with TRAM-θ_{t−1}
    println!(
        "fine-tuned with TRAM: source acc {:.3}, shifted acc {:.3}",
        accuracy(&net, &source),
        accuracy(&net, &target)
    );
    Ok(())
}
