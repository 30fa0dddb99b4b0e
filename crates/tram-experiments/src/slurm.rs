//! `tram slurm`: an `sbatch --array` script whose tasks each run one shard of the sweep (`tram run --shard K/N`)
//! on a results folder they share. The runs' locks keep any run from being trained twice (a re-queued or
//! re-submitted task finds finished runs finished and resumes interrupted ones from their checkpoints), and
//! `tram tables` builds the tables once the array is done.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::cli::SlurmOptions;

/// Checks every option before anything is written into the script: Slurm's own syntax for `--time` and `--mem`,
/// counts of at least 1, and no character in any value that could end the script's line or a quoted word (a
/// control character such as a newline): the script runs what it says and nothing else.
pub fn validate(opts: &SlurmOptions, profile: &str) -> Result<()> {
    if let Some(time) = opts.time.as_deref().filter(|t| !is_slurm_time(t)) {
        bail!(
            "--time {time:?}: not a Slurm time limit; use minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS \
             (e.g. --time 24:00:00)"
        );
    }
    if let Some(mem) = &opts.mem {
        if !is_slurm_memory(mem) {
            bail!(
                "--mem {mem:?}: not a Slurm memory size; use a whole number with an optional unit K, M, G or T \
                 (e.g. --mem 32G)"
            );
        }
    }
    if let Some(p) = &opts.partition {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || "_-.,".contains(c)) {
            bail!("--partition {p:?}: a partition name (or a comma-separated list) of letters, digits, `_`, `-`, `.`");
        }
    }
    for (name, n) in [("--gpus-per-task", opts.gpus_per_task), ("--cpus-per-task", Some(opts.cpus_per_task))] {
        if n == Some(0) {
            bail!("{name} 0: a task needs at least 1");
        }
    }
    for extra in &opts.sbatch {
        if !extra.starts_with('-') || extra.chars().any(char::is_whitespace) {
            bail!("--sbatch {extra:?}: one sbatch option without spaces, e.g. --sbatch=--account=proj");
        }
    }
    let texts = [("--profile", profile.to_string()), ("--device", opts.sweep.device.clone())]
        .into_iter()
        .chain(opts.sweep.overrides.iter().map(|o| ("--set", o.clone())))
        .chain(opts.sbatch.iter().map(|s| ("--sbatch", s.clone())))
        .chain(
            [&opts.sweep.experiment, &opts.sweep.results, &opts.sweep.paper]
                .map(|p| ("a path", p.display().to_string())),
        );
    for (what, text) in texts {
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            bail!("{what} {text:?}: holds the control character {c:?}, which would end a line of the script");
        }
    }
    Ok(())
}

