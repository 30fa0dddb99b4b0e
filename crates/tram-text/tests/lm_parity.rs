//! Parity of the causal LMs with transformers 5.24 (float32) on tiny random checkpoints written by
//! `reference/lm_fixtures.py`: GPT-2 from a transformers-5 save and from the Hub's layout, Llama (GQA, tied head)
//! from a snapshot and from a GGUF file with every supported quantization. Logits and loss within 1e-5.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};
use tram_core::Model;
use tram_text::causal_lm::{token_nll, CausalLm, Decoder, LmBatch, ModelSource, PretrainedLm};
use tram_text::gguf::GgufFile;
use tram_text::llama::Llama;
use tram_text::tokenizer::TextTokenizer;
use tram_text::trainable::{NoiseAt, Trainable};

// Tests that draw from torch's global generator run one at a time.
use tram_core::testing::serial;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lm")
}

fn expected(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixtures().join(name)).unwrap().into_iter().collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

/// Logits at real positions and the loss of `decoder` against the fixture `name`; returns (Δlogits, Δloss).
fn compare(decoder: &Decoder, name: &str) -> (f64, f64) {
    let e = expected(name);
    let batch = LmBatch { ids: e["ids"].shallow_clone(), mask: e["mask"].shallow_clone(), prefix: None };
    let logits = tch::no_grad(|| decoder.forward(&batch.ids, false));
    let real = batch.mask.unsqueeze(-1);
    let dl = max_abs(&(&logits * &real), &(&e["logits"] * &real));
    let model = CausalLm::fork(decoder, Trainable::All, NoiseAt::Embeddings).unwrap();
    let loss = tch::no_grad(|| model.loss(&model.forward(&batch, false, None), &batch)).double_value(&[]);
    let dloss = (loss - e["loss"].double_value(&[0])).abs();
    (dl, dloss)
}

#[test]
fn gpt2_matches_transformers_in_both_layouts() {
    for dir in ["gpt2-tiny", "gpt2-tiny-hub"] {
        let lm = PretrainedLm::load(&ModelSource::Snapshot(fixtures().join(dir)), Device::Cpu).unwrap();
        assert!(matches!(lm.decoder, Decoder::Gpt2(_)));
        let (dl, dloss) = compare(&lm.decoder, "gpt2-tiny-expected.safetensors");
        println!("{dir}: max |Δlogits| {dl:.2e}, |Δloss| {dloss:.2e}");
        assert!(dl < 1e-5 && dloss < 1e-5, "{dir}: {dl} {dloss}");
    }
}

#[test]
fn llama_matches_transformers() {
    let lm = PretrainedLm::load(&ModelSource::Snapshot(fixtures().join("llama-tiny")), Device::Cpu).unwrap();
    let Decoder::Llama(m) = &lm.decoder else { panic!("a llama") };
    assert_eq!((m.config.kv_heads(), m.config.num_attention_heads, m.config.tie_word_embeddings), (2, 4, true));
    let (dl, dloss) = compare(&lm.decoder, "llama-tiny-expected.safetensors");
    println!("llama-tiny: max |Δlogits| {dl:.2e}, |Δloss| {dloss:.2e}");
    assert!(dl < 1e-5 && dloss < 1e-5, "{dl} {dloss}");
}

#[test]
fn gguf_dequantizes_as_gguf_py_and_runs_as_transformers() {
    let path = fixtures().join("llama-tiny.gguf");
    let file = GgufFile::open(&path).unwrap();
    assert_eq!((file.version, file.architecture().unwrap()), (3, "llama"));
    // The fixture holds every supported block type (ggml ids: Q4_0 2, Q4_1 3, Q5_0 6, Q5_1 7, Q8_0 8, F16 1,
    // BF16 30, F32 0).
    let mut types: Vec<u32> = file.tensors.iter().map(|t| t.type_id).collect();
    types.sort();
    types.dedup();
    assert_eq!(types, vec![0, 1, 2, 3, 6, 7, 8, 30]);
    let ours = file.llama_tensors().unwrap();
    let e = expected("llama-tiny-gguf-expected.safetensors");
    let mut worst = 0f64;
    for (name, t) in &ours {
        let want = e.get(name).unwrap_or_else(|| panic!("{name} not in the fixture"));
        assert_eq!(t.size(), want.size(), "{name}");
        worst = worst.max(max_abs(t, want));
    }
    assert_eq!(ours.len(), 1 + 3 * 9 + 1, "embedding, 9 tensors per layer, final norm");
    println!("GGUF dequantization: max |Δ| vs gguf.quants.dequantize {worst:.2e}");
    assert_eq!(worst, 0.0, "dequantization is exact arithmetic on the same floats");
    let lm = PretrainedLm::load(&ModelSource::Gguf(path), Device::Cpu).unwrap();
    let (dl, dloss) = compare(&lm.decoder, "llama-tiny-gguf-expected.safetensors");
    println!("llama-tiny.gguf vs transformers loading it: max |Δlogits| {dl:.2e}, |Δloss| {dloss:.2e}");
    assert!(dl < 1e-5 && dloss < 1e-5, "{dl} {dloss}");
}

