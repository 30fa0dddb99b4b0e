// Build script shared by the workspace's crates (each names it with `build = "../../tools/libtorch-link.rs"`).
// torch-sys reports where libtorch lives (DEP_TCH_LIBTORCH_LIB); we add that folder as an rpath so tests,
// examples and binaries run without LD_LIBRARY_PATH, and keep libtorch_cuda.so in the DT_NEEDED list where it
// exists (the linker would drop it, and with it CUDA support).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // PyTorch's torch/version.py names the libtorch version; binaries report it (`tram doctor`, meta.json).
    let version = std::fs::read_to_string(std::path::Path::new(&lib).join("../version.py"))
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("__version__ = ").map(|v| v.trim_matches(['\'', '"']).to_string()))
        })
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TRAM_LIBTORCH_VERSION={version}");
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
