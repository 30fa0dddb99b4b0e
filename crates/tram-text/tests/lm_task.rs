//! The causal-LM task end to end on tiny fixtures laid out as the Hub lays them out: a GPT-2 snapshot folder and
//! an M2D2 folder (`data/<config>.tar.gz`), configured from an experiment profile as the runner embeds it.

use std::path::Path;

use serde::Deserialize;
use tram_core::{BaseConfig, LrSchedule, MethodConfig, MethodName, OptimizerConfig, StepReport};
use tram_task::{DeviceChoice, Domain, Metric, RunContext, RunSettings, Selection, Split, Task};
use tram_text::causal_lm::ModelSource;
use tram_text::lm::{CausalLmConfig, LmData};
use tram_text::trainable::{NoiseAt, Trainable};

// Tests that draw from torch's global generator run one at a time.
use tram_core::testing::serial;

/// The runner's task enum, internally tagged by `kind` (as tram-experiments declares it).
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum TaskSpec {
    CausalLm(CausalLmConfig),
}

#[derive(Debug, Deserialize)]
struct Profile {
    task: TaskSpec,
}

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm")
}

fn tiny(trainable: &str) -> CausalLmConfig {
    let toml = format!(
        r#"[task]
kind = "causal-lm"
model = {{ snapshot = "{}" }}
data = {{ m2d2 = "{}" }}
train_domain = "Society_and_social_sciences"
zero_shot_domains = ["Culture_and_the_arts", "Mathematics_and_logic"]
block_len = 16
eval_blocks = 0
validation_blocks = 0
eval_batch_size = 4
trainable = {trainable}
"#,
        fixtures().join("gpt2-tiny").display(),
        fixtures().join("m2d2-tiny").display()
    );
    let TaskSpec::CausalLm(c) = toml::from_str::<Profile>(&toml).unwrap().task;
    c
}

fn settings(method: MethodName, epochs: usize) -> RunSettings {
    let opt = OptimizerConfig {
        seed: 3,
        ..OptimizerConfig::new(MethodConfig::new(method), BaseConfig::adam(), LrSchedule::constant(3e-3))
    };
    RunSettings {
        device: DeviceChoice::Cpu,
        max_train_batches: Some(4),
        eval_before_training: true,
        selection: Selection::BestValidation,
        ..RunSettings::new(opt, epochs, 4)
    }
}

#[test]
fn profile_keys_and_defaults() {
    let c = tiny("{ top-layers = 1 }");
    assert_eq!(c.trainable, Trainable::TopLayers(1));
    assert_eq!(c.data, LmData::M2d2(fixtures().join("m2d2-tiny")));
    assert_eq!(c.noise_at, NoiseAt::Embeddings);
    // The embedded defaults: SmolLM2 on Brown `learned`, 128-token blocks, top two layers.
    let d = CausalLmConfig::default();
    assert_eq!((d.model, d.data, d.train_domain.as_str()), (ModelSource::Smollm2, LmData::Brown, "learned"));
    assert_eq!((d.block_len, d.trainable, d.eval_blocks), (128, Trainable::TopLayers(2), 16));
    // A run's identity leaves out the prefix cache's budget, which only decides what is computed again.
    let roomy = CausalLmConfig { prefix_cache_mb: 1 << 20, ..c.clone() };
    assert_eq!(roomy.identity(), CausalLmConfig { prefix_cache_mb: 0, ..c.clone() });
    assert_ne!(CausalLmConfig { block_len: 8, ..c.clone() }.identity(), c.identity());
    let err = toml::from_str::<Profile>("task = { kind = \"causal-lm\", blocklen = 3 }").unwrap_err().to_string();
    assert!(err.contains("unknown field `blocklen`"), "{err}");
    let mut bad = tiny("\"all\"");
    bad.noise_at = NoiseAt::Cached;
    assert!(bad.build().err().unwrap().to_string().contains("noise_at"));
    let mut capped = tiny("\"all\"");
    capped.max_train_tokens = Some(100);
    assert_eq!(capped.build().unwrap().train_blocks(), 100 / 16, "max_train_tokens caps M2D2's train.txt");
    let mut bad = tiny("\"all\"");
    bad.zero_shot_domains = Some(vec!["cs_l1".into()]);
    let err = bad.build().err().unwrap().to_string();
    assert!(err.contains("cs_l1.tar.gz"), "{err}");
}

