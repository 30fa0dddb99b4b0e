//! The cross-lingual task end to end on a tiny random XLM-R and tiny MultiNLI / XNLI folders laid out as the Hub
//! lays them out (reference/xl_fixtures.py): the profile keys as the runner embeds them, the NLI readers, runs of
//! TRAM-x and TRAM-θ_{t−1} through `tram_task::train` (whole model and top layer with a cached prefix), the saved
//! weights rebuilding the selected model (Table 6), and step timing.

use std::path::PathBuf;

use serde::Deserialize;
use tram_core::{BaseConfig, DivergenceKind, LrSchedule, MethodConfig, MethodName, OptimizerConfig, StepReport};
use tram_task::kit::analysis::SharpnessConfig;
use tram_task::{AnalysisSettings, Domain, RunContext, RunSettings, Selection, Split, Task};
use tram_text::data::nli;
use tram_text::xlingual::CrossLingualConfig;

// Tests that draw from torch's global generator run one at a time.
use tram_core::testing::serial;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/xl")
}

/// How the runner embeds the task's keys: an internally tagged enum.
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum TaskSpec {
    CrossLingual(CrossLingualConfig),
}

fn config(extra: &str) -> CrossLingualConfig {
    let f = fixtures();
    let toml = format!(
        "kind = \"cross-lingual\"\nmodel = {{ kind = \"hugging-face\", dir = \"{}\" }}\n\
         data = {{ kind = \"xnli\", multinli = \"{}\", xnli = \"{}\", languages = [\"en\", \"de\", \"fr\"] }}\n\
         max_seq_len = 24\neval_batch_size = 8\n{extra}",
        f.join("tiny-xlmr").display(),
        f.join("multi_nli").display(),
        f.join("xnli").display()
    );
    let TaskSpec::CrossLingual(c) = toml::from_str(&toml).unwrap();
    c
}

fn settings(method: MethodName, seed: u64) -> RunSettings {
    let mut o = OptimizerConfig::new(MethodConfig::new(method), BaseConfig::adam(), LrSchedule::constant(1e-3));
    o.seed = seed;
    let mut r = RunSettings::new(o, 2, 8);
    r.device = tram_task::DeviceChoice::Cpu;
    r.max_train_batches = Some(3);
    r.selection = Selection::BestValidation;
    r
}

#[test]
fn nli_readers_take_both_hub_layouts_and_drop_unlabelled_pairs() {
    let f = fixtures();
    let train = nli::read(&nli::multinli_files(&f.join("multi_nli"), "train").unwrap()).unwrap();
    assert_eq!((train.examples.len(), train.dropped_unlabelled), (79, 1));
    assert!(train.examples.iter().all(|e| (0..3).contains(&e.label) && !e.premise.is_empty()));
    let de = nli::read(&nli::xnli_files(&f.join("xnli"), "de", "test").unwrap()).unwrap();
    assert_eq!(de.examples.len(), 14);
    // fr has the older converter's xnli-<split>.parquet names.
    let fr = nli::xnli_files(&f.join("xnli"), "fr", "validation").unwrap();
    assert!(fr[0].ends_with("xnli-validation.parquet"));
    assert_eq!(nli::read(&fr).unwrap().examples.len(), 10);
    let err = nli::xnli_files(&f.join("xnli"), "sw", "test").unwrap_err().to_string();
    assert!(err.contains("sw/test-00000-of-00001.parquet"), "{err}");
    // Unknown keys are refused, as the runner's profiles need.
    let bad = format!(
        "kind = \"cross-lingual\"\nmodel = {{ kind = \"hugging-face\", dir = \"{}\" }}\nmax_len = 3",
        f.join("tiny-xlmr").display()
    );
    assert!(toml::from_str::<TaskSpec>(&bad).unwrap_err().to_string().contains("unknown field `max_len`"));
}

