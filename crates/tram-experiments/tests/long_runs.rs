//! The `tram` binary on the quick profile of Table 3 (needs `bash tools/assets.sh vision`): a run SIGKILLed in the
//! middle of an epoch (at an exact step, [`KILL_AT_STEP`]: nothing here depends on timing) resumes and ends as an
//! uninterrupted run; concurrent shards and concurrent sweeps on one
//! results folder train every run once and give the single process's tables; problems stop a sweep before its
//! first step.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use tram_experiments::sweep::KILL_AT_STEP;

// One `tram` process (or group) at a time: the machine's cores are the test's budget.
use tram_core::testing::serial;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tram-long-runs-{name}-{}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    dir
}

/// The binary under test, linked (or copied) once: a build of another checkout into a shared target folder may
/// replace `target/debug/tram` while these tests run.
fn binary() -> &'static Path {
    static BINARY: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BINARY.get_or_init(|| {
        let built = Path::new(env!("CARGO_BIN_EXE_tram"));
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // Links left by earlier test processes go (a link holds a replaced binary's disk space).
        for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("tram-under-test-") {
                if !Path::new("/proc").join(pid).exists() {
                    std::fs::remove_file(entry.path()).ok();
                }
            }
        }
        let mine = tmp.join(format!("tram-under-test-{}", std::process::id()));
        std::fs::hard_link(built, &mine).or_else(|_| std::fs::copy(built, &mine).map(|_| ())).unwrap();
        mine
    })
}

fn tram(args: &[&str]) -> Command {
    let mut c = Command::new(binary());
    c.current_dir(repo()).args(args).env("RUST_LOG", "info");
    c
}

fn spawn(args: &[&str]) -> Child {
    tram(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the tram binary starts")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(o: Output) -> String {
    let t = text(&o);
    assert!(o.status.success(), "tram failed:\n{t}");
    t
}

/// `tram run` of the quick Table 3 profile into `results`, with `extra` arguments.
fn run_args<'a>(results: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["run", "experiments/table3.toml", "--profile", "quick", "--device", "cpu", "--results", results];
    v.extend_from_slice(extra);
    v
}

