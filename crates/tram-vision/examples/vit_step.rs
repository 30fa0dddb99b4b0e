//! Step time of a ViT with any method: a Hugging Face snapshot folder (`--dir`), or ViT-B/16's shape with random
//! weights when none is given. For the paper-scale check on a GPU:
//!
//!   cargo run --release -p tram-vision --example vit_step -- --device cuda --batch 32 --method tram-prev
//!
//! Flags: --dir DIR --batch [8] --steps [3] --method [base] --device [auto] --classes [100]

use std::time::Instant;

use tch::{Device, Kind, Tensor};
use tram_core::{BaseConfig, LrSchedule, MethodConfig, MethodName, OptimizerConfig, StepDriver};
use tram_task::DeviceChoice;
use tram_vision::classifier::{ImageBatch, ImageClassifier, ModelSpec};

const VIT_B16: &str = r#"{"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
  "intermediate_size": 3072, "hidden_act": "gelu", "image_size": 224, "patch_size": 16, "num_channels": 3,
  "layer_norm_eps": 1e-12, "qkv_bias": true, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let batch: i64 = get("--batch").map_or(Ok(8), |s| s.parse())?;
    let steps: usize = get("--steps").map_or(Ok(3), |s| s.parse())?;
    let classes: i64 = get("--classes").map_or(Ok(100), |s| s.parse())?;
    let method = MethodName::parse(&get("--method").unwrap_or_else(|| "base".into()))?;
    let device = DeviceChoice::parse(&get("--device").unwrap_or_else(|| "auto".into()))?.resolve()?;
    let (dir, pretrained) = match get("--dir") {
        Some(d) => (std::path::PathBuf::from(d), true),
        None => {
            let d = std::env::temp_dir().join(format!("tram-vit-b16-{}", std::process::id()));
            std::fs::create_dir_all(&d)?;
            std::fs::write(d.join("config.json"), VIT_B16)?;
            (d, false)
        }
    };
    tch::manual_seed(0);
    let model = ImageClassifier::build(&ModelSpec::Vit { dir, pretrained }, classes, device)?;
    let opt = OptimizerConfig::new(MethodConfig::new(method), BaseConfig::sgd(), LrSchedule::constant(5e-4));
    let mut driver = StepDriver::new(&model, opt)?;
    let size = 224;
    let b = ImageBatch {
        images: Tensor::randn([batch, 3, size, size], (Kind::Float, device)),
        labels: Tensor::randint(classes, [batch], (Kind::Int64, device)),
    };
    for i in 0..steps {
        let t = Instant::now();
        let r = driver.step(&model, std::slice::from_ref(&b))?;
        if let Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
        println!(
            "step {i}: {:.3} s, loss {:.4}, passes {}/{}",
            t.elapsed().as_secs_f64(),
            r.loss,
            r.forward_passes,
            r.backward_passes
        );
    }
    println!("{method} on {device:?}, batch {batch}, {} MB of parameters", driver.param_bytes() / (1 << 20));
    Ok(())
}
