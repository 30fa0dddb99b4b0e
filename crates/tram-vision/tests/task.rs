//! The transfer task over tram-core's step driver (needs `bash tools/assets.sh`). Small sizes: 32 px, a few
//! steps; the accuracy figures of the README come from the `emoji_transfer` example.

use tch::Device;
use tram_core::{BaseConfig, LrSchedule, MethodConfig, MethodName, Model, OptimizerConfig, StepDriver};
use tram_task::{DeviceChoice, Domain, RunContext, RunResult, RunSettings, Task};
use tram_vision::classifier::{ImageBatch, ImageClassifier, ModelSpec};
use tram_vision::data::emoji::{self, EmojiConfig};
use tram_vision::data::{Loader, LoaderConfig, Normalization, TransferData, Transform};
use tram_vision::transfer::{TransferConfig, TransferTask};

// torch's generator is global: tests that draw from it (dropout, drop-connect, noise) run one at a time, or
// they would consume each other's random numbers.
use tram_core::testing::serial;

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

/// The embedded task at 32 px on the small data.
fn small_task(data: TransferData) -> TransferTask {
    TransferTask { config: TransferConfig { image_size: 32, eval_batch_size: 64, ..TransferConfig::embedded() }, data }
}

fn quick(method: MethodName, base: BaseConfig, lr: f64) -> RunSettings {
    let mut run =
        RunSettings::new(OptimizerConfig::new(MethodConfig::new(method), base, LrSchedule::constant(lr)), 1, 16);
    run.max_train_batches = Some(3);
    run.device = DeviceChoice::Cpu;
    run
}

fn run(task: &TransferTask, settings: &RunSettings) -> RunResult {
    task.run(settings, &mut RunContext::new(&mut |_| {})).unwrap_or_else(|e| panic!("{e}"))
}

fn value(r: &RunResult, epoch: usize, set: &str) -> f64 {
    r.epochs[epoch].evals.iter().find(|e| e.set == set).unwrap_or_else(|| panic!("no set {set}")).value
}

fn zero_shot_mean(r: &RunResult, epoch: usize) -> f64 {
    let v: Vec<f64> = r.epochs[epoch].evals.iter().filter(|e| e.domain == Domain::ZeroShot).map(|e| e.value).collect();
    v.iter().sum::<f64>() / v.len() as f64
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
    let task = small_task(small_data());
    let cfg = quick(MethodName::TramPrev, BaseConfig::sgd_momentum(0.9), 0.05);
    let a = run(&task, &cfg);
    let b = run(&task, &cfg);
    assert_eq!(a.steps.len(), 3);
    assert_eq!(a.epochs.len(), 1);
    assert_eq!(a.epochs[0].evals.iter().filter(|e| e.domain == Domain::ZeroShot).count(), 3);
    let losses = |r: &RunResult| r.steps.iter().map(|s| (s.loss, s.divergence, s.eps_norm)).collect::<Vec<_>>();
    assert_eq!(losses(&a), losses(&b));
    assert_eq!(a.epochs[0].evals, b.epochs[0].evals);
    let mut other_seed = cfg.clone();
    other_seed.optimizer.seed = 1;
    let c = run(&task, &other_seed);
    assert_ne!(losses(&a), losses(&c));
}

#[test]
fn init_seed_fixes_the_head_and_leaves_the_data_order_to_the_seed() {
    let _rng = serial();
    let data = small_data();
    let mut cfg = quick(MethodName::Base, BaseConfig::sgd_momentum(0.9), 0.05);
    cfg.eval_before_training = true;
    let mut other_seed = cfg.clone();
    other_seed.optimizer.seed = 1;
    let losses = |r: &RunResult| r.steps.iter().map(|s| s.loss).collect::<Vec<_>>();
    // By default the seed draws the head: the untrained models differ.
    let task = small_task(data.clone());
    let (a, b) = (run(&task, &cfg), run(&task, &other_seed));
    assert_ne!(a.epochs[0].evals, b.epochs[0].evals);
    // With init_seed, every seed starts from the same head (identical evaluations before training) but still
    // draws its own batches (different first losses).
    let mut fixed = small_task(data);
    fixed.config.init_seed = Some(7);
    let (a, b) = (run(&fixed, &cfg), run(&fixed, &other_seed));
    assert_eq!(a.epochs[0].evals, b.epochs[0].evals);
    assert_ne!(losses(&a)[0], losses(&b)[0]);
}

#[test]
fn a_runs_identity_leaves_out_decoding_threads() {
    let one = TransferConfig::embedded();
    let four = TransferConfig { workers: 4, ..one.clone() };
    assert_eq!(four.identity(), one);
    assert_ne!(TransferConfig { image_size: 32, ..one.clone() }.identity(), one);
}

#[test]
fn device_choice_resolves() {
    let n = tch::Cuda::device_count() as usize;
    assert!(DeviceChoice::Cuda(n).resolve().is_err());
    assert_eq!(DeviceChoice::Auto.resolve().unwrap(), if n > 0 { Device::Cuda(0) } else { Device::Cpu });
}