#[test]
fn runs_tram_variants_end_to_end_and_saves_what_table_6_needs() {
    let _rng = serial();
    for (trainable, noise_at) in
        [("\"all\"", "embeddings"), ("{ top-layers = 1 }", "embeddings"), ("{ top-layers = 1 }", "cached")]
    {
        let cfg = config(&format!("trainable = {trainable}\nnoise_at = \"{noise_at}\"\npooling = \"first\""));
        let task = cfg.build().unwrap();
        println!("{}", task.describe());
        assert_eq!(task.train_examples().len(), 79);
        let sets: Vec<(String, Domain, Split)> =
            task.eval_sets().iter().map(|s| (s.name.clone(), s.domain, s.split)).collect();
        assert_eq!(
            sets,
            vec![
                ("en".into(), Domain::InDomain, Split::Validation),
                ("en".into(), Domain::InDomain, Split::Test),
                ("de".into(), Domain::ZeroShot, Split::Test),
                ("fr".into(), Domain::ZeroShot, Split::Test),
            ]
        );
        let val: Vec<&str> = task.validation_sets().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(val, ["en", "de", "fr"]);
        assert!(task.pruning().unwrap().rows() < task.encoder_config().vocab_size);
        assert_eq!(task.steps_per_epoch(&settings(MethodName::Base, 0)).unwrap(), 3);

        for method in [MethodName::TramX, MethodName::TramPrev] {
            let dir = tempdir();
            let saved = dir.join("model.safetensors");
            let mut divergences = vec![];
            let mut on_step = |r: &StepReport| divergences.push(r.divergence.unwrap_or(f64::NAN));
            let mut ctx = RunContext::new(&mut on_step);
            ctx.save_model = Some(saved.clone());
            let result = task.run(&settings(method, 3), &mut ctx).unwrap();
            assert_eq!(result.steps.len(), 6);
            assert_eq!(result.steps[0].forward_passes, 3, "TRAM: 3 forward passes");
            let sel = result.selected_epoch().unwrap();
            for e in &sel.evals {
                assert!((0.0..=1.0).contains(&e.value), "{e:?}");
                assert_eq!(e.per_example.len(), e.examples);
                assert!(e.per_example.iter().all(|&c| c == 0.0 || c == 1.0));
            }
            assert!(result.skipped_examples.iter().any(|s| s.contains("1 training pairs without a gold label")));
            match method {
                // The noised forward moves the output: d_x > 0 at every step.
                MethodName::TramX => {
                    assert!(divergences.iter().all(|&d| d > 0.0), "{trainable} {noise_at}: {divergences:?}")
                }
                // θ_{t−1} = θ_0 at the first step: d = 0 exactly; then the parameters have moved.
                _ => assert!(divergences[0] == 0.0 && divergences[1..].iter().all(|&d| d > 0.0), "{divergences:?}"),
            }
            // Pre-trained encoder + saved parameters = the selected epoch's model.
            let model = task.load_finetuned(&saved, tch::Device::Cpu).unwrap();
            let again = task.evaluate(&model).unwrap();
            for (a, b) in again.iter().zip(&sel.evals) {
                assert_eq!(a.per_example, b.per_example, "{} {:?}", a.set, a.split);
                assert!((a.loss - b.loss).abs() < 1e-6);
            }
            let reps = task.representations(&model, task.validation_sets()[1]);
            assert_eq!(reps.size(), [10, 32]);
            // Table 6 on the saved model: every language's validation set, English first.
            let with = AnalysisSettings {
                sharpness: SharpnessConfig::paper(vec![1, 3]),
                batch_size: 4,
                device: tram_task::DeviceChoice::Cpu,
            };
            let analysis = task.analyse(&settings(method, 3), &saved, &with).unwrap().expect("the task has Table 6");
            let names: Vec<(&str, Domain)> = analysis.iter().map(|a| (a.set.as_str(), a.domain)).collect();
            assert_eq!(names, [("en", Domain::InDomain), ("de", Domain::ZeroShot), ("fr", Domain::ZeroShot)]);
            for a in &analysis {
                let steps: Vec<usize> = a.sharpness.points.iter().map(|p| p.steps).collect();
                assert_eq!(steps, [1, 3]);
                assert!(a.sharpness.points.iter().all(|p| p.sharpness >= 0.0 && p.sharpness.is_finite()), "{a:?}");
                assert!(a.cka > 0.0 && a.cka <= 1.0 + 1e-9, "{a:?}");
            }
            assert_eq!(analysis[1].examples, 10);
            // The base loss is the saved model's validation loss (eval mode): the run's own evaluation of en.
            let en_val = sel.evals.iter().find(|e| e.split == Split::Validation).unwrap();
            assert!(
                (analysis[0].sharpness.base_loss - en_val.loss).abs() < 1e-5,
                "{} vs {}",
                analysis[0].sharpness.base_loss,
                en_val.loss
            );
            std::fs::remove_dir_all(dir).ok();
        }
    }
}