fn runs(results: &Path) -> PathBuf {
    results.join("runs/table3/quick")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The long CSV without wall-clock rows, which no two processes share.
fn long_without_times(results: &Path) -> String {
    read(&results.join("table3-quick-long.csv"))
        .lines()
        .filter(|l| !l.contains("seconds"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn summary_without_times(path: &Path) -> serde_json::Value {
    let mut v: serde_json::Value = serde_json::from_str(&read(path)).unwrap();
    // The time and the process's resident memory are the machine's measurements, not the run's outcome.
    for measured in ["train_seconds", "peak_resident_bytes"] {
        v.as_object_mut().unwrap().remove(measured);
    }
    v
}

fn attempts(run: &Path) -> Vec<serde_json::Value> {
    serde_json::from_str(&read(&run.join("attempts.json"))).unwrap()
}

#[test]
fn a_run_killed_in_the_middle_of_an_epoch_resumes_and_ends_as_if_never_killed() {
    let _g = serial();
    let (whole, killed) = (scratch("whole"), scratch("killed"));
    let (whole_s, killed_s) = (whole.to_str().unwrap(), killed.to_str().unwrap());
    // SAM, two epochs of 6 steps, a checkpoint after every step.
    let sweep = ["--set", "methods=[{name=\"sam\"}]", "--set", "epochs=2", "--set", "checkpoint_every=1"];
    ok(tram(&run_args(whole_s, &sweep)).output().unwrap());

    // SIGKILLed when step 8 (0-based, the third of epoch 2) is reported, after the checkpoint of 8 steps.
    let o = tram(&run_args(killed_s, &sweep)).env(KILL_AT_STEP, "8").output().unwrap();
    assert_eq!(o.status.signal(), Some(9), "killed: {}", text(&o));
    let run = runs(&killed).join("sam-s0");
    assert!(run.join("checkpoint/step-00000008").exists() && !run.join("summary.json").exists());

    let log = ok(tram(&run_args(killed_s, &sweep)).output().unwrap());
    assert!(log.contains("which stopped while training it"), "the dead holder is named:\n{log}");
    assert_eq!(attempts(&run)[1]["resumed_from_step"].as_u64(), Some(8), "resumed inside epoch 2");
    assert!(log.contains("resuming from its checkpoint after step 8"), "{log}");

    let whole_run = runs(&whole).join("sam-s0");
    for file in ["steps.csv", "evals.csv", "examples.csv"] {
        assert_eq!(read(&run.join(file)), read(&whole_run.join(file)), "{file} differs after the resume");
    }
    assert_eq!(
        summary_without_times(&run.join("summary.json")),
        summary_without_times(&whole_run.join("summary.json"))
    );
    assert!(!run.join("checkpoint").exists(), "the checkpoint goes once the results are written");
    assert_eq!(attempts(&run).len(), 2);
    std::fs::remove_dir_all(&whole).ok();
    std::fs::remove_dir_all(&killed).ok();
}

#[test]
fn shards_and_sweeps_sharing_a_results_folder_train_each_run_once() {
    let _g = serial();
    let tiny = ["--set", "max_train_batches=2"];
    let (single, sharded, twice) = (scratch("single"), scratch("sharded"), scratch("twice"));
    let (single_s, sharded_s, twice_s) = (single.to_str().unwrap(), sharded.to_str().unwrap(), twice.to_str().unwrap());
    ok(tram(&run_args(single_s, &tiny)).output().unwrap());
    let tables = |results: &str| {
        let mut v = vec!["tables", "experiments/table3.toml", "--profile", "quick", "--results", results];
        v.extend_from_slice(&tiny);
        tram(&v).output().unwrap()
    };

    // One shard alone: its share is done, the other runs are listed as missing, and its table says so.
    let first = ok(tram(&run_args(sharded_s, &[&tiny[..], &["--shard", "0/3"]].concat())).output().unwrap());
    assert!(first.contains("2 of 4 runs have no results yet") && first.contains("sam-s0: not started"), "{first}");
    let partial = ok(tables(sharded_s));
    assert!(partial.contains("tram-prev-s0: not started") && partial.contains("over the 2 finished runs"), "{partial}");
    // The two other shards at once, then the tables.
    let rest: Vec<Child> =
        ["1/3", "2/3"].iter().map(|s| spawn(&run_args(sharded_s, &[&tiny[..], &["--shard", s]].concat()))).collect();
    for c in rest {
        ok(c.wait_with_output().unwrap());
    }
    assert!(ok(tables(sharded_s)).contains("all 4 runs are finished"));
    assert_eq!(read(&sharded.join("table3-quick.csv")), read(&single.join("table3-quick.csv")));
    assert_eq!(long_without_times(&sharded), long_without_times(&single));

    // Two whole sweeps at once: each claims what is free, waits for the rest, and writes the full table.
    let both: Vec<Child> = (0..2).map(|_| spawn(&run_args(twice_s, &tiny))).collect();
    for c in both {
        let log = ok(c.wait_with_output().unwrap());
        assert!(log.contains("wrote") && log.contains("table3-quick.csv"), "{log}");
    }
    assert_eq!(read(&twice.join("table3-quick.csv")), read(&single.join("table3-quick.csv")));
    for results in [&sharded, &twice] {
        for entry in std::fs::read_dir(runs(results)).unwrap() {
            let run = entry.unwrap().path();
            if run.is_dir() {
                assert_eq!(attempts(&run).len(), 1, "{} was trained more than once", run.display());
            }
        }
    }
    for d in [single, sharded, twice] {
        std::fs::remove_dir_all(d).ok();
    }
}

#[test]
fn a_profile_that_extends_another_reuses_its_finished_runs() {
    let _g = serial();
    let results = scratch("reuse");
    let r = results.to_str().unwrap();
    let tiny = ["--set", "max_train_batches=2", "--set", "methods=[{name=\"base\"},{name=\"sam\"}]"];
    ok(tram(&run_args(r, &tiny)).output().unwrap());
    // The same experiment with a profile that adds a seed to quick.
    let toml = results.join("table3.toml");
    let text = read(&repo().join("experiments/table3.toml"));
    std::fs::write(&toml, format!("{text}\n[profiles.more]\nextends = \"quick\"\nseeds = [0, 1]\n")).unwrap();
    let args =
        [&["run", toml.to_str().unwrap(), "--profile", "more", "--device", "cpu", "--results", r][..], &tiny].concat();
    let log = ok(tram(&args).output().unwrap());
    assert_eq!(log.matches("reused the finished run").count(), 2, "base-s0 and sam-s0 are quick's: {log}");
    assert_eq!(log.matches(": training").count(), 2, "base-s1 and sam-s1 are new: {log}");
    for id in ["base-s0", "sam-s0"] {
        let (quick, more) = (runs(&results).join(id), results.join("runs/table3/more").join(id));
        assert_eq!(read(&more.join("summary.json")), read(&quick.join("summary.json")));
        assert_eq!(read(&more.join("examples.csv")), read(&quick.join("examples.csv")));
        assert!(read(&more.join("reused-from.txt")).contains("runs/table3/quick"));
    }
    // Started again, every run of the profile is finished.
    assert!(ok(tram(&args).output().unwrap()).contains("4 finished earlier, 0 to do"));
    std::fs::remove_dir_all(&results).ok();
}

#[test]
fn problems_stop_a_sweep_before_its_first_step() {
    let _g = serial();
    let results = scratch("problems");
    let r = results.to_str().unwrap();
    let fails = |args: Vec<&str>| {
        let o = tram(&args).output().unwrap();
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!runs(&results).exists(), "{args:?} started a run");
        text(&o)
    };
    let blocked = format!("{r}/file");
    std::fs::create_dir_all(&results).unwrap();
    std::fs::write(&blocked, b"").unwrap();
    let err = fails(run_args(&blocked, &[]));
    assert!(err.contains("creating the results folder") && err.contains(&blocked), "{err}");
    let err = fails(run_args(r, &["--set", "task.data.test_fraction=0.0"]));
    assert!(err.contains("holds no image"), "{err}");
    let err = fails(run_args(r, &["--set", "schedule.warmup_steps=100"]));
    assert!(err.contains("run base-s0") && err.contains("warmup"), "the first run's schedule is named: {err}");
    let err = fails(run_args(r, &["--shard", "3/3"]));
    assert!(err.contains("expected K/N"), "{err}");
    let o = tram(&["slurm", "experiments/table3.toml", "--profile", "quick", "--results", r, "--tasks", "4"])
        .output()
        .unwrap();
    let script = results.join("slurm/table3-quick.sbatch");
    assert!(o.status.success() && read(&script).contains("#SBATCH --array=0-3"), "{}", text(&o));
    std::fs::remove_dir_all(&results).ok();
}

#[test]
fn csv_tools_name_the_file_and_the_problem() {
    let dir = scratch("csv");
    std::fs::create_dir_all(&dir).unwrap();
    let head = "experiment,profile,run_id,method,seed,set,domain,metric,value";
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{body}\n")).unwrap();
        p.to_str().unwrap().to_string()
    };
    let good = write("good.csv", &format!("{head}\nt,q,sam-s0,sam,0,g,in-domain,accuracy,0.5"));
    let cases = [
        (
            write("short.csv", &format!("{head}\nt,q,sam-s0,sam,0,g")),
            "line 2: the `value` field is empty (a short row?)",
        ),
        (
            write("text.csv", &format!("{head}\nt,q,sam-s0,sam,0,g,in-domain,accuracy,high")),
            "value `high` is not a number",
        ),
        (write("wide.csv", "method,seeds,google (in-domain)\nSGD,3,68.50±5.61"), "no column `experiment`"),
    ];
    for (path, problem) in &cases {
        let out = text(&tram(&["compare", path]).output().unwrap());
        assert!(out.contains(path.as_str()) && out.contains(problem), "{out}");
    }
    let empty = write("expected.csv", &format!("{head},tolerance,relative"));
    let o = tram(&["check", &good, &empty]).output().unwrap();
    assert!(!o.status.success() && text(&o).contains("holds no expectation"), "{}", text(&o));
    std::fs::remove_dir_all(&dir).ok();
}