#[test]
fn tram_runs_end_to_end_on_hub_layouts() {
    let _rng = serial();
    let task = tiny("{ top-layers = 1 }").build().unwrap();
    println!("{}", task.describe());
    assert_eq!(task.metric(), Metric::Perplexity);
    let sets = task.sets();
    let order: Vec<(&str, Domain, Split)> = sets.iter().map(|s| (s.name.as_str(), s.domain, s.split)).collect();
    assert_eq!(
        order,
        vec![
            ("Society_and_social_sciences", Domain::InDomain, Split::Validation),
            ("Society_and_social_sciences", Domain::InDomain, Split::Test),
            ("Culture_and_the_arts", Domain::ZeroShot, Split::Test),
            ("Mathematics_and_logic", Domain::ZeroShot, Split::Test),
        ]
    );
    // eval_blocks = 0: every block of the text, the last one shorter.
    for s in &sets {
        assert_eq!(s.predicted_tokens, s.text_tokens - s.blocks, "{s:?}");
    }
    let pretrained = task.evaluate_pretrained(DeviceChoice::Cpu).unwrap();
    // The runner asks through the contract (Table 4's first row): the same evaluations.
    let via_contract = Task::evaluate_pretrained(&task, &settings(MethodName::Base, 1)).unwrap();
    assert_eq!(via_contract.as_ref(), Some(&pretrained));
    for method in [MethodName::TramPrev, MethodName::TramX] {
        let run = settings(method, 2);
        assert_eq!(task.steps_per_epoch(&run).unwrap(), 4);
        let mut reports: Vec<StepReport> = vec![];
        let mut on_step = |r: &StepReport| reports.push(r.clone());
        let result = task.run(&run, &mut RunContext::new(&mut on_step)).unwrap();
        assert_eq!(result.epochs.len(), 3, "epoch 0 and two epochs");
        assert_eq!(result.epochs[0].evals, pretrained, "epoch 0 is the pre-trained model");
        for e in &result.epochs {
            for (ev, s) in e.evals.iter().zip(&sets) {
                assert!(ev.value.is_finite() && ev.value > 1.0, "{ev:?}");
                assert_eq!(ev.per_example.len(), s.blocks);
            }
        }
        assert!(reports.len() == 8 && reports.iter().all(|r| !r.skipped && r.forward_passes == 3));
        // The trust region is measured every step: TRAM-x's d is the effect of noise on the embeddings through
        // the frozen layers, so it is non-zero only if the noise reached the model. TRAM-θ_{t−1}'s is 0 at the
        // first step (θ_{t−1} = θ_0, and the target pass draws the same dropout masks), then positive.
        let first = usize::from(method == MethodName::TramPrev);
        assert!(reports[first..].iter().all(|r| r.divergence.is_some_and(|d| d > 0.0)), "{method}: {reports:?}");
        let before = &result.epochs[0].evals[1];
        let after = &result.selected_epoch().unwrap().evals[1];
        println!("{method}: in-domain perplexity {:.2} -> {:.2}", before.value, after.value);
        assert!(after.value < before.value, "{method}: fine-tuning lowers in-domain perplexity");
        assert!(result.selected >= 1);
    }
}

