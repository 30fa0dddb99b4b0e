//! `tram doctor`: what this machine offers the runner.

use anyhow::Result;

pub fn doctor() -> Result<()> {
    println!("tram {}", env!("CARGO_PKG_VERSION"));
    println!("tch {}  libtorch {}", crate::TCH_VERSION, crate::LIBTORCH_VERSION);
    println!("CPU threads used by libtorch: {}", tch::get_num_threads());
    let cuda = tch::Cuda::is_available();
    println!("CUDA available: {cuda}  devices: {}  cuDNN: {}", tch::Cuda::device_count(), tch::Cuda::cudnn_is_available());
    println!("assets folder: {}", tram_vision::assets::assets_dir().display());
    let report = |what: &str, r: tram_vision::Result<std::path::PathBuf>| match r {
        Ok(p) => println!("  {what:<28} present  {}", p.display()),
        Err(e) => println!("  {what:<28} MISSING  {e}"),
    };
    report("EfficientNet-Lite0 weights", tram_vision::assets::efficientnet_lite0_weights());
    match tram_vision::assets::emoji_dir() {
        Ok(dir) => {
            for style in tram_vision::data::emoji::Style::ALL {
                let d = dir.join(style.as_str());
                let ok = d.join("emoji.json").exists();
                println!("  emoji {:<22} {}  {}", style.as_str(), if ok { "present" } else { "MISSING" }, d.display());
            }
        }
        Err(e) => println!("  {:<28} MISSING  {e}", "emoji images"),
    }
    Ok(())
}