#[test]
fn noise_methods_and_timing_run_on_the_cached_prefix() {
    let _rng = serial();
    let task = config("trainable = { top-layers = 2 }\npooling = \"mean\"\nnoise_at = \"cached\"").build().unwrap();
    let mut methods: Vec<OptimizerConfig> =
        [MethodName::Base, MethodName::R3f, MethodName::TramFisher, MethodName::Sam, MethodName::AsamR3f]
            .iter()
            .map(|&m| settings(m, 0).optimizer)
            .collect();
    // Table 14: TRAM-x with MMD and L2 as the trust-region distance.
    for d in [DivergenceKind::Mmd, DivergenceKind::L2] {
        let mut o = settings(MethodName::TramX, 0).optimizer;
        o.method.divergence = Some(d);
        methods.push(o);
    }
    let timings = task.time_steps(&settings(MethodName::Base, 0), &methods, 2).unwrap();
    let passes: Vec<(u32, u32)> = timings.iter().map(|t| (t.forward_passes, t.backward_passes)).collect();
    assert_eq!(passes, [(1, 1), (2, 1), (2, 2), (2, 2), (4, 2), (3, 2), (3, 2)]);
    assert!(timings.iter().all(|t| t.median_ms > 0.0));
    let mut on_step = |_: &StepReport| {};
    let mut run = settings(MethodName::R3f, 1);
    run.selection = Selection::Last;
    let result = task.run(&run, &mut RunContext::new(&mut on_step)).unwrap();
    assert!(result.steps.iter().all(|s| s.divergence.is_some_and(|d| d > 0.0)));
    // With `selection = "last"` the test sets are evaluated at the last epoch only; validation at every epoch.
    let sets: Vec<usize> = result.epochs.iter().map(|e| e.evals.len()).collect();
    assert_eq!(sets, [1, 4]);
    assert_eq!(result.selected, 1);
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("tram-xl-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn own_folders_with_a_checksum_manifest_are_checked_before_loading() {
    let _rng = serial();
    let f = fixtures();
    let dir = std::env::temp_dir().join(format!("tram-xl-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(f.join("tiny-xlmr")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let with_model = |cfg: &mut CrossLingualConfig| {
        cfg.model = toml::from_str(&format!("kind = \"hugging-face\"\ndir = \"{}\"", dir.display())).unwrap();
    };
    let manifest = |config_sha: &str| {
        std::fs::write(dir.join("SHA256SUMS"), format!("{config_sha}  config.json\n")).unwrap();
    };
    let good = tram_task::kit::assets::sha256_file(&dir.join("config.json")).unwrap();
    manifest(&good);
    let mut cfg = config("");
    with_model(&mut cfg);
    assert!(cfg.build().is_ok(), "the manifest matches");
    manifest(&"0".repeat(64));
    let err = cfg.build().expect_err("a changed file is refused").to_string();
    assert!(err.contains("config.json") && err.contains("the file changed"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_relative_sigma_is_a_multiple_of_the_noised_tensors_rms() {
    use tram_core::Model;
    let _rng = serial();
    let rms = |t: &tch::Tensor| f64::try_from(t.to_kind(tch::Kind::Double).square().mean(tch::Kind::Double).sqrt());
    // On the word embeddings: the (pruned) word table's RMS.
    let task = config("trainable = { top-layers = 2 }").build().unwrap();
    let model = task.model(0, tch::Device::Cpu).unwrap();
    let table = rms(model.prefix().unwrap().word_table()).unwrap();
    let scale = model.noise_scale().unwrap();
    assert!((scale - table).abs() < 1e-6 * table, "{scale} vs {table}");
    // On the cached states σ is multiplied by `cached_noise_scale`: the scale divides by it, so that the noise
    // applied is σ_relative times the cached states' RMS whatever that factor.
    let sigma = |factor: f64| {
        let task =
            config(&format!("trainable = {{ top-layers = 2 }}\nnoise_at = \"cached\"\ncached_noise_scale = {factor}"))
                .build()
                .unwrap();
        let mut run = settings(MethodName::TramX, 0);
        run.optimizer.method = MethodConfig { sigma_relative: Some(0.5), ..MethodConfig::new(MethodName::TramX) };
        run.max_train_batches = Some(1);
        let mut on_step = |_: &StepReport| {};
        task.run(&run, &mut RunContext::new(&mut on_step)).unwrap().noise_sigma.unwrap()
    };
    let (one, two) = (sigma(1.0), sigma(2.0));
    assert!((one - 2.0 * two).abs() < 1e-12 * one && (one - 0.5 * table).abs() > 1e-3 * table, "{one} {two}");
}
