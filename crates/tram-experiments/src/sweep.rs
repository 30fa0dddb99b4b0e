//! Running an experiment profile: every (method, seed) as its own run folder, with progress bars, then the
//! interleaved step-time measurement that Table 2 reports.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tram_core::{MethodConfig, StepDriver};
use tram_vision::data::{image_folder, Loader, LoaderConfig, Transform, TransferData};
use tram_vision::task::{finetune, DeviceChoice, ImageBatch, ImageClassifier};

use crate::experiment::{DataSpec, Experiment, Profile};
use crate::runs::{config_hash, now_s, RunDir, RunState, Summary};
use crate::stats::median;

pub struct SweepOptions {
    pub results: PathBuf,
    pub profile: String,
    pub device: DeviceChoice,
    pub fresh: bool,
}

pub fn load_data(spec: &DataSpec) -> Result<TransferData> {
    Ok(match spec {
        DataSpec::Emoji(cfg) => tram_vision::data::emoji::load(cfg)?,
        DataSpec::Parquet { dir, columns, train_split, test_split } => {
            tram_vision::data::parquet::transfer_data(dir, columns, train_split, test_split)?
        }
        DataSpec::ImageFolder { train, test, ood } => {
            let train = image_folder::open("train", train, None)?;
            let classes = train.classes.clone();
            let test = image_folder::open("test", test, Some(classes.clone()))?;
            let ood = ood
                .iter()
                .map(|(name, dir)| image_folder::open(name, dir, Some(classes.clone())))
                .collect::<tram_vision::Result<Vec<_>>>()?;
            TransferData { classes, train, test, ood }
        }
    })
}

pub fn run_id(method: &MethodConfig, seed: u64) -> String {
    format!("{}-s{seed}", method.name)
}

fn bar_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

/// Runs (or skips, when finished) every run of the profile; returns the summaries in config order.
pub fn run_profile(exp: &Experiment, profile: &Profile, opts: &SweepOptions, data: &TransferData) -> Result<Vec<Summary>> {
    let name = &exp.file.name;
    let runs: Vec<(MethodConfig, u64)> =
        profile.methods.iter().flat_map(|m| profile.seeds.iter().map(move |&s| (m.clone(), s))).collect();
    let mp = MultiProgress::new();
    let sweep = mp.add(ProgressBar::new(runs.len() as u64));
    sweep.set_style(bar_style("{prefix:>12} [{bar:30}] {pos}/{len} runs  elapsed {elapsed_precise}  eta {eta_precise}"));
    sweep.set_prefix(format!("{name}/{}", opts.profile));
    let per_epoch = {
        let full = data.train.len() / profile.batch_size.max(1);
        profile.max_train_batches.map_or(full, |m| m.min(full))
    };
    let mut summaries = Vec::with_capacity(runs.len());
    for (method, seed) in runs {
        let id = run_id(&method, seed);
        let dir = RunDir::new(&opts.results, name, &opts.profile, &id);
        let config = profile.finetune(&method, seed, opts.device);
        let text = toml::to_string(&config).context("serialising the run's config")?;
        match dir.state(&config_hash(&text), opts.fresh)? {
            RunState::Done(s) => {
                mp.suspend(|| tracing::info!("{id}: finished earlier, skipped ({})", dir.dir.display()));
                summaries.push(s);
                sweep.inc(1);
                continue;
            }
            RunState::Todo => {}
        }
        let bar = mp.add(ProgressBar::new((per_epoch * profile.epochs) as u64));
        bar.set_style(bar_style("{prefix:>12} [{bar:30}] {pos}/{len} steps  {msg}  eta {eta_precise}"));
        bar.set_prefix(id.clone());
        bar.enable_steady_tick(Duration::from_millis(500));
        let start = now_s();
        let result = finetune(&config, data, |r| {
            bar.inc(1);
            bar.set_message(format!("loss {:.3}", r.loss));
        })
        .with_context(|| format!("run {id}"))?;
        bar.finish_and_clear();
        let summary = dir.write(name, &opts.profile, &text, &config, &result, start, method.name.as_str())?;
        let last = result.epochs.last().map(|e| (e.in_domain.accuracy.top1(), e.ood_mean()));
        mp.suspend(|| {
            tracing::info!(
                "{id}: in-domain {:.3}, OOD mean {:.3}, {:.0} s ({})",
                last.map_or(f64::NAN, |l| l.0),
                last.map_or(f64::NAN, |l| l.1),
                summary.train_seconds,
                dir.dir.display()
            )
        });
        summaries.push(summary);
        sweep.inc(1);
    }
    sweep.finish();
    Ok(summaries)
}

/// Step time of each method, measured interleaved: every round runs one step of every method, on the same batch,
/// each method on its own copy of the same initial model.
pub struct Timing {
    pub method: MethodConfig,
    pub median_ms: f64,
    pub forward_passes: u32,
    pub backward_passes: u32,
    pub extra_memory_bytes: usize,
    pub param_bytes: usize,
}

pub fn measure_timing(profile: &Profile, data: &TransferData, device: DeviceChoice, rounds: usize) -> Result<Vec<Timing>> {
    let device_t = device.resolve()?;
    let classes = data.classes.len() as i64;
    let mut models = Vec::new();
    let mut drivers = Vec::new();
    for m in &profile.methods {
        tch::manual_seed(0);
        let model = ImageClassifier::build(&profile.model, classes, device_t)?;
        let cfg = profile.finetune(m, 0, device).optimizer;
        let mut cfg = cfg;
        if cfg.schedule.total_steps == 0 {
            cfg.schedule.total_steps = (rounds + 2) as u64;
        }
        drivers.push(StepDriver::new(&model, cfg)?);
        models.push(model);
    }
    let norm = models[0].normalization();
    let loader = LoaderConfig::train(profile.batch_size, 0);
    let host = Loader::new(&data.train, Transform::eval(profile.image_size, norm), &loader, 0)?
        .next()
        .context("the training set yields no batch")??;
    let (images, labels) = host.to_tensors(device_t);
    let batch = ImageBatch { images, labels };
    let pb = ProgressBar::new(((rounds + 1) * models.len()) as u64);
    pb.set_style(bar_style("{prefix:>12} [{bar:30}] {pos}/{len} steps  eta {eta_precise}"));
    pb.set_prefix("timing");
    let mut times = vec![Vec::new(); models.len()];
    let mut passes = vec![(0u32, 0u32); models.len()];
    for round in 0..=rounds {
        for (k, (model, driver)) in models.iter().zip(drivers.iter_mut()).enumerate() {
            let r = driver.step(model, std::slice::from_ref(&batch))?;
            if device_t.is_cuda() {
                tch::Cuda::synchronize(device_index(device_t));
            }
            if round > 0 {
                // round 0 warms up allocators and caches
                times[k].push(driver.last_timing().total.as_secs_f64() * 1e3);
            }
            passes[k] = (r.forward_passes, r.backward_passes);
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(profile
        .methods
        .iter()
        .enumerate()
        .map(|(k, m)| Timing {
            method: m.clone(),
            median_ms: median(&times[k]),
            forward_passes: passes[k].0,
            backward_passes: passes[k].1,
            extra_memory_bytes: drivers[k].extra_memory_bytes(),
            param_bytes: drivers[k].param_bytes(),
        })
        .collect())
}

fn device_index(d: tch::Device) -> i64 {
    match d {
        tch::Device::Cuda(i) => i as i64,
        _ => 0,
    }
}
