//! `tram doctor`: what this machine offers the runner — libtorch, CUDA, and every asset group of
//! `tools/assets.sh` with what is present, what is missing and the command that fetches it.

use std::path::PathBuf;

use anyhow::Result;
use tram_task::kit::assets::{assets_dir, ASSETS_COMMAND};

use crate::meta::{LIBTORCH_VERSION, TCH_VERSION};

/// Each asset group (the argument of `tools/assets.sh`) and the files its experiments read.
pub fn asset_groups() -> Vec<(&'static str, Vec<(String, PathBuf)>)> {
    vec![
        ("vision", tram_vision::assets::inventory()),
        ("lm", tram_text::inventory::lm()),
        ("xlingual", tram_text::inventory::xlingual()),
    ]
}

/// The report on the asset groups: one line per asset, then per group what fetches what is missing.
pub fn assets_report(groups: &[(&str, Vec<(String, PathBuf)>)]) -> String {
    let mut out = format!("assets folder: {}\n", assets_dir().display());
    let mut missing_groups = vec![];
    for (group, inventory) in groups {
        let missing = inventory.iter().filter(|(_, path)| !path.exists()).count();
        let state = if missing == 0 { "complete".to_string() } else { format!("{missing} missing") };
        out += &format!("{group} ({} assets, {state}; `{ASSETS_COMMAND} {group}`)\n", inventory.len());
        for (what, path) in inventory {
            let state = if path.exists() { "present" } else { "MISSING" };
            out += &format!("  {what:<36} {state:<8} {}\n", path.display());
        }
        if missing > 0 {
            missing_groups.push(*group);
        }
    }
    if missing_groups.is_empty() {
        out += "every asset group is present\n";
    } else {
        out += &format!("fetch what is missing with `{ASSETS_COMMAND} {}`\n", missing_groups.join(" "));
    }
    out
}

pub fn doctor() -> Result<()> {
    println!("tram {}", env!("CARGO_PKG_VERSION"));
    println!("tch {TCH_VERSION}  libtorch {LIBTORCH_VERSION}");
    println!("CPU threads used by libtorch: {}", tch::get_num_threads());
    let cuda = tch::Cuda::is_available();
    println!(
        "CUDA available: {cuda}  devices: {}  cuDNN: {}",
        tch::Cuda::device_count(),
        tch::Cuda::cudnn_is_available()
    );
    print!("{}", assets_report(&asset_groups()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_is_reported_with_its_command_and_what_is_missing() {
        let groups = asset_groups();
        assert_eq!(groups.iter().map(|g| g.0).collect::<Vec<_>>(), ["vision", "lm", "xlingual"]);
        assert!(groups.iter().all(|g| !g.1.is_empty()));
        let nowhere = std::env::temp_dir().join(format!("tram-doctor-nowhere-{}", std::process::id()));
        let here = std::env::temp_dir();
        let report = assets_report(&[
            ("vision", vec![("weights".into(), here.clone())]),
            ("lm", vec![("corpus".into(), nowhere.clone()), ("model".into(), here)]),
        ]);
        assert!(report.contains("vision (1 assets, complete; `bash tools/assets.sh vision`)"), "{report}");
        assert!(report.contains("lm (2 assets, 1 missing; `bash tools/assets.sh lm`)"), "{report}");
        assert!(report.contains(&format!("MISSING  {}", nowhere.display())), "{report}");
        assert!(report.contains("fetch what is missing with `bash tools/assets.sh lm`"), "{report}");
    }
}