#[test]
fn gguf_vocabulary_gives_the_tokenizer_it_came_from() {
    let file = GgufFile::open(fixtures().join("llama-tiny.gguf")).unwrap();
    let json = file.tokenizer_json().unwrap();
    assert_eq!(json, file.tokenizer_json().unwrap(), "deterministic");
    let ours = TextTokenizer::from_json(&json, &file.path).unwrap();
    let reference = TextTokenizer::from_file(fixtures().join("tokenizer.json")).unwrap();
    for s in ["the council voted on the new law .", "Punctuation, digits 0123; café 東京 🙂\ttabs  and   runs", ""]
    {
        assert_eq!(ours.encode(s, false).unwrap(), reference.encode(s, false).unwrap(), "{s:?}");
    }
    assert_eq!(ours.token_id("<|endoftext|>"), Some(0));
}

#[test]
fn top_k_from_the_cached_prefix_equals_the_full_forward() {
    let _rng = serial();
    for dir in ["gpt2-tiny", "llama-tiny"] {
        let lm = PretrainedLm::load(&ModelSource::Snapshot(fixtures().join(dir)), Device::Cpu).unwrap();
        let e = expected(&format!("{dir}-expected.safetensors"));
        let model = CausalLm::fork(&lm.decoder, Trainable::TopLayers(1), NoiseAt::Embeddings).unwrap();
        // Only the top layer and the final norm train; the var store holds nothing else.
        let names: Vec<String> = model.var_store().variables().into_keys().collect();
        assert!(
            !names.is_empty() && names.iter().all(|n| n.contains(".2.") || n.contains("norm") || n.starts_with("ln_f"))
        );
        assert!(names.iter().all(|n| !n.contains("embed") && !n.starts_with("wte")), "{names:?}");
        let mut batch = LmBatch { ids: e["ids"].shallow_clone(), mask: e["mask"].shallow_clone(), prefix: None };
        let full = tch::no_grad(|| lm.decoder.forward(&batch.ids, false));
        batch.prefix = model.prefix(&batch.ids);
        let cached = tch::no_grad(|| model.forward(&batch, false, None));
        let d = max_abs(&full, &cached);
        println!("{dir}: top-1 from the cached prefix vs the full forward: max |Δ| {d:.2e}");
        assert!(d < 1e-6, "{dir}: {d}");
        // The loss reaches the top layer's weights and nothing frozen.
        let loss = model.loss(&model.forward(&batch, true, None), &batch);
        loss.backward();
        for (name, t) in model.var_store().variables() {
            assert!(t.grad().defined() && t.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0, "{name}");
        }
    }
}

#[test]
fn padding_is_neither_loss_nor_divergence() {
    let lm = PretrainedLm::load(&ModelSource::Snapshot(fixtures().join("llama-tiny")), Device::Cpu).unwrap();
    let model = CausalLm::fork(&lm.decoder, Trainable::All, NoiseAt::Embeddings).unwrap();
    let a: Vec<u32> = (1..=8).collect();
    let b: Vec<u32> = (20..=31).collect();
    let padded = LmBatch::from_blocks(&[&a, &b], 0, Device::Cpu);
    assert_eq!(padded.ids.size(), vec![2, 12]);
    let target = padded.target_mask();
    // Row 0: positions 0..6 predict real tokens 1..7; row 1: 0..10. The last position never counts.
    assert_eq!(target.sum(Kind::Float).double_value(&[]), 7.0 + 11.0);
    let alone = LmBatch::from_blocks(&[&a], 0, Device::Cpu);
    let (nll_p, mask_p) = token_nll(&tch::no_grad(|| model.forward(&padded, false, None)), &padded);
    let (nll_a, _) = token_nll(&tch::no_grad(|| model.forward(&alone, false, None)), &alone);
    // Right padding changes nothing for the real tokens of a causal model.
    assert!(max_abs(&nll_p.get(0).narrow(0, 0, 7), &nll_a.get(0)) < 1e-6);
    assert_eq!(mask_p.get(0).sum(Kind::Float).double_value(&[]), 7.0);
    let (means, tokens) = model.block_nll(&padded);
    assert_eq!(tokens, vec![7, 11]);
    assert!((means[0] - nll_a.get(0).mean(Kind::Float).double_value(&[])).abs() < 1e-6);
    let _ = Llama::from_snapshot(&fixtures().join("llama-tiny"), Device::Cpu).unwrap();
}

#[test]
fn broken_snapshots_name_the_file_and_key() {
    let dir = std::env::temp_dir().join(format!("tram-lm-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixtures().join("gpt2-tiny");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    std::fs::copy(src.join("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    let err = PretrainedLm::load(&ModelSource::Snapshot(dir.clone()), Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    // A config with one layer more than the weights.
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["n_layer"] = 4.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let err = PretrainedLm::load(&ModelSource::Snapshot(dir.clone()), Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("model.safetensors") && err.contains("h.3."), "{err}");
    config["model_type"] = "bert".into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let err = PretrainedLm::load(&ModelSource::Snapshot(dir.clone()), Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("config.json") && err.contains("bert"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