/// Slurm's time formats: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S` (whole numbers).
fn is_slurm_time(t: &str) -> bool {
    let numbers = |s: &str, max: usize| {
        let parts: Vec<&str> = s.split(':').collect();
        parts.len() <= max && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    match t.split_once('-') {
        Some((days, rest)) => numbers(days, 1) && numbers(rest, 3),
        None => numbers(t, 3),
    }
}

/// Slurm's memory sizes: a whole number, optionally followed by K, M, G or T.
fn is_slurm_memory(m: &str) -> bool {
    let digits = m.strip_suffix(['K', 'M', 'G', 'T']).unwrap_or(m);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `text` as one shell word.
fn quote(text: &str) -> String {
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-=:,+@%".contains(c)) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))
}

/// The paths a script needs, made absolute (array tasks start in the submission folder, but may run anywhere).
pub struct ScriptPaths {
    pub tram: PathBuf,
    pub workdir: PathBuf,
    pub experiment: PathBuf,
    pub results: PathBuf,
    pub paper: PathBuf,
}

/// The script text for a sweep of `runs` runs of the profile `profile`, named `name` (`<experiment>-<profile>`).
pub fn script(opts: &SlurmOptions, profile: &str, name: &str, runs: usize, paths: &ScriptPaths) -> Result<String> {
    validate(opts, profile)?;
    for path in [&paths.tram, &paths.workdir, &paths.experiment, &paths.results, &paths.paper] {
        let text = path.display().to_string();
        if let Some(c) = text.chars().find(|c| c.is_control()) {
            bail!("the path {text:?} holds the control character {c:?}, which would end a line of the script");
        }
    }
    let tasks = opts.tasks.unwrap_or(runs);
    if tasks == 0 {
        bail!("--tasks must be at least 1");
    }
    if let Some(0) = opts.parallel {
        bail!("--parallel must be at least 1");
    }
    let tasks = tasks.min(runs);
    let logs = paths.results.join("slurm");
    let mut s = String::from("#!/usr/bin/env bash\n");
    s += &format!(
        "# Written by `tram slurm` for {} (profile {}): {runs} runs over {tasks} array tasks.\n",
        paths.experiment.display(),
        profile
    );
    s += "# Submit with `sbatch <this file>`. Each task trains its share of the runs (--shard K/N) in the shared results\n";
    s += "# folder; a pre-empted task is re-queued and resumes its run from the last checkpoint. Re-submitting one\n";
    s += "# task (`sbatch --array=K <this file>`) redoes only what that share still lacks. Once the array is done:\n";
    s += &format!(
        "#   {} tables {} --profile {} --results {}{}\n",
        quote(&paths.tram.to_string_lossy()),
        quote(&paths.experiment.to_string_lossy()),
        quote(profile),
        quote(&paths.results.to_string_lossy()),
        opts.sweep.overrides.iter().map(|o| format!(" --set {}", quote(o))).collect::<String>()
    );
    s += "# (or submit that with `sbatch --dependency=afterany:<array job id> --wrap '...'`).\n";
    s += &format!("#SBATCH --job-name=tram-{name}\n");
    let throttle = opts.parallel.map_or_else(String::new, |p| format!("%{p}"));
    s += &format!("#SBATCH --array=0-{}{throttle}\n", tasks - 1);
    s += &format!("#SBATCH --time={}\n", opts.time.as_deref().unwrap_or("24:00:00"));
    s += &format!("#SBATCH --cpus-per-task={}\n", opts.cpus_per_task);
    if let Some(g) = opts.gpus_per_task {
        s += &format!("#SBATCH --gpus-per-task={g}\n");
    }
    if let Some(m) = &opts.mem {
        s += &format!("#SBATCH --mem={m}\n");
    }
    if let Some(p) = &opts.partition {
        s += &format!("#SBATCH --partition={p}\n");
    }
    for extra in &opts.sbatch {
        s += &format!("#SBATCH {extra}\n");
    }
    s += &format!("#SBATCH --output={}\n", logs.join(format!("{name}-%A_%a.out")).display());
    s += "#SBATCH --requeue\n#SBATCH --open-mode=append\n";
    s += "set -euo pipefail\n";
    s += &format!("cd {}\n", quote(&paths.workdir.to_string_lossy()));
    // N is written out rather than read from SLURM_ARRAY_TASK_COUNT, so that a task re-submitted alone keeps its share.
    s += &format!(
        "exec {} run {} --profile {} --results {} --paper {} --device {} --shard \"${{SLURM_ARRAY_TASK_ID}}/{tasks}\"",
        quote(&paths.tram.to_string_lossy()),
        quote(&paths.experiment.to_string_lossy()),
        quote(profile),
        quote(&paths.results.to_string_lossy()),
        quote(&paths.paper.to_string_lossy()),
        quote(&opts.sweep.device)
    );
    for o in &opts.sweep.overrides {
        s += &format!(" \\\n    --set {}", quote(o));
    }
    s += "\n";
    Ok(s)
}

/// How many times the plan's training time a planned `--time` allows. The CPU rehearsals' steps took 2.4 times the
/// plan's time at the measured matmul rate on an idle AMD EPYC and 3.3–3.4 times on a shared Intel Xeon
/// (docs/paper-scale.md), and evaluation is not planned: four times covers the slowest measured with room for it.
pub const PLAN_TIME_MARGIN: f64 = 4.0;

/// Slurm's `--time` for `seconds` of planned work with the margin of [`SlurmOptions::time`]:
/// [`PLAN_TIME_MARGIN`] times the plan, at least an hour, in whole hours (`D-HH:00:00`).
pub fn time_limit(seconds: f64) -> String {
    let hours = ((PLAN_TIME_MARGIN * seconds) / 3600.0).ceil().max(1.0) as u64;
    format!("{}-{:02}:00:00", hours / 24, hours % 24)
}

/// Writes the script (executable) and the folder its tasks' logs go to; returns the script's path.
pub fn write_script(opts: &SlurmOptions, experiment_name: &str, profile: &str, runs: usize) -> Result<PathBuf> {
    let results = absolute(&opts.sweep.results)?;
    let paths = ScriptPaths {
        tram: std::env::current_exe().context("finding the tram binary")?,
        workdir: std::env::current_dir().context("reading the current folder")?,
        experiment: absolute(&opts.sweep.experiment)?,
        results: results.clone(),
        paper: absolute(&opts.sweep.paper)?,
    };
    let name = format!("{experiment_name}-{profile}");
    let text = script(opts, profile, &name, runs, &paths)?;
    let logs = results.join("slurm");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let out = match &opts.out {
        Some(o) => o.clone(),
        None => logs.join(format!("{name}.sbatch")),
    };
    crate::atomic::write_bytes(&out, text.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("making {} executable", out.display()))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::SweepArgs;

    fn opts() -> SlurmOptions {
        SlurmOptions {
            sweep: SweepArgs {
                experiment: "experiments/table3.toml".into(),
                profile: Some("paper".into()),
                overrides: vec!["task.model.dir=/data/vit b".into()],
                results: "results".into(),
                paper: "results/paper".into(),
                device: "auto".into(),
            },
            tasks: None,
            parallel: Some(8),
            gpus_per_task: Some(1),
            cpus_per_task: 8,
            mem: None,
            time: Some("24:00:00".into()),
            throughput: None,
            partition: None,
            sbatch: vec!["--account=proj".into()],
            out: None,
        }
    }

    fn paths() -> ScriptPaths {
        ScriptPaths {
            tram: "/opt/tram/bin/tram".into(),
            workdir: "/home/u/tram".into(),
            experiment: "/home/u/tram/experiments/table3.toml".into(),
            results: "/shared/results".into(),
            paper: "/home/u/tram/results/paper".into(),
        }
    }

    #[test]
    fn the_script_is_an_array_of_shards_over_one_results_folder() {
        let text = script(&opts(), "paper", "table3-paper", 40, &paths()).unwrap();
        for line in [
            "#SBATCH --array=0-39%8",
            "#SBATCH --gpus-per-task=1",
            "#SBATCH --cpus-per-task=8",
            "#SBATCH --account=proj",
            "#SBATCH --requeue",
            "#SBATCH --output=/shared/results/slurm/table3-paper-%A_%a.out",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        assert!(text.contains("--results /shared/results") && text.contains("--shard \"${SLURM_ARRAY_TASK_ID}/40\""));
        assert!(text.contains("--set 'task.model.dir=/data/vit b'"), "a value with a space stays one word:\n{text}");
        let few = SlurmOptions { tasks: Some(4), parallel: None, ..opts() };
        let text = script(&few, "paper", "table3-paper", 40, &paths()).unwrap();
        assert!(text.contains("#SBATCH --array=0-3\n") && text.contains("/4\""));
        let more = SlurmOptions { tasks: Some(100), ..opts() };
        assert!(script(&more, "paper", "t", 6, &paths()).unwrap().contains("--array=0-5%8"), "no task without a run");
        assert!(script(&SlurmOptions { tasks: Some(0), ..opts() }, "paper", "t", 6, &paths()).is_err());
    }

    #[test]
    fn every_option_is_checked_and_nothing_can_end_a_line_of_the_script() {
        let refused = |o: SlurmOptions, what: &str| {
            let err =
                script(&o, "paper", "t", 6, &paths()).err().unwrap_or_else(|| panic!("{what}: accepted")).to_string();
            assert!(err.contains(what), "{what}: {err}");
        };
        let sweep = |overrides: Vec<String>| SweepArgs { overrides, ..opts().sweep };
        refused(SlurmOptions { partition: Some("gpu\nrm -rf ~".into()), ..opts() }, "--partition");
        refused(SlurmOptions { time: Some("1:00\nrm -rf ~".into()), ..opts() }, "--time");
        refused(SlurmOptions { time: Some("bogus".into()), ..opts() }, "not a Slurm time limit");
        refused(SlurmOptions { mem: Some("lots".into()), ..opts() }, "not a Slurm memory size");
        refused(SlurmOptions { gpus_per_task: Some(0), ..opts() }, "--gpus-per-task 0");
        refused(SlurmOptions { cpus_per_task: 0, ..opts() }, "--cpus-per-task 0");
        refused(SlurmOptions { sbatch: vec!["--account=a\nrm -rf ~".into()], ..opts() }, "--sbatch");
        refused(SlurmOptions { sweep: sweep(vec!["epochs=1\nrm -rf ~".into()]), ..opts() }, "control character");
        for time in ["90", "30:00", "24:00:00", "2-00", "2-12:00", "1-00:00:00"] {
            assert!(
                script(&SlurmOptions { time: Some(time.into()), ..opts() }, "paper", "t", 6, &paths()).is_ok(),
                "{time}"
            );
        }
        let ok = SlurmOptions { mem: Some("32G".into()), partition: Some("gpu,gpu-large".into()), ..opts() };
        let text = script(&ok, "paper", "t", 6, &paths()).unwrap();
        assert!(text.contains("#SBATCH --mem=32G\n#SBATCH --partition=gpu,gpu-large\n"), "{text}");
        // A quote in a value stays inside its word.
        let quoted = SlurmOptions { sweep: sweep(vec!["task.model.dir=/data/it's".into()]), ..opts() };
        assert!(script(&quoted, "paper", "t", 6, &paths()).unwrap().contains("--set 'task.model.dir=/data/it'\\''s'"));
    }

    #[test]
    fn the_planned_time_limit_is_four_times_the_plan_in_whole_hours() {
        assert_eq!(time_limit(60.0), "0-01:00:00");
        assert_eq!(time_limit(3.4 * 3600.0), "0-14:00:00");
        assert_eq!(time_limit(13.0 * 3600.0), "2-04:00:00");
        // The slowest rehearsal measured, 3.4 times the plan, fits inside every planned limit.
        for seconds in [100.0, 3_000.0, 3.4 * 3600.0, 13.0 * 3600.0, 200.0 * 3600.0] {
            let limit = time_limit(seconds);
            let (days, rest) = limit.split_once('-').unwrap();
            let hours: f64 = days.parse::<f64>().unwrap() * 24.0 + rest[..2].parse::<f64>().unwrap();
            assert!(hours * 3600.0 >= 3.4 * seconds, "{seconds} s planned: {limit}");
        }
    }
}
