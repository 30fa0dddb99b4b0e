//! Every asset the embedded language experiments read, by asset group of `tools/assets.sh` (for `tram doctor`).

use std::path::PathBuf;

use tram_task::kit::assets::assets_dir;

/// The `lm` group (Table 4): the SmolLM2-135M GGUF and the Brown corpus.
pub fn lm() -> Vec<(String, PathBuf)> {
    let root = assets_dir();
    vec![
        ("SmolLM2-135M-Instruct GGUF".into(), root.join("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")),
        ("Brown corpus (cats.txt)".into(), root.join("brown/cats.txt")),
    ]
}

/// The `xlingual` group (Tables 5 and 6): multilingual-e5-small, its charsmap, the installation guide.
pub fn xlingual() -> Vec<(String, PathBuf)> {
    let root = assets_dir();
    vec![
        ("multilingual-e5-small (E5S1)".into(), root.join("e5-small/e5-small-q4.bin")),
        ("nmt_nfkc charsmap".into(), root.join("e5-small/nmt_nfkc.charsmap")),
        ("Debian installation guide".into(), root.join("installation-guide")),
    ]
}
