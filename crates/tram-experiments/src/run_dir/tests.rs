//! The run folder's states: finished, unfinished, changed, damaged, and what a sweep does with each.

use super::*;
// Tests that take run locks hold the binary's lock (see lock.rs's tests: a process spawned meanwhile would
// hold a copy of a lock file's descriptor).
use tram_core::testing::serial;
use tram_core::{BaseConfig, LrSchedule, MethodConfig, MethodName, OptimizerConfig};

fn config(epochs: usize, workers: usize) -> RunConfig {
    let opt = OptimizerConfig::new(MethodConfig::new(MethodName::Sam), BaseConfig::sgd(), LrSchedule::constant(0.1));
    let task = tram_vision::transfer::TransferConfig { workers, ..tram_vision::transfer::TransferConfig::embedded() };
    RunConfig { run: RunSettings::new(opt, epochs, 32), task: TaskSpec::ImageTransfer(task) }
}

fn summary(hash: &str) -> Summary {
    Summary { config_hash: hash.into(), ..Summary::fixture("sam", 0, tram_task::Metric::Accuracy, vec![]) }
}

#[test]
fn identity_ignores_device_and_threads_but_not_settings() {
    let _g = serial();
    let a = config(2, 1);
    let mut b = config(2, 4);
    b.run.device = tram_task::DeviceChoice::Cpu;
    assert_eq!(a.hash(), b.hash(), "device choice and decoding threads cannot change a result");
    let c = config(3, 1);
    assert_ne!(a.hash(), c.hash());
    assert_eq!(differences(&a.identity(), &c.identity(), 8), ["run.epochs: 2 → 3"]);
}

