//! The shared kit: tools both task crates (and the runner) use, which are not the contract — the offline asset
//! cache and its checksums, named tensors into a var store, the activations a `config.json` names, parquet's
//! integer cells, atomic file writes and the checksums written with them, and the paper's ε-sharpness and CKA
//! (Table 6).

pub mod activation;
pub mod analysis;
pub mod assets;
pub mod atomic;
pub mod checksum;
pub mod parquet;
pub mod weights;
