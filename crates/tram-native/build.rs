// Compiles cpp/native.cpp against the libtorch that torch-sys links (its headers sit beside its libraries, as
// in the PyTorch wheel), then does what the workspace's shared build script does: libtorch's folder as an rpath
// for this crate's tests, libtorch_cuda.so kept in DT_NEEDED.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=cpp/native.cpp");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let lib = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys reports libtorch's folder"));
    let root = lib.parent().expect("libtorch's lib folder has a parent").to_path_buf();
    let include = root.join("include");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("cpp/native.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        // PyTorch's wheels since 2.7 are built with the C++11 ABI (torch._C._GLIBCXX_USE_CXX11_ABI).
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        .compile("tram_native");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=torch_cpu");
    println!("cargo:rustc-link-lib=c10");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
