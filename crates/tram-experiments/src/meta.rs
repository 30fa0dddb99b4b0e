//! What produced a result: versions and the git commit, written into every run's `meta.json`.

/// The tch crate the workspace pins (checked against the root Cargo.toml by a test).
pub const TCH_VERSION: &str = "0.24.0";

/// libtorch's version, read from PyTorch's `torch/version.py` by the shared build script.
pub const LIBTORCH_VERSION: &str = match option_env!("TRAM_LIBTORCH_VERSION") {
    Some(v) => v,
    None => "unknown",
};

/// `git rev-parse HEAD`, or "unknown" outside a checkout.
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

/// This machine's host name (what a lock and `meta.json` record).
pub use tram_task::kit::atomic::host;

/// The Slurm job this process runs in: `<array job>_<task>` in a job array, else the job id.
pub fn slurm_job() -> Option<String> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var("SLURM_ARRAY_JOB_ID"), var("SLURM_ARRAY_TASK_ID")) {
        (Some(job), Some(task)) => Some(format!("{job}_{task}")),
        _ => var("SLURM_JOB_ID"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tch_version_is_the_pinned_one() {
        let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("tch = \"={}\"", super::TCH_VERSION)), "update meta::TCH_VERSION");
    }
}
