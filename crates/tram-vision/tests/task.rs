//! The transfer task over tram-core's step driver (needs `bash tools/assets.sh`). Small sizes: 32 px, a few
//! steps; the accuracy figures of the README come from the `emoji_transfer` example.

use tch::Device;
use tram_core::{BaseConfig, LrSchedule, MethodConfig, MethodName, Model, OptimizerConfig, StepDriver};
use tram_vision::data::emoji::{self, EmojiConfig};
use tram_vision::data::{Loader, LoaderConfig, Normalization, TransferData, Transform};
use tram_vision::task::{finetune, DeviceChoice, FinetuneConfig, ImageBatch, ImageClassifier, ModelSpec};

/// torch's generator is global: tests that draw from it (dropout, drop-connect, noise) run one at a time, or
/// they would consume each other's random numbers.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    TORCH_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

fn small_data() -> TransferData {
    let mut data = emoji::load(&EmojiConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    data.test = data.test.take(64);
    for d in &mut data.ood {
        *d = d.clone().take(64);
    }
    data
}

fn batch(data: &TransferData, n: usize, size: u32) -> ImageBatch {
    let t = Transform::eval(size, Normalization::MINUS_ONE_ONE);
    let b = Loader::new(&data.train, t, &LoaderConfig::train(n, 1), 0).unwrap().next().unwrap().unwrap();
    let (images, labels) = b.to_tensors(Device::Cpu);
    ImageBatch { images, labels }
}

fn quick(method: MethodName, base: BaseConfig, lr: f64) -> FinetuneConfig {
    let mut cfg =
        FinetuneConfig::embedded(OptimizerConfig::new(MethodConfig::new(method), base, LrSchedule::constant(lr)));
    cfg.image_size = 32;
    cfg.batch_size = 16;
    cfg.eval_batch_size = 64;
    cfg.epochs = 1;
    cfg.max_train_batches = Some(3);
    cfg.device = DeviceChoice::Cpu;
    cfg
}

#[test]
fn every_method_steps_the_classifier_with_the_papers_pass_counts() {
    let _rng = serial();
    let data = small_data();
    let b = batch(&data, 8, 32);
    tch::manual_seed(0);
    let model = ImageClassifier::build(&ModelSpec::efficientnet_lite0(), 9, Device::Cpu).unwrap();
    for name in MethodName::ALL {
        let cfg = OptimizerConfig::new(MethodConfig::new(name), BaseConfig::sgd(), LrSchedule::constant(0.01));
        let mut driver = StepDriver::new(&model, cfg).unwrap();
        for _ in 0..2 {
            let r = driver.step(&model, std::slice::from_ref(&b)).unwrap();
            assert!(r.loss.is_finite() && !r.skipped, "{name}: {r:?}");
            if let Some((f, bw)) = name.paper_passes() {
                assert_eq!((r.forward_passes, r.backward_passes), (f, bw), "{name}");
            }
            // At step 0 the parameter targets equal θ (d = 0); by step 1 every TRAM radius is positive.
            if r.step == 1 && name.as_str().starts_with("tram") && name != MethodName::TramFisher {
                assert!(r.divergence.unwrap() > 0.0 && r.eps_norm.unwrap() > 0.0, "{name}: {r:?}");
            }
        }
    }
}

#[test]
fn input_noise_goes_on_the_pixels() {
    let _rng = serial();
    let data = small_data();
    let b = batch(&data, 4, 32);
    let model = ImageClassifier::build(&ModelSpec::efficientnet_lite0(), 9, Device::Cpu).unwrap();
    let noise = tram_core::InputNoise { spec: tram_core::NoiseSpec::gaussian(0.1), seed: 3, resume_seed: 4 };
    let clean = tch::no_grad(|| model.forward(&b, false, None));
    let noised = tch::no_grad(|| model.forward(&b, false, Some(&noise)));
    let again = tch::no_grad(|| model.forward(&b, false, Some(&noise)));
    assert!((&clean - &noised).abs().max().double_value(&[]) > 1e-3);
    assert_eq!((&noised - &again).abs().max().double_value(&[]), 0.0, "the noise draw is seeded");
}

#[test]
fn a_seed_makes_runs_repeat() {
    let _rng = serial();
    let data = small_data();
    let cfg = quick(MethodName::TramPrev, BaseConfig::sgd_momentum(0.9), 0.05);
    let a = finetune(&cfg, &data, |_| {}).unwrap();
    let b = finetune(&cfg, &data, |_| {}).unwrap();
    assert_eq!(a.steps.len(), 3);
    assert_eq!(a.epochs.len(), 1);
    assert_eq!(a.epochs[0].ood.len(), 3);
    let losses = |r: &tram_vision::task::RunResult| {
        r.steps.iter().map(|s| (s.loss, s.divergence, s.eps_norm)).collect::<Vec<_>>()
    };
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(a.epochs[0].in_domain, b.epochs[0].in_domain);
    assert_eq!(a.epochs[0].ood, b.epochs[0].ood);
    let c = finetune(&FinetuneConfig { seed: 1, ..cfg }, &data, |_| {}).unwrap();
    assert_ne!(losses(&a), losses(&c));
}

#[test]
fn device_choice_parses_and_resolves() {
    assert_eq!(DeviceChoice::parse("auto").unwrap(), DeviceChoice::Auto);
    assert_eq!(DeviceChoice::parse("cuda:1").unwrap(), DeviceChoice::Cuda(1));
    assert!(DeviceChoice::parse("tpu").unwrap_err().to_string().contains("expected auto, cpu, cuda"));
    assert_eq!(DeviceChoice::Cpu.resolve().unwrap(), Device::Cpu);
    let n = tch::Cuda::device_count() as usize;
    assert!(DeviceChoice::Cuda(n).resolve().is_err());
    assert_eq!(DeviceChoice::Auto.resolve().unwrap(), if n > 0 { Device::Cuda(0) } else { Device::Cpu });
}

#[test]
fn a_short_finetune_learns_and_the_imagenet_start_beats_a_random_one() {
    let _rng = serial();
    let data = emoji::load(&EmojiConfig::default()).unwrap();
    let mut cfg = FinetuneConfig::embedded(OptimizerConfig::new(
        MethodConfig::new(MethodName::Base),
        BaseConfig::adam(),
        LrSchedule::constant(1e-3),
    ));
    cfg.epochs = 1;
    cfg.max_train_batches = Some(20);
    cfg.device = DeviceChoice::Cpu;
    let pre = finetune(&cfg, &data, |_| {}).unwrap();
    if let ModelSpec::EfficientNetLite0 { pretrained, .. } = &mut cfg.model {
        *pretrained = false;
    }
    let rand = finetune(&cfg, &data, |_| {}).unwrap();
    let (p, r) = (&pre.epochs[0], &rand.epochs[0]);
    println!(
        "20 steps: ImageNet start {:.3} in-domain, {:.3} OOD; random start {:.3}, {:.3}",
        p.in_domain.accuracy.top1(),
        p.ood_mean(),
        r.in_domain.accuracy.top1(),
        r.ood_mean()
    );
    // The majority class of the held-out split is 18.6 % of it; 9 classes.
    assert!(p.in_domain.accuracy.top1() > 0.35, "{p:?}");
    assert!(p.in_domain.accuracy.top1() > r.in_domain.accuracy.top1() + 0.1);
    assert!(p.ood_mean() > r.ood_mean() + 0.1);
    assert!(p.data_wait_seconds < 0.5 * p.train_seconds, "the loader keeps ahead of the model: {p:?}");
}

#[test]
fn a_vit_snapshot_finetunes_with_a_new_head() {
    let _rng = serial();
    let mut data = small_data();
    data.train = data.train.clone().take(48);
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-vit");
    let mut cfg = quick(MethodName::TramX, BaseConfig::adamw(), 1e-3);
    cfg.model = ModelSpec::Vit { dir, pretrained: true };
    let r = finetune(&cfg, &data, |_| {}).unwrap();
    assert_eq!(r.steps.len(), 3);
    assert!(r
        .steps
        .iter()
        .all(|s| s.loss.is_finite() && s.divergence.unwrap() > 0.0 && (s.forward_passes, s.backward_passes) == (3, 2)));
    assert_eq!(r.epochs[0].in_domain.accuracy.total, 64);
}

#[test]
fn a_corrupt_cached_asset_says_how_to_fetch_it_again() {
    let _rng = serial(); // building a network draws its initial weights
    let cache = std::env::temp_dir().join(format!("tram-vision-corrupt-{}", std::process::id()));
    let dir = cache.join("assets/efficientnet-lite0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("efficientnet-lite0.safetensors"), b"truncated").unwrap();
    let err = tram_vision::assets::corrupt_hint(
        tram_vision::efficientnet_lite::EfficientNetLite::new(
            &tch::nn::VarStore::new(Device::Cpu).root(),
            tram_vision::efficientnet_lite::EfficientNetLiteConfig::lite0(9),
        )
        .load_pretrained(&tch::nn::VarStore::new(Device::Cpu), &dir.join("efficientnet-lite0.safetensors"))
        .unwrap_err(),
    )
    .to_string();
    assert!(err.contains("efficientnet-lite0.safetensors") && err.contains("bash tools/assets.sh"), "{err}");
    std::fs::remove_dir_all(&cache).ok();
}
