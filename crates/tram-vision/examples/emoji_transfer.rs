//! The embedded transfer experiment from the command line: fine-tune EfficientNet-Lite0 on one emoji style and
//! report top-1 accuracy in-domain and on the other styles after each epoch.
//!
//!   cargo run --release -p tram-vision --example emoji_transfer -- --method tram-prev
//!
//! Flags (defaults in brackets): --method [base] --base sgd|adam|adamw [adam] --lr [0.001] --momentum (SGD) [0.9]
//! --epochs [5]
//! --size [64] --batch [32] --max-batches [all] --style [google] --seed [0] --device auto|cpu|cuda:N [auto]
//! --workers [1] --bn-momentum [0.1] --random (random initialisation instead of ImageNet weights) --eval-before --json FILE

use tram_core::{BaseConfig, LrSchedule, MethodConfig, MethodName, OptimizerConfig};
use tram_task::{DeviceChoice, RunContext, RunSettings, Task};
use tram_vision::classifier::ModelSpec;
use tram_vision::data::emoji::{EmojiConfig, Style};
use tram_vision::transfer::{DataSpec, TransferConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    let method = MethodName::parse(&get("--method").unwrap_or_else(|| "base".into()))?;
    let lr: f64 = get("--lr").map_or(Ok(0.001), |s| s.parse())?;
    let momentum: f64 = get("--momentum").map_or(Ok(0.9), |s| s.parse())?;
    let base = match get("--base").as_deref().unwrap_or("adam") {
        "sgd" => BaseConfig::sgd_momentum(momentum),
        "adam" => BaseConfig::adam(),
        "adamw" => BaseConfig::adamw(),
        other => return Err(format!("unknown base optimizer `{other}`").into()),
    };
    let mut optimizer = OptimizerConfig::new(MethodConfig::new(method), base, LrSchedule::cosine(lr));
    optimizer.seed = get("--seed").map_or(Ok(0), |s| s.parse())?;
    let mut run = RunSettings::new(optimizer, get("--epochs").map_or(Ok(5), |s| s.parse())?, 32);
    if let Some(v) = get("--batch") {
        run.batch_size = v.parse()?;
    }
    if let Some(v) = get("--max-batches") {
        run.max_train_batches = Some(v.parse()?);
    }
    if let Some(v) = get("--device") {
        run.device = DeviceChoice::parse(&v)?;
    }
    run.eval_before_training = has("--eval-before");
    let mut cfg = TransferConfig::embedded();
    if let Some(v) = get("--size") {
        cfg.image_size = v.parse()?;
    }
    if let Some(v) = get("--workers") {
        cfg.workers = v.parse()?;
    }
    if let ModelSpec::EfficientNetLite0 { pretrained, bn_momentum, .. } = &mut cfg.model {
        *pretrained = !has("--random");
        if let Some(m) = get("--bn-momentum") {
            *bn_momentum = Some(m.parse()?);
        }
    }
    let style = Style::parse(&get("--style").unwrap_or_else(|| "google".into()))?;
    cfg.data = DataSpec::Emoji(EmojiConfig { train_style: style, ..Default::default() });
    let task = cfg.build()?;
    println!(
        "method {method}, {} start, {} px, batch {}: {}",
        if cfg.model.pretrained() { "ImageNet" } else { "random" },
        cfg.image_size,
        run.batch_size,
        task.describe()
    );
    let mut on_step = |r: &tram_core::StepReport| {
        if r.step.is_multiple_of(10) {
            println!(
                "  step {:>4}  loss {:.4}  d {:?}  |eps| {:?}  passes {}/{}",
                r.step, r.loss, r.divergence, r.eps_norm, r.forward_passes, r.backward_passes
            );
        }
    };
    let result = task.run(&run, &mut RunContext::new(&mut on_step))?;
    println!("device {}", result.device);
    let sets: Vec<&str> = result.epochs[0].evals.iter().map(|e| e.set.as_str()).collect();
    println!("epoch  steps  train_loss  train_s  wait_s  eval_s  {}", sets.join("  "));
    for e in &result.epochs {
        let acc: Vec<String> = e.evals.iter().map(|s| format!("{:.3}", s.value)).collect();
        println!(
            "{:>5}  {:>5}  {:>10.4}  {:>7.1}  {:>6.2}  {:>6.1}  {}",
            e.epoch,
            e.steps,
            e.train_loss,
            e.train_seconds,
            e.data_wait_seconds,
            e.eval_seconds,
            acc.join("  ")
        );
    }
    if let Some(path) = get("--json") {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
    }
    Ok(())
}
