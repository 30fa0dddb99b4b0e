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
use tram_vision::data::emoji::{self, EmojiConfig, Style};
use tram_vision::task::{finetune, DeviceChoice, FinetuneConfig, ModelSpec};

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
    let optimizer = OptimizerConfig::new(MethodConfig::new(method), base, LrSchedule::cosine(lr, 0));
    let mut cfg = FinetuneConfig::embedded(optimizer);
    if let Some(v) = get("--epochs") {
        cfg.epochs = v.parse()?;
    }
    if let Some(v) = get("--size") {
        cfg.image_size = v.parse()?;
    }
    if let Some(v) = get("--batch") {
        cfg.batch_size = v.parse()?;
    }
    if let Some(v) = get("--max-batches") {
        cfg.max_train_batches = Some(v.parse()?);
    }
    if let Some(v) = get("--seed") {
        cfg.seed = v.parse()?;
    }
    if let Some(v) = get("--device") {
        cfg.device = DeviceChoice::parse(&v)?;
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
    cfg.eval_before_training = has("--eval-before");
    let style = Style::parse(&get("--style").unwrap_or_else(|| "google".into()))?;
    let data = emoji::load(&EmojiConfig { train_style: style, ..Default::default() })?;
    println!(
        "method {method}, {} start, {} px, batch {}, train {} / test {} images of {} classes, OOD: {}",
        if cfg.model.pretrained() { "ImageNet" } else { "random" },
        cfg.image_size,
        cfg.batch_size,
        data.train.len(),
        data.test.len(),
        data.classes.len(),
        data.ood.iter().map(|d| format!("{} ({})", d.name, d.len())).collect::<Vec<_>>().join(", ")
    );
    let result = finetune(&cfg, &data, |r| {
        if r.step % 10 == 0 {
            println!(
                "  step {:>4}  loss {:.4}  d {:?}  |eps| {:?}  passes {}/{}",
                r.step, r.loss, r.divergence, r.eps_norm, r.forward_passes, r.backward_passes
            );
        }
    })?;
    println!("device {}", result.device);
    println!(
        "epoch  steps  train_loss  train_s  wait_s  eval_s  in-domain  {}  ood_mean",
        data.ood.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join("  ")
    );
    for e in &result.epochs {
        let ood: Vec<String> = e.ood.iter().map(|s| format!("{:.3}", s.accuracy.top1())).collect();
        println!(
            "{:>5}  {:>5}  {:>10.4}  {:>7.1}  {:>6.2}  {:>6.1}  {:>9.3}  {}  {:.3}",
            e.epoch,
            e.steps,
            e.train_loss,
            e.train_seconds,
            e.data_wait_seconds,
            e.eval_seconds,
            e.in_domain.accuracy.top1(),
            ood.join("  "),
            e.ood_mean()
        );
    }
    if let Some(path) = get("--json") {
        std::fs::write(path, serde_json::to_string_pretty(&result)?)?;
    }
    Ok(())
}