#[test]
fn a_short_finetune_learns_and_the_imagenet_start_beats_a_random_one() {
    let _rng = serial();
    let mut cfg = TransferConfig::embedded();
    let pre_task = cfg.build().unwrap();
    let mut settings = RunSettings::new(
        OptimizerConfig::new(MethodConfig::new(MethodName::Base), BaseConfig::adam(), LrSchedule::constant(1e-3)),
        1,
        32,
    );
    settings.max_train_batches = Some(20);
    settings.device = DeviceChoice::Cpu;
    let pre = run(&pre_task, &settings);
    if let ModelSpec::EfficientNetLite0 { pretrained, .. } = &mut cfg.model {
        *pretrained = false;
    }
    let rand = run(&TransferTask { config: cfg, data: pre_task.data.clone() }, &settings);
    let (p, r) =
        ((value(&pre, 0, "google"), zero_shot_mean(&pre, 0)), (value(&rand, 0, "google"), zero_shot_mean(&rand, 0)));
    println!(
        "20 steps: ImageNet start {:.3} in-domain, {:.3} zero-shot; random start {:.3}, {:.3}",
        p.0, p.1, r.0, r.1
    );
    // The majority class of the held-out split is 18.6 % of it; 9 classes.
    assert!(p.0 > 0.35, "{p:?}");
    assert!(p.0 > r.0 + 0.1);
    assert!(p.1 > r.1 + 0.1);
}

#[test]
fn a_vit_snapshot_finetunes_with_a_new_head() {
    let _rng = serial();
    let mut data = small_data();
    data.train = data.train.clone().take(48);
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-vit");
    let mut task = small_task(data);
    task.config.model = ModelSpec::Vit { dir, pretrained: true };
    let r = run(&task, &quick(MethodName::TramX, BaseConfig::adamw(), 1e-3));
    assert_eq!(r.steps.len(), 3);
    assert!(r
        .steps
        .iter()
        .all(|s| s.loss.is_finite() && s.divergence.unwrap() > 0.0 && (s.forward_passes, s.backward_passes) == (3, 2)));
    assert_eq!(r.epochs[0].evals[0].examples, 64);
}

#[test]
fn a_corrupt_cached_asset_says_how_to_fetch_it_again() {
    // Every test that reads the cache holds this lock, so pointing TRAM_CACHE elsewhere here is seen by no other.
    let _rng = serial();
    let cache = std::env::temp_dir().join(format!("tram-vision-corrupt-{}", std::process::id()));
    let dir = cache.join("assets/efficientnet-lite0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("efficientnet-lite0.safetensors"), b"truncated").unwrap();
    let saved = std::env::var_os("TRAM_CACHE");
    std::env::set_var("TRAM_CACHE", &cache);
    let result = ImageClassifier::build(&ModelSpec::efficientnet_lite0(), 9, Device::Cpu);
    match saved {
        Some(v) => std::env::set_var("TRAM_CACHE", v),
        None => std::env::remove_var("TRAM_CACHE"),
    }
    let err = result.expect_err("a truncated weights file must not load").to_string();
    assert!(err.contains(&dir.join("efficientnet-lite0.safetensors").display().to_string()), "{err}");
    assert!(err.contains("looks corrupt") && err.contains("bash tools/assets.sh"), "{err}");
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn a_weights_file_of_the_right_size_with_a_zeroed_block_is_refused_before_any_run() {
    let _rng = serial();
    let cached = tram_vision::assets::efficientnet_lite0_weights().unwrap();
    let dir = std::env::temp_dir().join(format!("tram-vision-zeroed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let weights = dir.join("efficientnet-lite0.safetensors");
    let manifest = tram_task::kit::assets::MANIFEST;
    std::fs::copy(cached.parent().unwrap().join(manifest), dir.join(manifest)).unwrap();
    let mut bytes = std::fs::read(&cached).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 4096].fill(0);
    std::fs::write(&weights, &bytes).unwrap();
    let spec = ModelSpec::EfficientNetLite0 { weights: Some(weights.clone()), pretrained: true, bn_momentum: None };
    assert!(ImageClassifier::build(&spec, 9, Device::Cpu).is_ok(), "the loader alone cannot tell");
    let config = TransferConfig { model: spec, ..TransferConfig::embedded() };
    let err = config.build().err().expect("checked against the manifest before loading").to_string();
    assert!(err.contains(&weights.display().to_string()) && err.contains("the file changed"), "{err}");
    assert!(err.contains("bash tools/assets.sh"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_empty_evaluation_set_is_an_error_not_an_accuracy() {
    let _cache = serial();
    let data = tram_vision::transfer::DataSpec::Emoji(EmojiConfig { test_fraction: 0.0, ..EmojiConfig::default() });
    let err = TransferConfig { data, ..TransferConfig::embedded() }.build().err().expect("no test image").to_string();
    assert!(err.contains("evaluation set `google` holds no image"), "{err}");
}

#[test]
fn augmentation_and_batch_norm_settings_out_of_range_are_refused_before_loading() {
    let augment = Some(tram_vision::data::Augment { flip: 1.5, ..Default::default() });
    let err = TransferConfig { augment, ..TransferConfig::embedded() }.build().err().expect("flip 1.5").to_string();
    assert!(err.contains("task.augment.flip = 1.5"), "{err}");
    for m in [2.0, f64::NAN] {
        let model = tram_vision::classifier::ModelSpec::EfficientNetLite0 {
            weights: None,
            pretrained: true,
            bn_momentum: Some(m),
        };
        let err = TransferConfig { model, ..TransferConfig::embedded() }.build().err().expect("refused").to_string();
        assert!(err.contains(&format!("task.model.bn_momentum = {m}: a share, in [0, 1]")), "{err}");
    }
}