#[test]
fn the_cached_prefix_evaluates_as_the_full_model_and_full_fine_tuning_runs() {
    let _rng = serial();
    let top = tiny("{ top-layers = 2 }").build().unwrap();
    let all = tiny("\"all\"").build().unwrap();
    let mut config = tiny("{ top-layers = 2 }");
    config.prefix_cache_mb = 0;
    let uncached = config.build().unwrap();
    let a = top.evaluate_pretrained(DeviceChoice::Cpu).unwrap();
    let b = all.evaluate_pretrained(DeviceChoice::Cpu).unwrap();
    let c = uncached.evaluate_pretrained(DeviceChoice::Cpu).unwrap();
    let once = top.cache_seconds();
    assert!(once > 0.0 && all.cache_seconds() == 0.0);
    // From the cache the second time; without room for a cache, the prefix runs again.
    assert_eq!(top.evaluate_pretrained(DeviceChoice::Cpu).unwrap(), a);
    assert_eq!(top.cache_seconds(), once);
    let first = uncached.cache_seconds();
    assert_eq!(uncached.evaluate_pretrained(DeviceChoice::Cpu).unwrap(), c);
    assert!(uncached.cache_seconds() > first);
    for ((x, y), z) in a.iter().zip(&b).zip(&c) {
        assert_eq!((&x.set, x.examples), (&y.set, y.examples));
        assert!((x.loss - y.loss).abs() < 1e-6, "{} {} vs {}", x.set, x.loss, y.loss);
        assert_eq!(x.loss, z.loss, "{}", x.set);
    }
    let mut run = settings(MethodName::R3f, 1);
    run.eval_before_training = false;
    let result = all.run(&run, &mut RunContext::new(&mut |_| {})).unwrap();
    assert_eq!(result.epochs.len(), 1);
    assert!(result.steps.iter().all(|r| r.divergence.is_some_and(|d| d > 0.0)));
    // Full fine-tuning trains the whole model; top-2 only its top two blocks and the final norm. A GPT-2 block of
    // width 32 has 2·64 (norms) + 32·96+96 + 32·32+32 + 32·128+128 + 128·32+32 = 12,704 parameters.
    let top_run = top.run(&run, &mut RunContext::new(&mut |_| {})).unwrap();
    assert_eq!(top_run.param_bytes, 4 * (2 * 12_704 + 64));
    assert_eq!(result.param_bytes, 4 * (3 * 12_704 + 64 + 300 * 32 + 64 * 32));
    let timings = top
        .time_steps(&run, &[settings(MethodName::Base, 1).optimizer, settings(MethodName::TramPrev, 1).optimizer], 2)
        .unwrap();
    assert_eq!(timings.iter().map(|t| (t.forward_passes, t.backward_passes)).collect::<Vec<_>>(), [(1, 1), (3, 2)]);
}

/// One epoch of one batch of TRAM-x with `method`'s σ: the σ the run applied and its step reports.
fn tram_x_run(task: &tram_text::lm::CausalLmTask, method: MethodConfig) -> (Option<f64>, Vec<StepReport>) {
    let mut run = settings(MethodName::TramX, 1);
    run.optimizer.method = method;
    run.max_train_batches = Some(1);
    let mut reports: Vec<StepReport> = vec![];
    let mut on_step = |r: &StepReport| reports.push(r.clone());
    let result = task.run(&run, &mut RunContext::new(&mut on_step)).unwrap();
    (result.noise_sigma, reports)
}

#[test]
fn a_relative_sigma_is_a_multiple_of_the_noised_tensors_rms() {
    let _rng = serial();
    let relative = MethodConfig { sigma_relative: Some(0.5), ..MethodConfig::new(MethodName::TramX) };
    // On the token embeddings: σ = 0.5 · the RMS of the embedding table.
    let task = tiny("{ top-layers = 1 }").build().unwrap();
    let wte = task.model().decoder.token_embeddings();
    let table_rms = f64::try_from(wte.to_kind(tch::Kind::Double).square().mean(tch::Kind::Double).sqrt()).unwrap();
    let (sigma, _) = tram_x_run(&task, relative.clone());
    assert!((sigma.unwrap() - 0.5 * table_rms).abs() < 1e-6 * table_rms, "{sigma:?} vs 0.5 × {table_rms}");
    // An absolute σ is recorded as given.
    let absolute = MethodConfig { sigma: Some(0.02), ..MethodConfig::new(MethodName::TramX) };
    assert_eq!(tram_x_run(&task, absolute).0, Some(0.02));
    assert_eq!(tram_x_run(&task, MethodConfig::new(MethodName::Base)).0, None, "no input noise, no σ");
    // On the cached states: a scale of its own (the residual stream's), and the relative run is the absolute run
    // at the σ it records.
    let mut cached = tiny("{ top-layers = 1 }");
    cached.noise_at = NoiseAt::Cached;
    let task = cached.build().unwrap();
    let (sigma, reports) = tram_x_run(&task, relative);
    let sigma = sigma.unwrap();
    assert!(sigma.is_finite() && sigma > 0.0 && (sigma - 0.5 * table_rms).abs() > 1e-3 * table_rms, "{sigma}");
    let (again, same) = tram_x_run(&task, MethodConfig { sigma: Some(sigma), ..MethodConfig::new(MethodName::TramX) });
    assert_eq!((again, same), (Some(sigma), reports));
}