#[test]
fn finished_runs_are_skipped_and_never_silently_replaced() {
    let _g = serial();
    let root = std::env::temp_dir().join(format!("tram-runs-{}", std::process::id()));
    let dir = RunDir::new(&root, "table3", "quick", "sam-s0");
    let cfg = config(2, 1);
    assert!(matches!(dir.state(&cfg, false).unwrap(), RunState::Todo), "no folder: to do");
    std::fs::create_dir_all(&dir.dir).unwrap();
    std::fs::write(dir.dir.join("steps.csv"), "step\n0\n").unwrap();
    assert!(matches!(dir.state(&cfg, false).unwrap(), RunState::Todo), "no summary: interrupted, redo");
    atomic::write_bytes(&dir.dir.join("config.resolved.toml"), toml::to_string(&cfg).unwrap().as_bytes()).unwrap();
    json::write(&dir.dir.join("summary.json"), &summary(&cfg.hash())).unwrap();
    assert!(matches!(dir.state(&cfg, false).unwrap(), RunState::Done), "same identity: skip");
    let err = dir.state(&config(3, 1), false).err().expect("a changed config must not be overwritten").to_string();
    assert!(err.contains("--fresh") && err.contains("run.epochs: 2 → 3"), "{err}");
    assert!(dir.dir.join("summary.json").exists(), "the finished run is untouched");
    assert!(matches!(dir.state(&config(3, 1), true).unwrap(), RunState::Todo));
    let kept: Vec<_> = std::fs::read_dir(dir.dir.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(kept.iter().any(|n| n.starts_with("sam-s0.old-")), "moved aside, not deleted: {kept:?}");
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn an_empty_summary_says_what_to_do_and_fresh_redoes_it() {
    let _g = serial();
    let root = std::env::temp_dir().join(format!("tram-runs-empty-{}", std::process::id()));
    let dir = RunDir::new(&root, "table3", "quick", "sam-s0");
    std::fs::create_dir_all(&dir.dir).unwrap();
    std::fs::write(dir.dir.join("summary.json"), b"").unwrap();
    let err = dir.state(&config(2, 1), false).err().unwrap().to_string();
    assert!(err.contains("summary.json") && err.contains("--fresh"), "{err}");
    assert!(matches!(dir.state(&config(2, 1), true).unwrap(), RunState::Todo));
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn an_interrupted_run_resumes_only_under_its_own_identity() {
    let _g = serial();
    let root = std::env::temp_dir().join(format!("tram-runs-unfinished-{}", std::process::id()));
    let dir = RunDir::new(&root, "table3", "quick", "sam-s0");
    let me = crate::lock::Holder::me();
    dir.begin(&config(2, 1), &me, None).unwrap();
    assert_eq!(dir.describe_unfinished().unwrap(), "interrupted before its first checkpoint");
    fake_checkpoint(&dir, 3, None);
    assert!(dir.describe_unfinished().unwrap().contains("interrupted after step 3"));
    assert!(matches!(dir.state(&config(2, 4), false).unwrap(), RunState::Todo), "threads: same identity, resume");
    let err = dir.state(&config(3, 1), false).err().expect("another identity must not resume").to_string();
    assert!(err.contains("unfinished run of another configuration") && err.contains("run.epochs: 2 → 3"), "{err}");
    assert!(err.contains("--fresh"), "{err}");
    assert!(matches!(dir.state(&config(3, 1), true).unwrap(), RunState::Todo));
    assert!(!dir.dir.exists(), "moved aside");
    std::fs::remove_dir_all(&root).ok();
}

/// A checkpoint folder as tram-task writes one: its files, the identity it was trained under, their checksums.
fn fake_checkpoint(dir: &RunDir, step: u64, identity: Option<&toml::Value>) -> PathBuf {
    let folder = dir.dir.join(CHECKPOINT).join(format!("step-{step:08}"));
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("state.safetensors"), vec![7u8; 4096]).unwrap();
    let mut files = vec!["state.safetensors"];
    if let Some(identity) = identity {
        std::fs::write(folder.join("identity.toml"), toml::to_string(identity).unwrap()).unwrap();
        files.push("identity.toml");
    }
    tram_task::kit::checksum::write_list(&folder, "SHA256SUMS", &files).unwrap();
    folder
}

#[test]
fn a_checkpoint_is_judged_by_its_checksums_and_its_own_identity() {
    let _g = serial();
    let root = std::env::temp_dir().join(format!("tram-runs-checked-{}", std::process::id()));
    let dir = RunDir::new(&root, "table3", "quick", "sam-s0");
    let me = crate::lock::Holder::me();
    dir.begin(&config(2, 1), &me, None).unwrap();
    let folder = fake_checkpoint(&dir, 3, Some(&config(2, 1).identity()));
    assert!(matches!(dir.state(&config(2, 1), false).unwrap(), RunState::Todo), "its own identity: resume");
    // Whatever config.resolved.toml says (garbled here, or deleted), the checkpoint's identity decides.
    std::fs::write(dir.dir.join("config.resolved.toml"), b"[run\n").unwrap();
    let err = dir.state(&config(3, 1), false).err().expect("another identity must not resume").to_string();
    assert!(err.contains("unfinished run of another configuration") && err.contains("run.epochs: 2 → 3"), "{err}");
    std::fs::remove_file(dir.dir.join("config.resolved.toml")).unwrap();
    assert!(dir.state(&config(3, 1), false).is_err(), "deleted config.resolved.toml: still refused");
    // A zeroed block in the state: named, with what to do; --fresh moves the run aside.
    std::fs::write(folder.join("state.safetensors"), vec![0u8; 4096]).unwrap();
    let err = dir.state(&config(2, 1), false).err().expect("a damaged checkpoint must not resume").to_string();
    assert!(err.contains("state.safetensors") && err.contains("the file changed since"), "{err}");
    assert!(err.contains("pass --fresh to move its folder aside"), "{err}");
    assert!(matches!(dir.state(&config(2, 1), true).unwrap(), RunState::Todo));
    assert!(!dir.dir.exists(), "moved aside");
    // A garbled attempts.json: named, and --fresh moves it aside too.
    dir.begin(&config(2, 1), &me, None).unwrap();
    std::fs::write(dir.dir.join(ATTEMPTS), b"[{").unwrap();
    let err = dir.state(&config(2, 1), false).err().expect("damaged attempts.json").to_string();
    assert!(err.contains("attempts.json") && err.contains("--fresh"), "{err}");
    assert!(matches!(dir.state(&config(2, 1), true).unwrap(), RunState::Todo));
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn saved_weights_that_changed_since_they_were_written_are_named() {
    let _g = serial();
    let root = std::env::temp_dir().join(format!("tram-runs-weights-{}", std::process::id()));
    let dir = RunDir::new(&root, "table5", "quick", "sam-s0");
    std::fs::create_dir_all(&dir.dir).unwrap();
    let weights = dir.dir.join(WEIGHTS);
    std::fs::write(&weights, vec![3u8; 1 << 16]).unwrap();
    assert!(dir.damaged_weights().is_none(), "no checksum (written before checksums): nothing to check");
    tram_task::kit::checksum::write_sidecar(&weights).unwrap();
    assert!(dir.damaged_weights().is_none());
    let mut bytes = std::fs::read(&weights).unwrap();
    bytes[1024..2048].fill(0);
    std::fs::write(&weights, bytes).unwrap();
    let (file, why) = dir.damaged_weights().expect("damaged");
    assert!(file == weights && why.contains("the file changed since"), "{why}");
    // A finished run with damaged weights is not finished: named, and --fresh moves it aside to redo it.
    let cfg = config(2, 1);
    json::write(&dir.dir.join("summary.json"), &summary(&cfg.hash())).unwrap();
    let err = dir.state(&cfg, false).err().expect("damaged weights").to_string();
    assert!(err.contains("model.safetensors: sha256") && err.contains("pass --fresh"), "{err}");
    assert!(matches!(dir.state(&cfg, true).unwrap(), RunState::Todo) && !dir.dir.exists());
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn a_claimed_run_loses_what_killed_writers_left_and_records_each_attempt() {
    let _g = serial();
    let root = std::env::temp_dir().join(format!("tram-runs-begin-{}", std::process::id()));
    let dir = RunDir::new(&root, "table3", "quick", "sam-s0");
    std::fs::create_dir_all(dir.dir.join(CHECKPOINT).join(".step-00000002.tmp-99")).unwrap();
    std::fs::write(dir.dir.join(".evals.csv.tmp-123"), b"half").unwrap();
    std::fs::write(dir.dir.join("steps.csv"), b"kept").unwrap();
    let me = crate::lock::Holder::me();
    dir.begin(&config(2, 1), &me, None).unwrap();
    dir.begin(&config(2, 1), &me, Some(40)).unwrap();
    assert!(!dir.dir.join(".evals.csv.tmp-123").exists() && dir.dir.join("steps.csv").exists());
    assert_eq!(std::fs::read_dir(dir.dir.join(CHECKPOINT)).unwrap().count(), 0);
    let attempts = dir.attempts().unwrap();
    assert_eq!(attempts.iter().map(|a| a.resumed_from_step).collect::<Vec<_>>(), [None, Some(40)]);
    assert!(attempts.iter().all(|a| a.pid == std::process::id() && a.finished_unix_s.is_none()));
    std::fs::remove_dir_all(&root).ok();
}

#[test]
fn moving_aside_a_run_another_process_trains_is_refused() {
    let _g = serial();
    let root = std::env::temp_dir().join(format!("tram-runs-busy-{}", std::process::id()));
    let dir = RunDir::new(&root, "table3", "quick", "sam-s0");
    std::fs::create_dir_all(&dir.dir).unwrap();
    std::fs::write(dir.dir.join("summary.json"), b"").unwrap();
    let Claim::Claimed(mut lock, _) = dir.try_claim().unwrap() else { panic!("free") };
    lock.training().unwrap();
    let err = dir.state(&config(2, 1), true).err().expect("busy").to_string();
    assert!(err.contains("is being trained by pid"), "{err}");
    assert!(dir.describe_unfinished().unwrap().starts_with("being trained by pid"));
    drop(lock);
    assert!(matches!(dir.state(&config(2, 1), true).unwrap(), RunState::Todo));
    std::fs::remove_dir_all(&root).ok();
}
