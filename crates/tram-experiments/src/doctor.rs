//! `tram doctor`: what this machine offers the runner.

use anyhow::Result;

use crate::meta::{LIBTORCH_VERSION, TCH_VERSION};

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
    println!("assets folder: {}", tram_task::assets::assets_dir().display());
    for (group, inventory) in [("vision", tram_vision::assets::inventory())] {
        for (what, path) in inventory {
            let state = if path.exists() { "present" } else { "MISSING" };
            println!("  {group:<9} {what:<32} {state}  {}", path.display());
        }
    }
    println!("fetch missing assets with `{}`", tram_task::assets::ASSETS_COMMAND);
    Ok(())
}
