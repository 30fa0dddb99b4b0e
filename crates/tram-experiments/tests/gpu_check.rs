//! `tram gpu-check` on a machine without CUDA: one line, a failing exit status, and nothing written.

use std::process::Command;

#[test]
fn without_cuda_it_says_so_in_one_line_and_writes_nothing() {
    if tch::Cuda::is_available() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tram-gpu-check-{}", std::process::id()));
    let out = dir.join("results/gpu-check.csv");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let output = Command::new(env!("CARGO_BIN_EXE_tram"))
        .current_dir(root)
        .args(["gpu-check", "experiments/table4.toml", "--profile", "paper", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.contains("no CUDA device"), "{text}");
    assert!(!dir.exists(), "nothing may be written");
}
